"""The connect form when the server cannot be reached: plain words, and a
Cancel for a port that takes the connection and says nothing. Real Tk under
Xvfb, real sockets on loopback."""

import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory

from helpers import Silent
from conftest import screenshot, wait_until
import window_desks as gui

# The chat window tests' fixtures: a Tk root on the reactor, a real server.
tk_root, server = gui.tk_root, gui.server


def form(tk_root, server, tmp_path, port):
    root, desks = tk_root
    desk = gui.Desk(root, gui.desk_config(server), tmp_path / "alice-config")
    desks.append(desk)
    desk.fill(host="127.0.0.1", port=port, name="alice")
    return desk


@pytest_twisted.inlineCallbacks
def test_a_port_that_says_nothing_can_be_cancelled(tk_root, server, tmp_path, display):
    listening = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    try:
        desk = form(tk_root, server, tmp_path, listening.getHost().port)
        w = desk.window
        assert not w.cancel_button.winfo_ismapped()
        desk.press_connect()
        yield wait_until(lambda: Silent.now_open == 1)
        desk.top.update()
        assert w.cancel_button.winfo_ismapped()
        screenshot(desk.top, display, "connect-cancel-while-connecting.png")
        w.cancel_button.invoke()
        desk.top.update()
        assert desk.panel() == "connect" and not w.cancel_button.winfo_ismapped()
        assert w.connect_message.cget("text") == (
            f"not connected: cancelled while connecting to 127.0.0.1:{listening.getHost().port}")
        assert "disabled" not in w.connect_button.state()
        yield wait_until(lambda: Silent.now_open == 0, timeout=2)  # dropped now, not in 10 s
    finally:
        yield listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_refused_connection_is_said_in_plain_words(tk_root, server, tmp_path, display):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    desk = form(tk_root, server, tmp_path, port)
    desk.press_connect()
    w = desk.window
    yield wait_until(lambda: "listening" in str(w.connect_message.cget("text")))
    assert w.connect_message.cget("text") == (
        f"nothing is listening at 127.0.0.1:{port} (connection refused)")
    screenshot(desk.top, display, "connect-refused-plain.png")


def test_fingerprints_are_in_a_monospaced_font(tk_root, server, tmp_path):
    from tkinter import font as tkfont

    w = form(tk_root, server, tmp_path, server.address.port).window
    # The named font: a family called "TkFixedFont" would be a proportional fallback.
    for entry in (w.trust_fingerprint, *w.key_fingerprints.values()):
        assert tkfont.Font(font=entry.cget("font")).metrics("fixed") == 1
