"""Lines for me: my name stands out in them, and a window that is not being
looked at rings and asks for attention. Real Tk under Xvfb, no server (the
presenter's client is fed by hand, as in test_client_window_rooms)."""

import tkinter as tk

from spchat import wire

from conftest import screenshot
import lone_window as rooms

# A window in #lobby and #dev, fed by hand; its user is "me".
window = rooms.window


def test_my_name_is_highlighted_where_a_line_says_it(window, display):
    window.presenter.client.message_received(
        wire.RoomMessage(1, rooms.T, "lobby", "alice", "hey ME, see\nthis, me: and not meme"))
    window.refresh()
    t = window.text
    marked = t.tag_ranges("mention_name")
    said = [t.get(marked[i], marked[i + 1]) for i in range(0, len(marked), 2)]
    assert said == ["ME", "me"]
    assert "mention" in t.tag_names(marked[0])  # the line's own highlight too
    screenshot(window.master, display, "attention-mention-highlighted.png")


def test_focused_is_where_the_keyboard_is(window):
    window.entry.focus_force()
    window.master.update()
    assert window.focused()
    other = tk.Toplevel(window.master)
    try:
        other.focus_force()
        other.update()
        assert not window.focused()
    finally:
        other.destroy()


def test_an_alert_rings_the_bell_whatever_the_tk(window, monkeypatch):
    rung = []
    monkeypatch.setattr(window.master, "bell", lambda: rung.append(True))
    window.alert()  # Tk 8.6 on X11 has no -urgent: the bell alone, no error
    assert rung == [True]
