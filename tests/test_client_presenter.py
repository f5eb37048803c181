"""The desktop client's presenter, with a real (unconnected) ChatClient."""

import pytest

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.presenter import ROOM, ChatPresenter, name_colour
from spchat.client.session import ChatClient, Status

T = 1_700_000_000_000


@pytest.fixture
def chat(tmp_path):
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    client.message_received(wire.Welcome("me", "s", "t", ROOM, T, 0, 0, 2000, 10))
    presenter = ChatPresenter(client)
    presenter.event(wire.Members(ROOM, (("me", "online"), ("bob", "idle"))))
    return presenter


def test_own_message_is_pending_then_confirmed_in_place(chat):
    chat.send("hello")
    (line,) = chat.lines()
    assert (line.text, line.own, line.pending) == ("hello", True, True)
    chat.event(wire.RoomMessage(7, T, ROOM, "bob", "hi"))
    chat.event(wire.RoomMessage(6, T, ROOM, "me", "hello", line.cid))  # the ack
    lines = chat.lines()
    assert [(l.text, l.pending, l.seq) for l in lines] == [("hello", False, 6), ("hi", False, 7)]


def test_typed_while_reconnecting_stays_pending(chat):
    chat.status(Status("reconnecting", 2, 5, 6.0, "connection lost"))
    assert chat.status_text() == "reconnecting (attempt 2 of 5), next try in 6 s"
    chat.send("are you there?")
    assert chat.lines()[-1].pending
    chat.status(Status("connected", resumed=True))
    assert chat.status_text() == "connected as me"


def test_refused_message_says_why(chat):
    chat.send("x" * 10)
    cid = chat.lines()[-1].cid
    chat.event(wire.Error("too_long", "the message is too long", cid))
    line = chat.lines()[-1]
    assert line.kind == "error" and not line.pending
    assert "not sent: the message is too long" in line.text


def test_direct_messages_have_their_own_view_and_unread_counts(chat):
    chat.event(wire.DirectMessage(3, T, "bob", "me", "psst"))
    chat.event(wire.DirectMessage(4, T, "bob", "me", "still there?"))
    assert chat.conversations() == [(ROOM, 0), ("bob", 2)]
    assert [l.text for l in chat.lines(ROOM)] == []
    chat.open("BOB")  # a double-click, in any case
    assert chat.active == "bob" and chat.conversations() == [(ROOM, 0), ("bob", 0)]
    chat.send("yes")
    cid = chat.lines()[-1].cid
    chat.event(wire.DirectMessage(5, T, "me", "bob", "yes", cid))
    assert [(l.text, l.pending) for l in chat.lines()] == [
        ("psst", False), ("still there?", False), ("yes", False)]
    chat.open(ROOM)
    chat.event(wire.RoomMessage(6, T, ROOM, "bob", "in the room"))
    assert chat.conversations() == [(ROOM, 0), ("bob", 0)]


def test_msg_command_opens_the_conversation(chat):
    chat.send("/msg Bob lunch?")
    assert chat.active == "bob" and chat.lines()[-1].text == "lunch?"
    chat.send("/msg nobodytext")
    assert chat.lines()[-1].kind == "error"


def test_history_is_marked_and_kept_in_order(chat):
    chat.event(wire.RoomMessage(10, T, ROOM, "bob", "new"))
    chat.event(wire.RoomMessage(2, T, ROOM, "bob", "old", history=True))
    chat.event(wire.RoomMessage(5, T, ROOM, "bob", "older page", history=True))
    assert [(l.text, l.history) for l in chat.lines()] == [
        ("old", True), ("older page", True), ("new", False)]


def test_notices_errors_members_and_offline(chat):
    chat.event(wire.Notice(ROOM, T, "join", "carol joined"))
    chat.event(wire.Members(ROOM, (("carol", "online"), ("me", "online"))))
    assert chat.members == (("carol", "online"), ("me", "online"))
    assert chat.lines()[-1].kind == "notice"
    chat.event(wire.Bye("kicked", "you were kicked: spam"))
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    assert chat.status_text() == "offline: you were kicked: spam"
    assert not chat.can_reconnect
    chat.status(Status("offline", reason="could not reconnect", recovery="manual"))
    assert chat.can_reconnect


def test_names_keep_their_colour():
    assert name_colour("Alice") == name_colour("alice")
    assert len({name_colour(n) for n in ("a", "b", "c", "d", "e", "f")}) > 1
