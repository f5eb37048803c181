"""The encrypted channel: Int32 frames, one Noise message each.

A thin Twisted adapter shared by the server and the client.  It runs the Noise
handshake, then turns frames into validated ``wire`` messages and back.  The
rules for closing are the security design's:

* garbage before or during the handshake, an oversized length prefix, or a
  frame that fails authentication (altered, replayed, reordered) closes the
  connection at once;
* a well-encrypted but malformed message is the peer's bug, not an attack:
  the subclass answers it and the connection stays usable.
"""

from __future__ import annotations

from twisted.internet import error as net_error
from twisted.internet.interfaces import IDelayedCall
from twisted.protocols.basic import Int32StringReceiver

from spchat import noise, wire
from spchat.terminal import SafeLogger
from spchat.transports import IStreamTransport

# After loseConnection() a peer that never reads would keep us waiting for the
# send buffer to drain forever; abort if it has not happened by then.
CLOSE_GRACE_SECONDS = 5.0


class ChannelError(Exception):
    """The peer broke the channel's rules; the connection must close."""


class NoiseChannel(Int32StringReceiver):
    """Base protocol: subclasses set ``initiator`` and fill in the hooks."""

    MAX_LENGTH = noise.MAX_MESSAGE_LEN
    initiator = False
    log = SafeLogger()
    transport: IStreamTransport  # set by makeConnection before anything here runs

    def __init__(self, clock):
        self.clock = clock
        self._handshake: noise.HandshakeState | None = None
        self._send_cipher = None
        self._recv_cipher = None
        # Int32StringReceiver keeps delivering frames it has already buffered
        # after loseConnection(); this flag makes them go nowhere.
        self.closing = False
        self._abort_call: IDelayedCall | None = None
        self.peer = "?"
        self.handshake_hash: bytes | None = None

    # --- hooks for subclasses ----------------------------------------------

    def make_handshake(self) -> noise.HandshakeState:
        raise NotImplementedError

    def handshake_payload(self) -> wire.Message:
        """The payload this side puts in its handshake message."""
        raise NotImplementedError

    def handshake_payload_received(self, msg: wire.Message) -> None:
        """The peer's handshake payload; raise ChannelError to refuse."""

    def channel_open(self) -> None:
        """The handshake is complete; messages may flow."""

    def message_received(self, msg: wire.Message) -> None:
        raise NotImplementedError

    def malformed_message(self, error: wire.WireError) -> None:
        """An authentic frame whose content is not a valid message
        (``error.cid``: the message's id, if it had a valid one)."""

    def frame_received(self, size: int) -> None:
        """An encrypted frame of ``size`` bytes (with its prefix) arrived."""

    def frame_sent(self, size: int) -> None:
        """An encrypted frame of ``size`` bytes (with its prefix) was written."""

    def channel_failed(self, reason: str) -> None:
        """The channel is being closed because the peer broke its rules."""
        self.log.info("{peer}: closed: {reason}", peer=self.peer, reason=reason)

    # --- Twisted side ------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._send_cipher is not None and not self.closing

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self._handshake = self.make_handshake()
        if self.initiator:
            self._write_handshake()

    def connectionLost(self, reason=net_error.ConnectionDone):
        self.closing = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None

    def stringReceived(self, frame: bytes) -> None:
        if self.closing:
            return
        if self._recv_cipher is None:
            self._handshake_frame(frame)
            return
        self.frame_received(len(frame) + 4)
        try:
            plaintext = self._recv_cipher.decrypt_with_ad(b"", frame)
        except noise.NoiseError:
            self.fail("a frame failed authentication (altered, replayed or reordered)")
            return
        try:
            items = wire.decode_frame(plaintext)
        except wire.WireError as e:
            self.malformed_message(e)
            return
        for item in items:
            if self.closing:
                return  # as for separate frames: nothing after a close
            if isinstance(item, wire.WireError):
                self.malformed_message(item)
            else:
                self.message_received(item)

    def lengthLimitExceeded(self, length: int) -> None:
        self.fail(f"frame of {length} bytes exceeds the limit of {self.MAX_LENGTH}")

    # --- handshake ---------------------------------------------------------

    def _handshake_frame(self, frame: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None  # stringReceived sends frames here only then
        try:
            payload = handshake.read_message(frame)
        except noise.NoiseError as e:
            self.fail(f"handshake failed: {e}")
            return
        try:
            self.handshake_payload_received(wire.decode(payload))
            refusal = None
        except (wire.WireError, ChannelError) as e:
            refusal = f"handshake failed: {e}" if isinstance(e, wire.WireError) else str(e)
            # Garbage closes at once; a message with a field wrong (a
            # hello whose agent has a control character) is told why: the
            # responder still finishes the handshake and says it in a bye.
            garbage = isinstance(e, wire.WireError) and e.kind is None
            if self.initiator or handshake.complete or garbage:
                self.fail(refusal)
                return
        if not handshake.complete:
            self._write_handshake(refusal)
        else:
            self._check_complete()

    def _write_handshake(self, refusal: str | None = None) -> None:
        payload = wire.encode(self.handshake_payload())
        assert self._handshake is not None, "made in connectionMade"
        self.sendString(self._handshake.write_message(payload))
        self._check_complete(refusal)

    def _check_complete(self, refusal: str | None = None) -> None:
        if self._handshake is not None and self._handshake.complete:
            self._send_cipher, self._recv_cipher = self._handshake.split()
            # Both ends know it and nobody else does: the presence beacon
            # derives its keys from it.
            self.handshake_hash = self._handshake.handshake_hash
            self._handshake = None
            if refusal is not None:
                self.fail(refusal)
            else:
                self.channel_open()

    # --- sending and closing -----------------------------------------------

    def send_message(self, msg: wire.Message) -> None:
        if not self.is_open:
            return
        plaintext = wire.encode(msg)
        if len(plaintext) > noise.MAX_PAYLOAD_LEN:
            # Limits elsewhere keep chat messages below this; anything that
            # still grows past it is a server bug, not a reason to crash.
            self.log.error(
                "{peer}: not sent: {type} message of {size} bytes exceeds one Noise message",
                peer=self.peer, type=msg.TYPE, size=len(plaintext),
            )
            return
        frame = self._send_cipher.encrypt_with_ad(b"", plaintext)
        self.sendString(frame)
        self.frame_sent(len(frame) + 4)

    def seal(self, plaintexts: list[bytes]) -> bytes:
        """Frames' plaintexts encrypted and framed, in order, as one string
        of bytes to write (the channel must be open)."""
        encrypt = self._send_cipher.encrypt_with_ad
        out = []
        for plaintext in plaintexts:
            frame = encrypt(b"", plaintext)
            out.append(len(frame).to_bytes(4, "big") + frame)
        return b"".join(out)  # one frame: the same object, not a copy

    def hang_up(self) -> None:
        """Close after what is already written has been sent."""
        if self.closing:
            return
        self.closing = True
        self.transport.loseConnection()
        self._abort_call = self.clock.callLater(
            CLOSE_GRACE_SECONDS, self.transport.abortConnection
        )

    def fail(self, reason: str) -> None:
        """The peer broke the rules: drop the connection now."""
        if self.closing:
            return
        self.channel_failed(reason)
        if self._send_cipher is None:
            self.closing = True
            self.transport.abortConnection()
            return
        # Our sending direction is still intact: tell the peer why, then go.
        self.send_message(wire.Bye("protocol_error", reason))
        self.hang_up()
