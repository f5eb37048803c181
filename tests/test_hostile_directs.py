"""Direct messages on a real server over loopback, while others chat: a
conversation belongs to the sessions (a guest's) or accounts that took part
in it, not to a name, so whoever takes a guest's name after it left reads
none of what was said to or by that guest."""

import pytest
import pytest_twisted

from conftest import wait_until
from hostile import ATTACKERS, Chatters, HostileServer, hostile_client


@pytest.fixture
def server(tmp_path):
    server = HostileServer(tmp_path)
    yield server
    server.stop()


def texts(replies):
    return [m["text"] for m in replies if m.get("t") == "direct_message"]


@pytest_twisted.inlineCallbacks
def test_the_next_guest_of_a_name_reads_none_of_the_last_ones_directs(server, pins):
    chat = yield Chatters(server, pins).start()
    ann = yield hostile_client(server.port, ATTACKERS[0], name="ann")
    kim = yield hostile_client(server.port, ATTACKERS[1], name="kim")
    yield ann.ask({"t": "direct", "to": "kim", "text": "the door code is 4711", "cid": "d1"},
                  "direct_message")
    yield wait_until(lambda: texts(kim.received) == ["the door code is 4711"])
    yield kim.ask({"t": "direct", "to": "ann", "text": "thanks", "cid": "k1"}, "direct_message")
    kim.send({"t": "logout"})
    yield wait_until(lambda: kim.closed)
    yield wait_until(lambda: "kim" not in server.service.core.by_key)

    # A stranger takes the free name and asks for everything there is.
    stranger = yield hostile_client(server.port, ATTACKERS[2])
    replies = yield stranger.ask({"t": "login", "name": "kim", "positions": [["@ann", 0]],
                                  "since": 0}, "welcome")
    replies += yield stranger.ask({"t": "history", "conversation": "@ann",
                                   "before": 2**53, "limit": 100}, "history_end")
    assert texts(replies) == [] and texts(stranger.received) == []
    [end] = [m for m in replies if m.get("t") == "history_end" and m["conversation"] == "@ann"]
    assert end["more"] is False
    # ann still has the whole conversation, and the stranger's own lines
    # with ann are the stranger's.
    yield stranger.ask({"t": "direct", "to": "ann", "text": "hello?", "cid": "s1"}, "direct_message")
    mine = yield stranger.ask({"t": "history", "conversation": "@ann", "before": 2**53,
                               "limit": 100}, "history_end")
    assert texts(mine) == ["hello?"]
    hers = yield ann.ask({"t": "history", "conversation": "@kim", "before": 2**53,
                          "limit": 100}, "history_end")
    assert texts(hers) == ["the door code is 4711", "thanks", "hello?"]
    yield chat.check()


@pytest_twisted.inlineCallbacks
def test_a_guest_who_registers_keeps_its_direct_conversations(server):
    ann = yield hostile_client(server.port, ATTACKERS[3], name="ann")
    lou = yield hostile_client(server.port, ATTACKERS[4], name="lou")
    yield ann.ask({"t": "direct", "to": "lou", "text": "welcome, lou", "cid": "a1"},
                  "direct_message")
    yield wait_until(lambda: texts(lou.received) == ["welcome, lou"])
    replies = yield lou.ask({"t": "register", "password": "a long password"}, "notice")
    assert any("registered to you" in m.get("text", "") for m in replies), replies
    page = yield lou.ask({"t": "history", "conversation": "@ann", "before": 2**53,
                          "limit": 100}, "history_end")
    assert texts(page) == ["welcome, lou"]
