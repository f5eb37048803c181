"""The bus on Redis pub/sub, with txredisapi (``pip install 'spchat[bus]'``).

``--bus redis://[[user]:password@]host:port[/db]`` (``CHAT_BUS_URL``; with
a password, each connection sends ``AUTH`` first, a Redis 6 ACL user's
name too).  Two connections: one
subscribed to the channel, one that publishes; each is made again after
it is lost, with a backoff from ``RETRY_FIRST`` to ``RETRY_MOST`` seconds.
A notice published while the bus is away is dropped (the bus is lossy by
design: the nodes read from the database what they missed, see
``spchat.cluster.order``); each time both connections are up again is
reported as ``connected()``, after which the node says where it is and
reads what it may have missed.

Pub/sub channels are the same for every database number of one Redis
server: the channel's name carries the number, so that clusters given
different numbers stay apart.

Why pub/sub and txredisapi: ``scripts/measure_bus.py`` (figures in the
commit that added it).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, error, protocol
from twisted.logger import Logger
from zope.interface import implementer

from spchat.server.interfaces import IBus
from spchat.server.threaded_store import StoreError

RETRY_FIRST = 0.2
RETRY_MOST = 5.0
CONNECT_SECONDS = 5.0
DEFAULT_PORT = 6379

log = Logger()


class BusError(StoreError):
    """The bus cannot be used as configured (one line)."""


def parse_url(url: str) -> tuple[str, int, int]:
    """(host, port, database number) of a ``redis://`` URL."""
    parts = urllib.parse.urlsplit(url)
    db = parts.path.strip("/")
    if not parts.hostname:  # the configuration refuses it already
        raise BusError(f"no host in the bus URL {url!r}")
    return parts.hostname, parts.port or DEFAULT_PORT, int(db) if db else 0


def credentials(url: str) -> tuple[str | None, str | None]:
    """(user, password) of a ``redis://`` URL, decoded; None where not given."""
    parts = urllib.parse.urlsplit(url)
    unquote = urllib.parse.unquote
    return (unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None)


def _driver() -> Any:  # the txredisapi module, untyped
    try:
        import txredisapi
    except ImportError:
        raise BusError("the bus needs the txredisapi package: "
                       "pip install 'spchat[bus]'") from None
    return txredisapi


class _Factory(protocol.Factory):
    noisy = False  # a line per connection, and the bus reconnects often

    def __init__(self, make):
        self.make = make

    def buildProtocol(self, addr):
        return self.make()


def _usable(proto) -> defer.Deferred:
    """Fires once the connection is usable, fails if it is lost first
    (txredisapi's ``whenConnected`` alone would then wait for ever, and the
    service with it, never trying again)."""
    d: defer.Deferred = defer.Deferred()

    def fire(result):
        if not d.called:
            d.callback(result)

    def lost(_):
        if not d.called:
            d.errback(error.ConnectionLost("lost the bus before it was ready"))

    proto.whenConnected().addCallback(fire)
    proto.whenDisconnected().addCallback(lost)
    return d


def _in_time(reactor, proto, preparing: defer.Deferred) -> defer.Deferred:
    """``preparing``, or a failure and the connection cut if it has not
    fired in ``CONNECT_SECONDS``: a peer that takes the connection but never
    answers (not Redis, or a Redis that hangs) would otherwise hold the
    service for ever, never trying again."""

    def too_slow(failure):
        failure.trap(defer.TimeoutError)
        if proto.transport is not None:
            proto.transport.abortConnection()
        raise error.TimeoutError(f"no answer from the bus in {CONNECT_SECONDS:g} s")

    return preparing.addTimeout(CONNECT_SECONDS, reactor).addErrback(too_slow)


@implementer(IBus)
class RedisBus:
    def __init__(self, url: str, reactor):
        txredisapi = self._driver = _driver()
        host, port, db = parse_url(url)
        self.user, self.password = credentials(url)
        self.where = f"redis://{host}:{port}/{db}"  # never the password
        self.channel = f"spchat.lines.{db}"
        self.reactor = reactor
        self.endpoint = endpoints.HostnameEndpoint(reactor, host, port,
                                                   timeout=CONNECT_SECONDS)
        self._heard = self._connected = None
        self.publisher = None  # the publishing connection, while there is one
        self.subscribed = False
        self.joined = False  # subscribed, and able to publish
        self.dropped = 0  # notices not published: the bus was away
        bus = self

        class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[name-defined]  # imported at start
            def messageReceived(self, pattern, channel, message):
                bus._heard(message)

            def connectionLost(self, why):
                super().connectionLost(why)
                bus._lost("subscriber")

        class Publisher(txredisapi.RedisProtocol):  # type: ignore[name-defined]  # imported at start
            def connectionLost(self, why):
                super().connectionLost(why)
                if bus.publisher is self:
                    bus.publisher = None
                    bus._lost("publisher")

        retry = backoffPolicy(RETRY_FIRST, RETRY_MOST)
        self._services = [
            ClientService(self.endpoint, _Factory(Subscriber), retry, self.reactor,
                          prepareConnection=self._subscribe),
            ClientService(self.endpoint, _Factory(Publisher), retry, self.reactor,
                          prepareConnection=self._publishing),
        ]
        self._away_told = False
        self.stopping = False
        self._preparing: set = set()  # connections made, not yet ready
        self._refusal_told = False  # a wrong password is logged once, not each try

    def listen(self, heard, connected) -> None:
        self._heard, self._connected = heard, connected

    def start(self) -> None:
        for service in self._services:
            service.startService()

    def stop(self) -> defer.Deferred:
        self.stopping = True
        # A connection still being made ready is cut first, and its loss
        # waited for: stopped under it, the service would be told of the loss
        # after it had stopped, which it cannot take.
        cut = []
        for proto in list(self._preparing):
            cut.append(proto.whenDisconnected())
            proto.transport.abortConnection()
        return defer.gatherResults(cut, consumeErrors=True).addBoth(
            lambda _: defer.gatherResults([defer.maybeDeferred(s.stopService)
                                           for s in self._services], consumeErrors=True))

    def publish(self, data: bytes) -> None:
        publisher = self.publisher
        if publisher is None or not publisher.connected:
            self.dropped += 1
            return
        try:
            sent = publisher.publish(self.channel, data)
        except self._driver.ConnectionError:  # lost, and not told yet
            self.dropped += 1
            return
        sent.addErrback(self._not_published)

    # --- the connections --------------------------------------------------------

    def _subscribe(self, proto) -> defer.Deferred:
        def subscribed(_):
            self.subscribed = True
            self._maybe_joined()

        return self._prepared(proto, self._signed_in(proto).addCallback(
            lambda _: proto.subscribe(self.channel))).addCallback(subscribed)

    def _publishing(self, proto) -> defer.Deferred:
        def ready(_):
            self.publisher = proto
            self._maybe_joined()

        # A PING answered: it is Redis, and it answers.
        return self._prepared(proto, self._signed_in(proto).addCallback(
            lambda _: proto.ping())).addCallback(ready)

    def _signed_in(self, proto) -> defer.Deferred:
        """Usable, and signed in if the URL has a password."""
        usable = _usable(proto)
        if self.password is None:
            return usable

        def answered(reply):
            if isinstance(reply, Exception):  # txredisapi returns some errors
                raise reply
            return reply

        def refused(failure):
            failure.trap(self._driver.ResponseError)
            if proto.transport is not None:
                proto.transport.abortConnection()
            if not self._refusal_told:
                self._refusal_told = True
                log.error("the bus {where} refused this node's sign-in: {error} (the "
                          "user and password of CHAT_BUS_URL); trying again",
                          where=self.where, error=failure.getErrorMessage())
            return failure

        return usable.addCallback(lambda _: proto.auth(self.password, self.user)).addCallback(
            answered).addErrback(refused)

    def _prepared(self, proto, preparing: defer.Deferred) -> defer.Deferred:
        self._preparing.add(proto)

        def done(result):
            self._preparing.discard(proto)
            return result

        return _in_time(self.reactor, proto, preparing).addBoth(done)

    def _maybe_joined(self) -> None:
        """Both connections up: the node may say where it is, and read
        what it missed while either was down."""
        if self.subscribed and self.publisher is not None and not self.joined:
            self.joined = True
            self._back()
            if self._connected is not None:
                self._connected()

    def _lost(self, which: str) -> None:
        self.joined = False
        if which == "subscriber":
            self.subscribed = False
        if not self._away_told and not self.stopping:
            self._away_told = True
            log.warn("lost the bus {where}; trying again (deliveries from other nodes "
                     "wait until it is back)", where=self.where)

    def _back(self) -> None:
        self._refusal_told = False
        if self._away_told:
            self._away_told = False
            log.info("the bus {where} is back", where=self.where)

    def _not_published(self, failure) -> None:
        self.dropped += 1
