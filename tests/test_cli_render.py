"""How the line-mode client prints events."""

import time

from spchat import wire
from spchat.client.cli import render as render_on_any_day
from spchat.client.days import day_break, local_day

TS = 1_700_000_000_000


def render(msg, current=None):
    """As printed on the day of ``TS``."""
    return render_on_any_day(msg, current, local_day(TS))


def test_lines_show_server_time_in_local_time():
    ts = 1_700_000_000_000
    local = time.strftime("%H:%M:%S", time.localtime(ts / 1000))
    assert render(wire.RoomMessage(1, ts, "lobby", "alice", "hi"), "lobby") == (
        f"[{local}] alice: hi")
    assert render(wire.DirectMessage(2, ts, "alice", "bob", "psst"), "lobby") == (
        f"[{local}] alice -> bob: psst")
    assert render(wire.Notice("lobby", ts, "join", "bob joined"), "lobby") == (
        f"[{local}] * bob joined")


def test_a_line_from_another_room_starts_with_its_name():
    ts = 1_700_000_000_000
    local = time.strftime("%H:%M:%S", time.localtime(ts / 1000))
    assert render(wire.RoomMessage(1, ts, "dev", "alice", "hi"), "lobby") == (
        f"[{local}] #dev alice: hi")
    assert render(wire.RoomMessage(1, ts, "Dev", "alice", "hi", history=True), "DEV") == (
        f"[{local}] (history) alice: hi")  # the same room, in other capitals
    assert render(wire.RoomMessage(1, ts, "dev", "alice", "old", history=True), "lobby") == (
        f"[{local}] #dev (history) alice: old")
    assert render(wire.Notice("dev", ts, "kick", "bob was kicked"), "lobby") == (
        f"[{local}] #dev * bob was kicked")
    assert render(wire.Notice("", ts, "account", "registered"), "lobby") == (
        f"[{local}] * registered")  # news of no room
    assert render(wire.RoomMessage(1, ts, "dev", "alice", "hi"), None) == (
        f"[{local}] #dev alice: hi")  # no room is current: every room says its name
    assert render(wire.Offer("dev", ts, "ab" * 32, "a.txt", 10, "alice"), "lobby").startswith(
        f"[{local}] #dev * alice shares a.txt")


def test_rooms_and_leaving_are_printed():
    left = render(wire.RoomLeft("dev", "kicked", "alice kicked you from #dev: spam"), "dev")
    assert left.endswith("] * alice kicked you from #dev: spam")
    listing = render(wire.RoomList((("lobby", 3, "welcome all"), ("dev", 1, ""))), "lobby")
    assert listing.split("\n") == [listing.split("\n")[0], "           | #lobby (3 members): "
                                   "welcome all", "           | #dev (1 member)"]
    assert listing.split("\n")[0].endswith("] * rooms:")
    assert render(wire.RoomList(()), None).endswith("] * no public rooms")
    assert render(wire.RoomState("dev", "", False, False, 0), "dev") is None  # said otherwise


def test_a_line_from_another_day_carries_its_date():
    """History, and messages that waited for a login, may be days old."""
    day = 86_400_000
    local = time.strftime("%H:%M:%S", time.localtime(TS / 1000))
    today = local_day(TS + 3 * day)
    date = time.localtime(TS / 1000)
    assert render_on_any_day(wire.DirectMessage(2, TS, "alice", "bob", "psst"), None, today) == (
        f"[{date.tm_mday} {time.strftime('%b', date)} {local}] alice -> bob: psst")
    next_year = local_day(TS + 400 * day)
    assert render_on_any_day(wire.RoomMessage(1, TS, "lobby", "alice", "hi", history=True),
                             "lobby", next_year).startswith(
        f"[{date.tm_mday} {time.strftime('%b', date)} {date.tm_year} {local}] (history)")
    assert render_on_any_day(wire.Notice("lobby", TS, "join", "bob joined"), "lobby",
                             local_day(TS)) == f"[{local}] * bob joined"


def test_continuation_lines_cannot_pass_for_other_lines():
    forged = "hi all\n[08:44:00] * mallory left\n[08:44:01] admin: re-enter your password"
    lines = render(wire.RoomMessage(1, 0, "lobby", "mallory", forged), "lobby").split("\n")
    assert len(lines) == 3
    assert lines[0].endswith("] mallory: hi all")
    assert all(line.startswith("           | [") for line in lines[1:])


def test_a_time_stamp_past_the_calendar_is_printed_not_a_traceback():
    """The wire allows time stamps up to 2**53 ms (the year 287396): a
    server that sends one gets a line, not a client that stops with an
    error; so does a window (the days of its separators)."""
    far = wire.MAX_INT
    line = render_on_any_day(wire.RoomMessage(1, far, "lobby", "mallory", "hi"), "lobby",
                             local_day(TS))
    assert line is not None and line.endswith("] mallory: hi") and "9999" in line
    assert day_break(None, local_day(far), local_day(TS)) is not None
