"""What a new user hits in the first hour (issue 16), in real Tk windows
under Xvfb against a real server on loopback; each test saves screenshots
(``$SPCHAT_SCREENSHOT_DIR``, else screenshots/)."""

import pytest_twisted
from twisted.internet import reactor

from conftest import screenshot, server_config, start_service, stop_services, wait_until
from cutting_proxy import CuttingProxy
import window_desks as gui
from window_desks import log_in

# The chat window tests' fixtures: a Tk root on the reactor, a real server.
tk_root, server = gui.tk_root, gui.server


class Link:
    """A loopback proxy to the server that the test can unplug and plug in
    again: one user's network going away while everyone else stays."""

    def __init__(self, server_port):
        self.proxy = CuttingProxy(server_port, seed=0, low=1 << 40, high=1 << 40)  # never cuts
        self.listening = reactor.listenTCP(0, self.proxy, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    def unplug(self):
        """Connections cut, and new ones refused."""
        for pipe in list(self.proxy.pipes):
            pipe.transport.abortConnection()
        return self.listening.stopListening()

    def plug_in(self):
        self.listening = reactor.listenTCP(self.port, self.proxy, interface="127.0.0.1")

    def close(self):
        self.unplug()


@pytest_twisted.inlineCallbacks
def test_a_line_typed_offline_lands_after_what_was_missed(tk_root, server, tmp_path, display):
    link = Link(server.address.port)
    try:
        alice = yield log_in(tk_root, server, tmp_path, "alice", port=link.port)
        bob = yield log_in(tk_root, server, tmp_path, "bob")
        bob.say("before the drop")
        yield wait_until(lambda: "bob: before the drop" in alice.text())
        yield link.unplug()
        yield wait_until(lambda: alice.status().startswith("reconnecting"))
        for n in (1, 2, 3):
            bob.say(f"missed {n}")
        yield wait_until(lambda: "missed 3" in bob.text() and "(sending…)" not in bob.text())
        alice.say("typed while away")
        yield wait_until(lambda: "typed while away  (sending…)" in alice.text())
        screenshot(alice.top, display, "client-offline-line-pending.png")

        link.plug_in()
        alice.window.reconnect_button.invoke()
        yield wait_until(lambda: "alice: typed while away" in bob.text(), timeout=20)
        yield wait_until(lambda: "(sending…)" not in alice.text() and "missed 3" in alice.text())
        # In the server's order, as bob sees it: the missed lines first.
        text = alice.text()
        order = [text.index(s) for s in ("before the drop", "missed 1", "missed 2", "missed 3",
                                         "alice (you): typed while away")]
        assert order == sorted(order), text
        bob_text = bob.text()
        assert bob_text.index("missed 3") < bob_text.index("alice: typed while away")
        screenshot(alice.top, display, "client-offline-line-placed.png")
    finally:
        link.close()


@pytest_twisted.inlineCallbacks
def test_after_a_kick_a_new_line_says_it_will_not_be_sent(tk_root, server, tmp_path, display):
    yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    assert server.core.kick("bob", "spamming the room")
    yield wait_until(lambda: bob.status() == "offline: you were kicked: spamming the room")
    bob.say("but I was only asking")
    yield wait_until(lambda: "! not sent: you were kicked: spamming the room; the session is "
                             "over, connect again to send it (it is still in the entry)"
                     in bob.text())
    assert "(sending…)" not in bob.text()
    assert bob.window.entry.value() == "but I was only asking"
    screenshot(bob.top, display, "client-kicked-line-refused.png")


@pytest_twisted.inlineCallbacks
def test_leave_says_which_lines_will_not_be_sent_and_why(tk_root, server, tmp_path, display):
    link = Link(server.address.port)
    try:
        alice = yield log_in(tk_root, server, tmp_path, "alice", port=link.port)
        yield link.unplug()
        yield wait_until(lambda: alice.status().startswith("reconnecting"))
        alice.say("is anyone there?")
        yield wait_until(lambda: "(sending…)" in alice.text())
        alice.window.leave_button.invoke()
        assert alice.panel() == "connect"
        assert alice.window.connect_message.cget("text") == (
            "1 line you typed was not sent (offline: connection lost): “is anyone there?”")
        screenshot(alice.top, display, "client-left-with-unsent-line.png")
    finally:
        link.close()


def inside(widget, window):
    """The widget is drawn wholly inside the window (not pushed out of it)."""
    widget.update()
    left = widget.winfo_rootx() - window.winfo_rootx()
    return widget.winfo_ismapped() and 0 <= left and left + widget.winfo_width() <= \
        window.winfo_width()


@pytest_twisted.inlineCallbacks
def test_a_long_status_wraps_and_keeps_its_buttons_in_the_window(tk_root, tmp_path, display):
    first = start_service(server_config(tmp_path / "data"))
    alice = yield log_in(tk_root, first, tmp_path, "alice", max_retries=1)
    alice.top.geometry("880x580")  # the default width people have met this at
    yield stop_services(first)
    yield wait_until(lambda: alice.status().startswith("offline: could not reconnect"))
    w = alice.window
    # The long text, whole, in plain words (no Twisted message).
    assert f"nothing is listening at 127.0.0.1:{first.address.port}" in alice.status()
    assert inside(w.reconnect_button, alice.top) and inside(w.leave_button, alice.top)
    assert inside(w.status, alice.top)
    screenshot(alice.top, display, "client-long-status.png")


@pytest_twisted.inlineCallbacks
def test_a_key_changed_during_the_chat_has_its_own_panel(tk_root, tmp_path, display):
    first = start_service(server_config(tmp_path / "data"))
    port, trusted = first.address.port, first.fingerprint
    alice = yield log_in(tk_root, first, tmp_path, "alice")
    alice.top.geometry("880x580")
    yield stop_services(first)
    # Another server (another key) answers on the same address.
    other = start_service(server_config(tmp_path / "other", **{"tcp-port": str(port)}))
    try:
        assert other.fingerprint != trusted
        w = alice.window
        yield wait_until(lambda: w.key_panel.winfo_ismapped())
        assert "has CHANGED" in w.key_title.cget("text")
        assert w.key_fingerprints["pinned"].get() == trusted
        assert w.key_fingerprints["presented"].get() == other.fingerprint
        assert f"--forget-server 127.0.0.1:{port}" in w.key_text.cget("text")
        assert alice.status() == "offline: the server's key has changed (see above)"
        assert "disabled" in w.reconnect_button.state()
        for button in (w.forget_button, w.leave_button):
            assert inside(button, alice.top)
        screenshot(alice.top, display, "client-key-changed-in-chat.png")
        # Forgetting the old key leads to the first-contact question, with the new key.
        w.forget_button.invoke()
        yield wait_until(lambda: alice.panel() == "trust")
        assert w.trust_fingerprint.get() == other.fingerprint
        w.trust_button.invoke()
        yield wait_until(lambda: alice.status() == "connected as alice")
        assert not w.key_panel.winfo_ismapped()
    finally:
        yield stop_services(other)


@pytest_twisted.inlineCallbacks
def test_leave_right_after_a_burst_lets_every_line_go_first(tk_root, server, tmp_path, display):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    for n in range(1, 21):  # more than go out at once on a connection (its slow start)
        alice.say(f"burst {n}")
    alice.window.leave_button.invoke()
    assert alice.panel() == "connect"
    yield wait_until(lambda: "alice: burst 20" in bob.text() or "alice left" in bob.text())
    yield wait_until(lambda: "alice left" in bob.text())
    assert all(f"alice: burst {n}\n" in bob.text() for n in range(1, 21)), bob.text()
    assert alice.window.connect_message.cget("text") == ""


@pytest_twisted.inlineCallbacks
def test_a_server_restart_shows_in_the_conversation_and_greys_the_members(
        tk_root, tmp_path, display):
    from spchat.client.tkui import STALE_COLOUR

    first = start_service(server_config(tmp_path / "data"))
    port = first.address.port
    alice = yield log_in(tk_root, first, tmp_path, "alice")
    yield log_in(tk_root, first, tmp_path, "bob")
    yield wait_until(lambda: alice.members() == ["● alice (you)", "● bob"])
    members = alice.window.members
    assert members.itemcget(1, "foreground") != STALE_COLOUR
    yield stop_services(first)
    yield wait_until(lambda: alice.status().startswith("reconnecting (attempt"))
    yield wait_until(lambda: "* connection lost" in alice.text() and "reconnecting…" in alice.text())
    # Nobody shows as online while nothing is known.
    yield wait_until(lambda: all(members.itemcget(i, "foreground") == STALE_COLOUR
                                 for i in range(members.size())))
    assert "reconnecting" in alice.window.members_title.cget("text")
    screenshot(alice.top, display, "client-restart-reconnecting.png")

    second = start_service(server_config(tmp_path / "data", **{"tcp-port": str(port)}))
    try:
        yield wait_until(lambda: alice.status() == "connected as alice", timeout=20)
        yield wait_until(lambda: "* reconnected" in alice.text())
        yield wait_until(lambda: members.size() and all(
            members.itemcget(i, "foreground") != STALE_COLOUR for i in range(members.size())))
        assert alice.window.members_title.cget("text") == "Members of #lobby"
        text = alice.text()
        assert text.index("* connection lost") < text.index("* reconnected")
        screenshot(alice.top, display, "client-restart-reconnected.png")
    finally:
        stop_services(second)


@pytest_twisted.inlineCallbacks
def test_a_taken_name_comes_back_with_a_free_one_filled_in(tk_root, server, tmp_path, display):
    yield log_in(tk_root, server, tmp_path, "alice")
    other = yield log_in(tk_root, server, tmp_path, "Alice", trust=False)
    other.window.trust_button.invoke()
    yield wait_until(lambda: other.panel() == "connect"
                     and other.window.fields["name"].get() == "Alice2")
    assert other.window.connect_message.cget("text") == (
        "login refused: the name 'Alice' is taken; Alice2 is filled in instead: Connect to "
        "use it, or type another name")
    screenshot(other.top, display, "client-name-taken.png")
    other.press_connect()
    yield wait_until(lambda: other.panel() == "chat" and other.status() == "connected as Alice2")
