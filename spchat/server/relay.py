"""The file-sharing relay: two peers that cannot reach each other both
connect here, and the relay pipes bytes between them.

The peers run their own Noise handshake through it, so it only ever sees
ciphertext and never parses what it carries.  Each connection starts with
one ASCII line::

    spchat-relay <transfer> <side>\\n

where ``<transfer>`` is a transfer id the chat server issued a ticket for
and ``<side>`` is ``fetch`` (the downloader) or ``serve`` (the holder).
The first to arrive waits, not read any further, for the other side; then
the ticket is spent and the two are spliced.

Memory stays bounded whatever the peers do: each connection is the
streaming producer of the other's transport, so a side that does not read
pauses the reading of the side that writes to it.  Each direction is also
held to ``max_bps`` bytes a second (a token bucket with a short burst).
"""

from __future__ import annotations

import re

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

MAGIC = b"spchat-relay"
SIDES = ("fetch", "serve")
MAX_HEADER_BYTES = 128
HEADER_TIMEOUT = 10.0
PAIR_TIMEOUT = 30.0
# A closing side whose peer does not take the last bytes is cut after this.
CLOSE_TIMEOUT = 30.0
MAX_RELAYS = 200
# The rate cap lets this many seconds' worth of bytes through at once.
BURST_SECONDS = 0.1
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
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class Relay:
    """One transfer: its two ends, and what went through."""

    def __init__(self, transfer: str):
        self.transfer = transfer
        self.ends: dict[str, RelayProtocol] = {}
        self.spliced_at: float | None = None
        self.sent = {side: 0 for side in SIDES}  # bytes from each side to the other


@implementer(IPushProducer)
class RelayProtocol(protocol.Protocol):
    """One end of a relay.  Registered as the producer on the other end's
    transport, which pauses it when its send buffer is full."""

    def __init__(self, factory: RelayFactory):
        self.factory = factory
        self.relay: Relay | None = None
        self.side: str | None = None
        self.peer: RelayProtocol | None = None
        self.bucket: ByteBucket | None = None
        self.header = b""  # before pairing: the header, then what came after it
        self.holds: set[str] = set()
        self.timer = None  # header or pairing timeout, or the close's abort
        self.cap_timer = None
        self.in_header = False  # counted in the factory's ``unpaired``
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
        if factory.unpaired >= factory.max_relays:
            self.transport.abortConnection()
            return
        factory.unpaired += 1
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
        relay, factory = self.relay, self.factory
        relay.sent[self.side] += len(data)
        factory.relayed_bytes += len(data)
        self.peer.transport.write(data)
        self._pace(len(data))

    def _pace(self, count: int) -> None:
        """Over the rate cap: stop reading until the debt is paid."""
        wait = self.bucket.spend(count, self.factory.clock.seconds())
        if wait > 0:
            self.hold(CAP)
            if self.cap_timer is None:
                self.cap_timer = self.factory.clock.callLater(wait, self._cap_over)
        else:
            self.release(CAP)

    def _cap_over(self) -> None:
        self.cap_timer = None
        self._pace(0)

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
                 close_timeout: float = CLOSE_TIMEOUT, max_relays: int = MAX_RELAYS):
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
        self.relays: dict[str, Relay] = {}  # waiting or spliced, by transfer
        self.unpaired = 0  # connections still sending their header
        self.relayed_bytes = 0
        self.protocols: set[RelayProtocol] = set()

    def buildProtocol(self, addr):
        proto = self.protocol(self)
        self.protocols.add(proto)
        return proto

    def arrived(self, end: RelayProtocol, line: bytes) -> None:
        """``end`` sent its header: wait for the other side, or splice."""
        self.unpaired -= 1
        end.in_header = False
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
        relay.spliced_at = now = self.clock.seconds()
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

    def _unpaired_too_long(self, end: RelayProtocol) -> None:
        end.timer = None
        self._detach(end)  # its side is free again for as long as the ticket lasts
        end.close()

    def _detach(self, end: RelayProtocol) -> None:
        relay = end.relay
        if relay.ends.get(end.side) is end:
            del relay.ends[end.side]
        if not relay.ends and self.relays.get(relay.transfer) is relay:
            del self.relays[relay.transfer]
            if relay.spliced_at is not None:
                self.log.info(
                    "relay {transfer}: {to_fetch} bytes to fetch, {to_serve} bytes to serve, "
                    "{seconds:.1f} s", transfer=relay.transfer[:8], to_fetch=relay.sent["serve"],
                    to_serve=relay.sent["fetch"], seconds=self.clock.seconds() - relay.spliced_at)

    def left(self, end: RelayProtocol) -> None:
        """``end``'s connection is gone: close its peer, forget the relay when both are."""
        self.protocols.discard(end)
        if end.in_header:
            end.in_header = False
            self.unpaired -= 1
        if end.relay is None:
            return
        other = end.peer
        if other is not None:
            end.peer = other.peer = None
            if not other.gone:
                other.transport.unregisterProducer()
                other.close()
        self._detach(end)

    def buffered_bytes(self) -> int:
        """Bytes the relay holds in its transports' send buffers, not yet sent."""
        # A Twisted TCP transport's buffer (its own attributes): dataBuffer
        # from offset, then the pieces written since the last send.
        return sum(len(p.transport.dataBuffer) - p.transport.offset + p.transport._tempDataLen
                   for p in self.protocols)

    def close_all(self) -> None:
        """The server stops: cut every relay connection."""
        for proto in list(self.protocols):
            proto.transport.abortConnection()
