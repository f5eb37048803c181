"""Client session: connect, log in, send with client ids, track acknowledgements.

Used by the line-mode client now and by the desktop client later; it knows
nothing of terminals or windows.  Every message this side sends carries a
client message id (cid); it stays in ``pending`` until the server echoes it
back with a sequence number (the acknowledgement) or refuses it.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Callable

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.protocol import ChatClientProtocol


class ClientError(Exception):
    """Something the user must be told in one line; the session cannot go on."""


class ChatClient:
    def __init__(
        self,
        reactor,
        host: str,
        port: int,
        name: str,
        pins: PinStore,
        on_event: Callable[[wire.Message], None] = lambda msg: None,
        on_disconnect: Callable[[str], None] = lambda reason: None,
        connect_timeout: float = 10.0,
    ):
        self.reactor = reactor
        self.host, self.port, self.requested_name = host, port, name
        self.pins = pins
        self.on_event = on_event
        self.on_disconnect = on_disconnect
        self.connect_timeout = connect_timeout
        self.name: str | None = None  # display form, from the welcome
        self.server_fingerprint: str | None = None
        self.newly_pinned = False
        self.pending: dict[str, wire.Message] = {}
        self.proto: ChatClientProtocol | None = None
        self._welcome: defer.Deferred | None = None
        self._closed = defer.Deferred()
        self._ack_waiters: list[defer.Deferred] = []
        self._bye: wire.Bye | None = None
        self._login_error: wire.Error | None = None
        self._logout_timer = None
        # Random prefix: ids from two runs of the same user never collide.
        self._cids = (f"{secrets.token_hex(4)}-{n}" for n in itertools.count(1))

    # --- connecting --------------------------------------------------------

    def connect(self) -> defer.Deferred:
        """Connect and log in; fires with the Welcome or fails with ClientError."""
        self._welcome = defer.Deferred()
        endpoint = HostnameEndpoint(
            self.reactor, self.host, self.port, timeout=self.connect_timeout
        )
        proto = ChatClientProtocol(self.reactor, self._verify_server, self)
        connecting = connectProtocol(endpoint, proto)
        connecting.addErrback(self._connect_failed)
        return self._welcome

    def _connect_failed(self, failure):
        reason = failure.getErrorMessage() or failure.type.__name__
        self._fail_login(f"cannot reach the server at {self.host}:{self.port}: {reason}")

    def _fail_login(self, text: str) -> None:
        if self._welcome is not None and not self._welcome.called:
            self._welcome.errback(ClientError(text))

    def _verify_server(self, fingerprint: str) -> None:
        self.server_fingerprint = fingerprint
        self.newly_pinned = self.pins.check(self.host, self.port, fingerprint)

    # --- listener interface of ChatClientProtocol --------------------------

    def channel_open(self, proto: ChatClientProtocol) -> None:
        self.proto = proto
        proto.send_message(wire.Login(self.requested_name))

    def message_received(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Welcome):
            self.name = msg.name
            if not self._welcome.called:
                self._welcome.callback(msg)
        elif isinstance(msg, wire.Error) and self.name is None:
            self._login_error = msg
            self._fail_login(f"login refused: {msg.text}")
            self.proto.hang_up()
            return
        elif isinstance(msg, (wire.RoomMessage, wire.DirectMessage, wire.Error)):
            if msg.cid is not None and self.pending.pop(msg.cid, None) is not None:
                self._check_acks()
        elif isinstance(msg, wire.Bye):
            self._bye = msg
        self.on_event(msg)

    def connection_lost(self, failure: str | None) -> None:
        if self._bye is not None:
            reason = self._bye.text
        else:
            reason = failure or "the server closed the connection"
        self.proto = None
        if self._logout_timer is not None and self._logout_timer.active():
            self._logout_timer.cancel()
        if self._welcome is not None and not self._welcome.called:
            self._fail_login(f"connection to {self.host}:{self.port} failed: {reason}")
        elif self._login_error is None:
            self.on_disconnect(reason)
        self._check_acks()
        if not self._closed.called:
            self._closed.callback(reason)

    # --- sending -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.proto is not None and self.proto.is_open

    def _send_tracked(self, msg: wire.Message) -> str:
        self.pending[msg.cid] = msg
        if self.connected:
            self.proto.send_message(msg)
        return msg.cid

    def say(self, text: str, room: str = "lobby") -> str:
        return self._send_tracked(wire.Say(text, next(self._cids), room))

    def direct(self, to: str, text: str) -> str:
        return self._send_tracked(wire.Direct(to, text, next(self._cids)))

    def who(self) -> None:
        if self.connected:
            self.proto.send_message(wire.Who())

    def wait_acked(self, timeout: float) -> defer.Deferred:
        """Fire with True once nothing is pending, or False after ``timeout``."""
        if not self.pending or not self.connected:
            return defer.succeed(not self.pending)
        d = defer.Deferred()
        self._ack_waiters.append(d)
        timer = self.reactor.callLater(timeout, self._ack_timeout, d)
        d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return d

    def _ack_timeout(self, d: defer.Deferred) -> None:
        if d in self._ack_waiters:
            self._ack_waiters.remove(d)
            d.callback(False)

    def _check_acks(self) -> None:
        if self.pending and self.connected:
            return
        waiters, self._ack_waiters = self._ack_waiters, []
        for d in waiters:
            d.callback(not self.pending)

    def logout(self) -> defer.Deferred:
        """Log out; fires when the connection has closed."""
        if self.proto is None:
            return defer.succeed(None)
        if self.connected:
            self.proto.send_message(wire.Logout())
            # The server answers with bye and closes; hang up ourselves if not.
            self._logout_timer = self.reactor.callLater(5.0, self.proto.hang_up)
        else:
            self.proto.hang_up()
        return self._closed
