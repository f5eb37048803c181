"""The chat window's message entry, driven by keys as a user types: real Tk
under Xvfb, no server (the presenter's client is fed by hand, as in
test_client_window_rooms)."""

from spchat import wire

from conftest import screenshot
import lone_window as rooms
from window_helpers import click_conversation

# A window in #lobby and #dev, fed by hand.
window = rooms.window


def type_in(window, text):
    entry = window.entry
    entry.focus_force()  # keys go to the focused widget, as for a user
    entry.insert("insert", text)
    entry.update()


def press(window, key):
    window.entry.event_generate(key)
    window.entry.update()


def said(window):
    """My lines in the open conversation, as sent."""
    return [line.text for line in window.presenter.lines() if line.own]


def test_shift_enter_and_pasted_newlines_stay_one_message_enter_sends(window, display):
    type_in(window, "first line")
    press(window, "<Shift-Return>")
    type_in(window, "second line")
    window.entry.clipboard_clear()
    window.entry.clipboard_append("\npasted one\npasted two")
    press(window, "<<Paste>>")
    assert window.entry.value() == "first line\nsecond line\npasted one\npasted two"
    assert int(window.entry.cget("height")) == 4  # grown to show it all
    screenshot(window.master, display, "entry-multiline.png")
    press(window, "<Return>")
    assert said(window) == ["first line\nsecond line\npasted one\npasted two"]
    assert window.entry.value() == "" and int(window.entry.cget("height")) == 1


def test_up_recalls_earlier_lines_and_down_the_draft(window):
    for text in ("one", "two"):
        type_in(window, text)
        press(window, "<Return>")
    type_in(window, "draft")
    press(window, "<Up>")
    assert window.entry.value() == "two"
    press(window, "<Up>")
    assert window.entry.value() == "one"
    press(window, "<Down>")
    press(window, "<Down>")
    assert window.entry.value() == "draft"


def test_tab_completes_the_rooms_members_and_cycles(window, display):
    type_in(window, "thanks a")
    press(window, "<Tab>")
    assert window.entry.value() == "thanks alice "
    assert window.entry.focus_get() is window.entry  # Tab did not move the focus
    window.entry.set_value("")
    click_conversation(window, 1)  # #dev: bob and me
    type_in(window, "b")
    press(window, "<Tab>")
    assert window.entry.value() == "bob: "
    window.entry.set_value("m")
    press(window, "<Tab>")
    assert window.entry.value() == "m"  # never my own name
    # Cycling, with two names that start alike.
    window.presenter.client.message_received(
        wire.Members("dev", (("bob", "online", "operator"), ("bobby", "online", "member"),
                             ("me", "online", "member"))))
    window.entry.set_value("bo")
    press(window, "<Tab>")
    press(window, "<Tab>")
    assert window.entry.value() == "bobby: "
    screenshot(window.master, display, "entry-tab-completed.png")
    press(window, "<Tab>")
    assert window.entry.value() == "bob: "


def test_ctrl_a_selects_everything_typed(window):
    type_in(window, "all of\nthis")
    press(window, "<Control-a>")
    assert window.entry.get("sel.first", "sel.last") == "all of\nthis"
