"""The bus on Redis pub/sub, with txredisapi (``pip install 'spchat[bus]'``).

``--bus redis://[[user]:password@]host:port[/db]`` (``CHAT_BUS_URL``; with
a password, each connection sends ``AUTH`` first, a Redis 6 ACL user's
name too; ``rediss://`` for TLS, the server's certificate checked against
``CHAT_BUS_CA`` or the system's certificates).  Two connections: one
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
from pathlib import Path
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, error, protocol, ssl
from twisted.internet.interfaces import IStreamClientEndpoint
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


def tls_options(url: str, ca: Path | None):
    """The TLS options of a ``rediss://`` URL (None for ``redis://``): the
    server's certificate must name its host and be signed by ``ca`` (a PEM
    file of one or more certificates), else by one the system trusts."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "rediss":
        if ca is not None:
            raise BusError("CHAT_BUS_CA (--bus-ca) is for a TLS bus: give a rediss:// URL")
        return None
    trust = None
    if ca is not None:
        try:
            text = ca.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise BusError(f"cannot read the bus's CA file {ca}: "
                           f"{getattr(e, 'strerror', None) or e}") from None
        ends = "-----END CERTIFICATE-----"
        pems = [chunk + ends for chunk in text.split(ends) if "-----BEGIN CERTIFICATE" in chunk]
        try:
            trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(p.encode())
                                                   for p in pems])
        except Exception:  # OpenSSL's errors have no common base worth naming
            pems = []
        if not pems:
            raise BusError(f"the bus's CA file {ca} holds no PEM certificate")
    assert parts.hostname, "the configuration refuses a URL with no host"
    return ssl.optionsForClientTLS(parts.hostname, trustRoot=trust)


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
            why = getattr(proto, "lost_why", None)  # a TLS handshake's error, say
            d.errback(error.ConnectionLost("lost the bus before it was ready"
                                           + (f": {why.getErrorMessage()}" if why else "")))

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


@implementer(IStreamClientEndpoint)
class _Reporting:
    """An endpoint whose failed connections are reported (the service that
    uses it retries them without a word)."""

    def __init__(self, endpoint, report):
        self.endpoint, self.report = endpoint, report

    def connect(self, factory):
        return self.endpoint.connect(factory).addErrback(self.report)


@implementer(IBus)
class RedisBus:
    def __init__(self, url: str, reactor, ca: Path | None = None):
        txredisapi = self._driver = _driver()
        host, port, db = parse_url(url)
        self.user, self.password = credentials(url)
        tls = tls_options(url, ca)
        scheme = "redis" if tls is None else "rediss"
        self.where = f"{scheme}://{host}:{port}/{db}"  # never the password
        self.channel = f"spchat.lines.{db}"
        self.reactor = reactor
        self.endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(
            reactor, host, port, timeout=CONNECT_SECONDS)
        if tls is not None:
            self.endpoint = endpoints.wrapClientTLS(tls, self.endpoint)
        self._heard = self._connected = None
        self.publisher = None  # the publishing connection, while there is one
        self.subscribed = False
        self.joined = False  # subscribed, and able to publish
        self.dropped = 0  # notices not published: the bus was away
        bus = self

        # Each connection makes itself ready (signs in, subscribes or pings)
        # once made, and is cut if it cannot: not in the service's
        # prepareConnection, which cannot take a connection lost meanwhile.
        class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[name-defined]  # imported at start
            ready = False

            def connectionMade(self):
                made = super().connectionMade()
                bus._prepare(self, lambda: self.subscribe(bus.channel), bus._subscribed)
                return made

            def messageReceived(self, pattern, channel, message):
                bus._heard(message)

            def connectionLost(self, why):
                self.lost_why = why
                super().connectionLost(why)
                if self.ready:
                    bus._lost("subscriber")

        class Publisher(txredisapi.RedisProtocol):  # type: ignore[name-defined]  # imported at start
            def connectionMade(self):
                made = super().connectionMade()
                # A PING answered: it is Redis, and it answers.
                bus._prepare(self, self.ping, bus._publishing)
                return made

            def connectionLost(self, why):
                self.lost_why = why
                super().connectionLost(why)
                if bus.publisher is self:
                    bus.publisher = None
                    bus._lost("publisher")

        backoff = backoffPolicy(RETRY_FIRST, RETRY_MOST)
        self._failures = 0  # connections not made or not made ready, since last joined
        self._services = [
            ClientService(_Reporting(self.endpoint, self._unusable), _Factory(kind),
                          lambda _: backoff(self._failures), self.reactor)
            for kind in (Subscriber, Publisher)]
        self._away_told = False
        self.stopping = False
        self._preparing: set = set()  # connections made, not yet ready
        self._trouble_told = False  # why it cannot be used is logged once, not each try

    def listen(self, heard, connected) -> None:
        self._heard, self._connected = heard, connected

    def start(self) -> None:
        for service in self._services:
            service.startService()

    def stop(self) -> defer.Deferred:
        self.stopping = True
        # A connection still being made ready is cut first, and its loss
        # waited for: the service would close it politely, which a peer
        # that never answers (or a TLS handshake under way) can hold up.
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

    def _subscribed(self, proto) -> None:
        proto.ready = True
        self.subscribed = True
        self._maybe_joined()

    def _publishing(self, proto) -> None:
        self.publisher = proto
        self._maybe_joined()

    def _prepare(self, proto, then, ready) -> None:
        """Make a new connection ready in time (signed in, then ``then()``),
        then ``ready(proto)``; if it cannot be, it is cut (and made again)."""
        self._preparing.add(proto)

        def done(result):
            self._preparing.discard(proto)
            return result

        def not_ready(failure):
            # Lost meanwhile: why it was lost says more (a TLS handshake's
            # error, say) than the command that was waiting.
            self._unusable(getattr(proto, "lost_why", None) or failure)
            if proto.transport is not None:
                proto.transport.abortConnection()

        _in_time(self.reactor, proto, self._signed_in(proto).addCallback(
            lambda _: then())).addBoth(done).addCallbacks(lambda _: ready(proto), not_ready)

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
            if not self._trouble_told:
                self._trouble_told = True
                log.error("the bus {where} refused this node's sign-in: {error} (the "
                          "user and password of CHAT_BUS_URL); trying again",
                          where=self.where, error=failure.getErrorMessage())
            return failure

        return usable.addCallback(lambda _: proto.auth(self.password, self.user)).addCallback(
            answered).addErrback(refused)

    def _unusable(self, failure):
        """A connection not made, or not made ready: said once until the
        bus is joined (the service tries again, later each time)."""
        self._failures += 1
        if not self._trouble_told and not self.stopping:
            self._trouble_told = True
            log.warn("cannot use the bus {where} yet: {error}; trying again (deliveries "
                     "from other nodes wait until it is joined)", where=self.where,
                     error=failure.getErrorMessage())
        return failure

    def _maybe_joined(self) -> None:
        """Both connections up: the node may say where it is, and read
        what it missed while either was down."""
        if self.subscribed and self.publisher is not None and not self.joined:
            self.joined = True
            self._failures = 0
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
        self._trouble_told = False
        if self._away_told:
            self._away_told = False
            log.info("the bus {where} is back", where=self.where)

    def _not_published(self, failure) -> None:
        self.dropped += 1
