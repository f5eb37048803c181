"""The server's side of the channel: frames in, core calls out.

Thin on purpose: every chat rule is in ``spchat.server.core``.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

import spchat
from spchat import beacon, noise, wire
from spchat.channel import ChannelError, NoiseChannel
from spchat.server.capacity import Slots
from spchat.server.core import ChatCore
from spchat.server.events import LineBatch, SharedEvents
from spchat.server.interfaces import IChatClient
from spchat.server.refusals import REFUSAL_LOG_SECONDS, Refusals
from spchat.server.socket_writer import SocketWriter
from spchat.server.refusals import PerAddress
from spchat.terminal import SafeLogger

AGENT = f"spchat-server/{spchat.__version__}"
# A client that keeps sending what cannot be parsed is broken or hostile.
MAX_MALFORMED = 10
# ...within this many seconds: a client that now and then sends something
# the server cannot read is not cut off after days of chatting.
MALFORMED_WINDOW_SECONDS = 60.0
# A connection is cut for not reading only if it has not drained its
# buffer for this long, as well as having too much unsent.
SLOW_READER_SECONDS = 2.0
# Messages gathered in one reactor turn go out in frames of up to this size.
BATCH_FRAME_BYTES = wire.BATCH_FRAME_BYTES


def _line_frames(lines: LineBatch):
    """A batch's lines encoded once for all members, the frames of those
    who sent none of them, and each sender's copies (with their cid)."""
    everyone: list[bytes] = []
    own: dict[str, list[tuple[int, bytes]]] = {}
    room = lines.room
    for i, r in enumerate(lines.records):
        line, ack = wire.encode_room_line(r.seq, r.ts, room, r.sender, r.text, r.cid)
        everyone.append(line)
        own.setdefault(r.sender_key, []).append((i, ack))
    return everyone, wire.pack(everyone, BATCH_FRAME_BYTES), own


def _event_frames(events: SharedEvents) -> list[bytes]:
    return wire.pack(events.each("spchat", wire.encode), BATCH_FRAME_BYTES)


@implementer(IPushProducer, IChatClient)
class ChatServerProtocol(NoiseChannel):
    """One client connection; the core's ``IChatClient`` for spchat's own
    protocol (Noise frames of JSON batches).

    It registers itself as the producer of its own transport, so the transport
    tells it when the peer stops reading (send buffer full): from then on it
    counts what piles up, and cuts the connection past ``send_buffer_bytes``
    if the buffer has not drained for ``SLOW_READER_SECONDS``.
    """

    initiator = False
    log = SafeLogger()

    def __init__(self, factory: ChatServerFactory, ip: str):
        super().__init__(factory.clock)
        self.factory = factory
        self.ip = ip
        self.link = None
        self.session_key = None  # the session's name key, once logged in
        self.agent = "?"  # the client's name and version, from its hello
        self._login_deadline = None
        self._paused = False
        self._paused_since = 0.0
        self._unsent = 0
        self._malformed: deque[float] = deque()  # when, the newest MAX_MALFORMED
        # Encoded messages waiting for the end of this reactor turn: then
        # they go as one encrypted frame (or as few as fit), one write.
        self._outbox: list[bytes] = []
        self._frames: list[bytes] = []  # sealed frames; the outbox comes after them
        self._writer: SocketWriter | None = None  # from connectionMade on
        self._drained: list = []  # the core's when_drained callbacks

    # --- channel hooks -----------------------------------------------------

    def make_handshake(self):
        return noise.HandshakeState(
            noise.CHAT_PROTOCOL,
            initiator=False,
            prologue=noise.CHAT_PROLOGUE,
            s=self.factory.server_key,
        )

    def handshake_payload(self):
        return wire.ServerHello(AGENT, self.factory.core.limits.max_message_bytes)

    def handshake_payload_received(self, msg):
        if not isinstance(msg, wire.Hello):
            raise ChannelError(f"handshake failed: expected hello, got {msg.TYPE}")
        self.agent = msg.agent

    def connectionMade(self):
        super().connectionMade()
        # A peer that vanishes without a word is found by TCP keepalive; a
        # chat line must not wait for Nagle (the frames are already whole).
        if hasattr(self.transport, "setTcpKeepAlive"):
            self.transport.setTcpKeepAlive(True)
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._writer = SocketWriter(self.transport)
        # Handshake and login must both finish within the timeout, so a
        # connection cannot sit half-open holding a slot.
        self._login_deadline = self.clock.callLater(
            self.factory.handshake_timeout, self._login_timed_out
        )

    def channel_open(self):
        keys = beacon.derive_keys(self.handshake_hash)
        here = self.transport.getHost()  # where the client reached this server
        local = f"{getattr(here, 'host', '')}:{getattr(here, 'port', 0)}"
        self.link = self.factory.core.open_link(self, self.peer, keys, self.agent, local)

    def message_received(self, msg):
        try:
            self.factory.core.receive(self.link, msg)
        except Exception as e:  # a bug: one line, an answer, and carry on
            self.log.error(
                "{peer}: internal error handling {type}: {error!r}",
                peer=self.peer, type=msg.TYPE, error=e,
            )
            self.send_message(wire.Error("internal", "the server could not handle that"))

    def started(self, session, resumed: bool) -> None:
        """The core attached a session to this connection (maybe after a
        password check finished)."""
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None
        self.factory.slots.logged_in(self)  # no longer the first to go when full
        self.session_key = session.key if session is not None else None
        self.log.info(
            "{peer}: {what} as {name}",
            peer=self.peer, what="resumed" if resumed else "logged in",
            name=session.name if session is not None else "the administrator",
        )

    def malformed_message(self, error):
        now = self.clock.seconds()
        if (len(self._malformed) == MAX_MALFORMED
                and now - self._malformed[0] < MALFORMED_WINDOW_SECONDS):
            self.fail(f"more than {MAX_MALFORMED} malformed messages in "
                      f"{MALFORMED_WINDOW_SECONDS:g} seconds")
            return
        if len(self._malformed) == MAX_MALFORMED:
            self._malformed.popleft()
        self._malformed.append(now)
        self._log_fault("malformed message: {problem}", problem=str(error))
        # Named by its cid if it had a valid one, so the client can stop
        # waiting for its acknowledgement.
        self.send_message(wire.Error("malformed", wire.clip(f"malformed message: {error}"),
                                     error.cid))

    def channel_failed(self, reason):
        self._log_fault("closed: {reason}", reason=reason)

    def _log_fault(self, what: str, **fields) -> None:
        """A line about what this peer did wrong, if its address has had
        none for a while: reconnecting to do it again must not flood the log."""
        faults = self.factory.faults
        if faults.count(self.ip):
            self.log.info("{peer}: " + what + " ({count} from this address so far)",
                          peer=self.peer, count=faults[self.ip], **fields)

    def frame_received(self, size):
        if self.link is not None:
            self.factory.core.traffic(self.link, received=size)

    def frame_sent(self, size):
        if self.link is not None:
            self.factory.core.traffic(self.link, sent=size)
        if self._paused:
            self._unsent += size
            # A burst (history, a replay) may briefly pile up more than the
            # cap for a client that is reading it; one that has not taken a
            # byte for a while is not reading at all.
            if (
                self._unsent > self.factory.send_buffer_bytes
                and self.clock.seconds() - self._paused_since >= SLOW_READER_SECONDS
            ):
                self._too_slow()

    def connectionLost(self, reason=None):
        super().connectionLost(reason)
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None
        self.factory.connection_lost(self)
        if self.link is not None:
            session = self.link.session
            if session is not None:
                self.log.info("{peer}: {name} disconnected", peer=self.peer, name=session.name)
            self.factory.core.link_lost(self.link)

    def _login_timed_out(self):
        self._login_deadline = None
        self.fail(f"no login within {self.factory.handshake_timeout:g} s")

    def _too_slow(self):
        if self.closing:
            return
        self._log_fault("closed: more than {limit} bytes unsent (the client does not read)",
                        limit=self.factory.send_buffer_bytes)
        # It does not read, so a polite close would wait for nothing.
        self.closing = True
        self.transport.abortConnection()

    # --- IPushProducer: the transport's view of our peer --------------------

    def pauseProducing(self):
        # The transport says this on every write while its buffer is full.
        if not self._paused:
            self._paused = True
            self._paused_since = self.clock.seconds()

    def resumeProducing(self):
        self._paused = False
        self._unsent = 0
        self._tell_drained()

    def stopProducing(self):
        pass

    # --- IChatClient: what the core tells this client --------------------------

    def send(self, message: wire.Message) -> None:
        self.send_message(message)

    def send_shared(self, events: SharedEvents) -> None:
        self.send_frames(events.cached("spchat.frames", _event_frames, events))

    def deliver(self, lines: LineBatch) -> None:
        # Once per batch for all members; each member's own lookup is C-speed.
        made = lines.encoded.get("spchat") or lines.cached("spchat", _line_frames, lines)
        everyone, frames, own = made
        copies = own.get(self.session_key)
        if copies is None:
            self.send_frames(frames)
            return
        mine = everyone.copy()
        for i, ack in copies:
            mine[i] = ack
        self.send_encoded_many(mine)

    def when_drained(self, then) -> None:
        """After this turn's frames are written, if the transport is not
        full; else once it has sent everything it holds."""
        if not self.is_open:
            return
        self._drained.append(then)
        if not self._paused and not self._outbox and not self._frames:
            self.factory.flush_soon(self)

    def _tell_drained(self) -> None:
        if self._drained and self.is_open and not self._paused:
            waiting, self._drained = self._drained, []
            for then in waiting:
                then()

    def send_encoded_many(self, items: list[bytes]) -> None:
        """Encoded messages (a room's lines, encoded once by the core), in
        order, after what is already waiting."""
        if not self.is_open:
            return
        if max(map(len, items), default=0) > noise.MAX_PAYLOAD_LEN:
            # Limits elsewhere keep chat messages below this; anything that
            # still grows past it is a server bug, not a reason to crash.
            for data in items:
                if len(data) > noise.MAX_PAYLOAD_LEN:
                    self.log.error("{peer}: not sent: a message of {size} bytes exceeds one "
                                   "Noise message", peer=self.peer, size=len(data))
            items = [data for data in items if len(data) <= noise.MAX_PAYLOAD_LEN]
        if not self._outbox and not self._frames:
            self.factory.flush_soon(self)
        self._outbox.extend(items)

    # --- one frame per turn ----------------------------------------------------

    def send_message(self, msg: wire.Message) -> None:
        # Everything goes through the outbox, so order is kept.
        self.send_encoded_many([wire.encode(msg)])

    def send_frames(self, frames: list[bytes]) -> None:
        """Frames' plaintexts made once for many connections (a room's
        events): they go after what is already waiting, as they are."""
        if not self.is_open or not frames:
            return
        self._seal()
        if not self._frames:
            self.factory.flush_soon(self)
        self._frames.extend(frames)

    def _seal(self) -> None:
        if self._outbox:
            self._frames.extend(wire.pack(self._outbox, BATCH_FRAME_BYTES))
            self._outbox = []

    def flush(self) -> None:
        """Encrypt and write what this turn gathered, in batches of up to
        BATCH_FRAME_BYTES (a longer message goes alone)."""
        self._seal()
        frames, self._frames = self._frames, []
        if self.is_open and frames:
            data = self.seal(frames)
            self.frame_sent(len(data))
            # Else cut as a slow reader: nothing more is written.
            if self.is_open and self._writer is not None:
                self._writer.write(data)
        self._tell_drained()

    def hang_up(self) -> None:
        self.flush()  # the goodbye goes before the close
        super().hang_up()

    def close(self, code: str, text: str) -> None:
        self.send_message(wire.Bye(code, text))
        self.hang_up()

    def cut_to_make_room(self) -> None:
        """The server is full and this connection is the oldest not logged in."""
        self.closing = True
        if self.transport is not None:
            self.transport.abortConnection()


class ChatServerFactory(protocol.Factory):
    """Builds one protocol per connection; caps connections per IP and in
    all (``spchat.server.capacity``)."""

    log = SafeLogger()
    noisy = False  # no "Starting factory" lines in the server log

    def __init__(
        self,
        core: ChatCore,
        server_key: bytes,
        clock,
        handshake_timeout: float = 10.0,
        max_connections_per_ip: int = 20,
        send_buffer_bytes: int = 1 << 20,
        refusal_log_seconds: float = REFUSAL_LOG_SECONDS,
        max_connections: int = 1 << 16,
        login_reserve: int = 0,
    ):
        self.core = core
        self.server_key = server_key
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.max_connections_per_ip = max_connections_per_ip
        self.send_buffer_bytes = send_buffer_bytes
        # Our own count: twisted.protocols.policies.LimitConnectionsByPeer
        # does not work for IPv4 addresses.
        self.per_ip = PerAddress(max_connections_per_ip)
        self.refused = Refusals(clock, refusal_log_seconds)  # connections over the cap
        self.slots = Slots(max_connections, login_reserve, self._shed)
        self.full = Refusals(clock, refusal_log_seconds)  # log lines about being full
        self._session_hosts: tuple[float, set[str]] | None = None
        # Malformed messages and broken channels, for the log lines about them.
        self.faults = Refusals(clock, refusal_log_seconds)
        self._to_flush: list[ChatServerProtocol] = []
        self._flush_call = None

    def flush_soon(self, proto: ChatServerProtocol) -> None:
        """At the end of this reactor turn, every connection with something
        to send writes it, each in as few frames as fit."""
        self._to_flush.append(proto)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        protos, self._to_flush = self._to_flush, []
        for proto in protos:
            try:
                proto.flush()
            except Exception:  # one connection's bug must not stall the others
                self.log.failure("{peer}: writing failed", peer=proto.peer)
                proto._outbox, proto._frames = [], []

    def flush_now(self) -> None:
        """Write everything queued at once (the server is stopping)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if not self.per_ip.take(host):
            if self.refused.count(host):
                self.log.info(
                    "{host}: refused: more than {limit} connections from this address "
                    "({count} refused so far)",
                    host=host, limit=self.max_connections_per_ip, count=self.refused[host],
                )
            return None  # Twisted closes the connection at once
        if not self.admit(host):
            self.per_ip.give_back(host)
            return None
        proto = ChatServerProtocol(self, host)
        self.slots.take(proto)
        return proto

    def admit(self, host: str) -> bool:
        """Whether the server has a place for one more connection from
        ``host`` (of any kind: the IRC gateway's count too), making one if
        it can; says so in the log (at a bounded rate) if not.  The caller
        then ``slots.take``s its connection."""
        if self.slots.room_for(lambda: self._has_session(host)):
            return True
        if self.full.count("*"):
            self.log.info("{host}: refused: the server is full ({limit} connections, "
                          "the last {reserve} kept for addresses with a session; "
                          "{count} refused so far)", host=host, limit=self.slots.limit,
                          reserve=self.slots.reserve, count=self.full["*"])
        return False

    def _has_session(self, host: str) -> bool:
        """Whether a session (connected or waiting to be resumed, on this
        node or another: a client moving here when its node went) was last
        seen at ``host``: only then may it use the last reserved places.
        The addresses are gathered at most once a second (a flood of
        connections must not walk every session each time)."""
        now = self.clock.seconds()
        if self._session_hosts is None or now - self._session_hosts[0] >= 1.0:
            hosts = {session.address.rpartition(":")[0]
                     for session in self.core.everyone.values()}
            self._session_hosts = (now, hosts)
        return host in self._session_hosts[1]

    def _shed(self, proto: ChatServerProtocol) -> None:
        """The oldest connection not logged in goes, to make room."""
        if self.full.count("shed"):
            self.log.info("full ({limit} connections): cutting the oldest not logged in, "
                          "from {peer} ({count} cut so far)",
                          limit=self.slots.limit, peer=proto.peer, count=self.full["shed"])
        proto.cut_to_make_room()

    def connection_lost(self, proto: ChatServerProtocol) -> None:
        self.per_ip.give_back(proto.ip)
        self.slots.release(proto)
