"""The chat window with several rooms: real Tk under Xvfb, no server (the
presenter's client is fed the server's messages by hand)."""

import dataclasses

from spchat import wire

from conftest import screenshot
import lone_window
from lone_window import T
from window_helpers import (choose, click_conversation, conversation_rows, menu_labels,
                            right_click_conversation, right_click_member)

window = lone_window.window  # the fixture


def joins_as_typed(messages):
    """Requests as a user typed them: a join's cid is the client's own."""
    return [dataclasses.replace(m, cid=None) if isinstance(m, wire.Join) else m
            for m in messages]


def test_room_list_unread_mentions_members_and_topic(window, display):
    client = window.presenter.client
    for msg in (wire.RoomMessage(1, T, "dev", "bob", "hello there"),
                wire.RoomMessage(2, T, "dev", "bob", "me: can you review?"),
                wire.RoomMessage(1, T, "lobby", "alice", "morning"),
                wire.DirectMessage(1, T, "carol", "me", "psst, me")):
        client.message_received(msg)
    window.refresh()
    assert conversation_rows(window) == [("# lobby", ""), ("# dev", "2 @"), ("carol", "1")]
    assert window.room_list.item("1", "tags") == ("mention",)  # red, bold
    assert window.members.get(0, "end") == ("● alice — owner", "● me (you)",
                                            "● zed — muted, idle")
    assert window.header.cget("text") == "#lobby"
    click_conversation(window, 1)
    assert conversation_rows(window) == [("# lobby", ""), ("# dev", ""), ("carol", "1")]
    assert window.header.cget("text") == "#dev (private) — release planning"
    assert window.members.get(0, "end") == ("● bob — operator", "● me (you)")
    assert window.members_title.cget("text") == "Members of #dev"
    assert "bob: me: can you review?" in window.text.get("1.0", "end")
    mention = window.text.search("can you review", "1.0")
    assert "mention" in window.text.tag_names(mention)
    screenshot(window.master, display, "client-rooms-offline.png")


def test_commands_typed_in_the_entry_act_on_the_open_room(window):
    click_conversation(window, 1)  # #dev
    for typed in ("/kick zed spam", "/join #ops"):
        window.entry.insert("end", typed)
        window._send_clicked()
    assert joins_as_typed(window.presenter.client.sent) == [wire.Moderate("dev", "kick", "zed", "spam"),
                                            wire.Join("ops")]
    window.presenter.client.message_received(wire.RoomState("ops", "", False, False, 0))
    window.refresh()
    assert conversation_rows(window) == [("# lobby", ""), ("# dev", ""), ("# ops", "")]
    assert window.room_list.selection() == ("2",) and window.presenter.active == "#ops"
    window.presenter.client.message_received(wire.RoomLeft("ops", "kicked", "you were kicked"))
    window.refresh()
    assert conversation_rows(window)[-1] == ("# ops (left)", "")
    assert "you were kicked" in window.text.get("1.0", "end")


def test_msg_keeps_the_room_open_and_query_opens_the_conversation(window, display):
    click_conversation(window, 1)  # #dev
    window.entry.insert("end", "/msg bob are you free?")
    window._send_clicked()
    assert window.presenter.active == "#dev" and window.room_list.selection() == ("1",)
    assert conversation_rows(window) == [("# lobby", ""), ("# dev", ""), ("bob", "")]
    assert "* to bob: are you free?" in window.text.get("1.0", "end")
    screenshot(window.master, display, "client-msg-stays-in-the-room.png")
    window.entry.insert("end", "/query bob")
    window._send_clicked()
    assert window.presenter.active == "bob" and window.room_list.selection() == ("2",)
    assert "me (you): are you free?" in window.text.get("1.0", "end")


def test_a_plain_member_is_offered_a_conversation_only(window):
    menu = right_click_member(window, "alice")
    assert menu.winfo_ismapped() and menu_labels(menu) == ["Message alice"]
    choose(menu, "Message alice")
    assert not menu.winfo_ismapped()
    assert window.presenter.active == "alice"
    assert window.header.cget("text") == "direct conversation with alice"
    assert conversation_rows(window)[-1] == ("alice", "")


def test_an_owner_moderates_from_a_members_menu(window):
    client = window.presenter.client
    client.message_received(wire.MemberUpdate("dev", "me", "online", "owner"))
    click_conversation(window, 1)  # #dev
    assert window.members.get(0, "end") == ("● me (you) — owner", "● bob — operator")
    menu = right_click_member(window, "bob")
    assert menu_labels(menu) == ["Message bob", "Kick bob", "Ban bob for an hour",
                                 "Ban bob for ever", "Make bob a plain member",
                                 "Make bob an owner"]
    choose(menu, "Ban bob for an hour")
    choose(right_click_member(window, "bob"), "Make bob a plain member")
    assert client.sent == [wire.Moderate("dev", "ban", "bob", None, 60.0),
                           wire.Moderate("dev", "deop", "bob")]
    # My own row has nothing to offer: no menu.
    right_click_member(window, "me")
    assert not menu.winfo_ismapped()


def test_the_join_box_sends_a_join_and_says_what_is_wrong(window):
    window.join_entry.insert("end", "ops")
    window.join_private.set(True)
    window.join_button.invoke()
    assert joins_as_typed(window.presenter.client.sent) == [wire.Join("ops", True)]
    assert window.join_entry.get() == "#" and not window.join_private.get()  # ready for the next
    window.join_entry.insert("end", "two words")
    window.join_entry.focus_force()  # keys go to the focused window, as for a user
    window.master.update()
    window.join_entry.event_generate("<Return>")
    assert "! type the name of one room to join or create, as #name" in window.text.get(
        "1.0", "end")
    assert len(window.presenter.client.sent) == 1


def test_a_left_room_is_shown_as_left_and_can_be_removed(window):
    client = window.presenter.client
    client.message_received(wire.RoomLeft("dev", "banned", "you are banned from #dev for ever"))
    window.refresh()
    assert conversation_rows(window)[1] == ("# dev (left)", "")
    assert window.room_list.item("1", "tags") == ("left",)  # grey, italic
    menu = right_click_conversation(window, 1)
    assert menu_labels(menu) == ["Join #dev again", "Remove #dev from the list"]
    choose(menu, "Remove #dev from the list")
    assert conversation_rows(window) == [("# lobby", "")]
    choose(right_click_conversation(window, 0), "Leave #lobby")
    assert client.sent == [wire.Part("lobby", None)]


def test_a_second_line_of_a_message_is_marked_and_indented_never_an_event(window, display):
    client = window.presenter.client
    client.message_received(wire.RoomMessage(1, T, "lobby", "alice",
                                             "see below\n06:58:01  * bob left\n"))
    client.message_received(wire.Notice("lobby", T, "leave", "zed left"))
    window.refresh()
    text = window.text
    text.update()
    shown = text.get("1.0", "end-1c").split("\n")
    time = shown[-2][:8]  # the notice's own time stamp, whatever the time zone
    assert shown[-5:] == [f"{time}  alice: see below", "| 06:58:01  * bob left", "| ",
                          f"{time}  * zed left", ""]
    # Drawn under the text, not at the left edge where a time stamp starts.
    fake, real = (text.search(s, "1.0") for s in ("| 06:58:01", f"{time}  * zed"))
    assert text.bbox(fake)[0] >= text.bbox(f"{real} + 10 chars")[0] > text.bbox(real)[0]
    assert "continuation_mark" in text.tag_names(fake)
    screenshot(window.master, display, "client-continuation-lines.png")


def _labels(window):
    return window.members.get(0, "end")


def test_a_join_in_a_big_room_changes_one_row_not_the_whole_list(window):
    """Rows drawn once keep what was done to them (a mark here): a list drawn
    again for every join would lose it, and in a room of thousands stall."""
    client = window.presenter.client
    crowd = tuple((f"user{i:05d}", "online", "member") for i in range(3000))
    client.message_received(wire.Members("lobby", (("alice", "online", "owner"),
                                                   ("me", "online", "member"), *crowd)))
    window.refresh()
    members = window.members
    assert members.size() == 3002 and _labels(window)[:2] == ("● alice — owner", "● me (you)")
    for row in range(members.size()):
        members.itemconfigure(row, background="#fafafa")
    for update in (wire.MemberUpdate("lobby", "user01500x", "online", "member"),  # a join
                   wire.MemberUpdate("lobby", "user00007", "idle", "member"),
                   wire.MemberUpdate("lobby", "user02999", "gone", "member"),  # a leave
                   wire.MemberUpdate("lobby", "user00010", "online", "operator")):
        client.message_received(update)
    window.refresh()
    expected = [f"● {row.name}" + (" (you)" if row.me else "") for row in
                window.presenter.member_rows()]
    assert [label.split(" — ")[0] for label in _labels(window)] == expected
    assert _labels(window)[1] == "● user00010 — operator"  # up among the operators
    assert _labels(window)[-1] == "● user02998"
    changed = {_labels(window).index(label) for label in
               ("● user01500x", "● user00007 — idle", "● user00010 — operator")}
    kept = [row for row in range(members.size())
            if members.itemcget(row, "background") == "#fafafa"]
    assert set(range(members.size())) - set(kept) == changed
    assert members.itemcget(_labels(window).index("● user00007 — idle"), "foreground") == (
        "#9a6700")  # idle's colour
    # Right-clicking a row finds the member drawn there.
    members.update()
    assert window._member_at(members.bbox(1)[1] + 2).name == "user00010"


def test_a_direct_conversation_is_closed_from_its_menu(window, display):
    client = window.presenter.client
    client.message_received(wire.DirectMessage(1, T, "bob", "me", "got a minute?"))
    window.controller.open("bob")
    assert conversation_rows(window)[-1] == ("bob", "")
    menu = right_click_conversation(window, 2)
    assert menu_labels(menu) == ["Close the conversation with bob"]
    screenshot(window.master, display, "client-close-direct.png")
    choose(menu, "Close the conversation with bob")
    assert conversation_rows(window) == [("# lobby", ""), ("# dev", "")]
    assert window.presenter.active == "#lobby"
