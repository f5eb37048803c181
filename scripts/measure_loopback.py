"""Handshake time and one client's message rate through a loopback server.

Starts `twistd -n spchat` on a free port in a temporary data dir, then, from
this process: N fresh connections timed from TCP connect to the end of the
Noise handshake, and one logged-in client pushing M room messages as fast as
it can, timed until the server has acknowledged the last one.

    python scripts/measure_loopback.py [--handshakes 200] [--messages 20000]
"""

import argparse
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from _server import NO_FLOOD_LIMIT, start_server
from spchat.client.pins import PinStore
from spchat.client.protocol import ChatClientProtocol
from spchat.client.session import ChatClient


class HandshakeTimer:
    def __init__(self):
        self.done = defer.Deferred()

    def channel_open(self, proto):
        self.done.callback(time.perf_counter())
        proto.hang_up()

    def message_received(self, msg):
        pass

    def connection_lost(self, reason, proto=None):
        if not self.done.called:
            self.done.errback(RuntimeError(reason))


@defer.inlineCallbacks
def measure(reactor, port, handshakes, messages, config_dir):
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    times = []
    for _ in range(handshakes):
        timer = HandshakeTimer()
        start = time.perf_counter()
        yield connectProtocol(endpoint, ChatClientProtocol(reactor, lambda fp: None, timer))
        end = yield timer.done
        times.append(end - start)
    times.sort()
    print(f"handshake (TCP connect + Noise NX), {handshakes} connections: "
          f"median {times[len(times) // 2] * 1000:.2f} ms, "
          f"p90 {times[int(len(times) * 0.9)] * 1000:.2f} ms")

    client = ChatClient(reactor, "127.0.0.1", port, "bench", PinStore(config_dir))
    yield client.connect()
    start = time.perf_counter()
    for i in range(messages):
        client.say(f"message {i} " + "x" * 80)
    acked = yield client.wait_acked(120)
    elapsed = time.perf_counter() - start
    print(f"one client, {messages} room messages of ~90 bytes, all acknowledged={acked}: "
          f"{elapsed:.2f} s, {messages / elapsed:,.0f} messages/s")
    yield client.logout()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp) / "data", *NO_FLOOD_LIMIT)
        try:
            task.react(lambda reactor: measure(reactor, port, args.handshakes, args.messages,
                                               Path(tmp) / "client"))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
