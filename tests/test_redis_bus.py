"""The bus's Redis connections themselves: on a real Redis server they
join and carry notices, signing in where it asks for a password and over
TLS (``rediss://``) where the server's certificate checks out; a peer
that takes the connection and never answers is cut and tried again, not
waited on for ever."""

from __future__ import annotations

import socket
import ssl

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor, task
from twisted.logger import globalLogPublisher

from spchat.bench.engines import TemporaryRedis
from spchat.cluster import redis_bus
from spchat.irc import tls

from conftest import wait_until
from redis_server import _require_redis


class Silent(protocol.Protocol):
    """Takes a connection and never says a word."""


@pytest.fixture
def redis_with_password():
    _require_redis()
    server = TemporaryRedis(password="s3cret/pass")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_over_tls(tmp_path):
    """A Redis server that speaks TLS only, with a self-signed certificate
    for localhost and 127.0.0.1 (``tls`` is its PEM files)."""
    _require_redis()
    (tmp_path / "redis-tls").mkdir()
    cert, key = tls.certificate_paths(tmp_path / "redis-tls", None, None, "redis.test")
    server = TemporaryRedis(password="s3cret", tls=(cert, key))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_bus_over_tls_checks_the_servers_certificate(redis_over_tls, tmp_path):
    cert = redis_over_tls.tls[0]
    assert redis_over_tls.url.startswith("rediss://")
    yield buses_joined_and_heard(redis_over_tls.url, ca=cert)
    # Signed by nobody it was told to trust: never joined.
    (tmp_path / "other").mkdir()
    other, _ = tls.certificate_paths(tmp_path / "other", None, None, "other.test")
    said: list[dict] = []
    globalLogPublisher.addObserver(said.append)
    bus = redis_bus.RedisBus(redis_over_tls.url, reactor, ca=other)
    bus.listen(lambda data: None, lambda: None)
    before = connections_received(redis_over_tls)
    bus.start()
    try:
        yield task.deferLater(reactor, 1.0, lambda: None)
        assert connections_received(redis_over_tls) > before  # it tried
        assert not bus.joined and bus.publisher is None
        (told,) = [e for e in said if "cannot use the bus" in str(e.get("log_format"))]
        assert "certificate verify failed" in told["error"]
    finally:
        globalLogPublisher.removeObserver(said.append)
        yield bus.stop()


def test_a_bus_ca_that_cannot_be_used_is_one_line(tmp_path):
    url = "rediss://127.0.0.1:6379/0"
    with pytest.raises(redis_bus.BusError, match="cannot read the bus's CA file"):
        redis_bus.RedisBus(url, reactor, ca=tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(redis_bus.BusError, match="holds no PEM certificate"):
        redis_bus.RedisBus(url, reactor, ca=tmp_path / "junk.pem")
    with pytest.raises(redis_bus.BusError, match="is for a TLS bus"):
        redis_bus.RedisBus("redis://127.0.0.1:6379/0", reactor, ca=tmp_path / "junk.pem")


def test_the_bus_url_gives_its_user_and_password_decoded():
    assert redis_bus.credentials("redis://127.0.0.1:6379/0") == (None, None)
    assert redis_bus.credentials("redis://:s3cret%2Fpass@h/0") == (None, "s3cret/pass")
    assert redis_bus.credentials("redis://chat:pw@h:1/2") == ("chat", "pw")


@pytest_twisted.inlineCallbacks
def test_two_buses_on_one_redis_join_and_hear_each_other(redis_server):
    yield buses_joined_and_heard(redis_server.url)


@pytest_twisted.inlineCallbacks
def test_a_bus_signs_in_to_a_redis_that_asks_for_a_password(redis_with_password):
    assert redis_with_password.url.startswith("redis://:s3cret%2Fpass@")
    yield buses_joined_and_heard(redis_with_password.url)
    # As Redis 6's default user, by name.
    yield buses_joined_and_heard(redis_with_password.url.replace("://:", "://default:"))


@pytest_twisted.inlineCallbacks
def test_a_wrong_password_is_said_once_and_tried_again(redis_with_password, monkeypatch):
    monkeypatch.setattr(redis_bus, "RETRY_MOST", 0.3)
    said: list[dict] = []
    globalLogPublisher.addObserver(said.append)
    bus = redis_bus.RedisBus(redis_with_password.url.replace("s3cret", "wrong"), reactor)
    bus.listen(lambda data: None, lambda: None)
    before = connections_received(redis_with_password)
    bus.start()
    try:
        yield wait_until(lambda: refusals(said))
        yield task.deferLater(reactor, 1.5, lambda: None)
        assert connections_received(redis_with_password) - before >= 4  # tried again
        (refusal,) = refusals(said)  # said once
        assert "WRONGPASS" in refusal["error"] and "wrong" not in refusal["where"]
        assert not bus.joined and bus.publisher is None
    finally:
        globalLogPublisher.removeObserver(said.append)
        yield bus.stop()


def refusals(events):
    return [e for e in events if "refused this node's sign-in" in str(e.get("log_format"))]


def connections_received(server) -> int:
    """Redis's own count of the connections it took."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        s = raw
        if server.tls is not None:
            context = ssl.create_default_context(cafile=str(server.tls[0]))
            s = context.wrap_socket(raw, server_hostname="127.0.0.1")
        s.sendall(f"AUTH {server.password}\r\nINFO stats\r\n".encode())
        text = b""
        while b"total_connections_received:" not in text or not text.endswith(b"\r\n\r\n"):
            text += s.recv(65536)
    line = next(x for x in text.decode().split("\r\n")
                if x.startswith("total_connections_received:"))
    return int(line.split(":")[1])


@pytest_twisted.inlineCallbacks
def buses_joined_and_heard(url, ca=None):
    heard: list[bytes] = []
    buses = [redis_bus.RedisBus(url, reactor, ca=ca) for _ in range(2)]
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
