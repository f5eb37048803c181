"""Chat windows as a user drives them, on a real server on loopback: each
window a Toplevel of one Tk root (``tk_root``) with its own controller
(``Desk``), the form filled and the server trusted as a person would
(``log_in``), and the server they talk to (``server``)."""

import dataclasses

import pytest
import pytest_twisted
from twisted.internet import reactor

from conftest import wait_until

class Desk:
    """One chat window (a Toplevel of the test's root) and its controller."""

    def __init__(self, root, cfg, config_dir):
        import tkinter as tk

        from spchat.client.desktop import DesktopController
        from spchat.client.tkui import ChatWindow

        self.top = tk.Toplevel(root)
        self.controller = DesktopController(reactor, cfg, config_dir)
        self.window = ChatWindow(self.top, self.controller)
        self.controller.view = self.window
        self.controller.start()

    def fill(self, **values):
        for key, value in values.items():
            entry = self.window.fields[key]
            entry.delete(0, "end")
            entry.insert(0, str(value))

    def press_connect(self):
        self.window.connect_button.invoke()

    def panel(self):
        w = self.window
        return {w.connect_frame: "connect", w.trust_frame: "trust", w.chat_frame: "chat"}.get(
            w._panel)

    def say(self, text):
        entry = self.window.entry
        entry.focus_force()  # keys go to the focused window, as for a user
        entry.insert("end", text)
        self.top.update()
        entry.event_generate("<Return>")

    def text(self):
        return self.window.text.get("1.0", "end")

    def status(self):
        return self.window.status.cget("text")

    def members(self):
        return list(self.window.members.get(0, "end"))

    def close(self):
        self.controller.close()
        self.top.destroy()


@pytest.fixture
def tk_root(display):
    import tkinter as tk

    from twisted.internet import tksupport

    root = tk.Tk()
    root.withdraw()  # the chat windows are its Toplevels
    tksupport.install(root)
    desks = []
    yield root, desks
    for desk in desks:
        desk.close()
    tksupport.uninstall()
    root.destroy()


def desk_config(server, **changes):
    """The client side of the configuration: the server's port as the default."""
    changes = {"reconnect_delay": 0.1, "max_retries": 50, **changes}
    return dataclasses.replace(server.cfg, tcp_port=server.address.port, **changes)


@pytest_twisted.inlineCallbacks
def log_in(tk_root, server, tmp_path, name, trust=True, port=None, password=None, **changes):
    """A new window: fill the form (with ``password``, for a registered
    name), connect (to ``port``, a proxy, if given), trust the new server,
    wait until in."""
    root, desks = tk_root
    desk = Desk(root, desk_config(server, **changes), tmp_path / f"{name}-config")
    desks.append(desk)
    desk.fill(host="127.0.0.1", port=port or server.address.port, name=name,
              **({} if password is None else {"password": password}))
    desk.press_connect()
    yield wait_until(lambda: desk.panel() == "trust")
    # First contact: the window shows the key and asks; nothing is pinned yet.
    assert desk.window.trust_fingerprint.get() == server.fingerprint
    assert "not been seen before" in desk.window.trust_text.cget("text")
    assert not (tmp_path / f"{name}-config" / "known_servers").exists()
    if trust:
        desk.window.trust_button.invoke()
        yield wait_until(lambda: desk.panel() == "chat" and desk.status() == f"connected as {name}")
    return desk


@pytest.fixture
def server(chat_server):
    """The server the windows talk to: a real one on loopback."""
    return chat_server
