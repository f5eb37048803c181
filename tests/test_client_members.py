"""Member lists in big rooms: one change costs a few steps, not a pass over
the list.  Counted, not timed: how often a name is folded (each fold is one
look at one member) while a room of thousands takes a join, a change, a
leave and a presence snapshot."""

import pytest

from spchat import wire
from spchat.client import members as members_module
from spchat.client import session as session_module
from spchat.client.members import KEPT_CHANGES, MemberList
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient

T = 1_700_000_000_000
CROWD = 5000


@pytest.fixture
def folds(monkeypatch):
    """Counts the names folded from now on, wherever the client folds them."""
    count = [0]
    real = members_module.name_key

    def counting(name):
        count[0] += 1
        return real(name)

    monkeypatch.setattr(members_module, "name_key", counting)
    monkeypatch.setattr(session_module, "name_key", counting)
    return count


@pytest.fixture
def client(tmp_path):
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    client.events = []
    client.on_event = client.events.append
    client.message_received(wire.RoomState("lobby", "", False, False, 0))
    crowd = tuple((f"user{i:05d}", "online", "member") for i in range(CROWD))
    client.message_received(wire.Members("lobby", crowd))
    return client


def test_a_member_event_in_a_big_room_looks_at_that_member_only(client, folds):
    for update in (wire.MemberUpdate("lobby", "newcomer", "online", "member"),
                   wire.MemberUpdate("lobby", "user00042", "idle", "operator"),
                   wire.MemberUpdate("lobby", "USER04999", "gone", "member")):
        before = folds[0]
        client.message_received(update)
        assert folds[0] - before <= 4, update  # the room's name, the member's: not CROWD
    listed = client.room_members("lobby")
    assert len(listed) == CROWD and listed[-1] == ("user04998", "online", "member")
    assert ("newcomer", "online", "member") in listed
    assert listed[43] == ("user00042", "idle", "operator")  # after the newcomer
    assert list(listed) == sorted(listed, key=lambda m: m[0].casefold())
    assert client.events[-1] == wire.MemberUpdate("lobby", "USER04999", "gone", "member")


def test_a_presence_snapshot_looks_at_the_shorter_of_it_and_the_room(client, folds):
    client._presence_snapshot((("user00007", "idle"), ("stranger", "online")))
    assert folds[0] <= 4
    assert client.room("lobby").members.get("user00007") == ("user00007", "idle", "member")
    assert client.events[-1] == wire.MemberUpdate("lobby", "user00007", "idle", "member")
    assert client.room("lobby").members.get("stranger") is None  # nobody is added


def test_the_windows_order_says_which_rows_changed():
    members = MemberList((("alice", "online", "member"), ("bob", "online", "member"),
                          ("carol", "online", "owner")))
    assert members.ranked() == [("carol", "online", "owner"), ("alice", "online", "member"),
                                ("bob", "online", "member")]
    drawn = members.version
    members.update("bob", "online", "operator")
    members.update("Dave", "idle")
    members.update("alice", "gone")
    members.update("Dave", "idle")  # nothing new: no change
    assert members.changes_since(drawn) == [
        ("remove", 2), ("insert", 1, ("bob", "online", "operator")),
        ("insert", 3, ("Dave", "idle", "member")), ("remove", 2)]
    assert members.ranked() == [("carol", "online", "owner"), ("bob", "online", "operator"),
                                ("Dave", "idle", "member")]
    assert members.changes_since(members.version) == []
    for i in range(KEPT_CHANGES):  # too far behind: the window draws it all again
        members.update(f"x{i}", "online")
    assert members.changes_since(drawn) is None
    latest = members.version
    members.replace((("zed", "online", "member"),))  # a whole list: all again too
    assert members.changes_since(latest) is None and tuple(members) == (
        ("zed", "online", "member"),)
