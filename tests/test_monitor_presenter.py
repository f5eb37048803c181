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
    assert view.ask("kick", "bob", "spam", 10) == "Kick bob?"
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
    view.ask("broadcast", reason="restart at noon")
    assert view.confirm().reason == "restart at noon"


def test_status_says_when_the_server_is_gone(view):
    view.disconnected("connection refused", 2)
    assert view.status == "server gone (connection refused); trying again in 2 s"
    view.connected()
    assert view.status == "connected"


def test_durations():
    assert [duration(s) for s in (0, 59, 61, 3599, 3600, 7322)] == [
        "0s", "59s", "1m 01s", "59m 59s", "1h 00m", "2h 02m"]
