"""SocketWriter over real loopback TCP: bytes arrive whole and in order,
straight to the socket when Twisted holds nothing and behind Twisted's
buffer when it does; and Twisted still has the attributes it reads."""

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import StringTransport

from spchat.server.socket_writer import SocketWriter

from conftest import wait_until
from helpers import RawPeer


class Source(protocol.Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)


@defer.inlineCallbacks
def pair():
    """(server-side Source, client-side RawPeer, listening port) on 127.0.0.1."""
    factory = protocol.ServerFactory()
    factory.protocol = Source
    factory.connected = defer.Deferred()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    sink = RawPeer()
    yield protocol.ClientCreator(reactor, lambda: sink).connectTCP(
        "127.0.0.1", port.getHost().port)
    source = yield factory.connected
    return source, sink, port


def chunks(count, size=65536):
    return [i.to_bytes(4, "big") * (size // 4) for i in range(count)]


@pytest_twisted.inlineCallbacks
def test_twisted_still_has_what_the_writer_reads():
    source, sink, port = yield pair()
    try:
        t = source.transport
        for name in ("dataBuffer", "_tempDataBuffer", "_aborting", "TLS", "socket"):
            assert hasattr(t, name), f"Twisted's tcp.Connection has no {name} any more"
        assert SocketWriter(t)._socket is t.socket
    finally:
        source.transport.abortConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_reader_that_keeps_up_gets_it_all_without_twisteds_buffer():
    source, sink, port = yield pair()
    try:
        writer = SocketWriter(source.transport)
        writer.write(b"hello ")
        writer.write(b"world")
        assert not source.transport.dataBuffer and not source.transport._tempDataBuffer
        yield wait_until(lambda: bytes(sink.received) == b"hello world")
    finally:
        source.transport.abortConnection()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_what_the_kernel_does_not_take_queues_and_nothing_overtakes_it():
    source, sink, port = yield pair()
    try:
        sink.transport.pauseProducing()  # the peer stops reading: buffers fill
        writer = SocketWriter(source.transport)
        data = chunks(200)  # 12.5 MiB: far more than the kernel's buffers
        for chunk in data:
            writer.write(chunk)
        t = source.transport
        assert t.dataBuffer or t._tempDataBuffer  # Twisted holds the rest, in order
        sink.transport.resumeProducing()
        expected = b"".join(data)
        yield wait_until(lambda: len(sink.received) >= len(expected), timeout=30)
        assert bytes(sink.received) == expected
    finally:
        source.transport.abortConnection()
        yield port.stopListening()


def test_other_transports_are_written_the_ordinary_way():
    transport = StringTransport()
    writer = SocketWriter(transport)
    writer.write(b"one ")
    writer.write(b"two")
    assert transport.value() == b"one two"
