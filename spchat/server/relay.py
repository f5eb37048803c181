"""The file-sharing relay: two peers that cannot reach each other both
connect here, and the relay pipes bytes between them.

The peers run their own Noise handshake through it, so it only ever sees
ciphertext and never parses what it carries.  Each connection starts with
one ASCII line::

    spchat-relay <transfer> <side>\\n

where ``<transfer>`` names a transfer the chat server issued a ticket for
(its relay name, an HMAC of the transfer id under the transfer's key, see
``spchat.p2p.tags``: the id itself never crosses in clear) and ``<side>`` is ``fetch`` (the downloader) or ``serve`` (the holder).
The first to arrive waits, not read any further, for the other side; then
the ticket is spent and the two are spliced.

Memory stays bounded whatever the peers do: each connection is the
streaming producer of the other's transport, so a side that does not read
pauses the reading of the side that writes to it.  Each direction is also
held to ``max_bps`` bytes a second (a token bucket with a short burst).

Nobody can hold the relay's slots for long: one address has at most
``max_per_ip`` connections; a connection must send its header within
``header_timeout``; when ``max_relays`` connections are still sending
theirs, the oldest of them gives way to the newest (a real peer sends its
header at once); and a spliced relay that carries nothing either way for
``idle_timeout`` is cut.
"""

from __future__ import annotations

import re

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from spchat.server.refusals import REFUSAL_LOG_SECONDS, PerAddress, ThrottledLog
from spchat.transports import IStreamTransport

MAGIC = b"spchat-relay"
SIDES = ("fetch", "serve")
MAX_HEADER_BYTES = 128
HEADER_TIMEOUT = 3.0
PAIR_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
MAX_PER_IP = 8
# A closing side whose peer does not take the last bytes is cut after this.
CLOSE_TIMEOUT = 30.0
MAX_RELAYS = 200
# The rate cap lets this many seconds' worth of bytes through at once.
BURST_SECONDS = 0.1
# A debt paid in less than this is let go: the clock's rounding can leave
# a sliver of one after the wait that paid it, and a timer for a sliver
# would not move the clock on (a fake clock's would fire for ever).
MIN_WAIT = 0.001
TRANSFER = re.compile(rb"[\x21-\x7e]+")

# Why a connection's reading is paused; it reads only when none holds.
WAITING = "waiting"  # for the other side
PEER = "peer"  # the other side's send buffer is full
CAP = "cap"  # over the rate cap


class ByteBucket:
    """``rate`` bytes a second, at most ``burst`` saved up; may go into debt."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, now: float):
        self.rate = float(rate)
        self.burst = max(1.0, self.rate * BURST_SECONDS)
        self.tokens, self.stamp = self.burst, now

    def spend(self, count: int, now: float) -> float:
        """Take ``count`` bytes; return the seconds until the debt is paid (0: none)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate) - count
        self.stamp = now
        wait = -self.tokens / self.rate
        return wait if wait >= MIN_WAIT else 0.0


class Relay:
    """One transfer: its two ends, and what went through."""

    def __init__(self, transfer: str):
        self.transfer = transfer
        self.ends: dict[str, RelayProtocol] = {}
        self.spliced_at: float | None = None
        self.last_active = 0.0  # when a byte last went through, either way
        self.idle_call: IDelayedCall | None = None
        self.sent = {side: 0 for side in SIDES}  # bytes from each side to the other


@implementer(IPushProducer)
class RelayProtocol(protocol.Protocol):
    """One end of a relay.  Registered as the producer on the other end's
    transport, which pauses it when its send buffer is full."""

    transport: IStreamTransport  # set by makeConnection before anything here runs

    def __init__(self, factory: RelayFactory, host: str):
        self.factory = factory
        self.host = host
        self.relay: Relay | None = None
        self.side: str | None = None
        self.peer: RelayProtocol | None = None
        self.bucket: ByteBucket | None = None
        self.header = b""  # before pairing: the header, then what came after it
        self.holds: set[str] = set()
        self.timer: IDelayedCall | None = None  # header or pairing timeout, or the close's abort
        self.cap_timer: IDelayedCall | None = None
        self.in_header = False  # in the factory's ``in_header``
        self.gone = False

    # --- reading paused for several reasons at once ------------------------

    def hold(self, reason: str) -> None:
        if not self.holds and not self.gone:
            self.transport.pauseProducing()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self.holds:
            self.holds.discard(reason)
            if not self.holds and not self.gone:
                self.transport.resumeProducing()

    def pauseProducing(self):
        self.hold(PEER)

    def resumeProducing(self):
        self.release(PEER)

    def stopProducing(self):
        pass  # the other end's connectionLost closes this one

    # --- connection --------------------------------------------------------

    def connectionMade(self):
        factory = self.factory
        if len(factory.in_header) >= factory.max_relays:
            factory.shed_oldest_header()
        factory.in_header[self] = None
        self.in_header = True
        self.timer = factory.clock.callLater(factory.header_timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes):
        if self.gone:
            return
        if self.peer is not None:
            self.forward(data)
            return
        self.header += data  # after the header line: kept until paired
        if self.in_header:
            end = self.header.find(b"\n", 0, MAX_HEADER_BYTES)
            if end >= 0:
                line, self.header = self.header[:end], self.header[end + 1:]
                self.factory.arrived(self, line)
            elif len(self.header) >= MAX_HEADER_BYTES:
                self.close()

    def forward(self, data: bytes) -> None:
        relay, factory, peer = self.relay, self.factory, self.peer
        assert relay is not None and self.side is not None and peer is not None, "spliced"
        relay.sent[self.side] += len(data)
        factory.relayed_bytes += len(data)
        peer.transport.write(data)
        relay.last_active = now = factory.clock.seconds()
        self._pace(len(data), now)

    def _pace(self, count: int, now: float) -> None:
        """Over the rate cap: stop reading until the debt is paid."""
        assert self.bucket is not None, "given at the splice"
        wait = self.bucket.spend(count, now)
        if wait > 0:
            self.hold(CAP)
            if self.cap_timer is None:
                self.cap_timer = self.factory.clock.callLater(wait, self._cap_over)
        else:
            self.release(CAP)

    def _cap_over(self) -> None:
        self.cap_timer = None
        self._pace(0, self.factory.clock.seconds())

    def close(self) -> None:
        """Close once what is queued for this end is written (cut if it never is)."""
        if self.gone or self.transport.disconnecting:
            return
        self.transport.loseConnection()
        self._cancel_timer()
        self.timer = self.factory.clock.callLater(
            self.factory.close_timeout, self.transport.abortConnection)

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def connectionLost(self, reason=protocol.connectionDone):
        self.gone = True
        self._cancel_timer()
        if self.cap_timer is not None:
            self.cap_timer.cancel()
            self.cap_timer = None
        self.factory.left(self)


class RelayFactory(protocol.Factory):
    """Pairs the two ends of each transfer and splices them.

    ``allowed(transfer)`` says whether the server issued a ticket for this
    transfer (and it has not expired); ``used(transfer)`` spends it once
    both ends are here.  ``max_bps`` caps each direction of one transfer.
    """

    log = Logger()
    protocol = RelayProtocol
    noisy = False  # no "Starting factory" lines in the server log

    def __init__(self, clock, allowed, used, max_bps: int, *,
                 header_timeout: float = HEADER_TIMEOUT, pair_timeout: float = PAIR_TIMEOUT,
                 close_timeout: float = CLOSE_TIMEOUT, max_relays: int = MAX_RELAYS,
                 max_per_ip: int = MAX_PER_IP, idle_timeout: float = IDLE_TIMEOUT,
                 refusal_log_seconds: float = REFUSAL_LOG_SECONDS):
        if max_bps <= 0:
            raise ValueError("max_bps must be positive")
        self.clock = clock
        self.allowed = allowed
        self.used = used
        self.max_bps = max_bps
        self.header_timeout = header_timeout
        self.pair_timeout = pair_timeout
        self.close_timeout = close_timeout
        self.max_relays = max_relays
        self.max_per_ip = max_per_ip
        self.idle_timeout = idle_timeout
        self.relays: dict[str, Relay] = {}  # waiting or spliced, by transfer
        # Connections still sending their header, oldest first.
        self.in_header: dict[RelayProtocol, None] = {}
        self.per_ip = PerAddress(max_per_ip)
        self.refusals = ThrottledLog(self.log, clock, refusal_log_seconds)
        self.relayed_bytes = 0
        self.protocols: set[RelayProtocol] = set()

    @property
    def unpaired(self) -> int:
        return len(self.in_header)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if not self.per_ip.take(host):
            self.refusals(
                f"per-ip {host}", "relay: {host}: refused: more than {limit} connections "
                "from this address ({count} refused so far)", host=host, limit=self.max_per_ip)
            return None  # Twisted closes the connection at once
        proto = self.protocol(self, host)
        self.protocols.add(proto)
        return proto

    def shed_oldest_header(self) -> None:
        """Full of connections that have not sent their header: the one
        that has waited longest goes (a real peer's header comes at once)."""
        oldest = next(iter(self.in_header))
        self._header_done(oldest)
        self.refusals(
            f"shed {oldest.host}", "relay: {host}: cut before its header: {limit} connections "
            "were waiting for theirs ({count} so far)", host=oldest.host, limit=self.max_relays)
        oldest.transport.abortConnection()

    def _header_done(self, end: RelayProtocol) -> None:
        if end.in_header:
            end.in_header = False
            del self.in_header[end]

    def arrived(self, end: RelayProtocol, line: bytes) -> None:
        """``end`` sent its header: wait for the other side, or splice."""
        self._header_done(end)
        end._cancel_timer()
        parts = line.split(b" ")
        if (len(parts) != 3 or parts[0] != MAGIC or not TRANSFER.fullmatch(parts[1])
                or parts[2].decode("ascii", "replace") not in SIDES):
            end.close()
            return
        transfer, side = parts[1].decode("ascii"), parts[2].decode("ascii")
        relay = self.relays.get(transfer)
        # A spliced relay takes no one else, even with a new ticket.
        taken = relay is not None and (side in relay.ends or relay.spliced_at is not None)
        if taken or not self.allowed(transfer):
            end.close()
            return
        if relay is None:
            if len(self.relays) >= self.max_relays:
                end.close()
                return
            relay = self.relays[transfer] = Relay(transfer)
        end.relay, end.side = relay, side
        relay.ends[side] = end
        end.hold(WAITING)
        if len(relay.ends) == 1:
            end.timer = self.clock.callLater(self.pair_timeout, self._unpaired_too_long, end)
        else:
            self.splice(relay)

    def splice(self, relay: Relay) -> None:
        self.used(relay.transfer)
        relay.spliced_at = relay.last_active = now = self.clock.seconds()
        relay.idle_call = self.clock.callLater(self.idle_timeout, self._idle_check, relay)
        fetch, serve = relay.ends["fetch"], relay.ends["serve"]
        for end, other in ((fetch, serve), (serve, fetch)):
            end._cancel_timer()
            end.peer = other
            end.bucket = ByteBucket(self.max_bps, now)
            other.transport.registerProducer(end, True)
        for end in (fetch, serve):
            early, end.header = end.header, b""
            if early:
                end.forward(early)
        for end in (fetch, serve):
            end.release(WAITING)

    def _idle_check(self, relay: Relay) -> None:
        relay.idle_call = None
        idle = self.clock.seconds() - relay.last_active
        if idle < self.idle_timeout:
            relay.idle_call = self.clock.callLater(self.idle_timeout - idle,
                                                   self._idle_check, relay)
            return
        self.log.info("relay {transfer}: cut after {seconds:.0f} s without a byte either way",
                      transfer=relay.transfer[:8], seconds=idle)
        # Nothing moved: whatever is queued would not move either.
        for end in list(relay.ends.values()):
            end.transport.abortConnection()

    def _unpaired_too_long(self, end: RelayProtocol) -> None:
        end.timer = None
        self._detach(end)  # its side is free again for as long as the ticket lasts
        end.close()

    def _detach(self, end: RelayProtocol) -> None:
        relay = end.relay
        assert relay is not None and end.side is not None, "detached once paired with its relay"
        if relay.ends.get(end.side) is end:
            del relay.ends[end.side]
        if not relay.ends and self.relays.get(relay.transfer) is relay:
            del self.relays[relay.transfer]
            if relay.idle_call is not None and relay.idle_call.active():
                relay.idle_call.cancel()
            relay.idle_call = None
            if relay.spliced_at is not None:
                self.log.info(
                    "relay {transfer}: {to_fetch} bytes to fetch, {to_serve} bytes to serve, "
                    "{seconds:.1f} s", transfer=relay.transfer[:8], to_fetch=relay.sent["serve"],
                    to_serve=relay.sent["fetch"], seconds=self.clock.seconds() - relay.spliced_at)

    def left(self, end: RelayProtocol) -> None:
        """``end``'s connection is gone: close its peer, forget the relay when both are."""
        self.protocols.discard(end)
        self.per_ip.give_back(end.host)
        self._header_done(end)
        if end.relay is None:
            return
        other = end.peer
        if other is not None:
            end.peer = other.peer = None
            if not other.gone:
                other.transport.unregisterProducer()
                other.close()
        self._detach(end)

    def close_all(self) -> None:
        """The server stops: cut every relay connection."""
        for proto in list(self.protocols):
            proto.transport.abortConnection()
