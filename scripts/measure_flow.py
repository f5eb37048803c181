"""Server memory while clients ask for all history and never read.

Starts `twistd -n spchat` on a free port in a temporary data dir, fills
#lobby with M lines of 1.5 KB, then connects N clients (from several
127.x.y.z addresses) that log in asking for everything since #lobby's
first line and then read nothing.  Prints the server's resident memory
(from /proc) before, with them, and after they are cut.

    python scripts/measure_flow.py [--lines 6000] [--clients 20]
"""

import argparse
import socket

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from _server import NO_FLOOD_LIMIT, measure_with_server
from spchat import wire
from spchat.bench.servers import memory_kib
from spchat.client.pins import PinStore
from spchat.client.protocol import ChatClientProtocol
from spchat.client.session import ChatClient

MIB = 1 << 20


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (from /proc)."""
    return memory_kib(pid, "VmRSS") * 1024


class Deaf:
    """Logs in from position 0 of #lobby, then stops reading."""

    def __init__(self, name: str):
        self.name = name
        self.proto = None

    def channel_open(self, proto):
        self.proto = proto
        proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        proto.send_message(wire.Login(self.name, positions=(("#lobby", 0),), since=0))
        proto.transport.pauseProducing()

    def message_received(self, msg):
        pass

    def connection_lost(self, reason, proto=None):
        pass


@defer.inlineCallbacks
def measure(reactor, proc, port, lines, clients, config_dir):
    seeder = ChatClient(reactor, "127.0.0.1", port, "seeder", PinStore(config_dir))
    yield seeder.connect()
    for i in range(lines):
        seeder.say(f"{i} " + "x" * 1500)
    yield seeder.wait_acked(300)
    yield seeder.logout()
    yield task.deferLater(reactor, 1.0, lambda: None)
    baseline = rss(proc.pid)
    deaf = []
    for i in range(clients):
        source = f"127.{10 + i % 5}.0.{1 + i % 5}"
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
        listener = Deaf(f"deaf{i}")
        yield connectProtocol(endpoint, ChatClientProtocol(reactor, lambda fp: None, listener))
        deaf.append(listener)
    peak = baseline
    for _ in range(25):
        yield task.deferLater(reactor, 0.2, lambda: None)
        peak = max(peak, rss(proc.pid))
    for listener in deaf:
        if listener.proto is not None:
            listener.proto.transport.abortConnection()
    yield task.deferLater(reactor, 3.0, lambda: None)
    after = rss(proc.pid)
    print(f"#lobby: {lines} lines of 1.5 KB; {clients} clients ask for all of it, read nothing")
    print(f"server RSS: before {baseline / MIB:.1f} MiB, with them {peak / MIB:.1f} MiB "
          f"(+{(peak - baseline) / MIB:.1f} MiB, {(peak - baseline) / clients / 1024:.0f} KiB "
          f"each), after they are cut {after / MIB:.1f} MiB (+{(after - baseline) / MIB:.1f})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=6000)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    measure_with_server(
        lambda reactor, proc, port, scratch: measure(reactor, proc, port, args.lines,
                                                     args.clients, scratch / "client"),
        *NO_FLOOD_LIMIT, "--idle-timeout", "0", "--store-sync", "normal")


if __name__ == "__main__":
    main()
