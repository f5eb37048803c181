"""The monitor window: a real Tk window under Xvfb, against a real server."""

import pytest
import pytest_twisted
from twisted.internet import reactor

from conftest import (connect_client, screenshot, server_config, start_service, stop_services,
                      wait_until)


@pytest.fixture
def monitor_root(display, tmp_path):
    """A Tk root driven by the reactor, and a server for the monitor to watch."""
    import tkinter as tk

    from twisted.internet import tksupport

    server = start_service(server_config(tmp_path / "data"))
    root = tk.Tk()
    tksupport.install(root)
    yield root, server
    tksupport.uninstall()
    root.destroy()
    stop_services(server)


@pytest_twisted.inlineCallbacks
def test_monitor_window_shows_sessions_and_kicks(monitor_root, display, pins):
    from spchat.monitor.app import GREYED

    root, server = monitor_root
    connection = None
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        carol = yield connect_client(server, pins, "carol", max_retries=0)
        carol.proto.transport.abortConnection()  # carol's network goes away
        alice.say("hello")
        window, connection = open_monitor(root, server, pins)

        def names():
            return [window.tree.item(i, "values")[0] for i in window.tree.get_children()]

        yield wait_until(lambda: names() == ["alice", "bob", "carol"]
                         and "1 reconnecting" in window.header.cget("text"))
        assert "2 online, 1 reconnecting, 0 offline" in window.header.cget("text")
        tags = [window.tree.item(i, "tags")[0] for i in window.tree.get_children()]
        assert tags == ["connected", "connected", "reconnecting"]  # rows coloured by state
        assert str(window.tree.tag_configure("offline", "foreground")) == GREYED
        # The sorted column has its arrow; a click moves it, a second turns it.
        assert window.tree.heading("name", "text") == "Name ▲"
        window._sort("idle")
        window._sort("idle")
        assert window.tree.heading("idle", "text") == "Idle ▼"
        assert window.tree.heading("name", "text") == "Name"
        window._sort("name")
        shot = screenshot(root, display, "monitor-sessions.png")
        assert shot.size == (root.winfo_width(), root.winfo_height())
        assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 10  # drawn, not blank

        # Select bob, press Kick, answer Yes in the window.
        window.tree.selection_set(window.tree.get_children()[1])
        window.reason.insert(0, "spam")
        window.buttons["kick"].invoke()
        assert window.question.cget("text") == "Kick bob: spam?"
        assert window.confirm_bar.winfo_manager() == "pack"
        window.yes.invoke()
        assert window.confirm_bar.winfo_manager() == ""
        assert window.reason.get() == ""  # not left for the next action
        yield wait_until(lambda: bob.status.state == "offline")
        assert bob.status.reason == "you were kicked: spam"
        yield wait_until(lambda: "bob" not in names() or any(
            window.tree.item(i, "values")[2] == "offline" for i in window.tree.get_children()))
        yield wait_until(lambda: "kicked bob" in window.status.cget("text"))

        # The server goes away: the window says so, and greys what it shows.
        stop_services(server)
        yield wait_until(lambda: "server gone" in window.status.cget("text"), timeout=10)
        assert window.header.cget("text") == "server unreachable: the tables are as last seen"
        assert {window.tree.item(i, "tags")[0] for i in window.tree.get_children()} == {
            "unreachable"}
        screenshot(root, display, "monitor-unreachable.png")
        assert alice.status.state != "connected"
    finally:
        if connection is not None:
            connection.stop()


def open_monitor(root, server, pins):
    """A monitor window on ``root``, logged in to ``server``."""
    from spchat.monitor.app import MonitorConnection, MonitorWindow
    from spchat.monitor.presenter import MonitorPresenter

    presenter = MonitorPresenter(reactor)
    window = MonitorWindow(root, presenter, send=lambda r: connection.send(r))
    connection = MonitorConnection(
        reactor, "127.0.0.1", server.address.port, server.core.admin_token, pins,
        presenter, window.refresh,
    )
    window.connection = connection
    connection.start()
    return window, connection


@pytest_twisted.inlineCallbacks
def test_monitor_window_shows_rooms_their_members_and_rates(monitor_root, display, pins):
    root, server = monitor_root
    connection = None
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        carol = yield connect_client(server, pins, "carol")
        alice.join("dev")
        yield wait_until(lambda: alice.room("dev") is not None)
        alice.topic("dev", "release on Friday")
        alice.mode("dev", "topic_locked", True)
        for client in (bob, carol):
            client.join("dev")
        yield wait_until(lambda: len(alice.room_members("dev")) == 3)
        alice.moderate("dev", "op", "bob")
        alice.join("ops", private=True)
        window, connection = open_monitor(root, server, pins)

        def rooms():
            return {item: window.rooms.set(item) for item in window.rooms.get_children()}

        def members():
            return [tuple(window.members.item(i, "values")) for i in window.members.get_children()]

        yield wait_until(lambda: set(rooms()) == {"dev", "lobby", "ops"}
                         and rooms()["dev"]["topic"] == "release on Friday")
        dev = rooms()["dev"]
        assert (dev["room"], dev["members"], dev["flags"]) == ("#dev", "3", "topic-locked")
        assert rooms()["ops"]["flags"] == "private"
        assert window.members_frame.cget("text") == "Select a room to see its members"

        # Click the room: its members come, with their roles.
        window.rooms.selection_set("dev")
        yield wait_until(lambda: members() == [("alice", "online", "owner"),
                                               ("bob", "online", "operator"),
                                               ("carol", "online", "member")])
        assert window.members_frame.cget("text") == "#dev: 3 members online"

        # Messages in #dev: its rate rises, the other rooms' does not.
        for n in range(6):
            alice.say(f"line {n}", room="dev")
        yield wait_until(lambda: float(rooms()["dev"]["rate"]) > 0)
        assert rooms()["lobby"]["rate"] == "0.0"
        shot = screenshot(root, display, "monitor.png")
        assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 10  # drawn, not blank

        # Someone leaves: the rooms table changes and the members are asked again.
        carol.part("dev")
        yield wait_until(lambda: [m[0] for m in members()] == ["alice", "bob"])
        assert window.rooms.selection() == ("dev",)
    finally:
        if connection is not None:
            connection.stop()


@pytest_twisted.inlineCallbacks
def test_the_selected_row_stays_selected_beside_an_old_row_of_its_name(monitor_root, display,
                                                                        pins):
    root, server = monitor_root
    connection = None
    try:
        bob = yield connect_client(server, pins, "bob")
        yield bob.logout()  # an old, offline row of bob's
        bob = yield connect_client(server, pins, "bob")
        window, connection = open_monitor(root, server, pins)

        def states():
            return [window.tree.item(i, "values")[2] for i in window.tree.get_children()]

        yield wait_until(lambda: states() == ["connected", "offline"])
        window.tree.selection_set(window.tree.get_children()[0])  # the live row
        bob.say("a message: the table is pushed again")
        yield wait_until(lambda: window.tree.set(window.tree.get_children()[0], "messages") == "1")
        (selected,) = window.tree.selection()
        assert window.tree.item(selected, "values")[2] == "connected"  # not the old row
        screenshot(root, display, "monitor-two-rows-of-a-name.png")
    finally:
        if connection is not None:
            connection.stop()


@pytest_twisted.inlineCallbacks
def test_the_bans_list_shows_each_ban_and_lifts_the_one_selected(monitor_root, display, pins):
    root, server = monitor_root
    connection = None
    try:
        yield connect_client(server, pins, "alice")
        server.core.ban("mallory", None, "spam")
        window, connection = open_monitor(root, server, pins)

        def bans():
            return [tuple(window.bans.item(i, "values")) for i in window.bans.get_children()]

        yield wait_until(lambda: bans() == [("mallory", "for ever", "spam")])
        # A ban from the window shows in the list once the server has it.
        window.tree.selection_set(window.tree.get_children()[0])  # alice
        window.reason.insert(0, "flood")
        window.minutes.insert(0, "10")
        window.buttons["ban"].invoke()
        assert window.question.cget("text") == "Ban alice for 10 minutes: flood?"
        window.yes.invoke()
        yield wait_until(lambda: [b[0] for b in bans()] == ["alice", "mallory"])
        assert bans()[0][1] in ("10m 00s", "9m 59s", "9m 58s") and bans()[0][2] == "flood"
        screenshot(root, display, "monitor-bans.png")

        window.unban_button.invoke()  # nothing selected in the list
        assert window.status.cget("text") == "choose a ban in the list to lift"
        window.bans.selection_set("mallory")
        window.unban_button.invoke()
        assert window.question.cget("text") == "Unban mallory?"
        window.yes.invoke()
        yield wait_until(lambda: [b[0] for b in bans()] == ["alice"])
    finally:
        if connection is not None:
            connection.stop()
