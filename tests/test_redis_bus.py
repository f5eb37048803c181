"""The bus's Redis connections themselves: on a real Redis server they
join and carry notices; a peer that takes the connection and never
answers is cut and tried again, not waited on for ever."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import protocol, reactor

from spchat.cluster import redis_bus

from conftest import wait_until


class Silent(protocol.Protocol):
    """Takes a connection and never says a word."""


@pytest_twisted.inlineCallbacks
def test_two_buses_on_one_redis_join_and_hear_each_other(redis_server):
    heard: list[bytes] = []
    buses = [redis_bus.RedisBus(redis_server.url, reactor) for _ in range(2)]
    for bus in buses:
        # txredisapi gives the text decoded (the seal takes either).
        bus.listen(lambda data: heard.append(data.encode() if isinstance(data, str) else data),
                   lambda: None)
        bus.start()
    try:
        yield wait_until(lambda: all(bus.joined for bus in buses))
        buses[0].publish(b"hello")
        yield wait_until(lambda: heard.count(b"hello") == 2)  # the publisher hears it too
        assert buses[0].dropped == 0
    finally:
        for bus in buses:
            yield bus.stop()


@pytest_twisted.inlineCallbacks
def test_a_peer_that_never_answers_is_cut_and_tried_again(monkeypatch):
    monkeypatch.setattr(redis_bus, "CONNECT_SECONDS", 0.3)
    accepted = []

    class Counting(protocol.Factory):
        def buildProtocol(self, addr):
            accepted.append(addr)
            return Silent()

    port = reactor.listenTCP(0, Counting(), interface="127.0.0.1")
    bus = redis_bus.RedisBus(f"redis://127.0.0.1:{port.getHost().port}/0", reactor)
    bus.listen(lambda data: None, lambda: None)
    bus.start()
    try:
        # Each of the two connections, cut after 0.3 s, is made again.
        yield wait_until(lambda: len(accepted) >= 4, timeout=8)
        assert not bus.joined and bus.publisher is None
    finally:
        yield bus.stop()
        yield port.stopListening()
