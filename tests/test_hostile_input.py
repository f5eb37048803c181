"""Hostile clients attack a real server over loopback, from several
127.x.y.z addresses, while two others chat: every attack gets a clear
answer, no traceback reaches the log, nothing unprintable does either, the
chatters get every line exactly once, and new logins still work."""

import gc
import json
import subprocess
import sys

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, threads

from spchat import noise, wire
from spchat.client.protocol import AGENT as CLIENT_AGENT
from spchat.server.protocol import MAX_MALFORMED
from spchat.wire_doc import CLIENT_TO_SERVER, DIRECTIONS

from conftest import subprocess_env
from hostile import ATTACKERS, Chatters, HostileServer, hostile_client

# Valid JSON ("\ud800" escapes), no valid Unicode.
LONE_SURROGATES = "\ud800", "x\udfff", "\udbff\ud800"


@pytest.fixture
def server(tmp_path):
    server = HostileServer(tmp_path)
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_lone_surrogates_are_refused_by_the_decoder_and_the_connection_stays(server, pins):
    chat = yield Chatters(server, pins).start()
    mark = server.log.mark()
    mallory = yield hostile_client(server.port, ATTACKERS[0], name="mallory")
    attacks = [
        ({"t": "say", "text": "hi", "cid": s}, "say.cid") for s in LONE_SURROGATES
    ] + [
        ({"t": "say", "text": "hi \ud800", "cid": "c1"}, "say.text"),
        ({"t": "say", "text": "hi", "cid": "c2", "extra\ud800": 1}, "say.extra\\ud800"),
        ({"t": "join", "room": "dev", "cid": "c3", "x": ["\udc00"]}, "join.x"),
        ({"t": "topic", "room": "lobby", "text": "\ud83d", "cid": "c4"}, "topic.text"),
    ]
    for body, field in attacks:
        replies = yield mallory.ask(body, "error")
        (error,) = [m for m in replies if m["t"] == "error"]
        assert error["code"] == "malformed"
        assert f"{field} is not valid Unicode" in error["text"]
        assert error.get("cid") == (body["cid"] if body["cid"].isascii() else None)
    # A batch: the bad entry gets its error, the good one still counts.
    replies = yield mallory.ask({"t": "batch", "m": [
        {"t": "say", "text": "\ud800", "cid": "b1"},
        {"t": "say", "text": "mallory is still here", "cid": "b2"}]}, "message", cid="b2")
    # The chatters' lines may come between: mallory's answers are the ones
    # with cids.
    assert [m.get("cid") for m in replies
            if m["t"] == "error" or m["t"] == "message" and m.get("cid")] == ["b1", "b2"]
    assert not mallory.closed
    # The hello and the admin token go through the same decoder.
    hello = b'{"t":"hello","agent":"\\ud800"}'
    trudy = yield hostile_client(server.port, ATTACKERS[1], hello=hello)
    yield trudy.lost
    assert "hello.agent is not valid Unicode" in trudy.bye["text"]
    eve = yield hostile_client(server.port, ATTACKERS[2])
    replies = yield eve.ask({"t": "admin_login", "token": "\udfff" * 40}, "error")
    assert "admin_login.token is not valid Unicode" in replies[-1]["text"]
    eve.abort()
    assert server.log.tracebacks(mark) == []
    yield chat.check()
    mallory.abort()


AGENTS = [
    "evil\x1b]0;owned\x07\x1b[2J\x1b[H",  # retitle, clear, home
    "ok\nalice  127.0.0.1:1  connected  spchat-client/1",  # a fake row
    "spchat-client/1\u202e",  # bidi override
    "a\x9b2J",  # C1 CSI
    "x" * 101,  # longer than an agent may be
    "",
]


@pytest_twisted.inlineCallbacks
def test_hostile_hello_agents_are_refused_and_nothing_unprintable_is_shown(
        server, pins, tmp_path):
    chat = yield Chatters(server, pins).start()
    mark = server.log.mark()
    for i, agent in enumerate(AGENTS):
        hello = json.dumps({"t": "hello", "agent": agent}).encode()
        mallory = yield hostile_client(server.port, ATTACKERS[i % len(ATTACKERS)], hello=hello)
        yield mallory.lost
        assert mallory.bye["code"] == "protocol_error"
        assert "handshake failed: hello.agent" in mallory.bye["text"]
    assert {s.agent for s in server.service.core.sessions.values()} == {CLIENT_AGENT}
    # What does reach the log and the admin's table is printable: a topic
    # with escapes is refused, a malformed message's problem is quoted.
    trudy = yield hostile_client(server.port, ATTACKERS[0], name="trudy")
    replies = yield trudy.ask({"t": "topic", "room": "lobby", "text": "x\x1b[2J", "cid": "t1"},
                              "error")
    assert replies[-1]["code"] == "bad_text"
    yield trudy.ask({"t": "\x1b[2J\u202e", "cid": "t2"}, "error")
    yield trudy.ask({"t": "say", "text": 5, "cid": "\x1b[31m"}, "error")
    shown = yield threads.deferToThread(
        subprocess.run,
        [sys.executable, "-m", "spchat.admin", "--port", str(server.port),
         "--data-dir", str(tmp_path / "data"), "list"],
        capture_output=True, text=True, timeout=60, env=subprocess_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    assert "trudy" in shown.stdout and "hostile/1" in shown.stdout
    assert all(line.isprintable() for line in shown.stdout.splitlines())
    assert len(shown.stdout.splitlines()) == 1 + len(server.service.core.sessions)
    assert server.log.unprintable(mark) == [] and server.log.tracebacks(mark) == []
    yield chat.check()
    trudy.abort()


@pytest_twisted.inlineCallbacks
def test_admin_requests_without_the_token_end_the_connection_and_the_log_stays_small(
        server, pins):
    chat = yield Chatters(server, pins).start()
    mark, size = server.log.mark(), server.log.size
    # One connection that sends admin requests as fast as it can: the first
    # one ends it.
    mallory = yield hostile_client(server.port, ATTACKERS[3])
    for i in range(500):
        mallory.send({"t": "admin", "rid": str(i), "op": "list"})
    yield mallory.lost
    assert mallory.bye["code"] == "not_admin"
    assert [m["t"] for m in mallory.received] == ["bye"]
    assert server.log.size - size < 500  # one line, not 500
    # Coming back again and again, logged in or not, with a token or not,
    # from two addresses: each refusal counted, one log line per address.
    for i in range(30):
        source = ATTACKERS[4 + i % 2]
        client = yield hostile_client(server.port, source, name=f"m{i}" if i % 3 else None)
        request = ({"t": "admin_login", "token": "wrong" * 9} if i % 2
                   else {"t": "admin", "rid": "r", "op": "shutdown"})
        replies = yield client.ask(request, "bye")
        assert replies[-1]["code"] == "not_admin"
        yield client.lost
    refusals = [line for line in server.log.since(mark) if "refused" in line]
    assert len(refusals) == 3, refusals  # one per address a minute
    assert server.service.core.admin.refused[ATTACKERS[4]] == 15
    assert server.log.tracebacks(mark) == []
    yield chat.check()


@pytest_twisted.inlineCallbacks
def test_reconnecting_to_send_malformed_messages_does_not_flood_the_log(server, pins):
    chat = yield Chatters(server, pins).start()
    mark = server.log.mark()
    source = ATTACKERS[6]
    for _ in range(20):
        client = yield hostile_client(server.port, source)
        for _ in range(MAX_MALFORMED + 1):
            client.send(b"junk")
        yield client.lost
        # Each connection is still answered in full: the log is what is bounded.
        assert [m["code"] for m in client.received] == ["malformed"] * MAX_MALFORMED + [
            "protocol_error"]
    about = [line for line in server.log.since(mark) if source in line]
    assert len(about) == 1 and "malformed message" in about[0], about
    assert server.service.factory.faults[source] == 20 * (MAX_MALFORMED + 1)
    yield chat.check()


# --- every client message, every field, hostile values ---------------------

CLIENT_TYPES = next(types for direction, _, types in DIRECTIONS if direction == CLIENT_TO_SERVER)
# The messages that end the connection on purpose, and how.
FATAL = {"logout": "logout", "admin_login": "not_admin", "admin": "not_admin"}

hostile_strings = st.one_of(
    st.sampled_from(LONE_SURROGATES),
    st.text(max_size=20),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Cf", "Zl", "Zp")), max_size=8),
    st.sampled_from(("\x1b[2J", "\u202e", "", "#", "@", "lobby", "x" * 60001)),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
              hostile_strings),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_strings, inner,
                                                                  max_size=3),
    max_leaves=8,
)
# Lone surrogates get a branch of their own: they are what broke the server.
hostile_values = st.one_of(st.sampled_from(LONE_SURROGATES), hostile_strings, json_values)


@st.composite
def hostile_message(draw, kind: str):
    """A message of type ``kind`` with every field hostile or left out
    (a required one is left out now and then too), and maybe a member it
    does not have."""
    body = {}
    for field in wire.MESSAGES[kind].SCHEMA:
        if draw(st.integers(0, 9)) > 0:
            body[field] = draw(hostile_values)
    if draw(st.booleans()):
        body[draw(hostile_strings)] = draw(hostile_values)
    body["t"] = kind
    return body


class Prober:
    """One hostile connection at a time, logged in, renewed only when the
    server ends it (as it should for some messages)."""

    def __init__(self, server):
        self.server = server
        self.client = None
        self._count = 0

    async def probe(self, body) -> tuple[list[dict], bool]:
        """Send ``body``, then a ``rooms`` request: what came before its
        answer is the answer to ``body``; and whether the server closed
        the connection."""
        if self.client is None or self.client.closed:
            self._count += 1
            source = ATTACKERS[self._count % len(ATTACKERS)]
            self.client = await hostile_client(self.server.port, source, name=f"h{self._count}")
        client = self.client
        start = len(client.received)
        client.send(body)
        await client.ask({"t": "rooms"}, "room_list")
        if client.closed:
            await client.lost
        return client.received[start:], client.closed


def check_answer(body: dict, replies: list[dict], closed: bool) -> None:
    """Assert that the answer to one hostile message is clear (and a
    connection the server ended was told why)."""
    kind = body["t"]
    errors = [m for m in replies if m["t"] == "error"]
    for error in errors:
        assert error["code"] != "internal", (body, error)
        if error["code"] == "malformed":
            assert error["text"].startswith(f"malformed message: {kind}."), (body, error)
    byes = [m for m in replies if m["t"] == "bye"]
    assert byes or not closed, (body, "closed without a bye")
    if byes:
        (bye,) = byes
        too_many = (bye["code"] == "protocol_error"
                    and f"more than {MAX_MALFORMED} malformed messages" in bye["text"])
        assert bye["code"] == FATAL.get(kind) or too_many, (body, bye)


@pytest_twisted.inlineCallbacks
def test_every_client_message_with_hostile_fields_gets_a_clear_answer(tmp_path, pins):
    # Flood control would only slow the probes down; it has tests of its own.
    server = HostileServer(tmp_path, **{"flood-rate": "1000", "flood-burst": "1000",
                                        "flood-queue": "1000"})
    prober = Prober(server)
    try:
        chat = yield Chatters(server, pins).start()
        mark = server.log.mark()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.data())
        def probe(data):
            for kind in CLIENT_TYPES:  # every type in every example
                body = data.draw(hostile_message(kind), label=kind)
                if len(json.dumps(body)) > noise.MAX_PAYLOAD_LEN:
                    continue  # more than one frame holds
                before = server.log.mark()
                replies, closed = threads.blockingCallFromThread(
                    reactor, lambda b=body: defer.ensureDeferred(prober.probe(b)))
                assert server.log.tracebacks(before) == [], body
                check_answer(body, replies, closed)

        # Hypothesis drives the probes from a thread, each one waiting on
        # the reactor.  No garbage may be collected there: Tk objects that
        # window tests left must be freed on the main thread.
        gc.collect()
        gc.disable()
        try:
            yield threads.deferToThread(probe)
        finally:
            gc.enable()
        assert server.log.unprintable(mark) == []
        yield chat.check()
    finally:
        if prober.client is not None:
            prober.client.abort()
        yield server.stop()

