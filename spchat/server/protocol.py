"""The server's side of the channel: frames in, core calls out.

Thin on purpose: every chat rule is in ``spchat.server.core``.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet import protocol
from twisted.logger import Logger

import spchat
from spchat import noise, wire
from spchat.channel import ChannelError, NoiseChannel
from spchat.server.core import ChatCore

AGENT = f"spchat-server/{spchat.__version__}"


class ChatServerProtocol(NoiseChannel):
    """One client connection; implements the core's ``Connection``."""

    initiator = False
    log = Logger()

    def __init__(self, factory: ChatServerFactory):
        super().__init__(factory.clock)
        self.factory = factory
        self.session = None
        self._login_deadline = None

    # --- channel hooks -----------------------------------------------------

    def make_handshake(self):
        return noise.HandshakeState(
            noise.CHAT_PROTOCOL,
            initiator=False,
            prologue=noise.CHAT_PROLOGUE,
            s=self.factory.server_key,
        )

    def handshake_payload(self):
        return wire.ServerHello(AGENT, self.factory.core.max_message_bytes)

    def handshake_payload_received(self, msg):
        if not isinstance(msg, wire.Hello):
            raise ChannelError(f"handshake failed: expected hello, got {msg.TYPE}")

    def connectionMade(self):
        super().connectionMade()
        # Handshake and login must both finish within the timeout, so a
        # connection cannot sit half-open holding a slot.
        self._login_deadline = self.clock.callLater(
            self.factory.handshake_timeout, self._login_timed_out
        )

    def channel_open(self):
        self.session = self.factory.core.connect(self, self.peer)

    def message_received(self, msg):
        self.factory.core.receive(self.session, msg)
        if self.session.logged_in and self._login_deadline is not None:
            if self._login_deadline.active():
                self._login_deadline.cancel()
            self._login_deadline = None
            self.log.info("{peer}: logged in as {name}", peer=self.peer, name=self.session.name)

    def malformed_message(self, problem):
        self.log.info("{peer}: malformed message: {problem}", peer=self.peer, problem=problem)
        self.send_message(wire.Error("malformed", f"malformed message: {problem}"))

    def connectionLost(self, reason=None):
        super().connectionLost(reason)
        if self._login_deadline is not None and self._login_deadline.active():
            self._login_deadline.cancel()
        self._login_deadline = None
        self.factory.connection_lost(self)
        if self.session is not None:
            if self.session.logged_in:
                self.log.info("{peer}: {name} disconnected", peer=self.peer, name=self.session.name)
            self.factory.core.disconnected(self.session)

    def _login_timed_out(self):
        self._login_deadline = None
        self.fail(f"no login within {self.factory.handshake_timeout:g} s")

    # --- the core's Connection interface -----------------------------------

    def send(self, message: wire.Message) -> None:
        self.send_message(message)

    def close(self, code: str, text: str) -> None:
        self.send_message(wire.Bye(code, text))
        self.hang_up()


class ChatServerFactory(protocol.Factory):
    """Builds one protocol per connection and caps connections per IP."""

    log = Logger()
    noisy = False  # no "Starting factory" lines in the server log

    def __init__(
        self,
        core: ChatCore,
        server_key: bytes,
        clock,
        handshake_timeout: float = 10.0,
        max_connections_per_ip: int = 16,
    ):
        self.core = core
        self.server_key = server_key
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.max_connections_per_ip = max_connections_per_ip
        # Our own count: twisted.protocols.policies.LimitConnectionsByPeer
        # does not work for IPv4 addresses.
        self.per_ip: Counter[str] = Counter()

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if self.per_ip[host] >= self.max_connections_per_ip:
            self.log.info(
                "{host}: refused: more than {limit} connections from this address",
                host=host,
                limit=self.max_connections_per_ip,
            )
            return None  # Twisted closes the connection at once
        self.per_ip[host] += 1
        proto = ChatServerProtocol(self)
        proto.ip = host
        return proto

    def connection_lost(self, proto: ChatServerProtocol) -> None:
        self.per_ip[proto.ip] -= 1
        if self.per_ip[proto.ip] <= 0:
            del self.per_ip[proto.ip]
