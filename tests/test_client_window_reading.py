"""Reading the conversation: the "new messages below" mark and its jump,
day separators and dated time stamps. Real Tk under Xvfb, no server (the
presenter's client is fed by hand, as in test_client_window_rooms)."""

from spchat import wire
from spchat.client.days import day_label, local_day

from conftest import screenshot
import lone_window as rooms

# A window in #lobby and #dev, fed by hand.
window = rooms.window
NOW = rooms.T  # the window's today


def feed(window, *messages):
    for msg in messages:
        window.presenter.client.message_received(msg)
    window.refresh()
    window.text.update()


def scroll_to_top(window):
    window.text.yview_moveto(0)
    window._note_position()


def test_lines_arriving_while_scrolled_up_are_announced_with_a_jump(window, display):
    feed(window, *(wire.RoomMessage(seq, NOW, "lobby", "alice", f"line {seq}")
                   for seq in range(1, 61)))
    assert not window.jump_button.winfo_ismapped()  # at the bottom: nothing to say
    scroll_to_top(window)
    feed(window, wire.RoomMessage(61, NOW, "lobby", "alice", "are you there?"),
         wire.Notice("lobby", NOW, "join", "carol joined"),
         wire.RoomMessage(62, NOW, "lobby", "alice", "me?"))
    assert window.jump_button.winfo_ismapped()
    assert window.jump_button.cget("text") == "↓ 2 new messages below — jump to latest"
    assert window.text.yview()[0] == 0.0  # the reader stays where they were
    screenshot(window.master, display, "reading-new-messages-below.png")
    window.jump_button.invoke()
    window.text.update()
    assert window.text.yview()[1] == 1.0 and not window.jump_button.winfo_ismapped()

    scroll_to_top(window)
    feed(window, wire.RoomMessage(63, NOW, "lobby", "alice", "one more"))
    assert window.jump_button.cget("text") == "↓ 1 new message below — jump to latest"
    window.text.yview_moveto(1.0)  # scrolled down by hand
    window._note_position()
    assert not window.jump_button.winfo_ismapped()


def test_a_line_typed_while_scrolled_up_brings_the_reader_down(window):
    feed(window, *(wire.RoomMessage(seq, NOW, "lobby", "alice", f"line {seq}")
                   for seq in range(1, 61)))
    scroll_to_top(window)
    window.entry.insert("end", "back to the bottom")
    window._send_clicked()
    window.text.update()
    assert window.text.yview()[1] == 1.0 and not window.jump_button.winfo_ismapped()


def test_history_from_other_days_has_day_separators_and_dated_stamps(window, display):
    old, older = rooms.T - 86_400_000, rooms.T - 3 * 86_400_000
    feed(window, wire.RoomMessage(1, older, "lobby", "alice", "long ago", history=True),
         wire.RoomMessage(2, old, "lobby", "alice", "the day before", history=True),
         wire.RoomMessage(3, rooms.T, "lobby", "alice", "on the day", history=True))
    text = window.text.get("1.0", "end")
    labels = [day_label(local_day(ts), local_day(NOW)) for ts in (older, old, NOW)]
    assert labels[1:] == ["Yesterday", "Today"]
    assert [text.index(label) for label in labels] == sorted(text.index(l) for l in labels)
    stamp = window.presenter.stamp(window.presenter.lines()[0])
    assert stamp != window.presenter.lines()[0].time  # a date: not from today
    assert f"{stamp}  alice: long ago" in text
    screenshot(window.master, display, "reading-day-separators.png")
