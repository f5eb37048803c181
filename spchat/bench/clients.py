"""One room, three protocols: the load generator's clients.

Each kind of client logs in, joins the room, sends ``payload`` strings as
room messages and hands every room message it receives to ``on_payload``
(its own included, where the protocol echoes them: the recorder skips
those).  ``connect_client(kind, ...)`` fires with a ready client.

* spchat: the real Noise NX channel and login; received frames are
  decrypted and parsed as JSON without the full schema check, so that the
  generator does not become the bottleneck it is measuring.
* IRC (ngIRCd): NICK/USER, JOIN, PRIVMSG; senders become operators and set
  user mode +F, so ngIRCd's flood penalty does not throttle them.
* MQTT 3.1.1 (Mosquitto): CONNECT, SUBSCRIBE and PUBLISH at QoS 0 on one
  topic, which is the room.
"""

from __future__ import annotations

import json
import struct

from twisted.internet import defer, protocol
from twisted.internet.interfaces import ITransport
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineOnlyReceiver

from spchat import wire
from spchat.bench.servers import OPERATOR
from spchat.client.protocol import ChatClientProtocol

ROOM_IRC = b"#bench"
TOPIC = b"bench/room"


SETUP_TIMEOUT = 60.0  # seconds for one client to connect, log in and join


class SetupFailed(Exception):
    pass


# --- spchat ------------------------------------------------------------------


class SpchatClient(ChatClientProtocol):
    def __init__(self, reactor, name, on_payload):
        super().__init__(reactor, lambda fingerprint: None, self)
        self.name, self.on_payload = name, on_payload
        self.ready = defer.Deferred()
        self._cid = 0

    # listener interface (this protocol is its own listener)
    def channel_open(self, proto=None):
        self.send_message(wire.Login(self.name))

    def message_received(self, msg):
        if isinstance(msg, wire.Welcome) and not self.ready.called:
            self.ready.callback(self)
        elif isinstance(msg, (wire.Error, wire.Bye)) and not self.ready.called:
            self.ready.errback(SetupFailed(f"{self.name}: {msg.text}"))

    def connection_lost(self, reason, proto=None):
        if not self.ready.called:
            self.ready.errback(SetupFailed(f"{self.name}: {reason or 'connection lost'}"))

    deaf = False  # an idle client: what comes is dropped unread

    def stringReceived(self, frame):
        if self.deaf:
            return
        if self._recv_cipher is None or self.closing:
            return super().stringReceived(frame)
        body = json.loads(self._recv_cipher.decrypt_with_ad(b"", frame))
        for item in body["m"] if body["t"] == "batch" else (body,):
            kind = item["t"]
            if kind == "message":
                self.on_payload(item["text"])
            elif kind in ("welcome", "error", "bye"):  # the rest is not the bench's business
                self.message_received(wire.decode(json.dumps(item).encode()))

    def send(self, payload: str) -> None:
        self._cid += 1
        self.send_message(wire.Say(payload, f"b{self._cid}"))

    def close(self):
        self.transport.abortConnection()


# --- IRC -----------------------------------------------------------------------


class IrcClient(LineOnlyReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 16384

    def __init__(self, name, on_payload, sender, oper=True):
        """``oper``: senders become operators to set +F (ngIRCd's flood
        exemption); spchat's bench server has no flood limits to lift."""
        self.name, self.on_payload, self.sender = name, on_payload, sender
        self.nick = name.encode()
        self.ready = defer.Deferred()
        self._joined = False
        self._oper = oper and sender
        self._relaxed = not self._oper  # +F set (ngIRCd's senders only)
        self.last_line = b""

    def connectionMade(self):
        self.sendLine(b"NICK " + self.nick)
        self.sendLine(b"USER " + self.nick + b" 0 * :bench")

    deaf = False  # an idle client: what comes is dropped unread

    def lineReceived(self, line):
        if self.deaf:
            return
        if not self.ready.called:
            self.last_line = line  # said when setup fails
        at = line.find(b" PRIVMSG ")
        if at > 0:
            self.on_payload(line[line.index(b" :", at) + 2:].decode())
            return
        parts = line.split(b" ")
        if parts[0] == b"PING":
            self.sendLine(b"PONG " + b" ".join(parts[1:]))
            return
        if len(parts) < 2:
            return
        code = parts[1]
        if code == b"001":
            if self._oper:
                self.sendLine(b"OPER %s %s" % (OPERATOR[0].encode(), OPERATOR[1].encode()))
            self.sendLine(b"JOIN " + ROOM_IRC)
        elif code == b"381":  # you are an operator now
            self.sendLine(b"MODE " + self.nick + b" +F")
        elif code == b"MODE" and b"+F" in line:
            self._relaxed = True
        elif code == b"366":  # end of the names list: joined
            self._joined = True
        elif code in (b"433", b"464", b"491", b"465") or parts[0] == b"ERROR":
            if not self.ready.called:
                self.ready.errback(SetupFailed(f"{self.name}: {line.decode(errors='replace')}"))
            return
        if self._joined and self._relaxed and not self.ready.called:
            self.ready.callback(self)

    def connectionLost(self, reason=None):
        if not self.ready.called:
            self.ready.errback(SetupFailed(f"{self.name}: connection lost"))

    def send(self, payload: str) -> None:
        self.sendLine(b"PRIVMSG " + ROOM_IRC + b" :" + payload.encode())

    def close(self):
        self.transport.abortConnection()


# --- MQTT ----------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _remaining_length(len(body)) + body


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class MqttClient(protocol.Protocol):
    transport: ITransport  # set by makeConnection before anything here runs

    def __init__(self, name, on_payload):
        self.name, self.on_payload = name, on_payload
        self.ready = defer.Deferred()
        self._buffer = b""
        self._publish_head = _string(TOPIC)

    def connectionMade(self):
        # MQTT 3.1.1, clean session, no keepalive (the bench is short).
        body = _string(b"MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0)
        self.transport.write(_packet(0x10, body + _string(self.name.encode())))

    def dataReceived(self, data):
        buffer = self._buffer + data
        at, end = 0, len(buffer)
        while at + 2 <= end:
            kind = buffer[at]
            length = multiplier = 0
            i = at + 1
            while True:
                if i >= end:
                    self._buffer = buffer[at:]
                    return
                byte = buffer[i]
                length += (byte & 0x7F) << multiplier
                multiplier += 7
                i += 1
                if not byte & 0x80:
                    break
            if i + length > end:
                break
            body = buffer[i:i + length]
            at = i + length
            if kind & 0xF0 == 0x30:  # PUBLISH at QoS 0: topic, then payload
                topic_length = (body[0] << 8) | body[1]
                self.on_payload(body[2 + topic_length:].decode())
            elif kind == 0x20:  # CONNACK
                if body[1] != 0:
                    self.ready.errback(SetupFailed(f"{self.name}: CONNACK code {body[1]}"))
                    return
                self.transport.write(_packet(0x82, struct.pack("!H", 1) + _string(TOPIC) + b"\0"))
            elif kind == 0x90 and not self.ready.called:  # SUBACK
                self.ready.callback(self)
        self._buffer = buffer[at:]

    def connectionLost(self, reason=None):
        if not self.ready.called:
            self.ready.errback(SetupFailed(f"{self.name}: connection lost"))

    def send(self, payload: str) -> None:
        self.transport.write(_packet(0x30, self._publish_head + payload.encode()))

    def close(self):
        self.transport.abortConnection()


def make_client(kind: str, reactor, name: str, on_payload, sender: bool):
    if kind == "spchat":
        return SpchatClient(reactor, name, on_payload)
    if kind == "ngircd":
        return IrcClient(name, on_payload, sender)
    if kind == "spchat-irc":
        return IrcClient(name, on_payload, sender, oper=False)
    if kind == "mosquitto":
        return MqttClient(name, on_payload)
    raise ValueError(f"unknown server kind {kind!r}")


@defer.inlineCallbacks
def connect_client(kind, reactor, port, name, on_payload, sender=False, bind_host=None):
    """A logged-in client of ``kind`` that has joined the room."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30,
                                  bindAddress=(bind_host, 0) if bind_host else None)
    client = make_client(kind, reactor, name, on_payload, sender)
    yield connectProtocol(endpoint, client).addTimeout(SETUP_TIMEOUT, reactor)
    client.transport.setTcpNoDelay(True)  # the generator must not add Nagle delays
    try:
        yield client.ready.addTimeout(SETUP_TIMEOUT, reactor)
    except defer.TimeoutError:
        client.close()
        last = getattr(client, "last_line", b"").decode(errors="replace")
        raise SetupFailed(f"{name}: not logged in and joined after {SETUP_TIMEOUT:g} s"
                          + (f" (last line from the server: {last})" if last else "")) from None
    return client
