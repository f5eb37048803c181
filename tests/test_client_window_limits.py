"""What the wire cannot carry, typed in the window: refused there in plain
words, nothing sent, no pause (real Tk under Xvfb, a real server on
loopback)."""

import pytest_twisted

from conftest import screenshot, wait_until
from spchat import wire
import window_desks
from window_desks import log_in

tk_root, server = window_desks.tk_root, window_desks.server


@pytest_twisted.inlineCallbacks
def test_an_overlong_room_name_is_refused_in_the_window_with_no_pause(
        tk_root, server, tmp_path, display):
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    sent = []
    proto = bob.controller.client.proto
    send = proto.send_message
    proto.send_message = lambda msg: (sent.append(msg), send(msg))[1]
    typed = "#" + "a-very-long-room-name-" * 4
    bob.window.join_entry.delete(0, "end")
    bob.window.join_entry.insert(0, typed)
    bob.window.join_button.invoke()
    yield wait_until(lambda: "! a room name must be 1 to 32 characters long" in bob.text())
    assert bob.window.join_entry.get() == typed  # kept, to be shortened
    assert not [m for m in sent if isinstance(m, wire.Join)]  # nothing went
    bob.say("/topic " + "t" * 600)
    yield wait_until(lambda: "! a topic is at most 500 characters" in bob.text())
    # And no pause: the next line goes out and comes back at once.
    bob.say("still here")
    yield wait_until(lambda: "bob (you): still here" in bob.text() and "sending" not in bob.text(),
                     timeout=2)
    assert "malformed" not in bob.text() and bob.status() == "connected as bob"
    screenshot(bob.top, display, "client-overlong-room-name.png")
