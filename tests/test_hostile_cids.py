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
    replies = yield client.ask({"t": "say", "room": "lobby", "text": text, "cid": cid},
                               "message")
    return [m for m in replies if m.get("t") == "message" and m.get("cid") == cid][0]


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
    assert theirs["text"] == "a different line" and theirs["seq"] == mine["seq"] + 1
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
