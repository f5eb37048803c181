"""Right-to-left text and emoji as people read them: Hebrew not backwards,
Arabic letters joined, and a smiley drawn as a smiley, not as the box of a
missing glyph.  Real Tk under Xvfb, no server (the presenter's client is
fed by hand, as in test_client_window_rooms)."""

import shutil
import subprocess

from spchat import wire
from spchat.client.bidi import display_order

from conftest import screenshot
import lone_window as rooms
from local_servers import missing

window = rooms.window

SHALOM = "שלום"
SMILEY = "\U0001F600"
NO_GLYPH = "\U0010FFFD"  # private use: in no font


def test_hebrew_is_put_in_reading_order():
    assert display_order(SHALOM) == SHALOM[::-1]
    # A Hebrew sentence with a word of English: right to left as a whole,
    # the English word itself unchanged.
    assert display_order(f"{SHALOM} spchat") == f"spchat {SHALOM[::-1]}"
    assert display_order(f"hello {SHALOM} world") == f"hello {SHALOM[::-1]} world"


def test_arabic_letters_are_joined_and_in_reading_order():
    shown = display_order("سلام")  # seen, lam, alef, meem
    # The last letter first: meem alone (alef does not join to the left),
    # lam and alef as their one joined glyph, seen in its initial form.
    assert [hex(ord(c)) for c in shown] == ["0xfee1", "0xfefc", "0xfeb3"]


def test_text_without_right_to_left_letters_is_left_alone():
    for text in ("plain words", "emoji " + SMILEY, "", "a\nb"):
        assert display_order(text) == text
    assert display_order(f"one {SHALOM}\ntwo") == f"one {SHALOM[::-1]}\ntwo"


def test_a_hebrew_line_is_shown_in_reading_order(window, display):
    window.presenter.client.message_received(
        wire.RoomMessage(1, rooms.T, "lobby", "dana", f"{SHALOM} לכולם"))
    window.refresh()
    shown = window.text.get("1.0", "end")
    assert f"dana: {'לכולם'[::-1]} {SHALOM[::-1]}" in shown
    screenshot(window.master, display, "scripts-hebrew.png")


def test_a_hebrew_name_reads_right_to_left_wherever_it_is_shown(window, display):
    name = "דנה"
    client = window.presenter.client
    client.message_received(wire.MemberUpdate("lobby", name, "online"))
    client.message_received(wire.RoomMessage(1, rooms.T, "lobby", name, "hi"))
    client.message_received(wire.DirectMessage(1, rooms.T, name, "me", "psst"))
    window.refresh()
    assert f"{name[::-1]}: hi" in window.text.get("1.0", "end")
    assert any(name[::-1] in label for label in window.members.get(0, "end"))
    tree = window.room_list
    assert name[::-1] in [tree.item(row, "text") for row in tree.get_children()]


def _ink_box(image):
    """The bounding box of what is not white, and the image's pixels."""
    grey = image.convert("L")
    return grey.point(lambda v: 255 if v < 128 else 0).getbbox(), grey


def _corners_inked(image) -> int:
    """How many corners of the drawn shape's bounding box are ink: all four
    for the hollow box of a missing glyph, none for a round face."""
    box, grey = _ink_box(image)
    assert box is not None, "nothing was drawn"
    left, top, right, bottom = box
    corners = [(left, top), (right - 1, top), (left, bottom - 1), (right - 1, bottom - 1)]
    return sum(grey.getpixel(xy) < 128 for xy in corners)


def test_an_emoji_is_drawn_as_itself(window, display):
    fc_list = shutil.which("fc-list")
    fonts = subprocess.run([fc_list, ":charset=1f600", "family"], capture_output=True,
                           text=True).stdout if fc_list else ""
    if not fonts.strip():
        missing("no font with emoji (Debian: fonts-symbola)")
    import tkinter as tk
    from PIL import ImageGrab

    def drawn(text):
        label = tk.Label(window.master, text=text, font=("DejaVu Sans", 48), bg="white")
        label.place(x=0, y=0)
        window.master.update()
        x, y = label.winfo_rootx(), label.winfo_rooty()
        image = ImageGrab.grab(bbox=(x, y, x + label.winfo_width(), y + label.winfo_height()),
                               xdisplay=display)
        label.destroy()
        return image

    assert _corners_inked(drawn(NO_GLYPH)) == 4  # the box: what must not be seen
    assert _corners_inked(drawn(SMILEY)) == 0
    window.presenter.client.message_received(
        wire.RoomMessage(1, rooms.T, "lobby", "dana", f"nice {SMILEY} \U0001F44D"))
    window.refresh()
    screenshot(window.master, display, "scripts-emoji.png")
