"""One encrypted connection between two peers for one transfer.

The server gives both peers the same fresh 32-byte key and a transfer id
over their encrypted chat channels.  The downloader (initiator) opens with
the peer-wire version and a lookup tag, an HMAC of the transfer id under
the key: the holder finds the introduction (and so the key) by it, while a
network observer sees neither the id nor anything that links the
connection to it.  Then both run Noise ``NNpsk0`` with that key: only the
two peers the server introduced can complete it, and the transfer id is in
the prologue, so a changed id fails the handshake.  After it, every Int32
frame is one encrypted ``peerwire`` message.

The connection is the same over a direct TCP connection and through the
server's relay (which only pipes bytes): there the downloader first sends
the relay's header line, and so does the holder, who already knows the
transfer; the line names it by another HMAC under the key (``tags``).  Who is initiator follows the role, not who dialled.
"""

from __future__ import annotations

import hmac
import re

from twisted.internet import defer
from twisted.internet import error as net_error
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

from spchat import noise
from spchat.p2p import peerwire
from spchat.p2p.manifest import Manifest
from spchat.p2p.tags import TAG_BYTES, lookup_tag, relay_name
from spchat.server.refusals import PerAddress, ThrottledLog
from spchat.terminal import SafeLogger
from spchat.transports import IStreamTransport

log = SafeLogger()

PROTOCOL = "Noise_NNpsk0_25519_AESGCM_SHA256"
# 2: the opening frame carries a lookup tag, not the transfer id.
VERSION = b"spchat-p2p/2"
PROLOGUE = VERSION + b" "
# What a spchat-p2p/1 downloader opened with: the transfer id in clear.
OLD_OPENING = re.compile(rb"[0-9a-f]{32}")
# The holder waits this long to hear of a transfer from the server (the two
# messages travel on different connections and may cross).
INTRODUCTION_WAIT = 5.0
HANDSHAKE_SECONDS = 10.0
# Connections a sharer takes from one address (CHAT_P2P_MAX_PER_IP).
MAX_PEERS_PER_IP = 4


def opening(transfer: str, key: bytes) -> bytes:
    """The downloader's first frame."""
    return PROLOGUE + lookup_tag(transfer, key)


def relay_header(transfer: str, key: bytes, side: str) -> bytes:
    """The line that opens a connection to the relay (which knows the
    transfer by its relay name, not its id)."""
    return f"spchat-relay {relay_name(transfer, key)} {side}\n".encode("ascii")


@implementer(IPushProducer)  # of our reads, to the transport (see hold)
class PeerConnection(Int32StringReceiver):
    """``handler`` gets ``peer_open(conn)``, ``peer_message(conn, msg)`` and
    ``peer_closed(conn, reason)``.  The responder learns its key and handler
    from ``introductions.wait(transfer)`` (a Deferred of (key, handler, name)
    or None)."""

    MAX_LENGTH = noise.MAX_MESSAGE_LEN
    transport: IStreamTransport  # set by makeConnection before anything here runs

    def __init__(self, clock, initiator: bool, transfer: str, key: bytes | None = None,
                 handler=None, name: str = "?", introductions=None, preamble: bytes = b"",
                 path: str = "direct", on_lost=lambda: None):
        self.on_lost = on_lost  # whoever counts it
        self.clock = clock
        self.initiator = initiator
        self.transfer = transfer
        self.key = key
        self.handler = handler
        self.name = name  # the peer's chat name
        self.path = path  # "direct" or "relay"
        self.introductions = introductions
        self.preamble = preamble
        self.manifest: Manifest | None = None  # the handler's, from the handshake on
        self._hs: noise.HandshakeState | None = None
        self._send: noise.CipherState | None = None
        self._recv: noise.CipherState | None = None
        self._timer: IDelayedCall | None = None
        self.closing = False
        self._holds: set[str] = set()  # why we are not reading (see hold)
        self.reason = ""
        self.opened: defer.Deferred = defer.Deferred()  # fires once the handshake is done

    # --- set-up ---------------------------------------------------------------

    def connectionMade(self):
        self._timer = self.clock.callLater(HANDSHAKE_SECONDS, self.fail,
                                           "no handshake within the time allowed")
        if self.preamble:
            self.transport.write(self.preamble)
        if self.initiator:
            self.sendString(opening(self.transfer, self.key))
            hs = self._start_handshake()
            self.sendString(hs.write_message())

    def _start_handshake(self) -> noise.HandshakeState:
        assert self.key is not None, "the key is known before the handshake starts"
        self.manifest = self.handler.manifest
        self._hs = noise.HandshakeState(
            PROTOCOL, self.initiator, prologue=PROLOGUE + self.transfer.encode("ascii"),
            psks=[self.key])
        return self._hs

    def stringReceived(self, frame: bytes) -> None:
        if self.closing:
            return
        if self._recv is not None:
            try:
                plaintext = self._recv.decrypt_with_ad(b"", frame)
            except noise.NoiseError:
                self.fail("a frame failed authentication")
                return
            assert self.manifest is not None, "taken when the handshake started"
            try:
                msg = peerwire.decode(plaintext, self.manifest)
            except peerwire.PeerWireError as e:
                self.fail(str(e))
                return
            self.handler.peer_message(self, msg)
        elif self._hs is None and not self.initiator:
            self._introduced(frame)
        else:
            self._handshake_frame(frame)

    def _introduced(self, frame: bytes) -> None:
        """The responder's first frame: which transfer this is."""
        if OLD_OPENING.fullmatch(frame):
            self.fail(f"the peer speaks spchat-p2p/1, this one {VERSION.decode()}: "
                      f"one of the two spchat installs must be upgraded")
            return
        if not frame.startswith(PROLOGUE) or len(frame) != len(PROLOGUE) + TAG_BYTES:
            self.fail(f"not a {VERSION.decode()} opening")
            return
        tag = frame[len(PROLOGUE):]
        if self.key is not None:  # through the relay: known already
            if not hmac.compare_digest(tag, lookup_tag(self.transfer, self.key)):
                self.fail("not a transfer this peer knows")
                return
            self._start_handshake()
            return
        known = self.introductions.take(tag)
        if known is not None:
            self._known(known)
            return
        # The handshake waits for the key, and so do frames already in.
        self.hold("introduction")
        self.introductions.wait(tag).addCallback(self._known_later)

    def _known(self, known) -> None:
        self.transfer, self.key, self.handler, self.name = known
        self._start_handshake()

    def _known_later(self, known) -> None:
        if self.closing:
            return
        if known is None:
            self.fail("the server did not introduce this peer")
            return
        self._known(known)
        self.release("introduction")  # and go on with the frames already in

    def _handshake_frame(self, frame: bytes) -> None:
        hs = self._hs
        assert hs is not None, "started on connecting, or on the peer's opening"
        try:
            hs.read_message(frame)
            if not hs.complete:
                self.sendString(hs.write_message())
        except noise.NoiseError as e:
            self.fail(f"handshake failed (wrong key?): {e}")
            return
        self._send, self._recv = hs.split()
        self._hs = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        # Back-pressure: while our sends wait (a peer that does not read),
        # stop reading its requests.
        self.transport.registerProducer(self, True)
        self.handler.peer_open(self)
        self.opened.callback(self)

    # --- not reading: while our writes are stuck, or the disk is behind -------
    # The base class's pause also stops (and restarts) the loop over frames
    # already received, not only the socket: one read may hold thousands.

    def hold(self, why: str) -> None:
        """Read nothing more from the peer until ``release(why)`` (and every
        other hold is released)."""
        if not self._holds and not self.closing:
            super().pauseProducing()
        self._holds.add(why)

    def release(self, why: str) -> None:
        if why not in self._holds:
            return
        self._holds.discard(why)
        if not self._holds and not self.closing:
            super().resumeProducing()

    def pauseProducing(self):  # the transport: our sends to the peer are stuck
        self.hold("sending")

    def resumeProducing(self):
        self.release("sending")

    def stopProducing(self):
        pass

    # --- sending and closing ----------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._send is not None and not self.closing

    def send(self, msg) -> None:
        if self.is_open and self._send is not None and self.manifest is not None:
            plain = peerwire.encode(msg, len(self.manifest.pieces))
            self.sendString(self._send.encrypt_with_ad(b"", plain))

    def lengthLimitExceeded(self, length: int) -> None:
        self.fail(f"a frame of {length} bytes is over the limit")

    def fail(self, reason: str) -> None:
        """Close at once: the peer broke the rules, or is of no use."""
        if self.closing:
            return
        self.reason = reason
        self.closing = True
        self.transport.abortConnection()

    def close(self, reason: str) -> None:
        """Close after what is written has gone."""
        if self.closing:
            return
        self.reason = reason
        self.closing = True
        self.transport.loseConnection()

    def connectionLost(self, reason=net_error.ConnectionDone):
        self.closing = True
        self.on_lost()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self.reason and self.initiator and self._hs is not None:
            # What a holder that refuses our opening does, old ones included.
            self.reason = (f"the peer hung up before the handshake ended (it was not told "
                           f"of this transfer, or its spchat is older than {VERSION.decode()})")
        if not self.reason:
            self.reason = "connection closed" if reason.check(net_error.ConnectionDone) \
                else f"connection lost ({reason.getErrorMessage()})"
        if not self.opened.called:
            self.opened.errback(PeerFailed(self.reason))
        elif self.handler is not None:
            self.handler.peer_closed(self, self.reason)


class PeerFailed(Exception):
    """The peer connection did not open: refused, timed out, wrong key."""


class Introductions:
    """The holder's table of transfers the server announced, found by their
    lookup tag: tag -> (transfer id, key, handler, downloader's name), each
    usable once, for a while."""

    TTL = 120.0

    def __init__(self, clock, wait: float = INTRODUCTION_WAIT):
        self.clock = clock
        self.wait_seconds = wait
        self._known: dict[bytes, tuple] = {}
        self._waiting: dict[bytes, list[defer.Deferred]] = {}

    def add(self, transfer: str, key: bytes, handler, name: str) -> None:
        tag = lookup_tag(transfer, key)
        self._known[tag] = (transfer, key, handler, name)
        self.clock.callLater(self.TTL, self._known.pop, tag, None)
        for d in self._waiting.pop(tag, []):
            if not d.called:
                d.callback(self._known.pop(tag, None))

    def take(self, tag: bytes):
        return self._known.pop(tag, None)

    def wait(self, tag: bytes) -> defer.Deferred:
        """The introduction, now or when it arrives; None after
        ``wait_seconds`` without it."""
        known = self.take(tag)
        if known is not None:
            return defer.succeed(known)
        d: defer.Deferred = defer.Deferred()
        waiting = self._waiting.setdefault(tag, [])
        waiting.append(d)

        def give_up():
            if not d.called:
                waiting.remove(d)
                if not waiting:
                    self._waiting.pop(tag, None)
                d.callback(None)

        self.clock.callLater(self.wait_seconds, give_up)
        return d


class ListenFactory(Factory):
    """Peers connecting to us: we hold a file they want.  One address may
    hold at most ``max_per_ip`` connections (the others are closed at once)."""

    noisy = False

    def __init__(self, clock, introductions: Introductions,
                 max_per_ip: int = MAX_PEERS_PER_IP):
        self.clock = clock
        self.introductions = introductions
        self.max_per_ip = max_per_ip
        self.per_ip = PerAddress(max_per_ip)
        self.refused = ThrottledLog(log, clock)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if not self.per_ip.take(host):
            self.refused(host, "{host}: peer refused: more than {limit} connections from "
                         "this address ({count} refused so far)",
                         host=host, limit=self.max_per_ip)
            return None
        conn = PeerConnection(self.clock, initiator=False, transfer="",
                              introductions=self.introductions,
                              on_lost=lambda: self.per_ip.give_back(host))
        conn.opened.addErrback(lambda _: None)  # a failed caller: nothing to tell
        return conn


class DialFactory(ClientFactory):
    """One outgoing peer connection; ``result`` fires with it once its
    handshake is done, or fails with PeerFailed."""

    def __init__(self, make, where: str):
        self.make = make
        self.where = where
        self.result: defer.Deferred = defer.Deferred()

    def buildProtocol(self, addr):
        conn = self.make()
        conn.opened.addBoth(self._settle)
        return conn

    def _settle(self, outcome):
        if not self.result.called:
            if isinstance(outcome, PeerConnection):
                self.result.callback(outcome)
            else:
                self.result.errback(outcome)
        return None

    def clientConnectionFailed(self, connector, reason):
        if not self.result.called:
            self.result.errback(PeerFailed(f"cannot connect to {self.where}: "
                                           f"{reason.getErrorMessage()}"))


def dial(reactor, host: str, port: int, make, timeout: float) -> defer.Deferred:
    """Connect and finish the handshake: a Deferred of the open
    PeerConnection, failing with PeerFailed.  (A handshake that never ends
    is cut by the connection's own timer.)"""
    factory = DialFactory(make, f"{host}:{port}")
    reactor.connectTCP(host, port, factory, timeout=timeout)
    return factory.result
