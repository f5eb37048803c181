"""The client's side of the channel: handshake with pinning, then messages."""

from __future__ import annotations

from twisted.logger import Logger

import spchat
from spchat import noise, wire
from spchat.channel import ChannelError, NoiseChannel

AGENT = f"spchat-client/{spchat.__version__}"


class ChatClientProtocol(NoiseChannel):
    """Initiator of the Noise NX handshake.

    ``verify_server(fingerprint)`` is called with the server's key fingerprint
    before anything is sent encrypted; it raises to refuse the server.
    ``listener`` gets ``channel_open(proto)``, ``message_received(msg)`` and
    ``connection_lost(reason)``.
    """

    initiator = True
    log = Logger()

    def __init__(self, clock, verify_server, listener):
        super().__init__(clock)
        self.verify_server = verify_server
        self.listener = listener
        self.server_hello: wire.ServerHello | None = None
        self.server_fingerprint: str | None = None
        self.failure: str | None = None
        self.timed_out = False  # given up on: the server said nothing in time
        self.last_sent = clock.seconds()  # when a frame last went out (for keepalives)

    def make_handshake(self):
        return noise.HandshakeState(
            noise.CHAT_PROTOCOL, initiator=True, prologue=noise.CHAT_PROLOGUE
        )

    def handshake_payload(self):
        return wire.Hello(AGENT)

    def handshake_payload_received(self, msg):
        if not isinstance(msg, wire.ServerHello):
            raise ChannelError(f"handshake failed: expected server_hello, got {msg.TYPE}")
        self.server_fingerprint = noise.fingerprint(self._handshake.remote_static)
        try:
            self.verify_server(self.server_fingerprint)
        except Exception as e:
            raise ChannelError(str(e)) from None
        self.server_hello = msg

    def channel_open(self):
        self.listener.channel_open(self)

    def message_received(self, msg):
        self.listener.message_received(msg)

    def frame_sent(self, size):
        self.last_sent = self.clock.seconds()

    def malformed_message(self, error):
        self.log.warn("server sent a malformed message: {problem}", problem=str(error))

    def channel_failed(self, reason):
        self.failure = reason

    def connectionLost(self, reason=None):
        super().connectionLost(reason)
        self.listener.connection_lost(self.failure, self)
