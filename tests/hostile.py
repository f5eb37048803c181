"""Hostile clients against a real server, while others chat: the parts the
hostile-input tests share (a helpers module: no tests here).

* ``HostileServer``: a real server on 127.0.0.1 in this process, and
  ``ServerLog``, every line it logs as twistd would write it.
* ``HostileClient``: a raw client that does a real Noise handshake (with
  any hello payload) and then sends whatever JSON frames it is told to.
* ``Chatters``: two real clients that chat all through a test; ``check``
  says whether each got every line exactly once, and a new login works.
"""

from __future__ import annotations

import itertools
import json

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.protocols.basic import Int32StringReceiver

from spchat import noise, wire

from conftest import connect_client, server_config, start_service, stop_services, wait_until

# Source addresses of the attackers: all loopback, each its own "host".
ATTACKERS = tuple(f"127.{i}.{i * 7 % 256}.{i + 1}" for i in range(2, 12))


class ServerLog:
    """Every line the server logs, formatted as twistd writes them: what
    spchat's modules log, and every error (an unhandled one included).
    The test's own clients share the process; their lines are left out."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, event):
        server = str(event.get("log_namespace", "")).startswith("spchat.")
        error = event.get("log_failure") is not None or event.get("isError")
        text = formatEventAsClassicLogText(event) if server or error else None
        if text:
            self.lines.append(text)

    def start(self) -> None:
        globalLogPublisher.addObserver(self)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self)

    @property
    def size(self) -> int:
        """Bytes of log written so far (UTF-8)."""
        return sum(len(line.encode("utf-8", "backslashreplace")) for line in self.lines)

    def mark(self) -> int:
        return len(self.lines)

    def since(self, mark: int) -> list[str]:
        return self.lines[mark:]

    def tracebacks(self, mark: int = 0) -> list[str]:
        return [line for line in self.lines[mark:]
                if "Traceback" in line or "Unhandled Error" in line or "internal error" in line]

    def unprintable(self, mark: int = 0) -> list[str]:
        """Lines with a character no terminal should get (an ESC, a bidi
        control, a line break of their own)."""
        return [line for line in self.lines[mark:] if not line.rstrip("\n").isprintable()]


class HostileServer:
    """A real server on 127.0.0.1, and its log."""

    def __init__(self, tmp_path, **options):
        self.log = ServerLog()
        self.log.start()
        self.service = start_service(server_config(tmp_path / "data", **options))
        self.port = self.service.address.port

    def stop(self) -> defer.Deferred:
        self.log.stop()
        return stop_services(self.service)


class HostileClient(Int32StringReceiver):
    """A raw spchat connection: the Noise NX handshake done for real, with
    ``hello`` (bytes) as the first message's payload; then ``send`` puts any
    JSON value (or bytes) in an encrypted frame.  What the server sends is
    kept as parsed JSON objects, batches unpacked, in ``received``."""

    MAX_LENGTH = noise.MAX_MESSAGE_LEN

    def __init__(self, hello: bytes | None = None):
        self.hello = wire.encode(wire.Hello("hostile/1")) if hello is None else hello
        self.received: list[dict] = []
        self.opened = defer.Deferred()
        self.lost = defer.Deferred()
        self._handshake = None
        self._send_cipher = self._recv_cipher = None

    def connectionMade(self):
        self._handshake = noise.HandshakeState(noise.CHAT_PROTOCOL, initiator=True,
                                               prologue=noise.CHAT_PROLOGUE)
        self.sendString(self._handshake.write_message(self.hello))

    def stringReceived(self, frame):
        if self._handshake is not None:
            self.server_hello = json.loads(self._handshake.read_message(frame))
            self._send_cipher, self._recv_cipher = self._handshake.split()
            self._handshake = None
            self.opened.callback(self)
            return
        body = json.loads(self._recv_cipher.decrypt_with_ad(b"", frame))
        self.received.extend(body["m"] if body.get("t") == "batch" else [body])

    def connectionLost(self, reason=None):
        if not self.opened.called:
            self.opened.errback(ConnectionError("closed during the handshake"))
        self.lost.callback(None)

    def send(self, body) -> None:
        """One frame: ``body`` as JSON (``json.dumps``: a lone surrogate
        goes as its ``\\ud800`` escape), or bytes as they are."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode("ascii")
        self.sendString(self._send_cipher.encrypt_with_ad(b"", data))

    @property
    def closed(self) -> bool:
        return self.lost.called

    def of(self, kind: str) -> list[dict]:
        return [m for m in self.received if m.get("t") == kind]

    @property
    def bye(self) -> dict | None:
        byes = self.of("bye")
        return byes[-1] if byes else None

    def abort(self) -> None:
        if not self.closed:
            self.transport.abortConnection()

    @defer.inlineCallbacks
    def ask(self, body, until: str, timeout: float = 10.0, cid: str | None = None):
        """Send ``body``, then wait for a message of type ``until`` (or the
        end of the connection); the messages that came meanwhile, up to and
        with the first of that type (what others' chat brings after it, by
        the time this looks, is not part of the answer).  With ``cid``, the
        first of that type carrying it: others' lines may come before a
        line's own copy."""
        def answers(m) -> bool:
            return m.get("t") == until and (cid is None or m.get("cid") == cid)

        start = len(self.received)
        self.send(body)
        yield wait_until(lambda: self.closed or any(
            answers(m) for m in self.received[start:]), timeout=timeout)
        replies = self.received[start:]
        ends = [i for i, m in enumerate(replies) if answers(m)]
        return replies[:ends[0] + 1] if ends else replies

    @defer.inlineCallbacks
    def log_in(self, name: str):
        replies = yield self.ask({"t": "login", "name": name}, "welcome")
        assert any(m.get("t") == "welcome" for m in replies), replies
        return self


@defer.inlineCallbacks
def hostile_client(port: int, source: str = ATTACKERS[0], hello: bytes | None = None,
                   name: str | None = None, make=HostileClient):
    """A HostileClient (or ``make``'s) connected from ``source`` (an address
    on loopback), past the handshake, logged in as ``name`` if given."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                  bindAddress=(source, 0))
    client = yield connectProtocol(endpoint, make(hello))
    yield client.opened
    if name is not None:
        yield client.log_in(name)
    return client


class Chatters:
    """Two real clients (the reference client, from 127.0.0.1) that say a
    line each every ``interval`` seconds until ``check``."""

    def __init__(self, server, pins, interval: float = 0.2):
        """``server``: anything with the ``port`` it listens on (a
        HostileServer, a ServerProcess)."""
        self.server, self.pins, self.interval = server, pins, interval
        self.clients = []
        self.sent: dict[str, list[str]] = {}
        self._numbers = itertools.count(1)
        self._loop = task.LoopingCall(self._say)

    @defer.inlineCallbacks
    def start(self):
        for name in ("alice", "bob"):
            client = yield connect_client(None, self.pins, name, port=self.server.port)
            self.clients.append(client)
            self.sent[name] = []
        self._loop.start(self.interval)
        return self

    def _say(self) -> None:
        n = next(self._numbers)
        for client in self.clients:
            text = f"{client.name} line {n}"
            client.say(text)
            self.sent[client.name].append(text)

    def _lines(self, client) -> list[str]:
        return [m.text for m in client.rec.of(wire.RoomMessage)
                if m.room == "lobby" and m.sender in self.sent]

    def _all_arrived(self) -> bool:
        every = [text for texts in self.sent.values() for text in texts]
        return all(not c.outbox and set(every) <= set(self._lines(c)) for c in self.clients)

    @defer.inlineCallbacks
    def check(self, newcomer: str = "newcomer"):
        """Stop chatting; assert that each client got every line (its own
        as the acknowledgement) exactly once, and that a new login works."""
        if self._loop.running:
            self._loop.stop()
        yield wait_until(self._all_arrived, timeout=30)
        every = sorted(text for texts in self.sent.values() for text in texts)
        for client in self.clients:
            assert sorted(self._lines(client)) == every, f"{client.name}: lost or doubled lines"
            assert not client.rec.disconnects, f"{client.name} was cut off"
        late = yield connect_client(None, self.pins, newcomer, port=self.server.port)
        assert late.connected
        yield late.logout()
