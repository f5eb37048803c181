"""Client message ids on a real server over loopback, while others chat: a
cid is its sender's lineage's (an account, or a guest's session and its
resumes), so one who reuses someone else's cid under the same name sends a
new line, and is not "acknowledged" with (and shown) the other's."""

import pytest
import pytest_twisted
from twisted.internet import defer

from spchat import wire

from conftest import wait_until
from hostile import ATTACKERS, Chatters, HostileServer, hostile_client


@pytest.fixture
def server(tmp_path):
    server = HostileServer(tmp_path)
    yield server
    server.stop()


@defer.inlineCallbacks
def say(client, text, cid):
    """The acknowledgement of a line: its own copy, carrying its cid."""
    replies = yield client.ask({"t": "say", "room": "lobby", "text": text, "cid": cid},
                               "message", cid=cid)
    acknowledged = [m for m in replies if m.get("t") == "message" and m.get("cid") == cid]
    assert acknowledged, replies
    return acknowledged[0]


@pytest_twisted.inlineCallbacks
def test_a_reused_cid_under_a_freed_guest_name_is_a_new_line(server, pins):
    chat = yield Chatters(server, pins).start()
    first = yield hostile_client(server.port, ATTACKERS[0], name="kim")
    mine = yield say(first, "my secret plan", "c-1")
    first.send({"t": "logout"})
    yield wait_until(lambda: first.closed)
    yield wait_until(lambda: "kim" not in server.service.core.by_key)
    # Someone else takes the free name and sends the same cid.
    second = yield hostile_client(server.port, ATTACKERS[1], name="kim")
    theirs = yield say(second, "a different line", "c-1")
    # A new line (the others' lines may come between: they go on chatting).
    assert theirs["text"] == "a different line" and theirs["seq"] > mine["seq"]
    # ... and the chatting users see both, each once.
    yield wait_until(lambda: all(
        [m.text for m in c.rec.of(wire.RoomMessage) if m.sender == "kim"]
        == ["my secret plan", "a different line"] for c in chat.clients))
    yield chat.check()


@pytest_twisted.inlineCallbacks
def test_a_resumed_guest_re_sending_a_line_gets_its_ack_not_a_copy(server, pins):
    chat = yield Chatters(server, pins).start()
    client = yield hostile_client(server.port, ATTACKERS[2])
    replies = yield client.ask({"t": "login", "name": "lee"}, "welcome")
    welcome = [m for m in replies if m.get("t") == "welcome"][0]
    first = yield say(client, "once only", "c-9")
    client.abort()  # the connection drops before the client knew
    yield wait_until(lambda: client.closed)
    again = yield hostile_client(server.port, ATTACKERS[2])
    yield again.ask({"t": "resume", "session": welcome["session"], "token": welcome["token"],
                     "positions": [["#lobby", first["seq"]]], "since": welcome["server_time"]},
                    "welcome")
    resent = yield say(again, "once only", "c-9")
    assert resent["seq"] == first["seq"]  # the same line, acknowledged again
    yield chat.check()


@pytest_twisted.inlineCallbacks
def test_a_guest_back_with_its_outbox_re_sends_copies_and_others_do_not(server, pins):
    chat = yield Chatters(server, pins).start()
    outbox = "k" * 24
    first = yield hostile_client(server.port, ATTACKERS[3])
    yield first.ask({"t": "login", "name": "mo", "outbox": outbox}, "welcome")
    original = yield say(first, "said once", "c-5")
    first.send({"t": "logout"})  # the session ends, as in a server restart
    yield wait_until(lambda: first.closed)
    yield wait_until(lambda: "mo" not in server.service.core.by_key)
    again = yield hostile_client(server.port, ATTACKERS[3])
    yield again.ask({"t": "login", "name": "mo", "outbox": outbox}, "welcome")
    resent = yield say(again, "said once", "c-5")
    assert resent["seq"] == original["seq"]  # the saved line, acknowledged again
    again.send({"t": "logout"})
    yield wait_until(lambda: again.closed)
    yield wait_until(lambda: "mo" not in server.service.core.by_key)
    # Someone else under the name, with an outbox of their own: a new line.
    other = yield hostile_client(server.port, ATTACKERS[4])
    yield other.ask({"t": "login", "name": "mo", "outbox": "z" * 24}, "welcome")
    theirs = yield say(other, "said anew", "c-5")
    assert theirs["seq"] > original["seq"] and theirs["text"] == "said anew"
    yield wait_until(lambda: all(
        [m.text for m in c.rec.of(wire.RoomMessage) if m.sender == "mo"]
        == ["said once", "said anew"] for c in chat.clients))
    yield chat.check()


@pytest_twisted.inlineCallbacks
def test_an_outbox_too_short_to_be_secret_is_refused(server):
    client = yield hostile_client(server.port, ATTACKERS[5])
    replies = yield client.ask({"t": "login", "name": "ned", "outbox": "short"}, "error")
    error = [m for m in replies if m.get("t") == "error"][0]
    assert "outbox" in error["text"] and "16" in error["text"]
