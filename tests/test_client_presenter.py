"""The desktop client's presenter, with a real (unconnected) ChatClient."""

import dataclasses

import pytest
from twisted.internet.task import Clock

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.commands import NO_ROOM, ROOM_USAGE
from spchat.client.presenter import (ChatPresenter, Conversation, MemberRow, mentions,
                                     PALETTE, moderation_actions, name_colour)
from spchat.client.session import ChatClient, Status

T = 1_700_000_000_000
ROOM = "#lobby"


def joins_as_typed(messages):
    """Requests as a user typed them: a join's cid is the client's own."""
    return [dataclasses.replace(m, cid=None) if isinstance(m, wire.Join) else m
            for m in messages]


def room(name, topic="", last_seq=0, private=False, locked=False):
    return wire.RoomState(name, topic, private, locked, last_seq)


@pytest.fixture
def chat(tmp_path):
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    presenter = ChatPresenter(client)
    client.on_event = presenter.event  # as the desktop controller wires it
    client.on_status = presenter.status
    # A welcome naming no room: #lobby's state then comes as after a join
    # whose history was empty (the history on join is test_*_history's).
    client.message_received(wire.Welcome("me", "s", "t", (), T, 0, 2000, 10))
    client.message_received(room("lobby"))
    client.message_received(wire.Members("lobby", (("bob", "idle", "member"),
                                                   ("me", "online", "member"))))
    return presenter


def tabs(chat):
    """(view, unread) of each conversation."""
    return [c[:2] for c in chat.conversations()]


def feed(chat, *messages):
    """Messages from the server, through the client as in the window."""
    for msg in messages:
        chat.client.message_received(msg)


def test_own_message_is_pending_then_confirmed_in_place(chat):
    chat.send("hello")
    (line,) = chat.lines()
    assert (line.text, line.own, line.pending) == ("hello", True, True)
    chat.event(wire.RoomMessage(7, T, "lobby", "bob", "hi"))
    chat.event(wire.RoomMessage(6, T, "lobby", "me", "hello", line.cid))  # the ack
    lines = chat.lines()
    assert [(l.text, l.pending, l.seq) for l in lines] == [("hello", False, 6), ("hi", False, 7)]


def test_a_line_typed_offline_goes_after_the_lines_missed_meanwhile(chat):
    chat.status(Status("reconnecting", 1, 3, 1.0, "connection lost"))
    chat.send("typed offline")
    chat.status(Status("connected", resumed=True))
    # The replay of what was missed comes first; the pending line stays last.
    chat.event(wire.RoomMessage(2, T, "lobby", "bob", "missed one"))
    chat.event(wire.Notice("lobby", T, "join", "carol joined"))
    chat.event(wire.RoomMessage(3, T, "lobby", "bob", "missed two"))
    assert [(l.text, l.pending) for l in chat.lines()] == [
        ("connection lost; reconnecting…", False), ("reconnected", False),
        ("missed one", False), ("carol joined", False), ("missed two", False),
        ("typed offline", True)]
    cid = chat.lines()[-1].cid
    chat.event(wire.RoomMessage(4, T, "lobby", "me", "typed offline", cid))  # its ack
    chat.event(wire.RoomMessage(5, T, "lobby", "bob", "after it"))
    assert [(l.text, l.seq) for l in chat.lines()][2:] == [
        ("missed one", 2), ("carol joined", 0), ("missed two", 3), ("typed offline", 4),
        ("after it", 5)]


def test_typed_while_reconnecting_stays_pending(chat):
    chat.status(Status("reconnecting", 2, 5, 6.0, "connection lost"))
    assert chat.status_text() == (
        "reconnecting (attempt 2 of 5), next try in 6 s — connection lost")
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
    assert tabs(chat) == [(ROOM, 0), ("bob", 2)]
    assert [l.text for l in chat.lines(ROOM)] == []
    chat.open("BOB")  # a double-click, in any case
    assert chat.active == "bob" and tabs(chat) == [(ROOM, 0), ("bob", 0)]
    assert chat.header() == "direct conversation with bob"
    assert chat.member_room() == "lobby"  # the list beside it stays the room's
    chat.send("yes")
    cid = chat.lines()[-1].cid
    chat.event(wire.DirectMessage(5, T, "me", "bob", "yes", cid))
    assert [(l.text, l.pending) for l in chat.lines()] == [
        ("psst", False), ("still there?", False), ("yes", False)]
    chat.open(ROOM)
    chat.event(wire.RoomMessage(6, T, "lobby", "bob", "in the room"))
    assert tabs(chat) == [(ROOM, 0), ("bob", 0)]


def test_a_direct_conversation_closes_and_comes_back_with_a_new_line(chat):
    from spchat.client.presenter import MenuAction

    feed(chat, wire.DirectMessage(3, T, "bob", "me", "psst"))
    chat.open("bob")
    chat.send("typed, not yet sent")
    (close,) = chat.conversation_actions("bob")
    assert close == MenuAction("Close the conversation with bob", "close")
    chat.act_on_conversation("bob", close)  # its line is still on its way: kept
    assert tabs(chat) == [(ROOM, 0), ("bob", 0)]
    assert "still on their way" in chat.lines()[-2].text  # above the pending line
    cid = [l for l in chat.lines() if l.pending][0].cid
    feed(chat, wire.DirectMessage(4, T, "me", "bob", "typed, not yet sent", cid))
    chat.act_on_conversation("bob", close)
    assert tabs(chat) == [(ROOM, 0)] and chat.active == ROOM  # the room opens instead
    # Scrolling up in it again starts from the newest page, not past what was shown.
    chat.open("bob")
    chat.client.sent = []
    chat.client._request = chat.client.sent.append
    assert chat.reached_top()
    assert chat.client.sent[-1].before > 4
    feed(chat, wire.DirectMessage(5, T, "bob", "me", "back again"))
    assert [l.text for l in chat.lines("bob")] == ["back again"]


def test_msg_sends_from_where_one_is_and_query_opens_the_conversation(chat):
    chat.send("/msg Bob lunch?")
    # Still in the room: the next plain line goes to the room, not to bob.
    assert chat.active == ROOM
    assert [(l.kind, l.text) for l in chat.lines()] == [("notice", "to bob: lunch?")]
    assert [(l.text, l.pending) for l in chat.lines("bob")] == [("lunch?", True)]
    assert [c.view for c in chat.conversations()] == [ROOM, "bob"]
    chat.send("for everyone")
    assert chat.lines()[-1].text == "for everyone" and chat.lines()[-1].pending
    chat.send("/msg nobodytext")
    assert chat.lines()[-2].kind == "error" and chat.lines()[-2].text == "usage: /msg NAME TEXT"

    chat.send("/query BOB")
    assert chat.active == "bob" and len(chat.lines()) == 1
    chat.open(ROOM)
    chat.send("/query bob  still hungry?")
    assert chat.active == "bob" and chat.lines()[-1].text == "still hungry?"
    chat.send("/query")
    assert chat.lines()[-3].text == "usage: /query NAME [TEXT]"
    chat.send("/query #lobby")
    assert chat.active == "bob" and chat.lines()[-3].kind == "error"


def test_history_is_marked_and_kept_in_order(chat):
    chat.event(wire.RoomMessage(10, T, "lobby", "bob", "new"))
    chat.event(wire.RoomMessage(2, T, "lobby", "bob", "old", history=True))
    chat.event(wire.RoomMessage(5, T, "lobby", "bob", "older page", history=True))
    assert [(l.text, l.history) for l in chat.lines()] == [
        ("old", True), ("older page", True), ("new", False)]


def test_notices_errors_members_and_offline(chat):
    feed(chat, wire.Notice("lobby", T, "join", "carol joined"),
         wire.Members("lobby", (("carol", "online", "owner"), ("me", "online", "member"))))
    assert chat.member_rows() == [MemberRow("carol", "online", "owner", False),
                                  MemberRow("me", "online", "member", True)]
    assert chat.lines()[-1].kind == "notice"
    chat.event(wire.Bye("kicked", "you were kicked: spam"))
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    assert chat.status_text() == "offline: you were kicked: spam"
    assert not chat.can_reconnect
    assert chat.member_rows() == []  # not live any more: not shown as if it were
    assert chat.lines()[-1].notice == "kicked"  # styled as an alert
    chat.status(Status("offline", reason="could not reconnect", recovery="manual"))
    assert chat.can_reconnect


def test_names_keep_their_colour():
    assert name_colour("Alice") == name_colour("alice")
    assert len({name_colour(n) for n in ("a", "b", "c", "d", "e", "f")}) > 1


def contrast(colour, background):
    """WCAG 2's contrast ratio of two "#rrggbb" colours."""
    def luminance(text):
        def linear(c):
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (linear(int(text[i:i + 2], 16) / 255) for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(colour), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_name_colours_are_readable_on_white_and_told_apart():
    import colorsys

    hues = []
    for colour in PALETTE:
        # White, and the tints of history, own and mentioning lines.
        assert min(contrast(colour, bg) for bg in ("#ffffff", "#f4f4f4", "#eef4ff", "#fff4ce")) >= 4.5
        hue, _, saturation = colorsys.rgb_to_hls(*(int(colour[i:i + 2], 16) / 255
                                                   for i in (1, 3, 5)))
        assert saturation >= 0.4, colour  # no grey
        hues.append(hue * 360)
    gaps = [(b - a) % 360 for a, b in zip(sorted(hues), sorted(hues)[1:] + sorted(hues)[:1])]
    assert min(gaps) >= 15


def test_reconnect_countdown_ticks_and_the_button_follows(tmp_path):
    clock = Clock()
    clock.advance(100)
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    chat = ChatPresenter(client, clock=clock.seconds)
    chat.status(Status("reconnecting", 1, 3, 4.0, "connection lost"))
    assert "next try in 4 s" in chat.status_text() and chat.can_reconnect
    clock.advance(1.5)
    assert "next try in 3 s" in chat.status_text()
    clock.advance(3)
    assert "trying now…" in chat.status_text()
    chat.status(Status("offline", reason="the server is shutting down"))
    assert chat.status_text() == "offline: the server is shutting down"
    assert chat.can_reconnect
    chat.status(Status("connected"))
    assert not chat.can_reconnect


def test_older_history_is_asked_once_at_a_time_and_not_past_the_start(chat):
    sent = []
    chat.client._request = sent.append  # what would go to the server
    assert chat.reached_top() is True
    assert chat.reached_top() is False  # a page is on its way: scrolling more asks nothing
    assert [type(m).__name__ for m in sent] == ["HistoryRequest"]
    assert (sent[0].conversation, sent[0].before) == ("#lobby", 1)
    feed(chat, wire.RoomMessage(3, T, "lobby", "bob", "third", history=True),
         wire.HistoryEnd(3, True, "#lobby"))
    assert chat.reached_top() is True and sent[-1].before == 3
    feed(chat, wire.HistoryEnd(1, False, "#lobby"))  # the very first message was reached
    assert chat.reached_top() is False
    chat.send("/history")
    assert chat.lines()[-1].text == "no older messages" and len(sent) == 2


def test_commands_typed_in_the_entry(chat):
    sent = []
    chat.client._request = sent.append
    chat.send("/help")
    assert chat.lines()[-1].notice == "help" and "/msg NAME TEXT" in chat.lines()[-1].text
    chat.send("/register s3cret")
    assert type(sent[-1]).__name__ == "Register" and sent[-1].password == "s3cret"
    chat.send("/password s3cret n3w")
    assert type(sent[-1]).__name__ == "ChangePassword"
    chat.send("/password onlyone")
    assert chat.lines()[-1].text == "usage: /register PASSWORD, /password OLD NEW"
    chat.send("/who")
    assert chat.lines()[-1].text == "in #lobby: bob (idle), me (online)"
    chat.send("/frobnicate")
    assert chat.lines()[-1].text == "unknown command /frobnicate; /help lists them"
    chat.send("/reconnect")
    assert chat.lines()[-1].text == "cannot reconnect now: connected as me"
    chat.send("//shrug")  # a line that starts with / is said with one /
    assert (chat.lines()[-1].text, chat.lines()[-1].pending) == ("/shrug", True)
    assert len(sent) == 2  # nothing else reached the server


def test_too_long_is_refused_before_sending(chat):
    chat.client.max_message_bytes = 10
    chat.send("x" * 11)
    line = chat.lines()[-1]
    assert line.kind == "error" and "limit is 10 bytes" in line.text
    assert not chat.client.outbox


def test_member_rows_mark_me_and_states(chat):
    feed(chat, wire.Members("lobby", (("bob", "idle", "operator"), ("Me", "online", "member"),
                                      ("eve", "reconnecting", "muted"))))
    assert chat.member_rows() == [("bob", "idle", "operator", False),
                                  ("Me", "online", "member", True),
                                  ("eve", "reconnecting", "muted", False)]
    chat.event(wire.DirectMessage(3, T, "bob", "me", "psst"))
    chat.event(wire.DirectMessage(4, T, "eve", "me", "hey"))
    assert chat.unread_total() == 2


def test_member_updates_keep_the_list_in_the_servers_order(tmp_path):
    from spchat.client.members import MemberList

    members = MemberList((("alice", "online", "owner"), ("Carol", "idle", "member")))
    members.update("bob", "online")
    assert tuple(members) == (("alice", "online", "owner"), ("bob", "online", "member"),
                              ("Carol", "idle", "member"))
    members.update("CAROL", "gone")
    assert tuple(members) == (("alice", "online", "owner"), ("bob", "online", "member"))
    members.update("bob", "reconnecting", "operator")
    assert tuple(members)[1] == ("bob", "reconnecting", "operator")
    # Fed to a client, an update changes the room's list and reaches its listeners.
    got = []
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path), on_event=got.append)
    client.message_received(room("lobby"))
    client.message_received(wire.Members("lobby", (("me", "online", "member"),)))
    client.message_received(wire.MemberUpdate("lobby", "zed", "online", "muted"))
    assert got[-1] == wire.MemberUpdate("lobby", "zed", "online", "muted")
    assert client.room_members("#LOBBY") == (("me", "online", "member"),
                                             ("zed", "online", "muted"))
    assert client.members == (("me", "online"), ("zed", "online"))


def test_a_user_called_lobby_is_a_person_not_the_room(chat):
    chat.event(wire.DirectMessage(3, T, "lobby", "me", "psst"))
    assert [l.text for l in chat.lines(ROOM)] == []
    assert tabs(chat) == [(ROOM, 0), ("lobby", 1)]
    chat.open("lobby")
    chat.send("a private answer")
    assert list(chat.client.outbox.values())[-1] == wire.Direct(
        "lobby", "a private answer", chat.lines()[-1].cid)


def test_a_dropped_connection_does_not_block_older_history_for_good(chat):
    sent = []
    chat.client._request = sent.append
    assert chat.reached_top()
    chat.status(Status("reconnecting", 1, 3, 1.0, "connection lost"))  # the page is lost
    chat.status(Status("connected", resumed=True))
    assert chat.reached_top() and len(sent) == 2


def test_a_direct_message_typed_with_other_capitals_is_confirmed(chat):
    feed(chat, wire.Members("lobby", ()))  # nobody listed: "BOB" stays as typed
    chat.send("/query BOB hi")
    assert chat.active == "BOB" and chat.lines()[-1].pending
    cid = chat.lines()[-1].cid
    chat.event(wire.DirectMessage(9, T, "me", "bob", "hi", cid))
    assert chat.active == "bob"
    assert [(l.text, l.pending) for l in chat.lines()] == [("hi", False)]
    assert [c.view for c in chat.conversations()] == [ROOM, "bob"]


def test_after_a_kick_nothing_stays_sending(chat):
    chat.send("one last word")
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    line = chat.lines()[-1]
    assert not line.pending and line.kind == "error"
    assert line.text == "one last word  (not sent: you were kicked: spam)"


def test_a_member_list_cut_off_with_its_connection_is_not_glued_to_the_next(tmp_path):
    from twisted.internet.task import Clock

    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path))
    client.message_received(room("lobby"))
    client.message_received(wire.Members("lobby", (("old1", "online", "member"),
                                                   ("old2", "online", "member")), more=True))
    client.connection_lost("connection lost")  # before the last part came
    client.message_received(wire.Members("lobby", (("me", "online", "member"),)))
    assert client.room_members("lobby") == (("me", "online", "member"),)


# --- rooms -------------------------------------------------------------------------


@pytest.fixture
def rooms(chat):
    """In #lobby (open) and #Dev, where alice is the owner."""
    feed(chat, room("Dev", topic="plans", locked=True),
         wire.Members("Dev", (("alice", "online", "owner"), ("me", "online", "member"))))
    chat.sent = []
    chat.client._request = chat.sent.append  # what would go to the server
    return chat


def test_each_room_has_its_view_listed_before_direct_conversations(rooms):
    chat = rooms
    feed(chat, wire.DirectMessage(1, T, "carol", "me", "hi me"),
         wire.RoomMessage(1, T, "dev", "alice", "plans are ready"),
         wire.RoomMessage(2, T, "Dev", "alice", "old", history=True),
         wire.RoomMessage(3, T, "lobby", "bob", "in the open room"))
    assert chat.conversations() == [Conversation("#lobby", 0), Conversation("#Dev", 1),
                                    Conversation("carol", 1)]
    assert [l.text for l in chat.lines("#Dev")] == ["old", "plans are ready"]
    assert chat.lines()[-1].text == "in the open room"
    chat.open("#dev")
    assert chat.active == "#Dev" and chat.conversations()[1] == ("#Dev", 0, False, False)
    assert chat.header() == "#Dev (topic locked) — plans"
    assert chat.member_rows() == [MemberRow("alice", "online", "owner", False),
                                  MemberRow("me", "online", "member", True)]


def test_a_line_naming_me_marks_its_room(rooms):
    chat = rooms
    feed(chat, wire.RoomMessage(1, T, "Dev", "alice", "someday"),
         wire.RoomMessage(2, T, "Dev", "alice", "ME: are you there?"),
         wire.RoomMessage(4, T, "lobby", "bob", "hey me"),  # the open room: seen
         wire.RoomMessage(3, T, "Dev", "me", "my own me"))
    assert chat.conversations()[:2] == [("#lobby", 0, False, False), ("#Dev", 2, True, False)]
    assert [l.mention for l in chat.lines("#Dev")] == [False, True, False]
    chat.open("#Dev")
    assert chat.conversations()[1] == ("#Dev", 0, False, False)
    # In a direct conversation every line is for me: no mark beyond the count.
    chat.event(wire.DirectMessage(1, T, "bob", "me", "me me me"))
    assert chat.conversations()[-1] == ("bob", 1, False, False)


@pytest.mark.parametrize("text, named", [
    ("hi me", True), ("Me?", True), ("(me)", True), ("meet me later", True),
    ("meeting", False), ("name", False), ("theme", False), ("me_too", False),
])
def test_a_mention_is_my_name_as_a_word_in_any_case(text, named):
    assert mentions(text, "Me") is named


def test_join_opens_the_room_once_in_and_part_marks_it_left(rooms):
    chat = rooms
    chat.send("/join #Ops private")
    assert joins_as_typed(chat.sent) == [wire.Join("Ops", True)] and chat.active == "#lobby"
    feed(chat, room("ops", private=True))
    assert chat.active == "#ops" and chat.header() == "#ops (private)"
    chat.send("hello ops")
    assert list(chat.client.outbox.values())[-1].room == "ops"
    chat.send("/join dev")  # in it already: opened at once
    assert chat.active == "#Dev"
    chat.send("/part bye all")
    assert chat.sent[-1] == wire.Part("Dev", "bye all")
    feed(chat, wire.RoomLeft("Dev", "part", "you left #Dev"))
    assert chat.conversations()[1] == ("#Dev", 0, False, True)
    assert chat.lines()[-1].text == "you left #Dev" and chat.member_rows() == []
    assert "no longer in this room" in chat.header()
    chat.send("anyone?")
    assert chat.lines()[-1].kind == "error" and "/join #Dev" in chat.lines()[-1].text
    feed(chat, room("Dev"))  # joined again (from another client)
    assert chat.conversations()[1].left is False


def test_a_room_joined_again_does_not_show_its_history_twice(rooms):
    chat = rooms
    feed(chat, wire.RoomMessage(1, T, "Dev", "alice", "one", history=True),
         wire.RoomMessage(2, T, "Dev", "alice", "two"),
         wire.RoomLeft("Dev", "part", "you left #Dev"), room("Dev", last_seq=2),
         wire.RoomMessage(1, T, "Dev", "alice", "one", history=True),
         wire.RoomMessage(2, T, "Dev", "alice", "two", history=True))
    assert [l.text for l in chat.lines("#Dev")] == ["one", "two", "you left #Dev"]


def test_room_commands_act_on_the_open_room(rooms):
    chat = rooms
    chat.open("#Dev")
    for typed in ("/topic new plans", "/mode +i", "/kick bob spam", "/ban bob 30", "/op carol",
                  "/invite dan", "/rooms"):
        chat.send(typed)
    assert chat.sent == [wire.Topic("Dev", "new plans"), wire.Mode("Dev", "private", True),
                         wire.Moderate("Dev", "kick", "bob", "spam"),
                         wire.Moderate("Dev", "ban", "bob", None, 30.0),
                         wire.Moderate("Dev", "op", "carol"), wire.Moderate("Dev", "invite", "dan"),
                         wire.ListRooms()]
    chat.send("/topic")
    assert chat.lines()[-1].text == "topic of #Dev: plans (topic locked)"
    chat.send("/who")
    assert chat.lines()[-1].text == "in #Dev: alice (online, owner), me (online)"
    chat.send("/mode +q")
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "usage: " + ROOM_USAGE["/mode"])
    chat.event(wire.RoomList((("lobby", 3, ""),)))
    assert [l.text for l in chat.lines()[-2:]] == ["rooms:", "#lobby (3 members)"]
    # In a direct conversation there is no room to act on.
    chat.open("bob")
    chat.send("/kick alice")
    assert chat.lines()[-1].text == NO_ROOM and len(chat.sent) == 7


def test_notices_go_to_their_room_or_to_the_open_view(rooms):
    chat = rooms
    feed(chat, wire.Notice("dev", T, "topic", "alice set the topic: plans"),
         wire.Notice("", T, "account", "the name me is now registered to you"),
         wire.Notice("secret", T, "invite", "alice invited you to #secret"))
    assert [l.text for l in chat.lines("#Dev")] == ["alice set the topic: plans"]
    assert [l.text for l in chat.lines("#lobby")] == ["the name me is now registered to you",
                                                      "alice invited you to #secret"]


def test_history_is_asked_for_the_open_conversation(rooms):
    chat = rooms
    feed(chat, wire.HistoryEnd(1, False, "#lobby"))
    assert chat.reached_top() is False  # the lobby's start was reached
    feed(chat, wire.DirectMessage(7, T, "bob", "me", "psst"))
    chat.open("bob")
    assert chat.reached_top() and chat.sent[-1] == wire.HistoryRequest(7, 50, "@bob")
    chat.open("#Dev")
    assert chat.reached_top() and chat.sent[-1].conversation == "#Dev"


def test_what_is_said_before_the_first_room_shows_in_it(tmp_path):
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    chat = ChatPresenter(client)
    client.on_event = chat.event
    chat.notice("file sharing is off: port taken", "sharing")
    assert chat.conversations() == []
    client.message_received(wire.Welcome("me", "s", "t", ("lobby",), T, 0, 2000, 10))
    client.message_received(room("dev"))
    client.message_received(room("lobby"))
    assert chat.active == "#dev" and [c.view for c in chat.conversations()] == ["#dev", "#lobby"]
    assert chat.lines()[0].text == "file sharing is off: port taken"


def test_presence_changes_states_in_the_open_rooms_list(chat):
    chat.client._presence_snapshot((("bob", "online"), ("me", "idle"), ("zed", "online")))
    assert chat.member_rows() == [("bob", "online", "member", False),
                                  ("me", "idle", "member", True)]


def labels(actions):
    return [action.label for action in actions]


def test_members_are_listed_by_role_then_in_the_servers_order(rooms):
    chat = rooms
    feed(chat, wire.Members("lobby", (("amy", "online", "muted"), ("bob", "idle", "member"),
                                      ("cy", "online", "owner"), ("dee", "online", "operator"),
                                      ("me", "online", "member"), ("zoe", "online", "owner"))))
    assert [(row.name, row.role) for row in chat.member_rows()] == [
        ("cy", "owner"), ("zoe", "owner"), ("dee", "operator"), ("bob", "member"),
        ("me", "member"), ("amy", "muted")]
    assert chat.my_role() == "member"


@pytest.mark.parametrize("mine, theirs, offered", [
    ("member", "member", []),
    ("muted", "member", []),
    ("operator", "operator", []),
    ("operator", "owner", []),
    ("operator", "member", ["Kick bob", "Ban bob for an hour", "Ban bob for ever", "Mute bob",
                            "Make bob an operator"]),
    ("operator", "muted", ["Kick bob", "Ban bob for an hour", "Ban bob for ever", "Unmute bob",
                           "Make bob an operator"]),
    ("owner", "operator", ["Kick bob", "Ban bob for an hour", "Ban bob for ever",
                           "Make bob a plain member", "Make bob an owner"]),
    ("owner", "member", ["Kick bob", "Ban bob for an hour", "Ban bob for ever", "Mute bob",
                         "Make bob an operator", "Make bob an owner"]),
    ("owner", "owner", []),
])
def test_moderation_offered_is_what_the_server_allows(mine, theirs, offered):
    assert labels(moderation_actions(mine, theirs, "bob")) == offered


def test_a_members_menu_acts_on_the_room_whose_members_show(rooms):
    chat = rooms
    feed(chat, wire.Members("Dev", (("alice", "online", "member"), ("bob", "online", "muted"),
                                    ("me", "online", "owner"))))
    chat.open("#Dev")
    me, alice, bob = chat.member_rows()  # the owner first, the muted last
    assert me.me and chat.member_actions(me) == []
    actions = chat.member_actions(alice)
    assert labels(actions)[:3] == ["Message alice", "Kick alice", "Ban alice for an hour"]
    chat.act_on_member("alice", actions[2])
    chat.act_on_member("bob", next(a for a in chat.member_actions(bob) if a.op == "unmute"))
    assert chat.sent == [wire.Moderate("Dev", "ban", "alice", None, 60.0),
                         wire.Moderate("Dev", "unmute", "bob")]
    chat.open("carol")  # beside a direct conversation the list is still #Dev's
    chat.act_on_member("alice", actions[1])
    assert chat.sent[-1] == wire.Moderate("Dev", "kick", "alice")
    chat.act_on_member("bob", chat.member_actions(bob)[0])  # "Message bob"
    assert chat.active == "bob"
    # In #lobby I am a plain member: talking is all the menu offers.
    chat.open("#lobby")
    assert labels(chat.member_actions(chat.member_rows()[0])) == ["Message bob"]


def test_the_join_box_joins_or_creates_and_says_what_is_wrong(rooms):
    chat = rooms
    chat.join("#ops", private=True)
    chat.join("  news ")
    assert joins_as_typed(chat.sent) == [wire.Join("ops", True), wire.Join("news", False)]
    for typed in ("#", "", "two words"):
        chat.join(typed)
        assert chat.lines()[-1].kind == "error"
        assert chat.lines()[-1].text == "type the name of one room to join or create, as #name"
    assert len(chat.sent) == 2
    feed(chat, room("ops", private=True))
    assert chat.active == "#ops"  # opened once in
    # A refusal from the server is a line of the open conversation.
    feed(chat, wire.Error("banned", "you are banned from #news for ever"))
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "you are banned from #news for ever")


def test_a_left_room_can_be_joined_again_or_taken_off_the_list(rooms):
    chat = rooms
    chat.open("#Dev")
    assert labels(chat.conversation_actions("#Dev")) == ["Leave #Dev"]
    assert labels(chat.conversation_actions("bob")) == ["Close the conversation with bob"]
    chat.act_on_conversation("#Dev", chat.conversation_actions("#Dev")[0])
    assert chat.sent == [wire.Part("Dev", None)]
    feed(chat, wire.RoomLeft("Dev", "kicked", "you were kicked from #Dev by alice: spam"))
    rejoin, remove = chat.conversation_actions("#Dev")
    assert (rejoin.label, remove.label) == ("Join #Dev again", "Remove #Dev from the list")
    chat.act_on_conversation("#Dev", rejoin)
    assert joins_as_typed(chat.sent)[-1] == wire.Join("Dev", False)
    chat.act_on_conversation("#Dev", remove)
    assert [c.view for c in chat.conversations()] == ["#lobby"] and chat.active == "#lobby"
    assert chat.lines("#Dev") == []
    chat.remove("#lobby")  # still in it: stays
    assert [c.view for c in chat.conversations()] == ["#lobby"]
    # Out of every room and each taken off: nothing open, and a new room opens.
    feed(chat, wire.RoomLeft("lobby", "part", "you left #lobby"))
    chat.remove("#lobby")
    assert chat.conversations() == [] and chat.active == "" and chat.member_rows() == []
    feed(chat, room("dev"))
    assert chat.active == "#dev"


# --- file sharing: offers, Download, /share /files /get ------------------------


class FakeFetch:
    def __init__(self, file_id, name, size):
        from twisted.internet import defer

        self.file_id, self.size, self.done = file_id, size, 0
        self.manifest = type("M", (), {"name": name, "size": size})()
        self.result = defer.Deferred()
        self.path = None

    def progress(self):
        return {"name": self.manifest.name, "file": self.file_id, "done": self.done,
                "size": self.size, "rate": 1048576.0, "peers": 1, "eta": 2.0, "seconds": 1.0}

    def summary(self):
        return {**self.progress(), "path": str(self.path), "fetched": self.size,
                "from": {"alice": {"path": "direct", "received": self.size, "bad_pieces": 0,
                                   "dropped": ""}}}


class FakeSharing:
    """What the presenter uses of a SharingNode; each request's Deferred kept."""

    def __init__(self):
        self.fetches, self.seeds, self.asked, self.listed = {}, {}, [], 0
        self.cancelled = []

    def cancel(self, file_id):
        self.cancelled.append(file_id)
        self.fetches.pop(file_id, None)  # as the node's: no longer its download

    def fetch(self, ref, directory):
        from twisted.internet import defer

        d = defer.Deferred()
        self.asked.append(("fetch", ref, str(directory), d))
        return d

    def share(self, path, room):
        from twisted.internet import defer

        d = defer.Deferred()
        self.asked.append(("share", path, room, d))
        return d

    def list_files(self):
        self.listed += 1


FILE = "ab" * 32


@pytest.fixture
def sharing_chat(chat):
    chat.sharing = FakeSharing()
    chat.download_dir = "/tmp/dl"
    chat.changes = []
    chat.on_change = lambda: chat.changes.append(1)
    return chat


def test_an_offer_is_a_line_of_its_own_with_the_file_id(sharing_chat):
    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 12 * 1048576, "alice"))
    chat.event(wire.Offer("lobby", T, "cd" * 32, "mine.txt", 10, "Me"))
    offer, own = chat.lines(ROOM)
    assert (offer.kind, offer.sender, offer.text, offer.file, offer.own, offer.download) == (
        "offer", "alice", "shares talk.mp4 (12.0 MiB)", FILE, False, "")
    assert offer.colour == name_colour("alice")
    assert (own.kind, own.own, own.text) == ("offer", True, "shares mine.txt (10 bytes)")
    # A name that could fake a line is shown harmless.
    chat.event(wire.Offer("lobby", T, "ef" * 32, "evil\nbob: hi", 1, "alice"))
    assert "\n" not in chat.lines()[-1].text
    # The same offer again (the room joined again, a sharer confirmed): not twice;
    # the file offered anew later: a line of its own.
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 12 * 1048576, "alice"))
    assert [line.file for line in chat.lines(ROOM)].count(FILE) == 1
    chat.event(wire.Offer("lobby", T + 60_000, FILE, "talk.mp4", 12 * 1048576, "alice"))
    assert [line.file for line in chat.lines(ROOM)].count(FILE) == 2


def test_download_runs_with_a_progress_row_and_ends_saved(sharing_chat):
    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 2048, "alice"))
    chat.download(FILE)
    ((kind, ref, directory, d),) = chat.sharing.asked
    assert (kind, ref, directory) == ("fetch", FILE, "/tmp/dl")
    assert chat.lines()[-1].download == "running"  # the button is disabled
    (row,) = chat.download_rows()
    assert (row.fraction, row.text) == (0.0, "talk.mp4: asking the server for peers…")
    chat.download(FILE)  # a second click while it runs does nothing
    assert len(chat.sharing.asked) == 1
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.fetches[FILE] = fetch
    d.callback(fetch)
    fetch.done = 1024
    (row,) = chat.download_rows()
    assert row.fraction == 0.5
    assert row.text.startswith("talk.mp4: 50% (1.0 KiB of 2.0 KiB) at 1.0 MiB/s from 1 peer")
    fetch.path = "/tmp/dl/talk.mp4"
    fetch.done = 2048
    fetch.result.callback(fetch.path)
    # The row stays, saved (Open folder), until it is closed.
    (row,) = chat.download_rows()
    assert (row.state, row.fraction, row.text, row.folder) == (
        "saved", 1.0, "talk.mp4: saved in /tmp/dl", "/tmp/dl")
    assert not chat.downloads_running() and chat.download_folder(row.key) == "/tmp/dl"
    chat.show_folder(row.key)  # nothing opened it: the path is shown
    assert chat.download_rows()[0].folder_shown
    chat.close_download(row.key)
    assert chat.download_rows() == []
    offer, saved = chat.lines()
    assert offer.download == "saved"
    assert saved.kind == "notice" and saved.notice == "saved"
    assert saved.text.startswith("saved /tmp/dl/talk.mp4 (2.0 KiB in ")
    assert chat.changes  # the window is told without any event from the server
    chat.download(FILE)  # saved already: not again
    assert len(chat.sharing.asked) == 1
    # An offer of a file already saved shows it at once.
    chat.event(wire.Offer("lobby", T + 1, FILE, "talk.mp4", 2048, "bob"))
    assert chat.lines()[-1].download == "saved"


def test_a_failed_download_says_why_in_red_and_can_be_tried_again(sharing_chat):
    from spchat.p2p.node import SharingError

    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 2048, "alice"))
    chat.download(FILE)
    chat.sharing.asked[0][3].errback(SharingError("nobody has that file online"))
    offer, error = chat.lines()
    assert offer.download == "failed"
    assert (error.kind, error.text) == ("error", "cannot get talk.mp4: nobody has that file online")
    assert chat.download_rows() == []
    chat.download(FILE)  # tried again
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.asked[1][3].callback(fetch)
    fetch.result.errback(SharingError("no peer could be reached"))
    assert chat.lines()[-1].text == "talk.mp4: no peer could be reached"
    assert chat.lines()[0].download == "failed" and chat.download_rows() == []


def test_a_file_is_shared_in_the_open_room_and_not_from_a_direct_conversation(sharing_chat):
    chat = sharing_chat
    chat.event(room("dev"))
    chat.open("#dev")
    chat.share("/tmp/notes.txt")  # as the window's picker does
    assert chat.sharing.asked[-1][:3] == ("share", "/tmp/notes.txt", "dev")
    chat.open("bob")
    chat.send("/share /tmp/notes.txt")
    assert len(chat.sharing.asked) == 1
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "a file is offered to a room's members: open a room to share it")


def test_my_own_offer_can_be_stopped_while_i_share_the_file(sharing_chat):
    chat = sharing_chat
    chat.sharing.seeds[FILE] = object()
    chat.sharing.unshare = lambda ref: chat.sharing.seeds.pop(FILE) and FILE
    chat.event(wire.Offer("lobby", T, FILE, "mine.txt", 10, "Me"))
    assert chat.lines()[-1].download == "sharing"  # Stop sharing on it
    chat.unshare(FILE)
    offer, notice = chat.lines()
    assert offer.download == "" and notice.text == f"no longer sharing {FILE[:12]}"
    chat.sharing.unshare = lambda ref: None
    chat.send(f"/unshare {FILE[:8]}")
    assert chat.lines()[-1].text == f"you are not sharing a file {FILE[:8]}"


def test_cancel_stops_the_fetch_keeps_what_it_has_and_says_cancelled(sharing_chat):
    from spchat.p2p.node import SharingError

    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 2048, "alice"))
    chat.download(FILE)
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.fetches[FILE] = fetch
    chat.sharing.asked[0][3].callback(fetch)
    fetch.done = 1024
    (row,) = chat.download_rows()
    assert chat.downloads_running() and row.state == "running"
    chat.cancel_download(row.key)
    assert chat.sharing.cancelled == [FILE]
    fetch.result.errback(SharingError("interrupted; run it again to resume"))  # as node's
    (row,) = chat.download_rows()
    assert (row.state, row.text) == (
        "cancelled", "talk.mp4: cancelled at 50%; what was fetched is kept, Download resumes it")
    assert not chat.downloads_running() and chat.download_folder(row.key) is None
    offer = chat.lines()[0]
    assert offer.download == "failed"  # its button says Download again
    assert not [line for line in chat.lines() if line.kind == "error"]  # not an error
    chat.close_download(row.key)
    assert chat.download_rows() == []


def test_cancel_pressed_before_the_server_answered_stops_it_once_it_does(sharing_chat):
    chat = sharing_chat
    chat.download(FILE)
    (row,) = chat.download_rows()
    chat.cancel_download(row.key)
    chat.close_download(row.key)  # still running: a row is closed only once it is over
    assert len(chat.download_rows()) == 1
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.fetches[FILE] = fetch
    chat.sharing.asked[0][3].callback(fetch)
    assert chat.sharing.cancelled == [FILE]


def test_share_files_and_get_typed_in_the_entry(sharing_chat):
    from spchat.p2p.node import SharingError

    chat = sharing_chat
    chat.send("/share /tmp/my talk.mp4")  # a path with a space
    kind, path, room, d = chat.sharing.asked[-1]
    assert (kind, path, room) == ("share", "/tmp/my talk.mp4", chat.open_room())
    d.callback((FILE, type("M", (), {"name": "my talk.mp4", "size": 5 * 1024})()))
    assert chat.lines()[-1].text == f"sharing my talk.mp4 (5.0 KiB) as {FILE[:12]}"
    chat.send("/share /nope")
    chat.sharing.asked[-1][3].errback(SharingError("/nope is not a file"))
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "cannot share /nope: /nope is not a file")
    chat.send("/files")
    assert chat.sharing.listed == 1
    chat.event(wire.FileList(((FILE, "talk.mp4", 2048, "alice", 2),)))
    assert [l.text for l in chat.lines()[-2:]] == [
        "offered files:", f"{FILE[:12]}  talk.mp4 (2.0 KiB) from alice, 2 peers online"]
    chat.event(wire.FileList(()))
    assert chat.lines()[-1].text == "no files are offered"
    chat.send("/get abab /tmp/elsewhere")
    assert chat.sharing.asked[-1][:3] == ("fetch", "abab", "/tmp/elsewhere")
    assert len(chat.download_rows()) == 1
    chat.send("/get")
    assert chat.lines()[-1].text == "usage: /get ID [DIR]"
    chat.sharing = None
    chat.send("/files")
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "file sharing is off in this window")


def test_a_line_typed_after_a_kick_is_refused_with_the_reason_and_kept(chat):
    feed(chat, wire.Bye("disconnected", "the server disconnected everyone: upgrade"))
    chat.client.connection_lost(None)  # Disconnect all, in the monitor
    assert chat.send("hello?") is False  # the entry keeps it
    line = chat.lines()[-1]
    assert (line.kind, line.pending) == ("error", False)
    assert line.text == ("not sent: the server disconnected everyone: upgrade; the session is "
                         "over, connect again to send it (it is still in the entry)")
    assert chat.client.outbox == {}


def test_a_pending_line_says_when_it_waits_for_reconnect_now(chat):
    assert chat.pending_note() == "sending…"
    chat.status(Status("offline", reason="could not reconnect after 3 attempts: refused"))
    assert chat.pending_note() == "not sent yet: offline; Reconnect now sends it"


def test_tab_completes_the_members_beside_the_conversation_never_me(chat):
    assert chat.completion_names() == ["bob"]
    chat.open("carol")
    assert sorted(chat.completion_names()) == ["bob", "carol"]
    chat.status(Status("offline", reason="connection lost"))
    assert chat.completion_names() == ["carol"]


def test_lines_from_another_day_carry_their_date_and_a_separator(chat):
    from spchat.client.days import local_day

    day = 86_400_000
    chat.today = lambda: local_day(T + day)
    chat.event(wire.RoomMessage(2, T, "lobby", "bob", "last night", history=True))
    chat.event(wire.RoomMessage(3, T + day, "lobby", "bob", "this morning"))
    old, new = chat.lines()
    assert old.day == local_day(T) and new.day == local_day(T + day)
    assert chat.stamp(old) == f"{int(local_day(T)[8:])} Nov {old.time}"
    assert chat.stamp(new) == new.time
    assert [chat.day_break(None, old), chat.day_break(old, new)] == ["Yesterday", "Today"]
    assert chat.day_break(new, new) is None


def test_a_direct_message_or_a_mention_asks_for_attention_nothing_else(chat):
    asked = []
    chat.on_attention = lambda title, text: asked.append((title, text))
    feed(chat, wire.RoomMessage(1, T, "lobby", "bob", "just chatting"),
         wire.RoomMessage(2, T, "lobby", "bob", "ME: look at this"),
         wire.DirectMessage(3, T, "bob", "me", "psst"),
         wire.RoomMessage(0, T, "lobby", "bob", "old news for me", history=True),
         wire.RoomMessage(4, T, "lobby", "me", "me, myself"))
    assert asked == [("bob in #lobby", "ME: look at this"), ("bob", "psst")]


def test_a_drop_and_the_return_show_in_the_conversation(chat):
    assert not chat.members_stale
    chat.status(Status("reconnecting", 1, 3, 1.0, "the server went away"))
    chat.status(Status("reconnecting", 2, 3, 2.0, "the server went away"))  # said once
    assert chat.members_stale  # greyed, not shown as online
    chat.status(Status("connected", resumed=True))
    assert not chat.members_stale
    assert [(l.text, l.notice) for l in chat.lines()] == [
        ("connection lost (the server went away); reconnecting…", "connection"),
        ("reconnected", "connection")]
    # Given up, then Reconnect now: the same story.
    chat.status(Status("offline", reason="could not connect"))
    chat.status(Status("connecting"))
    chat.status(Status("connected", resumed=True))
    assert [l.text for l in chat.lines()][2:] == [
        "connection lost (could not connect); Reconnect now tries again", "reconnected"]


def test_a_kick_or_a_logout_is_no_lost_connection(chat):
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    assert chat.lines() == []
