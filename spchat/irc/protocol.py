"""The IRC listener: Twisted's side of ``IrcConnection``.

Lines end in LF (CR LF or LF alone, as clients send them); a line longer
than the limit gets ERR_INPUTTOOLONG and is skipped, the connection stays.
A connection must register within ``registration_timeout``; one that says
nothing for ``ping_interval`` is sent a PING and cut if it still says
nothing for as long again.  One that does not read is cut once more than
``send_buffer_bytes`` have waited for it for SLOW_READER_SECONDS (the
protocol is its transport's producer: the transport says when the peer
stops reading), as the spchat protocol does.
"""

from __future__ import annotations

import collections
import time

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from spchat.irc import numerics as N
from spchat.irc.channels import name_key
from spchat.irc.connection import HOST, IrcConnection
from spchat.irc.lines import MAX_CLIENT_TAG_BYTES, MAX_LINE_BYTES, MAX_TAG_BYTES
from spchat.server.refusals import REFUSAL_LOG_SECONDS, PerAddress, ThrottledLog
from spchat.server.rules import TokenBucket
from spchat.transports import IStreamTransport

MAX_INPUT_BYTES = MAX_LINE_BYTES + MAX_TAG_BYTES
# A reader may fall behind for this long before a full send buffer cuts it.
SLOW_READER_SECONDS = 2.0
# A connection's commands are delayed by at most this much: one that sends
# more at once than that would take (a paste of 100 lines takes 5 s with
# the defaults) is cut for flooding.  Reading stops while they wait, so
# only what came in one read counts.
MAX_LAG_SECONDS = 10.0


@implementer(IPushProducer)
class IrcProtocol(protocol.Protocol):
    transport: IStreamTransport  # set by makeConnection before anything here runs

    def __init__(self, factory: IrcFactory, host: str):
        self.factory = factory
        self.host = host
        self.conn: IrcConnection | None = None
        self._buffer = b""
        self._skipping = False  # inside a line that was too long
        self._registration_timer: IDelayedCall | None = None
        self._ping_timer: IDelayedCall | None = None
        self._pinged = False
        self._paused_since: float | None = None  # the peer stopped reading then
        self._unsent = 0  # bytes written since
        # Lines received, waiting for their turn (None: one too long).
        self._waiting: collections.deque[bytes | None] = collections.deque()
        self._lines = TokenBucket(factory.line_rate, factory.line_burst, factory.clock.seconds())
        self._pace_call: IDelayedCall | None = None
        self._reading_paused = False

    @property
    def peer(self) -> str:
        return f"irc {self.host}"

    def cut_to_make_room(self) -> None:
        """The server is full and this connection is the oldest not registered."""
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self):
        f = self.factory
        peer = self.transport.getPeer()
        self.transport.registerProducer(self, True)
        self.conn = IrcConnection(f.core, f.registry, self._write, self._hang_up,
                                  f"{peer.host}:{peer.port}", f.server_name, f.created,
                                  f.operator)
        if f.capacity is not None:  # registered: no longer the first to go when full
            self.conn.on_logged_in = lambda: f.capacity.slots.logged_in(self)
        self._registration_timer = f.clock.callLater(f.registration_timeout,
                                                     self._registration_over)

    def _hang_up(self) -> None:
        self.transport.loseConnection()

    # --- a peer that does not read ------------------------------------------------

    def _write(self, data: bytes) -> None:
        assert self.conn is not None, "made in connectionMade"
        self.transport.write(data)
        if self._paused_since is None:
            return
        self._unsent += len(data)
        factory = self.factory
        if (self._unsent > factory.send_buffer_bytes
                and factory.clock.seconds() - self._paused_since >= SLOW_READER_SECONDS):
            factory.refusals(self.host, "irc: {host}: closed: more than {limit} bytes unsent "
                             "(the client does not read; {count} so far)", host=self.host,
                             limit=factory.send_buffer_bytes)
            self.conn.quit_reason = "Send buffer full: the client does not read"
            self.conn.closed = True  # nothing more is written to it
            self.transport.abortConnection()

    def pauseProducing(self):
        if self._paused_since is None:
            self._paused_since = self.factory.clock.seconds()

    def resumeProducing(self):
        self._paused_since, self._unsent = None, 0

    def stopProducing(self):
        pass

    def dataReceived(self, data: bytes):
        self._alive()
        buffer = self._buffer + data
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        for raw in lines:
            if self._skipping:  # the rest of a line already cut off as too long
                self._skipping = False
                continue
            self._waiting.append(raw)
        if len(self._waiting) > self.factory.max_waiting_lines:
            self._excess_flood()
            return
        if len(self._buffer) > MAX_INPUT_BYTES:
            self._buffer = b""
            if not self._skipping:
                self._skipping = True
                self._waiting.append(None)  # answered as too long, in its turn
        if self._pace_call is None:
            self._pace()

    # --- flood control: commands at a steady pace -----------------------------------

    def _excess_flood(self) -> None:
        """More commands wait than MAX_LAG_SECONDS would handle: cut."""
        factory = self.factory
        factory.refusals(self.host, "irc: {host}: closed: excess flood (more than {limit} "
                         "commands waiting; {count} so far)", host=self.host,
                         limit=factory.max_waiting_lines)
        self._waiting.clear()
        assert self.conn is not None, "made in connectionMade"
        self.conn.quit_reason = "Excess Flood"
        self.conn.goodbye("Excess Flood")

    def _pace(self) -> None:
        """Handle the lines that came, as fast as the line bucket allows; past
        it, stop reading (TCP then holds the client back) and go on when the
        bucket has refilled, as IRC servers' "fakelag" does.  What waits is
        at most one read's worth."""
        self._pace_call = None
        clock = self.factory.clock
        assert self.conn is not None, "made in connectionMade"
        while self._waiting and not self.conn.closed:
            if not self._lines.take(clock.seconds()):
                self._pace_call = clock.callLater(self._lines.wait(clock.seconds()), self._pace)
                if not self._reading_paused:
                    self._reading_paused = True
                    self.transport.pauseProducing()
                return
            raw = self._waiting.popleft()
            if raw is None or too_long(raw):
                self.conn.numeric(N.ERR_INPUTTOOLONG, "Input line was too long")
                continue
            try:
                self.conn.line_received(raw.rstrip(b"\r"))
            except Exception:  # a bug of ours: said and logged, and the next line goes on
                self.factory.log.failure("irc: {host}: a command failed", host=self.host)
                self.conn.emit(self.factory.server_name, "NOTICE", self.conn.nick,
                               "the server could not handle that command")
        if self._reading_paused and not self.conn.closed:
            self._reading_paused = False
            self.transport.resumeProducing()

    # --- timeouts ------------------------------------------------------------------

    def _registration_over(self) -> None:
        self._registration_timer = None
        assert self.conn is not None, "made in connectionMade"
        if not self.conn.registered:
            self.conn.goodbye("Registration timed out")

    def _alive(self) -> None:
        """Any line is a sign of life: the ping watch starts over."""
        if self.conn is None or not self.conn.registered:
            return
        self._pinged = False
        if self._ping_timer is not None:
            self._ping_timer.reset(self.factory.ping_interval)
        else:
            self._ping_timer = self.factory.clock.callLater(self.factory.ping_interval,
                                                            self._quiet)

    def _quiet(self) -> None:
        assert self.conn is not None, "made in connectionMade"
        if self._pinged:
            self._ping_timer = None
            self.conn.quit_reason = f"Ping timeout: {self.factory.ping_interval:.0f} seconds"
            self.conn.goodbye(self.conn.quit_reason)
            return
        self._pinged = True
        self.conn.emit(None, "PING", self.factory.server_name)
        self._ping_timer = self.factory.clock.callLater(self.factory.ping_interval, self._quiet)

    def connectionLost(self, reason=protocol.connectionDone):
        for timer in (self._registration_timer, self._ping_timer, self._pace_call):
            if timer is not None and timer.active():
                timer.cancel()
        self._registration_timer = self._ping_timer = self._pace_call = None
        self._waiting.clear()
        self.factory.per_ip.give_back(self.host)
        if self.factory.capacity is not None:
            self.factory.capacity.slots.release(self)
        self.factory.protocols.discard(self)
        if self.conn is not None:
            self.conn.connection_lost("connection lost")


def too_long(raw: bytes) -> bool:
    """Over 512 bytes without its tags (CR LF counted), or a client's tags
    over the 4,096 bytes (their '@' and space counted) message-tags allows."""
    tags, rest = b"", raw.rstrip(b"\r")
    if rest.startswith(b"@"):
        tags, _, rest = rest.partition(b" ")
    return len(rest) + 2 > MAX_LINE_BYTES or len(tags) + 1 > MAX_CLIENT_TAG_BYTES


class IrcRegistry:
    """The IRC connections of this server, by name key: what IRC users said
    of themselves (user name, real name, away) for the others' WHO and
    WHOIS, and of the last ``MAX_GONE`` to leave, for WHOWAS."""

    MAX_GONE = 200

    def __init__(self):
        self._by_key: dict[str, IrcConnection] = {}
        self._tagmsgs = 0
        self.gone: collections.deque[tuple[str, str, str, str]] = collections.deque(
            maxlen=self.MAX_GONE)  # (name key, nick, user, real name), newest last

    def add(self, conn: IrcConnection) -> None:
        assert conn.session is not None, "added once registered"
        self._by_key[conn.session.key] = conn

    def remove(self, conn: IrcConnection) -> None:
        if conn.session is not None and self._by_key.get(conn.session.key) is conn:
            del self._by_key[conn.session.key]
            self.gone.append((conn.session.key, conn.nick, conn.user or conn.nick,
                              conn.realname))

    def was(self, name: str) -> list[tuple[str, str, str]]:
        """(nick, user, real name) of those who held ``name``, newest first."""
        key = name_key(name)
        return [entry[1:] for entry in reversed(self.gone) if entry[0] == key]

    def all(self) -> list[IrcConnection]:
        return list(self._by_key.values())

    def mask(self, name: str, key: str | None = None) -> str:
        """``name``'s nick!user@host: an IRC user's as it said, anyone else's
        from the name.  ``key``: its name key, when known (no folding then)."""
        other = self._by_key.get(key if key is not None else name_key(name) or "")
        return other.own_mask if other is not None else f"{name}!{name}@{HOST}"

    def by_key(self, key: str) -> IrcConnection | None:
        return self._by_key.get(key)

    def next_tagmsg_id(self) -> str:
        self._tagmsgs += 1
        return f"tagmsg/{self._tagmsgs}"

    def sent(self, sender_key: str, cid: str | None) -> tuple[str, dict] | None:
        """(command, client tags) of a line an IRC user sent, by its cid."""
        conn = self._by_key.get(sender_key)
        return conn.sent.get(cid) if conn is not None and cid is not None else None

    def sent_direct(self, sender_key: str, recipient_key: str,
                    text: str) -> tuple[str, dict] | None:
        """(command, client tags) of a direct line an IRC user sent: the
        oldest of its lines to that recipient not yet matched, with that
        text (those before it were refused)."""
        conn = self._by_key.get(sender_key)
        queue = conn.sent_directs.get(recipient_key) if conn is not None else None
        while queue:
            sent_text, command, tags = queue.popleft()
            if sent_text == text:
                return command, tags
        return None

    def get(self, name: str) -> IrcConnection | None:
        key = name_key(name)
        return self._by_key.get(key) if key is not None else None


class IrcFactory(protocol.Factory):
    log = Logger()
    noisy = False

    def __init__(self, core, clock, *, server_name: str = "spchat",
                 registration_timeout: float = 10.0, ping_interval: float = 120.0,
                 max_connections_per_ip: int = 20, send_buffer_bytes: int = 1 << 20,
                 operator: tuple[str, str] | None = None,
                 refusal_log_seconds: float = REFUSAL_LOG_SECONDS, capacity=None,
                 line_rate: float = 20.0, line_burst: int = 40):
        """``capacity``: the chat's ``ChatServerFactory``, whose connection
        cap (CHAT_MAX_CONNECTIONS) counts the gateway's connections too.
        ``line_rate``, ``line_burst``: the lines a second a connection's
        commands are handled at, and how many may come at once."""
        self.core = core
        self.clock = clock
        self.server_name = server_name
        self.registration_timeout = registration_timeout
        self.ping_interval = ping_interval
        self.max_connections_per_ip = max_connections_per_ip
        self.send_buffer_bytes = send_buffer_bytes
        self.operator = operator  # (name, password hash) who may OPER, or None
        self.registry = IrcRegistry()
        self.per_ip = PerAddress(max_connections_per_ip)
        self.refusals = ThrottledLog(self.log, clock, refusal_log_seconds)
        self.protocols: set[IrcProtocol] = set()
        self.capacity = capacity
        self.line_rate, self.line_burst = line_rate, line_burst
        self.max_waiting_lines = max(line_burst, int(line_rate * MAX_LAG_SECONDS))
        self.created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(clock.seconds()))

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if not self.per_ip.take(host):
            self.refusals(
                host, "irc: {host}: refused: more than {limit} connections from this address "
                "({count} refused so far)", host=host, limit=self.max_connections_per_ip)
            return None
        if self.capacity is not None and not self.capacity.admit(host):
            self.per_ip.give_back(host)
            return None
        proto = IrcProtocol(self, host)
        if self.capacity is not None:
            self.capacity.slots.take(proto)
        self.protocols.add(proto)
        return proto

    def close_all(self) -> None:
        """The server stops: every IRC client is told and cut."""
        for proto in list(self.protocols):
            if proto.conn is not None:
                proto.conn.goodbye("Server shutting down")
            proto.transport.abortConnection()
