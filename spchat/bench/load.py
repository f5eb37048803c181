"""Open-loop load: N clients in one room, M senders at a fixed total rate.

Each payload carries its sender, a sequence number and the time it was
*scheduled* to be sent (not when it went out), so a generator or server
that falls behind shows up as latency instead of hiding it.  Every
receiver checks each sender's sequence: lost, duplicated and out-of-order
deliveries are counted, not assumed away.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from twisted.internet import defer, task

from spchat.bench.clients import connect_client

PAD = "x" * 64  # payloads of about 90 bytes: a chat line
CONNECT_BATCH = 100  # clients connecting at the same time
TICK = 0.002  # seconds between sender wake-ups
DRAIN_QUIET = 2.0  # a run is over when nothing arrived for this long...
DRAIN_MAX = 15.0  # ...or this long after the last send
SETTLE_SECONDS = {"ngircd": 2.5}


@dataclass
class Result:
    server: str
    scenario: str
    clients: int
    senders: int
    offered_rate: float  # room messages per second asked for
    sent: int = 0
    expected: int = 0  # deliveries: sent x (clients - 1)
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    elapsed: float = 0.0  # first send to last delivery
    latencies_ms: list = field(default_factory=list, repr=False)
    server_cpu: float = 0.0
    server_peak_rss_kib: int = 0
    generator_cpu: float = 0.0
    rss_per_connection_kib: float | None = None
    note: str = ""
    # Deliveries to each client, by its index (scenario (f) sums them by node).
    per_client: list = field(default_factory=list, repr=False)
    # CPU seconds of each part of a server of several processes (its nodes,
    # PostgreSQL, Redis) in the run; empty for a server of one.
    parts_cpu: dict = field(default_factory=dict)

    @property
    def delivered_per_s(self) -> float:
        return self.delivered / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_per_million(self) -> float:
        # Below a few thousand deliveries the figure is idle time, not cost.
        return self.server_cpu / self.delivered * 1e6 if self.delivered >= 5000 else float("nan")

    def percentile(self, p: float) -> float:
        data = self.latencies_ms
        if not data:
            return float("nan")
        data.sort()
        return data[min(len(data) - 1, int(len(data) * p / 100))]

    @property
    def generator_busy(self) -> float:
        """Share of one core the generator used: near 1.0, it was the limit."""
        return self.generator_cpu / self.elapsed if self.elapsed else 0.0


class Recorder:
    """What every receiver got, per sender."""

    def __init__(self, clients: int, senders: int, per_sender: int):
        self.per_sender = per_sender
        self.seen = [[bytearray(per_sender) for _ in range(senders)] for _ in range(clients)]
        self.highest = [[-1] * senders for _ in range(clients)]
        self.latencies: list[float] = []
        self.delivered = self.duplicated = self.out_of_order = 0
        self.last_at = 0.0

    def receiver(self, index: int):
        seen, highest = self.seen[index], self.highest[index]
        latencies = self.latencies
        clock = time.monotonic_ns

        def on_payload(payload: str) -> None:
            sender_text, seq_text, scheduled, _ = payload.split(":", 3)
            sender, seq = int(sender_text), int(seq_text)
            if sender == index:
                return  # its own message, echoed by the server
            now = clock()
            self.last_at = now
            marks = seen[sender]
            if marks[seq]:
                self.duplicated += 1
                return
            marks[seq] = 1
            latencies.append((now - int(scheduled)) / 1e6)
            self.delivered += 1
            if seq < highest[sender]:
                self.out_of_order += 1
            else:
                highest[sender] = seq

        return on_payload

    def per_client(self) -> list[int]:
        return [sum(sum(marks) for marks in client) for client in self.seen]

    def lost(self, sent_by: list[int], receivers: int) -> int:
        missing = 0
        for index in range(receivers):
            for sender, sent in enumerate(sent_by):
                if sender != index:
                    missing += sent - sum(self.seen[index][sender][:sent])
        return missing


def ignore_input(client) -> None:
    """An idle client reads and drops what comes (the join storm of 10,000
    others is the server's work to measure, not the generator's)."""
    client.deaf = True  # frames or lines already read are dropped too
    client.dataReceived = lambda data: None


@defer.inlineCallbacks
def connect_all(kind, reactor, port, count, senders, recorder=None, prefix="u", bind_hosts=None,
                idle=False, budget=None):
    """``count`` ready clients, or fail; with ``budget`` (seconds), as many
    as get in by then (a server may admit connections slowly).  ``port``:
    one, or a list that the clients are dealt to in turn."""
    ports = port if isinstance(port, list) else [port]
    clients = []
    deadline = None if budget is None else time.monotonic() + budget
    for start in range(0, count, CONNECT_BATCH):
        if deadline is not None and time.monotonic() > deadline:
            break
        batch = []
        for i in range(start, min(count, start + CONNECT_BATCH)):
            on_payload = recorder.receiver(i) if recorder else (lambda payload: None)
            host = bind_hosts[i % len(bind_hosts)] if bind_hosts else None
            d = connect_client(kind, reactor, ports[i % len(ports)], f"{prefix}{i}", on_payload,
                               sender=i < senders, bind_host=host)
            if idle:  # deaf from the moment it is in, not when its batch is
                d.addCallback(lambda client: (ignore_input(client), client)[1])
            batch.append(d)
        if deadline is None:
            ready = yield defer.gatherResults(batch, consumeErrors=True)
        else:  # take who got in; the time budget decides, not the first failure
            outcomes = yield defer.DeferredList(batch, consumeErrors=True)
            ready = [client for ok, client in outcomes if ok]
        clients.extend(ready)
    return clients


@defer.inlineCallbacks
def run_room(reactor, server, scenario: str, clients: int, senders: int, rate: float,
             duration: float):
    """One measured run; the server is already up.  Fires with a Result.
    A server of several processes (``spchat.bench.cluster.Nodes``) gives
    its clients' kind, its ``ports`` and the CPU of its parts."""
    per_sender_rate = rate / senders
    per_sender = max(1, int(per_sender_rate * duration))
    recorder = Recorder(clients, senders, per_sender)
    result = Result(server.name, scenario, clients, senders, rate)
    conns = yield connect_all(getattr(server, "kind", server.name), reactor,
                              server.ports if hasattr(server, "ports") else server.port,
                              clients, senders, recorder)
    # Joins settle.  ngIRCd charges a penalty for each setup command (OPER,
    # MODE, JOIN) and holds a client's later lines until it has passed: the
    # bench measures chat, not that, so it waits the penalty out.
    yield task.deferLater(reactor, SETTLE_SECONDS.get(server.name, 0.5), lambda: None)

    cpu0, gen0 = server.cpu_seconds(), sum(os.times()[:2])
    parts0 = server.cpu_parts() if hasattr(server, "cpu_parts") else {}
    start = time.monotonic_ns()
    sent_by = [0] * senders
    interval_ns = 1e9 / per_sender_rate

    def tick():
        now = time.monotonic_ns()
        for s in range(senders):
            due = min(per_sender, int((now - start) / interval_ns) + 1)
            client, n = conns[s], sent_by[s]
            while n < due:
                scheduled = start + int(n * interval_ns)
                client.send(f"{s}:{n}:{scheduled}:{PAD}")
                n += 1
            sent_by[s] = n
        if all(n >= per_sender for n in sent_by):
            ticker.stop()

    ticker = task.LoopingCall(tick)
    ticker.clock = reactor
    yield ticker.start(TICK)
    expected = sum(sent_by) * (clients - 1)
    finished = time.monotonic()
    while recorder.delivered < expected:
        quiet = (time.monotonic_ns() - max(recorder.last_at, start)) / 1e9
        if quiet > DRAIN_QUIET or time.monotonic() - finished > DRAIN_MAX:
            break
        yield task.deferLater(reactor, 0.05, lambda: None)

    result.server_cpu = server.cpu_seconds() - cpu0
    if parts0:
        result.parts_cpu = {k: v - parts0[k] for k, v in server.cpu_parts().items()}
    result.per_client = recorder.per_client()
    result.generator_cpu = sum(os.times()[:2]) - gen0
    result.elapsed = (max(recorder.last_at, start) - start) / 1e9
    result.sent = sum(sent_by)
    result.expected = expected
    result.delivered = recorder.delivered
    result.duplicated = recorder.duplicated
    result.out_of_order = recorder.out_of_order
    result.lost = recorder.lost(sent_by, clients)
    result.latencies_ms = recorder.latencies
    result.server_peak_rss_kib = server.memory_kib("VmHWM")
    for conn in conns:
        conn.close()
    yield task.deferLater(reactor, 0.5, lambda: None)  # the server sees them go
    return result
