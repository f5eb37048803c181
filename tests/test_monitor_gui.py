"""The monitor window: a real Tk window under Xvfb, against a real server."""

import os
import shutil
import subprocess
import time

import pytest
import pytest_twisted

from conftest import connect_client, server_config, start_service, stop_services, wait_until


@pytest.fixture(scope="module")
def display():
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        if os.environ.get("SPCHAT_CI"):
            pytest.fail("Xvfb is missing: .ci/run must install it (apt-get install xvfb)")
        pytest.skip("no display and no Xvfb: install xvfb to run the window tests")
    number = 90 + os.getpid() % 100
    proc = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    del os.environ["DISPLAY"]
    proc.terminate()
    proc.wait()


def screenshot(root, display, path):
    """Save the window as a PNG (and into SPCHAT_SCREENSHOT_DIR, for the README)."""
    from PIL import ImageGrab

    root.update()
    x, y = root.winfo_rootx(), root.winfo_rooty()
    image = ImageGrab.grab(
        bbox=(x, y, x + root.winfo_width(), y + root.winfo_height()), xdisplay=display
    )
    image.save(path)
    if os.environ.get("SPCHAT_SCREENSHOT_DIR"):
        image.save(os.path.join(os.environ["SPCHAT_SCREENSHOT_DIR"], path.name))
    return image


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
        shot = screenshot(root, display, tmp_path / "monitor.png")
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
