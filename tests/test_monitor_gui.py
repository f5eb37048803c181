"""The monitor window: a real Tk window under Xvfb, against a real server."""

import pytest_twisted

from conftest import (connect_client, screenshot, server_config, start_service, stop_services,
                      wait_until)


@pytest_twisted.inlineCallbacks
def test_monitor_window_shows_sessions_and_kicks(display, tmp_path, pins):
    import tkinter as tk

    from twisted.internet import reactor, tksupport

    from spchat.monitor.app import MonitorConnection, MonitorWindow
    from spchat.monitor.presenter import MonitorPresenter

    server = start_service(server_config(tmp_path / "data"))
    root = tk.Tk()
    tksupport.install(root)
    connection = None
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        carol = yield connect_client(server, pins, "carol", max_retries=0)
        carol.proto.transport.abortConnection()  # carol's network goes away
        alice.say("hello")
        presenter = MonitorPresenter(reactor)
        window = MonitorWindow(root, presenter, send=lambda r: connection.send(r))
        connection = MonitorConnection(
            reactor, "127.0.0.1", server.address.port, server.core.admin_token, pins,
            presenter, window.refresh,
        )
        window.connection = connection
        connection.start()

        def names():
            return [window.tree.item(i, "values")[0] for i in window.tree.get_children()]

        yield wait_until(lambda: names() == ["alice", "bob", "carol"]
                         and "1 reconnecting" in window.header.cget("text"))
        assert "2 online, 1 reconnecting, 0 offline" in window.header.cget("text")
        tags = [window.tree.item(i, "tags")[0] for i in window.tree.get_children()]
        assert tags == ["connected", "connected", "reconnecting"]  # rows coloured by state
        shot = screenshot(root, display, "monitor.png")
        assert shot.size == (root.winfo_width(), root.winfo_height())
        assert len(shot.getcolors(1 << 16) or range(1 << 16)) > 10  # drawn, not blank

        # Select bob, press Kick, answer Yes in the window.
        window.tree.selection_set(window.tree.get_children()[1])
        window.reason.insert(0, "spam")
        window.buttons["kick"].invoke()
        assert window.question.cget("text") == "Kick bob?"
        assert window.confirm_bar.winfo_manager() == "pack"
        window.yes.invoke()
        assert window.confirm_bar.winfo_manager() == ""
        yield wait_until(lambda: bob.status.state == "offline")
        assert bob.status.reason == "you were kicked: spam"
        yield wait_until(lambda: "bob" not in names() or any(
            window.tree.item(i, "values")[2] == "offline" for i in window.tree.get_children()))
        yield wait_until(lambda: "kicked bob" in window.status.cget("text"))

        # The server goes away: the window says so.
        stop_services(server)
        yield wait_until(lambda: "server gone" in window.status.cget("text"), timeout=10)
        assert alice.status.state != "connected"
    finally:
        if connection is not None:
            connection.stop()
        tksupport.uninstall()
        root.destroy()
        stop_services(server)
