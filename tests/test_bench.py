"""The bench's own bookkeeping: if it miscounted, every figure would lie."""

import os
import subprocess
import sys
import time

from twisted.internet.testing import StringTransport

from spchat.bench.clients import MqttClient, IrcClient, _packet, _string
from spchat.bench.cluster import cost_note, tree_cpu, process_cpu
from spchat.bench.load import Recorder, Result


def test_the_recorder_counts_loss_duplicates_and_order():
    recorder = Recorder(clients=3, senders=2, per_sender=5)
    at = [recorder.receiver(i) for i in range(3)]

    def payload(sender, seq):
        return f"{sender}:{seq}:0:pad:with:colons"

    for seq in range(5):
        at[2](payload(0, seq))  # receiver 2 gets all of sender 0
        at[1](payload(0, seq))  # receiver 1 too
    at[0](payload(0, 1))  # a sender's own message echoed back: not counted
    at[2](payload(1, 0))
    at[2](payload(1, 2))
    at[2](payload(1, 1))  # late: out of order
    at[2](payload(1, 2))  # again: a duplicate
    assert recorder.delivered == 13
    assert (recorder.duplicated, recorder.out_of_order) == (1, 1)
    # Sender 0 sent 5, sender 1 sent 3.  Receiver 0 (sender 0 itself) got
    # none of sender 1's; receiver 1 (sender 1) all of sender 0's; receiver
    # 2 everything.
    assert recorder.lost([5, 3], receivers=3) == 3
    at[0](payload(1, 0))
    assert recorder.lost([5, 3], receivers=3) == 2
    assert len(recorder.latencies) == recorder.delivered == 14  # one per new delivery


def test_percentiles_and_cost_per_million():
    r = Result("x", "a", 10, 10, 100.0, delivered=10_000, elapsed=2.0, server_cpu=0.5,
               latencies_ms=[float(i) for i in range(1, 101)])
    assert r.delivered_per_s == 5000
    assert r.cpu_per_million == 50.0
    assert (r.percentile(50), r.percentile(99)) == (51.0, 100.0)
    few = Result("x", "d", 2, 1, 1.0, delivered=20, server_cpu=0.1)
    assert few.cpu_per_million != few.cpu_per_million  # NaN: idle time, not cost


def test_mqtt_frames_split_anywhere_are_reassembled():
    got = []
    client = MqttClient("m1", got.append)
    transport = StringTransport()
    client.makeConnection(transport)
    assert transport.value().startswith(b"\x10")  # CONNECT
    big = "y" * 300  # a remaining length of two bytes
    stream = (_packet(0x20, b"\x00\x00") + _packet(0x90, b"\x00\x01\x00")
              + _packet(0x30, _string(b"bench/room") + b"0:1:2:hello")
              + _packet(0x30, _string(b"bench/room") + big.encode()))
    for i in range(len(stream)):
        client.dataReceived(stream[i:i + 1])
    assert client.ready.called
    assert got == ["0:1:2:hello", big]


def test_irc_payloads_keep_their_colons():
    got = []
    client = IrcClient("u1", got.append, sender=False)
    client.makeConnection(StringTransport())
    client.lineReceived(b":u2!u2@127.0.0.1 PRIVMSG #bench :3:4:5:a: b :c")
    assert got == ["3:4:5:a: b :c"]
    client.lineReceived(b":bench.irc.local 001 u1 :Welcome")
    client.lineReceived(b":bench.irc.local 366 u1 #bench :End of NAMES list")
    assert client.ready.called


def test_each_nodes_cost_is_of_the_deliveries_to_its_own_clients():
    recorder = Recorder(clients=4, senders=1, per_sender=4)
    at = [recorder.receiver(i) for i in range(4)]
    for seq in range(4):
        for i in (1, 2, 3):
            at[i](f"0:{seq}:0:pad")
    at[2]("0:0:0:pad")  # a copy: not a delivery
    result = Result("spchat, 2 nodes", "f", 4, 1, 10.0)
    result.per_client = recorder.per_client()
    assert result.per_client == [0, 4, 4, 4]
    # Clients 0 and 2 are on node 1 (4 deliveries), 1 and 3 on node 2 (8).
    result.parts_cpu = {"node 1": 2.0, "node 2": 2.0, "PostgreSQL": 0.5}
    note = cost_note(result, 2)
    assert note == ("CPU s per M deliveries on each node: node 1 500000.00, "
                    "node 2 250000.00; CPU in the run: PostgreSQL 0.50 s")
    result.per_client = [0, 0, 0, 0]
    assert "node 1 –" in cost_note(result, 2)


def test_a_process_trees_cpu_counts_its_children():
    child = subprocess.Popen([sys.executable, "-c", "sum(range(10**7)); input()"],
                             stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while process_cpu(child.pid) < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu(os.getpid()) >= process_cpu(os.getpid()) + process_cpu(child.pid) - 0.01
        assert process_cpu(child.pid) >= 0.05
    finally:
        child.communicate(b"\n", timeout=10)
    assert process_cpu(child.pid) == 0.0  # gone: nothing to read
