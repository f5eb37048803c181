"""Service assembly: twistd options -> configuration -> running services."""

from __future__ import annotations

import os
import secrets
import socket
import sys

from twisted.application import internet, service
from twisted.internet import defer, endpoints
from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.python import usage
from twisted.python.failure import Failure

import spchat
from spchat import config, noise
from spchat.irc import tls
from spchat.irc.protocol import IrcFactory
from spchat.irc.tls import CertificateError
from spchat.cluster.redis_bus import RedisBus
from spchat.cluster.seal import bus_key
from spchat.server.password_worker import PasswordWorker
from spchat.server.throttles import LoginThrottle, SignupLimit
from spchat.server.capacity import connections_for, raise_descriptor_limit
from spchat.server.commit import GroupCommitter
from spchat.server.core import ChatCore, Limits
from spchat.server.metrics import MetricsError, ServerFigures
from spchat.server.rules import Ports
from spchat.server.presence import PresenceServer
from spchat.server.relay import RelayFactory
from spchat.server.memory_store import MemoryStore
from spchat.server.claims import LocalClaims
from spchat.server.pg_claims import PgClaims
from spchat.server.pg_store import PostgresStore
from spchat.server.store import SQLiteStore, StoreError
from spchat.server.identity import (
    IdentityError,
    load_or_create_admin_token,
    load_or_create_server_key,
)
from spchat.server.protocol import ChatServerFactory
from spchat.terminal import SafeLogger


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the spchat server. Every option can also be set in the environment "
        "or in a .env file in the working directory (see .env.example)."
    )
    optParameters = config.options_table()


def stop(message: str, status: int = 2) -> None:
    """End start-up with one line on stderr, no traceback."""
    # Once twistd has started logging, sys.stderr feeds the log; the user
    # must see this line on the real stderr.
    stderr = sys.__stderr__ or sys.stderr  # None only in a windowed Python
    stderr.write(f"spchat: error: {message}\n")
    stderr.flush()
    raise SystemExit(status)


# Idle sessions are found, and idle presence published, this often.
SWEEP_SECONDS = 1.0
# Old messages are deleted this often when CHAT_HISTORY_DAYS is set.
PRUNE_SECONDS = 3600.0
# A start that cannot load the rooms (the database went away after it was
# opened) is tried again this often: until then logins wait, unanswered.
START_RETRY_SECONDS = 5.0


LISTEN_BACKLOG = 1024


class ChatService(service.MultiService):
    """Listens for chat connections; binds before the reactor runs."""

    log = SafeLogger()

    def __init__(self, cfg: config.Config, reactor=None, clock=None):
        """``clock``: the chat rules' time (the reactor's unless a test
        moves it on)."""
        if reactor is None:
            from twisted.internet import reactor
        self.cfg = cfg
        self.reactor = reactor
        self.server_key = load_or_create_server_key(cfg.data_dir)
        self.fingerprint = noise.fingerprint(noise.public_key(self.server_key))
        self.store = make_store(cfg, reactor)
        self.bus = make_bus(cfg, reactor)
        self.node = node_name(cfg)
        self.names = make_claims(cfg, reactor, clock or reactor, self.store, self.node)
        self.store_open = False
        self._start_retry = None  # a start tried again, while it waits
        self._stopping = False
        self.passwords = PasswordWorker(reactor)
        # Filled in as the listeners are bound.
        self.ports = Ports(relay_host=cfg.relay_host)
        self.core = ChatCore(
            clock or reactor,
            core_limits(cfg),
            store=self.store,
            passwords=self.passwords,
            throttle=LoginThrottle(reactor, limit=cfg.login_failures, window=60.0),
            signups=SignupLimit(clock or reactor, cfg.registrations_per_hour,
                                cfg.registrations_per_hour_total),
            admin_token=load_or_create_admin_token(cfg.data_dir),
            audit=lambda line: self.log.info("audit: {line}", line=line),
            on_shutdown=self.shut_down,
            committer_factory=lambda log, published: GroupCommitter(
                log, reactor, published, cfg.commit_interval),
            ports=self.ports,
            bus=self.bus,
            bus_key=bus_key(self.server_key),
            node=self.node,
            stats=lambda: self.figures.rows(),
            names=self.names,
        )
        self.descriptors = raise_descriptor_limit()  # each connection is one
        self.factory = ChatServerFactory(
            self.core,
            self.server_key,
            reactor,
            handshake_timeout=cfg.handshake_timeout,
            max_connections_per_ip=cfg.max_connections_per_ip,
            send_buffer_bytes=cfg.send_buffer_bytes,
            refusal_log_seconds=cfg.refusal_log_seconds,
            max_connections=cfg.max_connections or connections_for(self.descriptors),
            login_reserve=cfg.login_reserve,
        )
        self.presence = PresenceServer(self.core, reactor, cfg.presence_interval)
        self.core.presence_listeners.append(self.presence.changed)
        super().__init__()
        # Periodic work: idle sweeps (and old messages pruned, if asked).
        self._every(SWEEP_SECONDS, self.core.sweep)
        if cfg.history_days > 0:
            self._every(PRUNE_SECONDS, self.prune)
        # The file-sharing relay, when sharing is on and the relay is not off.
        self.relay = None
        if cfg.relay_max_bps > 0 and cfg.max_share_bytes > 0:
            self.relay = RelayFactory(
                reactor, self.core.relay_allowed, self.core.relay_used, cfg.relay_max_bps,
                max_per_ip=cfg.relay_max_per_ip, idle_timeout=cfg.relay_idle_timeout,
                refusal_log_seconds=cfg.refusal_log_seconds,
            )
        self.irc = IrcFactory(self.core, reactor, server_name=cfg.irc_server_name,
                              registration_timeout=cfg.handshake_timeout,
                              max_connections_per_ip=cfg.max_connections_per_ip,
                              send_buffer_bytes=cfg.send_buffer_bytes,
                              operator=cfg.irc_operator,
                              refusal_log_seconds=cfg.refusal_log_seconds,
                              capacity=self.factory,
                              # Four commands for each line flood control lets through.
                              line_rate=4 * cfg.flood_rate, line_burst=4 * cfg.flood_burst) \
            if cfg.irc_listen or cfg.ircs_listen else None
        self.figures = ServerFigures(self.core, self.factory, self.irc, self.relay, self.passwords)
        self.port: IListeningPort | None = None
        self.udp_port: IListeningPort | None = None
        self.relay_port: IListeningPort | None = None
        self.irc_port: IListeningPort | None = None
        self.ircs_port: IListeningPort | None = None
        self.metrics_port: IListeningPort | None = None

    def listen(self):
        """Bind the TCP, UDP and relay ports; raise CannotListenError if one is taken."""
        # A deep accept queue: after a network blip every client comes back
        # at once, and Twisted's default of 50 would drop the SYNs beyond it
        # (each dropped one waits a second or more to retry).
        self.port = listen_now(self.reactor, chat_endpoint(self.cfg), self.factory)
        try:
            self.udp_port = self.reactor.listenUDP(
                self.cfg.udp_port, self.presence, interface=self.cfg.server_host
            )
        except net_error.CannotListenError:
            self.port.stopListening()
            raise
        if self.relay is not None:
            try:
                self.relay_port = self.reactor.listenTCP(
                    self.cfg.relay_port, self.relay, backlog=LISTEN_BACKLOG,
                    interface=self.cfg.server_host,
                )
            except net_error.CannotListenError:
                self.port.stopListening()
                self.udp_port.stopListening()
                raise
            relay = self.relay_port.getHost()
            # Peers learn the relay's port from the server (it may have been 0: any).
            self.ports.relay = relay.port
            self.log.info(
                "file-sharing relay on {host}:{port}, at most {bps} bytes/s per transfer",
                host=relay.host, port=relay.port, bps=self.cfg.relay_max_bps,
            )
        try:
            self._listen_irc()
            self._listen_metrics()
        except (net_error.CannotListenError, CertificateError, MetricsError):
            for port in (self.port, self.udp_port, self.relay_port, self.irc_port,
                         self.ircs_port):
                if port is not None:
                    port.stopListening()
            raise
        self.log.info("at most {count} chat connections (file descriptors: {fds})",
                      count=self.factory.slots.limit, fds=self.descriptors)
        address = self.port.getHost()
        udp = self.udp_port.getHost().port
        # Clients learn the beacon's port at login (it may have been 0: any).
        self.ports.udp = udp
        self.log.info(
            "spchat {version} listening on TCP {host}:{port} (presence on UDP {udp}); "
            "server key fingerprint {fingerprint}",
            version=spchat.__version__,
            host=address.host,
            port=address.port,
            udp=udp,
            fingerprint=self.fingerprint,
        )
        return address

    def _listen_irc(self) -> None:
        cfg = self.cfg
        if cfg.irc_listen:
            self.irc_port = listen_now(self.reactor, cfg.irc_listen, self.irc)
            self.log.info("IRC gateway on {where}", where=address_text(self.irc_port.getHost()))
        if cfg.ircs_listen:
            description, cert = cfg.ircs_listen, None
            if "privateKey=" not in description:  # ours, or the configured pair
                cert, key = tls.certificate_paths(cfg.data_dir, cfg.irc_cert, cfg.irc_key,
                                                  cfg.irc_server_name)
                quote = endpoints.quoteStringArgument
                description += f":privateKey={quote(str(key))}:certKey={quote(str(cert))}"
            self.ircs_port = listen_now(self.reactor, description, self.irc)
            self.log.info("IRC gateway with TLS on {where}{fingerprint}",
                          where=address_text(self.ircs_port.getHost()),
                          fingerprint="" if cert is None else
                          f", certificate SHA-256 fingerprint {tls.fingerprint(cert)}")

    def _listen_metrics(self) -> None:
        description = self.cfg.metrics_listen
        if not description:
            return
        # Imported only now: a server without --metrics needs no prometheus_client.
        from spchat.server.exposition import metrics_site

        site = metrics_site(self.figures)
        try:
            self.metrics_port = listen_now(self.reactor, description, site)
        except net_error.CannotListenError as e:
            raise MetricsError(f"cannot serve metrics on {description!r} (--metrics, "
                               f"CHAT_METRICS_LISTEN): {e.socketError}") from None
        where = self.metrics_port.getHost()
        url = (f"http://{address_text(where)}/metrics" if not isinstance(where, UNIXAddress)
               else f"/metrics over {address_text(where)}")
        self.log.info("Prometheus metrics on {url} (unauthenticated)", url=url)

    def open_store(self) -> None:
        """Open the store (its threads start here); raise StoreError."""
        if self.store_open:
            return
        failures = []
        # Every store's open() has fired when it returns: a failure is one line.
        self.store.open().addErrback(lambda failure: failures.append(failure.value))
        if failures:
            raise failures[0]
        self.store_open = True

    def _every(self, seconds: float, work) -> None:
        timer = internet.TimerService(seconds, work)
        timer.clock = self.reactor
        timer.setServiceParent(self)

    def startService(self):
        self.open_store()  # opened already by privilegedStartService under twistd
        self._start_core()
        self.passwords.start()
        super().startService()  # the timers

    def _start_core(self):
        self._start_retry = None
        started = self.core.start()
        if self.bus is not None:  # once the rooms are there to deliver to
            started.addCallback(self._join_bus)
        started.addErrback(self._not_started)

    def _join_bus(self, _):
        if not self._stopping:  # else stopped while the rooms were loading
            self.bus.start()

    def _not_started(self, failure):
        if self._stopping:
            return
        self.log.error("cannot load the rooms: {error}; trying again in {seconds:g} s",
                       error=failure.getErrorMessage(), seconds=START_RETRY_SECONDS)
        self._start_retry = self.reactor.callLater(START_RETRY_SECONDS, self._start_core)

    def shut_down(self):
        """An administrator asked: let the byes go out, then stop (status 0)."""
        self.log.info("shutting down at an administrator's request")
        self.reactor.callLater(0.2, self.reactor.stop)

    def prune(self):
        cutoff = self.core.now_ms() - int(self.cfg.history_days * 86400 * 1000)

        def pruned(removed):
            if removed:
                self.log.info("deleted {count} messages older than {days:g} days",
                              count=removed, days=self.cfg.history_days)

        def failed(failure):  # busy now: next hour, then
            self.log.warn("could not delete old messages: {error}",
                          error=failure.getErrorMessage())

        self.store.prune(cutoff).addCallbacks(pruned, failed)

    def privilegedStartService(self):
        super().privilegedStartService()
        try:
            self.listen()
        except net_error.CannotListenError as e:
            stop(f"cannot listen on {e.interface or '*'} port {e.port}: {e.socketError}", 1)
        except (CertificateError, MetricsError) as e:
            stop(str(e))
        try:
            self.open_store()
        except StoreError as e:
            for port in (self.port, self.udp_port, self.relay_port, self.irc_port,
                         self.ircs_port, self.metrics_port):
                if port is not None:
                    port.stopListening()
            stop(str(e))

    def stopService(self):
        self._stopping = True
        if self._start_retry is not None and self._start_retry.active():
            self._start_retry.cancel()
        timers = defer.maybeDeferred(super().stopService)
        saved = self.core.stop()  # everything accepted is saved
        self.factory.flush_now()  # what is queued for each connection goes now
        self.passwords.stop()
        waits = [timers,
                 saved.addBoth(lambda _: self.store.close() if self.store_open else None)
                 .addBoth(lambda _: self.names.close())]
        if self.bus is not None:
            waits.append(self.bus.stop())
        if self.relay_port is not None:
            waits.append(defer.maybeDeferred(self.relay_port.stopListening))
            self.relay_port = None
            self.relay.close_all()
        for port in (self.irc_port, self.ircs_port):
            if port is not None:
                waits.append(defer.maybeDeferred(port.stopListening))
        if self.irc is not None:
            self.irc_port = self.ircs_port = None
            self.irc.close_all()
        if self.metrics_port is not None:
            waits.append(defer.maybeDeferred(self.metrics_port.stopListening))
            self.metrics_port = None
        if self.udp_port is not None:
            waits.append(defer.maybeDeferred(self.udp_port.stopListening))
            self.udp_port = None
        if self.port is not None:
            waits.append(defer.maybeDeferred(self.port.stopListening))
            self.port = None
        return defer.gatherResults(waits)


def make_store(cfg: config.Config, reactor):
    """The store the settings ask for (not opened yet); raise StoreError."""
    if cfg.database:
        if cfg.store == "memory":
            raise StoreError("CHAT_STORE=memory and CHAT_DATABASE_URL (--database) "
                             "ask for two stores: give one")
        return PostgresStore(cfg.database, reactor=reactor)
    if cfg.store == "memory":
        return MemoryStore()
    return SQLiteStore.in_dir(cfg.data_dir, sync=cfg.store_sync, mode=cfg.store_writer,
                              reactor=reactor)


def make_claims(cfg: config.Config, reactor, clock, store, node: str):
    """Who holds each name: in the shared database, or this node's own."""
    if isinstance(store, PostgresStore):
        return PgClaims(cfg.database, store.path, reactor, node, cfg.node_timeout)
    return LocalClaims(clock, node, node_timeout=cfg.node_timeout)


def node_name(cfg: config.Config) -> str:
    """``CHAT_NODE``, or this machine's name and the chat port (a port
    the system picks, 0, is not known yet: a random tag instead, so that
    two such nodes on one machine still differ)."""
    if cfg.node:
        return cfg.node
    return f"{socket.gethostname()}:{cfg.tcp_port or secrets.token_hex(4)}"


def make_bus(cfg: config.Config, reactor):
    """The bus to the other nodes the settings ask for (None: this node is
    alone); raise StoreError."""
    if not cfg.bus:
        return None
    if not cfg.database:
        raise StoreError("CHAT_BUS_URL (--bus) joins nodes that share one PostgreSQL "
                         "database: give CHAT_DATABASE_URL (--database postgresql://...) too")
    return RedisBus(cfg.bus, reactor, ca=cfg.bus_ca)


def chat_endpoint(cfg: config.Config) -> str:
    """The chat listener's endpoint description: CHAT_LISTEN, or TCP on
    CHAT_TCP_PORT at CHAT_SERVER_HOST."""
    if cfg.listen:
        return cfg.listen
    host = endpoints.quoteStringArgument(cfg.server_host)
    return f"tcp:{cfg.tcp_port}:interface={host}:backlog={LISTEN_BACKLOG}"


def address_text(address: IAddress) -> str:
    """Where a port listens: host:port, or a UNIX socket's unix:path (the
    endpoints of --irc and --metrics may be either)."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress) and address.name is not None:
        return f"unix:{os.fsdecode(address.name)}"
    return str(address)


def listen_now(reactor, description: str, factory):
    """Bind a stream endpoint before the reactor runs (TCP, SSL and UNIX
    endpoints listen at once); raise CannotListenError if it cannot."""
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError) as e:
        raise net_error.CannotListenError(description, 0, f"bad endpoint: {e}") from None
    bound: list = []  # the port, or the Failure
    endpoint.listen(factory).addBoth(bound.append)
    if not bound:
        raise net_error.CannotListenError(description, 0, "it does not listen at once")
    if isinstance(bound[0], Failure):
        bound[0].trap(net_error.CannotListenError)
        raise bound[0].value
    return bound[0]


def core_limits(cfg: config.Config) -> Limits:
    return Limits(
        max_message_bytes=cfg.max_message_bytes,
        resume_grace=cfg.resume_grace,
        idle_timeout=cfg.idle_timeout,
        idle_after=cfg.idle_after,
        flood_burst=cfg.flood_burst,
        flood_rate=cfg.flood_rate,
        flood_queue=cfg.flood_queue,
        presence_interval=cfg.presence_interval,
        history_on_join=cfg.history_on_join,
        max_waiting_directs=cfg.max_waiting_directs,
        max_waiting_from_one=cfg.max_waiting_from_one,
        offline_retention=cfg.offline_retention,
        max_share_bytes=cfg.max_share_bytes,
        default_rooms=cfg.default_rooms,
        refusal_log_seconds=cfg.refusal_log_seconds,
    )


def _no_pid_file_in_the_foreground(options) -> None:
    """``twistd -n`` writes twistd.pid into the working directory (often a
    checkout) unless told ``--pidfile=``; in the foreground nothing needs it
    (the shell or the service manager holds the process), and a second node
    started from the same directory would be refused because of it. A pid
    file named on the command line, or a daemon's, is kept."""
    twistd = getattr(options, "parent", None)  # twistd's own options
    default = os.path.abspath("twistd.pid")  # twistd's default, made absolute as twistd does
    if twistd is not None and twistd.get("nodaemon") and twistd.get("pidfile") == default:
        twistd["pidfile"] = ""


def makeService(options) -> service.MultiService:
    _no_pid_file_in_the_foreground(options)
    try:
        cfg, warnings = config.load_config(options=dict(options))
    except config.ConfigError as e:
        stop(str(e))
    for warning in warnings:
        sys.stderr.write(f"spchat: warning: {warning}\n")
    top = service.MultiService()
    try:
        ChatService(cfg).setServiceParent(top)
    except (IdentityError, StoreError) as e:
        stop(str(e))
    return top
