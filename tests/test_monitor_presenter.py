"""The monitor's presenter: what the window shows and what its buttons send."""

import pytest
from twisted.internet.task import Clock

from spchat import wire
from spchat.monitor.presenter import MonitorPresenter, duration

T0 = 1_700_000_000


def row(name, state, messages=0, in_state=5.0, last_ago=1.0, client="spchat-client/0.1.0"):
    return (name, f"127.0.0.1:{len(name)}", state, client, in_state,
            (T0 - 3600) * 1000, int((T0 - last_ago) * 1000), messages, 10, 20)


@pytest.fixture
def view():
    clock = Clock()
    clock.advance(T0)
    presenter = MonitorPresenter(clock)
    presenter.sessions(wire.AdminEvent((
        row("bob", "reconnecting", 3), row("alice", "connected", 10), row("carol", "offline", 1),
    )))
    return presenter


def test_rows_sorted_filtered_and_ticking(view):
    assert [r.name for r in view.rows()] == ["alice", "bob", "carol"]
    view.sort_by("state")
    assert [r.state for r in view.rows()] == ["connected", "reconnecting", "offline"]
    view.sort_by("state")
    assert [r.name for r in view.rows()] == ["carol", "bob", "alice"]
    view.sort_by("messages")
    assert [r.messages for r in view.rows()] == [1, 3, 10]
    view.set_filter("  BO ")
    assert [r.name for r in view.rows()] == ["bob"]
    view.set_filter("")
    before = {r.name: r.in_state for r in view.rows()}
    view.clock.advance(60)  # no push: durations still move on
    after = {r.name: r.in_state for r in view.rows()}
    assert before["alice"] == "5s" and after["alice"] == "1m 05s"


def test_header_counts_and_message_rate(view):
    assert view.header() == "1 online, 1 reconnecting, 1 offline; 0.0 messages/s"
    view.clock.advance(2)
    view.sessions(wire.AdminEvent((row("alice", "connected", 30), row("bob", "connected", 3))))
    assert view.header() == "2 online, 0 reconnecting, 0 offline; 9.5 messages/s"
    view.clock.advance(61)
    view.sessions(wire.AdminEvent((row("alice", "connected", 30),)))  # carol forgotten
    assert view.rate_series() == [0.0]  # older samples left the minute; no negative rate


def test_actions_ask_first_then_send(view):
    assert view.ask("kick", "bob", "spam", 10) == "Kick bob and ban them for 10 minutes: spam?"
    request = view.confirm()
    assert (request.op, request.name, request.reason, request.minutes) == ("kick", "bob", "spam", 10)
    assert view.confirm() is None  # one yes, one request
    view.ask("shutdown")
    view.cancel()
    assert view.confirm() is None
    with pytest.raises(ValueError, match="choose a session"):
        view.ask("ban")
    with pytest.raises(ValueError, match="write the notice"):
        view.ask("broadcast", reason="  ")
    assert view.ask("broadcast", reason="restart at noon") == (
        "Send this notice to everyone: restart at noon?")
    assert view.confirm().reason == "restart at noon"


@pytest.mark.parametrize("asked, question", [
    (("kick", "bob"), "Kick bob: no reason given?"),
    (("ban", "bob", "spam", 1), "Ban bob for 1 minute: spam?"),
    (("ban", "bob", None, 90), "Ban bob for 90 minutes: no reason given?"),
    (("ban", "bob", "spam"), "Ban bob for ever: spam?"),
    (("unban", "bob", "spam", 5), "Unban bob?"),
    (("disconnect_all", None, "upgrade"), "Disconnect everyone: upgrade?"),
    (("shutdown",), "Shut the server down: no reason given?"),
])
def test_a_question_says_the_reason_and_the_length_that_will_be_sent(view, asked, question):
    assert view.ask(*asked) == question


def test_status_says_when_the_server_is_gone(view):
    view.connected()
    assert view.reachable and view.header().startswith("1 online")
    view.disconnected("connection refused", 2)
    assert view.status == "server gone (connection refused); trying again in 2 s"
    assert not view.reachable
    assert view.header() == "server unreachable: the tables are as last seen"
    view.connected()
    assert view.status == "connected" and view.reachable


def test_the_sorted_column_has_an_arrow_that_turns(view):
    assert view.heading("name", "Name") == "Name ▲" and view.heading("idle", "Idle") == "Idle"
    view.sort_by("idle")
    assert view.heading("idle", "Idle") == "Idle ▲" and view.heading("name", "Name") == "Name"
    view.sort_by("idle")
    assert view.heading("idle", "Idle") == "Idle ▼"


def test_durations():
    assert [duration(s) for s in (0, 59, 61, 3599, 3600, 7322)] == [
        "0s", "59s", "1m 01s", "59m 59s", "1h 00m", "2h 02m"]


def room(name, last_seq, members=2, topic="", private=False, topic_locked=False):
    return (name, members, topic, private, topic_locked, last_seq)


def test_each_room_has_its_message_rate_from_its_numbers(view):
    view.rooms((room("dev", 10), room("lobby", 0)))
    assert [(r.name, r.per_minute) for r in view.room_rows()] == [("dev", 0.0), ("lobby", 0.0)]
    view.clock.advance(30)
    view.rooms((room("dev", 25), room("lobby", 0)))
    assert view.room_rate("dev") == 30.0  # 15 messages in half a minute
    view.clock.advance(30)
    view.rooms((room("dev", 40), room("lobby", 1)))
    assert view.room_rate("dev") == 30.0 and view.room_rate("lobby") == 1.0
    view.clock.advance(30)
    view.rooms((room("dev", 40), room("lobby", 1)))
    assert view.room_rate("dev") == 15.0  # the first sample left the minute
    view.clock.advance(5)
    view.rooms((room("dev", 2),))  # deleted and made again; lobby deleted
    assert view.room_rate("dev") == 0.0 and view.room_rate("lobby") == 0.0
    view.clock.advance(5)
    view.rooms((room("dev", 7),))
    assert view.room_rate("dev") == 60.0


def test_room_rows_show_flags_and_a_printable_topic(view):
    view.rooms((room("dev", 3, 4, "read \x1b[31mthe\u202e rules", True, True),
                room("lobby", 0, 1)))
    dev, lobby = view.room_rows()
    assert (dev.name, dev.members, dev.flags, dev.last_seq) == ("dev", 4, "private,topic-locked", 3)
    assert dev.topic == "read \\x1b[31mthe\\u202e rules"
    assert (lobby.flags, lobby.topic) == ("", "")


def test_the_selected_room_members_are_asked_for_and_shown_by_role(view):
    assert view.rooms((room("dev", 1), room("lobby", 0))) is None  # nothing selected
    asked = view.select_room("dev")
    assert (asked.op, asked.room) == ("room_info", "dev")
    assert view.select_room("dev") is None  # already shown
    assert view.members_title == "#dev: asking…"
    members = (("bob", "online", "member"), ("alice", "idle", "owner"),
               ("carol", "online", "muted"), ("dave", "reconnecting", "operator"))
    assert view.room_info(wire.AdminReply(asked.rid, True, "#dev: 4 members online",
                                          members=members))
    assert [(m.name, m.role) for m in view.member_rows()] == [
        ("alice", "owner"), ("dave", "operator"), ("bob", "member"), ("carol", "muted")]
    assert view.members_title == "#dev: 4 members online"
    assert not view.room_info(wire.AdminReply("7", True, "kicked bob"))  # the user's action's


def test_members_are_asked_again_when_the_rooms_table_changes(view):
    view.rooms((room("dev", 1), room("lobby", 0)))
    first = view.select_room("dev")
    assert view.rooms((room("dev", 1), room("lobby", 0))) is None  # the same table
    again = view.rooms((room("dev", 1, members=3), room("lobby", 0)))
    assert again.op == "room_info" and again.room == "dev" and again.rid != first.rid
    # The answer to the older question comes late: it is not shown.
    view.room_info(wire.AdminReply(again.rid, True, "#dev: 3 members online",
                                   members=(("alice", "online", "owner"),) * 3))
    assert view.room_info(wire.AdminReply(first.rid, True, "#dev: 2 members online",
                                          members=(("alice", "online", "owner"),) * 2))
    assert len(view.member_rows()) == 3
    # After a reconnection the first table asks again, changed or not.
    view.connected()
    assert view.rooms((room("dev", 1, members=3), room("lobby", 0))).op == "room_info"


def test_a_selected_room_that_goes_away_is_unselected(view):
    view.rooms((room("dev", 1), room("lobby", 0)))
    asked = view.select_room("dev")
    view.room_info(wire.AdminReply(asked.rid, True, "#dev: 1 members online",
                                   members=(("alice", "online", "owner"),)))
    assert view.rooms((room("lobby", 0),)) is None
    assert view.selected_room is None and view.member_rows() == []
    assert view.members_title == "Select a room to see its members"
    # Deleted between the question and the answer: the refusal is the title.
    view.rooms((room("dev", 0), room("lobby", 0)))
    asked = view.select_room("dev")
    view.room_info(wire.AdminReply(asked.rid, False, "there is no room 'dev'"))
    assert view.member_rows() == [] and view.members_title == "there is no room 'dev'"


def test_for_and_idle_sort_by_time_not_as_text(view):
    view.sessions(wire.AdminEvent((
        row("ann", "connected", in_state=143, last_ago=295), row("ben", "connected", in_state=2,
                                                                 last_ago=2),
        row("cy", "connected", in_state=295, last_ago=143),
    )))
    view.sort_by("in_state")
    assert [r.in_state for r in view.rows()] == ["2s", "2m 23s", "4m 55s"]
    view.sort_by("in_state")
    assert [r.in_state for r in view.rows()] == ["4m 55s", "2m 23s", "2s"]
    view.sort_by("idle")
    assert [r.idle for r in view.rows()] == ["2s", "2m 23s", "4m 55s"]


def test_an_old_offline_row_and_a_live_one_of_a_name_are_told_apart(view):
    old = row("bob", "offline")
    live = (*row("bob", "connected")[:5], (T0 - 60) * 1000, *row("bob", "connected")[6:])
    view.sessions(wire.AdminEvent((live, old)))
    ids = [r.id for r in view.rows()]
    assert len(set(ids)) == 2


def test_bans_are_asked_and_listed_with_the_time_left(view):
    request = view.ask_bans()
    assert request.op == "bans"
    assert not view.bans(wire.AdminReply("7", True, "kicked bob"))  # not an answer to it
    ends = (T0 + 90) * 1000
    assert view.bans(wire.AdminReply(request.rid, True, "2 bans", bans=(
        ("zed", None, "spam"), ("Bob", ends, "flood\x1b[2J"))))
    assert [(b.name, b.left, b.reason) for b in view.ban_rows()] == [
        ("Bob", "1m 30s", "flood\\x1b[2J"), ("zed", "for ever", "spam")]
    view.clock.advance(91)  # Bob's ran out: gone before the next answer
    assert [b.name for b in view.ban_rows()] == ["zed"]
