"""A proxy that keeps cutting connections, often in the middle of a frame
or a line: what the reconnect tests (spchat's protocol and IRC) go through."""

import itertools
import random

from twisted.internet import protocol, reactor


class Pipe(protocol.Protocol):
    """One side of a proxied connection."""

    def __init__(self, proxy, budget):
        self.proxy = proxy
        self.budget = budget  # bytes this side may still pass on
        self.other = None
        self.pending = []

    def connectionMade(self):
        self.proxy.pipes.add(self)

    def dataReceived(self, data):
        if self.other is None or self.other.transport is None:
            self.pending.append(data)
            return
        self.forward(data)

    def forward(self, data):
        if len(data) < self.budget:
            self.budget -= len(data)
            self.other.transport.write(data)
            return
        # Out of budget: deliver a prefix (mid-frame, most likely), as a
        # network that dies does, then cut both sides.
        self.other.transport.write(data[: self.budget])
        self.other.transport.loseConnection()  # after the prefix is flushed
        self.transport.abortConnection()
        self.proxy.cuts += 1

    def connectionLost(self, reason):
        self.proxy.pipes.discard(self)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.loseConnection()


class CuttingProxy(protocol.Factory):
    """Forwards to the server; each connection dies after a random number of
    bytes in either direction.  ``target_port`` may be several ports (the
    nodes of one server): each connection then goes to the next of them,
    and ``sent_to`` says where each went."""

    def __init__(self, target_port, seed, low=400, high=6000):
        ports = list(target_port) if isinstance(target_port, (list, tuple)) else [target_port]
        self.targets = itertools.cycle(ports)
        self.sent_to = []
        self.random = random.Random(seed)
        self.low, self.high = low, high
        self.cuts = 0
        self.pipes = set()

    def budget(self):
        return self.random.randint(self.low, self.high)

    def buildProtocol(self, addr):
        client_side = Pipe(self, self.budget())
        server_side = Pipe(self, self.budget())
        client_side.other, server_side.other = server_side, client_side
        connector = protocol.ClientCreator(reactor, lambda: server_side)
        self.sent_to.append(next(self.targets))
        d = connector.connectTCP("127.0.0.1", self.sent_to[-1])

        def connected(_):
            for data in client_side.pending:
                client_side.forward(data)
            client_side.pending.clear()

        d.addCallbacks(connected, lambda f: client_side.transport.abortConnection())
        return client_side
