"""The client session with rooms: positions per conversation, de-duplication,
what a resume or a new login carries, members per room, history paging.

No server: a fake protocol records what the client sends, and the tests
hand it the server's messages.
"""

import dataclasses

import pytest
from twisted.internet.task import Clock

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.session import FIRST_WINDOW, ChatClient, Positions, Status, name_key

from client_fakes import T, FakeProto, dm, room, say, welcome

@pytest.fixture
def session(tmp_path):
    """A client logged in, in #lobby (newest 10) and #dev (newest 3)."""
    events = []
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path),
                        on_event=events.append, presence=False)
    client.events = events
    proto = FakeProto()
    client.channel_open(proto)
    for msg in (welcome(), room("lobby", 10), room("Dev", 3)):
        client.message_received(msg)
    client.test_proto = proto
    return client


def shown(client, kind=(wire.RoomMessage, wire.DirectMessage)):
    return [(getattr(m, "room", None) or m.sender, m.seq) for m in client.events
            if isinstance(m, kind)]


def reconnect(client):
    """Drop the connection; the next one is open at once."""
    client.connection_lost("connection lost", client.test_proto)
    assert client.status.state == "reconnecting"
    proto = client.test_proto = FakeProto()
    client.channel_open(proto)
    return proto


def test_the_first_login_has_no_positions_and_registers_once(tmp_path):
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False,
                        password="pw", register=True)
    proto = client.test_proto = FakeProto()
    client.channel_open(proto)
    [first] = proto.sent
    assert first == wire.Login("me", "pw", True, None, 0, first.outbox)
    assert len(first.outbox) >= wire.MIN_OUTBOX_CHARS
    client.message_received(welcome())
    again = reconnect(client)
    client.message_received(wire.Error("resume_failed", "your session has expired"))
    login = again.sent[-1]
    # Been here: news only, no history; the same outbox, so re-sends are copies.
    assert login == wire.Login("me", "pw", False, (), T, first.outbox)


def test_each_room_numbers_on_its_own_and_repeats_are_dropped(session):
    for msg in (say(11, "lobby"), say(4, "dev"), say(4, "DEV"), say(11, "lobby"),
                say(12, "Lobby"), say(3, "dev")):
        session.message_received(msg)
    assert shown(session) == [("lobby", 11), ("dev", 4), ("Lobby", 12)]
    assert dict(session.positions.as_wire()) == {"#lobby": 12, "#Dev": 4}


def test_what_came_before_a_room_was_entered_is_history_not_news(session):
    # On join: the room's newest number, then its recent history.
    session.message_received(say(9, "lobby", history=True))
    session.message_received(say(10, "lobby", history=True))
    session.message_received(say(10, "lobby"))  # live, but seen already by number
    assert shown(session) == [("lobby", 9), ("lobby", 10)]
    assert session.positions.get("#lobby") == 10


def test_direct_conversations_are_named_by_the_other_party(session):
    session.message_received(dm(1, "Bob", "Me"))
    session.message_received(dm(2, "me", "BOB", cid=None))  # my own, from another client
    session.message_received(dm(2, "bob", "me"))  # the same number again: a repeat
    session.message_received(dm(1, "carol", "me"))  # another conversation, its own numbers
    assert shown(session) == [("Bob", 1), ("me", 2), ("carol", 1)]
    assert session.positions.get("@bob") == 2 and session.positions.get("@Carol") == 1


def test_resume_carries_every_conversation_and_when_the_view_began(session):
    session.message_received(say(11, "lobby"))
    session.message_received(dm(5, "bob", "me"))
    proto = reconnect(session)
    (resume,) = proto.sent
    assert resume == wire.Resume("sess", "tok", (("#Dev", 3), ("#lobby", 11), ("@bob", 5)), T)
    # Back in: the rooms come again and the replay follows, each message once.
    for msg in (welcome(T + 60_000, resumed=True), room("lobby", 13), room("dev", 3),
                say(11, "lobby"), say(12, "lobby"), say(13, "lobby"), dm(5, "bob", "me")):
        session.message_received(msg)
    assert shown(session) == [("lobby", 11), ("bob", 5), ("lobby", 12), ("lobby", 13)]
    assert session.since == T  # the first welcome's time, not the latest
    assert session.positions.get("#lobby") == 13


def test_an_expired_session_logs_in_again_with_its_positions(session):
    session.message_received(say(11, "lobby"))
    proto = reconnect(session)
    session.message_received(wire.Error("resume_failed", "your session has expired"))
    login = proto.sent[-1]
    assert isinstance(login, wire.Login) and login.positions == (("#Dev", 3), ("#lobby", 11))
    assert (login.since, login.register) == (T, False)
    session.message_received(welcome(T + 5000))
    session.message_received(room("lobby", 14))
    session.message_received(say(12, "lobby"))  # the replay after the position
    assert shown(session)[-1] == ("lobby", 12)


def test_a_room_whose_numbers_went_back_counts_from_where_it_is(session):
    session.message_received(say(11, "lobby"))
    reconnect(session)
    session.message_received(welcome(resumed=False))
    session.message_received(room("lobby", 2))  # the server lost its data
    session.message_received(say(3, "lobby"))
    assert shown(session)[-1] == ("lobby", 3)
    # A change of settings says where the room is too, but is no new start.
    session.message_received(room("lobby", 2, topic="new"))
    session.message_received(say(3, "lobby"))
    assert shown(session)[-1] == ("lobby", 3) and len(shown(session)) == 2
    assert session.room("lobby").topic == "new"


def test_leaving_a_room_forgets_it_and_a_new_join_starts_from_its_newest(session):
    session.message_received(say(4, "dev"))
    session.message_received(wire.RoomLeft("dev", "kicked", "alice kicked you from #dev"))
    assert list(session.rooms) == ["lobby"]
    assert session.positions.get("#dev") is None
    session.message_received(say(5, "dev"))  # in flight when we left: shown, not kept
    assert session.positions.get("#dev") is None
    session.message_received(room("dev", 9))
    session.message_received(say(9, "dev", history=True))
    session.message_received(say(10, "dev"))
    assert shown(session)[-2:] == [("dev", 9), ("dev", 10)]
    assert session.positions.get("#dev") == 10


def test_members_per_room_in_parts_and_updates_with_roles(session):
    lobby = (("alice", "online", "member"), ("Me", "online", "member"))
    session.message_received(wire.Members("lobby", lobby[:1], more=True))
    session.message_received(wire.Members("dev", (("zed", "idle", "owner"),)))
    session.message_received(wire.Members("lobby", lobby[1:]))
    assert session.room_members("lobby") == lobby
    assert session.room_members("#dev") == (("zed", "idle", "owner"),)
    assert session.room("lobby").members_known
    session.message_received(wire.MemberUpdate("dev", "alice", "online", "operator"))
    session.message_received(wire.MemberUpdate("dev", "ZED", "gone", "owner"))
    assert session.room_members("dev") == (("alice", "online", "operator"),)
    assert session.events[-1] == wire.MemberUpdate("dev", "ZED", "gone", "owner")
    # Everyone seen in some room, once.
    assert session.members == (("alice", "online"), ("Me", "online"))


def test_the_presence_beacon_only_changes_states(session):
    session.message_received(wire.Members("lobby", (("alice", "online", "owner"),
                                                    ("bob", "online", "member"))))
    session.message_received(wire.Members("dev", (("bob", "online", "muted"),)))
    session.events.clear()
    session._presence_snapshot((("Alice", "idle"), ("bob", "online"), ("stranger", "online")))
    assert session.room_members("lobby") == (("alice", "idle", "owner"),
                                             ("bob", "online", "member"))
    assert session.room_members("dev") == (("bob", "online", "muted"),)
    assert session.events == [wire.MemberUpdate("lobby", "alice", "idle", "owner")]
    session._presence_snapshot(())  # nobody listed: nobody removed
    assert len(session.room_members("lobby")) == 2


def test_history_pages_go_on_from_the_oldest_shown_in_each_conversation(session):
    sent = []
    session._request = sent.append
    for msg in (say(8, "lobby", history=True), say(9, "lobby", history=True),
                wire.HistoryEnd(8, True, "#lobby"), dm(4, "bob", "me"), dm(6, "bob", "me")):
        session.message_received(msg)
    session.history_page("#LOBBY")
    session.history_page("@Bob", 20)
    session.history_page("#dev")  # nothing shown there: what came before its newest
    session.history_page("@carol")  # a conversation never seen: its newest page
    assert sent == [wire.HistoryRequest(8, 50, "#LOBBY"), wire.HistoryRequest(4, 20, "@Bob"),
                    wire.HistoryRequest(4, 50, "#dev"),
                    wire.HistoryRequest(wire.MAX_INT, 50, "@carol")]
    session.message_received(say(5, "lobby", history=True))
    session.message_received(wire.HistoryEnd(5, True, "#lobby"))
    session.history_page("#lobby")
    assert sent[-1].before == 5


def test_lines_carry_their_room_and_survive_a_reconnect_in_order(tmp_path):
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    proto = FakeProto()
    client.channel_open(proto)
    client.test_proto = proto
    client.message_received(welcome(max_in_flight=2))
    first = client.say("one", "lobby")
    client.say("two", "dev")
    client.say("three", "dev")  # beyond the window: waits
    assert [(m.text, m.room) for m in proto.of(wire.Say)] == [("one", "lobby"), ("two", "dev")]
    client.message_received(say(1, "lobby", "Me", "one", first))  # the ack
    assert [m.text for m in proto.of(wire.Say)] == ["one", "two", "three"]
    again = reconnect(client)
    client.message_received(welcome(resumed=True))
    assert [(m.text, m.room) for m in again.of(wire.Say)] == [("two", "dev"), ("three", "dev")]
    assert list(client.outbox) == [m.cid for m in again.of(wire.Say)]


def test_each_connection_starts_with_a_few_lines_and_one_more_per_ack(tmp_path):
    # A link that dies after a few kilobytes: the whole outbox at once would
    # be cut off before any of it was acknowledged, on every connection.
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    client.channel_open(proto := FakeProto())
    client.test_proto = proto
    client.message_received(welcome(max_in_flight=5000))
    cids = [client.say(f"line {i}") for i in range(100)]
    assert len(proto.of(wire.Say)) == FIRST_WINDOW
    client.message_received(say(1, "lobby", "Me", "line 0", cids[0]))
    assert len(proto.of(wire.Say)) == FIRST_WINDOW + 2  # one for the ack, one more
    again = reconnect(client)
    client.message_received(welcome(resumed=True, max_in_flight=5000))
    assert [m.text for m in again.of(wire.Say)] == [f"line {i}" for i in range(1, 1 + FIRST_WINDOW)]


def test_room_requests_go_as_typed_and_wait_while_offline(tmp_path):
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    client.join("dev", private=True)  # not connected yet: sent once in
    proto = FakeProto()
    client.channel_open(proto)
    client.message_received(welcome())
    client.part("dev", "bye")
    client.list_rooms()
    client.topic("dev", "plans")
    client.topic("dev")
    client.mode("dev", "topic_locked", True)
    client.moderate("dev", "ban", "bob", "flood", 10)
    join = proto.sent[1]
    assert join.cid is not None  # a refusal names the join it refuses
    assert [dataclasses.replace(join, cid=None)] + proto.sent[2:] == [
        wire.Join("dev", True), wire.Part("dev", "bye"), wire.ListRooms(),
        wire.Topic("dev", "plans"), wire.Topic("dev", None),
        wire.Mode("dev", "topic_locked", True), wire.Moderate("dev", "ban", "bob", "flood", 10)]
    with pytest.raises(ValueError):
        client.mode("dev", "loud", True)
    with pytest.raises(ValueError):
        client.moderate("dev", "smite", "bob")


def test_positions_fit_the_server_rooms_first_then_the_latest_directs():
    positions = Positions()
    for n in range(wire.MAX_POSITIONS + 5):
        positions.set(f"@user{n}", n + 1)
    positions.set("#lobby", 7)
    rows = positions.as_wire()
    assert len(rows) == wire.MAX_POSITIONS and rows[0] == ("#lobby", 7)
    assert rows[-1] == (f"@user{wire.MAX_POSITIONS + 4}", wire.MAX_POSITIONS + 5)
    assert ("@user0", 1) not in rows


def test_names_fold_as_the_server_folds_them():
    assert name_key("Straße") == name_key("STRASSE") == "strasse"
    assert name_key("ｌｏｂｂｙ") == "lobby"  # full-width letters, NFKC


def test_a_status_is_kept_across_a_failed_resume_request(session):
    # A refusal after the welcome is an ordinary error, not a failed login.
    session.message_received(wire.Error("not_member", "you are not in #x"))
    assert session.status == Status("connected", resumed=True)


def test_a_page_asked_before_the_history_on_join_waits_for_it(tmp_path):
    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    proto = FakeProto()
    client.channel_open(proto)
    client.message_received(welcome())  # names #lobby: its history is coming
    client.history_page("#lobby")  # typed at once (a script's /history)
    assert proto.of(wire.HistoryRequest) == []  # it would fetch the same lines again
    for msg in (room("lobby", 10), say(9, "lobby", history=True),
                say(10, "lobby", history=True), wire.HistoryEnd(9, True, "#lobby")):
        client.message_received(msg)
    assert proto.of(wire.HistoryRequest) == [wire.HistoryRequest(9, 50, "#lobby")]


def test_a_refused_join_brings_no_history_and_holds_no_page(session):
    session.join("#secret")
    join = session.test_proto.of(wire.Join)[-1]
    session.history_page("#secret")
    session.message_received(wire.Error("invite_only", "#secret is private", join.cid))
    assert session.test_proto.of(wire.HistoryRequest)[-1].conversation == "#secret"


def test_a_room_the_welcome_does_not_name_is_left(session):
    session.message_received(wire.Welcome("Me", "sess", "tok", ("lobby",), T, 0, 2000, 10,
                                          True))  # resumed: #Dev was lost meanwhile
    assert session.room("dev") is None and session.room("lobby") is not None
    assert session.events[-1] == wire.RoomLeft("Dev", "gone", "you are no longer in #Dev")
