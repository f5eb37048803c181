"""The desktop chat window: real Tk windows under Xvfb, a real server on loopback.

Every test drives the window the way a user does (typing into its entries,
pressing its buttons) and reads what the window shows; each saves a
screenshot in screenshots/ to be looked at.
"""

import os
import re
import signal
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory

from conftest import (REPO, connect_client, screenshot, server_config, start_service,
                      stop_services, subprocess_env, wait_until, ServerProcess)
from spchat import wire
from spchat.client.pins import PinStore
import window_desks
from window_desks import Desk, desk_config, log_in
from window_helpers import (choose, click_conversation, conversation_rows, menu_labels,
                            right_click_member)

# The fixtures, shared with the other window tests.
tk_root, server = window_desks.tk_root, window_desks.server

STAMP = r"\d\d:\d\d:\d\d"


@pytest_twisted.inlineCallbacks
def test_two_windows_log_in_and_a_message_arrives_with_its_time(tk_root, server, tmp_path,
                                                                pins, display):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    alice.say("hello bob, how are you?")
    yield wait_until(lambda: "alice: hello bob" in bob.text())
    assert re.search(rf"^{STAMP}  alice: hello bob, how are you\?$", bob.text(), re.M)
    # The sender sees it confirmed (no longer "sending…"), marked as its own.
    yield wait_until(lambda: "alice (you): hello bob, how are you?\n" in alice.text())
    bob.say("fine, thanks")
    yield wait_until(lambda: re.search(rf"^{STAMP}  bob: fine, thanks$", alice.text(), re.M))
    assert "bob joined" in alice.text()
    assert alice.members() == ["● alice (you)", "● bob"]
    assert alice.top.title() == "spchat — alice@127.0.0.1:%d" % server.address.port
    screenshot(bob.top, display, "client-two-windows-bob.png")
    # A third voice, and a long line that must wrap (the README's picture).
    carol = yield connect_client(server, pins, "carol")
    carol.say("morning! who is up for lunch at 12? the new place on the corner does a "
              "very good soup, and they have a table for six if we book before eleven")
    yield wait_until(lambda: "carol: morning!" in alice.text())
    bob.say("count me in")
    alice.say("me too, I'll book it")
    yield wait_until(lambda: "alice (you): me too, I'll book it\n" in alice.text()
                     and "bob: count me in" in alice.text())
    yield wait_until(lambda: "● carol" in alice.members())
    screenshot(alice.top, display, "client.png")


@pytest_twisted.inlineCallbacks
def test_member_list_follows_a_third_join_and_direct_messages_get_a_row(
        tk_root, server, tmp_path, pins, display):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    carol = yield connect_client(server, pins, "carol")
    yield wait_until(lambda: "● carol" in alice.members() and "● carol" in bob.members())
    yield wait_until(lambda: "carol joined" in bob.text())
    carol.direct("alice", "psst, alice")
    # A direct message gets its own row with an unread count; the room stays clean.
    yield wait_until(lambda: alice.controller.presenter.conversations()[-1][:2] == ("carol", 1))
    yield wait_until(lambda: alice.top.title().startswith("(1) "))
    assert "psst" not in alice.text()
    assert conversation_rows(alice.window) == [("# lobby", ""), ("carol", "1")]
    # Double-click carol in the member list: her conversation opens.
    row = alice.members().index("● carol")
    bbox = alice.window.members.bbox(row)
    for _ in range(2):  # two clicks in quick succession: Tk makes it a double-click
        for kind in ("<ButtonPress-1>", "<ButtonRelease-1>"):
            alice.window.members.event_generate(kind, x=bbox[0] + 5, y=bbox[1] + 2)
    yield wait_until(lambda: "psst, alice" in alice.text())
    alice.say("hi carol")
    yield wait_until(lambda: any(getattr(e, "text", "") == "hi carol" for e in carol.rec.events))
    assert conversation_rows(alice.window) == [("# lobby", ""), ("carol", "")]
    screenshot(alice.top, display, "client-direct-message.png")
    click_conversation(alice.window, 0)
    yield wait_until(lambda: "carol joined" in alice.text())
    screenshot(alice.top, display, "client-members.png")


def join_with_the_box(desk, typed):
    desk.window.join_entry.delete(0, "end")
    desk.window.join_entry.insert(0, typed)
    desk.window.join_button.invoke()


@pytest_twisted.inlineCallbacks
def test_rooms_join_unread_counts_a_mention_switch_and_moderate_from_the_menu(
        tk_root, server, tmp_path, pins, display):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    w = alice.window
    bob = yield connect_client(server, pins, "bob")
    carol = yield connect_client(server, pins, "carol")
    # The join box: a refusal from the server is a line in the window, not a dialog.
    carol.join("secret", private=True)
    yield wait_until(lambda: carol.room("secret") is not None)
    join_with_the_box(alice, "#secret")
    yield wait_until(lambda: "! #secret is private: an operator of it must /invite you first"
                     in alice.text())
    assert conversation_rows(w) == [("# lobby", "")]
    # A new room: alice creates it, owns it, and it opens with its topic above.
    join_with_the_box(alice, "#dev")
    yield wait_until(lambda: conversation_rows(w) == [("# lobby", ""), ("# dev", "")])
    assert w.room_list.selection() == ("1",)
    yield wait_until(lambda: alice.members() == ["● alice (you) — owner"])
    alice.say("/topic release 0.2: rooms, roles and moderation")
    alice.say("/mode +t")
    yield wait_until(lambda: w.header.cget("text") ==
                     "#dev (topic locked) — release 0.2: rooms, roles and moderation")
    bob.join("dev")
    carol.join("dev")
    yield wait_until(lambda: alice.members() == ["● alice (you) — owner", "● bob", "● carol"])
    assert w.members_title.cget("text") == "Members of #dev"

    # Back in the lobby, the others talk in both rooms; bob names alice in #dev.
    click_conversation(w, 0)
    yield wait_until(lambda: w.header.cget("text") == "#lobby")
    assert w.members_title.cget("text") == "Members of #lobby"
    bob.say("the release notes are up, alice: can you look?", "dev")
    carol.say("CI is green on all three platforms", "dev")
    bob.say("lunch at noon?", "lobby")
    yield wait_until(lambda: "bob: lunch at noon?" in alice.text())
    yield wait_until(lambda: conversation_rows(w) == [("# lobby", ""), ("# dev", "2 @")])
    assert w.room_list.item("1", "tags") == ("mention",)  # red, bold
    assert alice.top.title().startswith("(2) ")
    # Switching reads them: the count and the mark go, the line naming her is marked.
    click_conversation(w, 1)
    yield wait_until(lambda: conversation_rows(w) == [("# lobby", ""), ("# dev", "")])
    assert "bob: the release notes are up, alice: can you look?" in alice.text()
    assert "mention" in w.text.tag_names(w.text.search("can you look", "1.0"))

    # The owner's menu on a member offers all of it.
    menu = right_click_member(w, "bob")
    assert menu_labels(menu) == ["Message bob", "Kick bob", "Ban bob for an hour",
                                 "Ban bob for ever", "Mute bob", "Make bob an operator",
                                 "Make bob an owner"]
    # A posted menu does not stall the reactor: a line arrives meanwhile.
    carol.say("still here", "dev")
    yield wait_until(lambda: "carol: still here" in alice.text())
    assert menu.winfo_ismapped()
    choose(menu, "Make bob an operator")
    yield wait_until(lambda: any(name == "bob" and role == "operator"
                                 for name, _, role in bob.room_members("dev")))
    yield wait_until(lambda: alice.members() == ["● alice (you) — owner", "● bob — operator",
                                                 "● carol"])
    choose(right_click_member(w, "carol"), "Kick carol")
    yield wait_until(lambda: any(isinstance(e, wire.RoomLeft) for e in carol.rec.events))
    (left,) = [e for e in carol.rec.events if isinstance(e, wire.RoomLeft)]
    assert (left.room, left.code) == ("dev", "kicked") and "by alice" in left.text
    assert carol.room("lobby") is not None  # still on the server, in her other room
    yield wait_until(lambda: alice.members() == ["● alice (you) — owner", "● bob — operator"])
    yield wait_until(lambda: "carol was kicked by alice" in alice.text())

    # The picture: news in the lobby naming alice, a direct message, her answer.
    bob.say("alice, are you coming to lunch?", "lobby")
    carol.direct("alice", "was that kick about the spam?")
    yield wait_until(lambda: conversation_rows(w) == [("# lobby", "1 @"), ("# dev", ""),
                                                      ("carol", "1")])
    alice.say("bob: thanks, reading them now")
    yield wait_until(lambda: "alice (you): bob: thanks, reading them now\n" in alice.text())
    screenshot(alice.top, display, "client-rooms.png")


@pytest_twisted.inlineCallbacks
def test_server_gone_shows_reconnecting_and_the_pending_message_arrives_once(
        tk_root, tmp_path, display):
    first = start_service(server_config(tmp_path / "data"))
    port = first.address.port
    alice = yield log_in(tk_root, first, tmp_path, "alice")
    bob = yield log_in(tk_root, first, tmp_path, "bob")
    yield stop_services(first)
    yield wait_until(lambda: alice.status().startswith("reconnecting (attempt"))
    assert "disabled" not in alice.window.reconnect_button.state()
    alice.say("typed while the server was away")
    yield wait_until(lambda: "typed while the server was away  (sending…)" in alice.text())
    screenshot(alice.top, display, "client-reconnecting.png")

    second = start_service(server_config(tmp_path / "data", **{"tcp-port": str(port)}))
    try:
        yield wait_until(lambda: alice.status() == "connected as alice"
                         and bob.status() == "connected as bob", timeout=20)
        yield wait_until(lambda: "alice: typed while the server was away" in bob.text())
        yield wait_until(lambda: "(sending…)" not in alice.text())
        assert bob.text().count("typed while the server was away") == 1
        assert alice.text().count("typed while the server was away") == 1
        screenshot(alice.top, display, "client-reconnected.png")
    finally:
        stop_services(second)


@pytest_twisted.inlineCallbacks
def test_kick_shows_the_reason_and_no_reconnect_follows(tk_root, server, tmp_path, display):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    assert server.core.kick("bob", "spamming the room")
    yield wait_until(lambda: bob.status() == "offline: you were kicked: spamming the room")
    assert "you were kicked: spamming the room" in bob.text()
    assert "disabled" in bob.window.reconnect_button.state()
    yield wait_until(lambda: "bob was kicked (spamming the room)" in alice.text())
    # No automatic comeback: a second later bob is still out.
    yield task.deferLater(reactor, 1.0, lambda: None)
    assert bob.controller.client.status.state == "offline"
    assert [row[2] for row in server.core.session_rows() if row[0] == "bob"] in ([], ["offline"])
    assert alice.members() == ["● alice (you)"]
    screenshot(bob.top, display, "client-kicked.png")
    # Leave takes bob back to the form, his name still filled in.
    bob.window.leave_button.invoke()
    assert bob.panel() == "connect" and bob.window.fields["name"].get() == "bob"


@pytest_twisted.inlineCallbacks
def test_leave_and_come_back_in_the_same_window(tk_root, tmp_path, display):
    server = start_service(server_config(tmp_path / "data"))
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    node = alice.controller.sharing
    peer_port = node.port
    assert peer_port
    alice.window.leave_button.invoke()
    assert alice.panel() == "connect" and alice.status() == ""
    # Sharing stopped with the chat: the port for peers is closed.
    assert alice.controller.sharing is None and node._listener is None
    yield task.deferLater(reactor, 0.1, lambda: None)
    reopened = reactor.listenTCP(peer_port, Factory())
    yield reopened.stopListening()
    yield wait_until(lambda: "alice left" in bob.text())
    alice.press_connect()  # the same form again: the key is known now, no question
    yield wait_until(lambda: alice.panel() == "chat" and alice.status() == "connected as alice")
    alice.say("back again")
    yield wait_until(lambda: "alice: back again" in bob.text())
    # The first session wrote nothing into the second one's window.
    assert "logged out" not in alice.text()
    assert alice.text().count("alice joined") == 1
    # Leave while the server is away and a reconnect dial is under way: that
    # dial must not log the old session in behind the user's back.
    yield stop_services(server)
    yield wait_until(lambda: alice.status().startswith("reconnecting"))
    alice.window.leave_button.invoke()
    yield task.deferLater(reactor, 0.5, lambda: None)
    assert alice.panel() == "connect"
    assert alice.controller.client is None


@pytest_twisted.inlineCallbacks
def test_a_changed_server_key_is_refused_with_both_fingerprints(tk_root, server, tmp_path,
                                                                display):
    root, desks = tk_root
    config_dir = tmp_path / "mallory-config"
    wrong = "SHA256:" + "A" * 43
    PinStore(config_dir).trust("127.0.0.1", server.address.port, wrong)
    desk = Desk(root, desk_config(server), config_dir)
    desks.append(desk)
    desk.fill(name="mallory")
    desk.press_connect()
    yield wait_until(lambda: desk.panel() == "trust")
    w = desk.window
    assert "CHANGED" in w.trust_title.cget("text")
    assert wrong in w.trust_text.cget("text") and server.fingerprint in w.trust_text.cget("text")
    assert w.trust_button.winfo_manager() == ""  # no way to trust it from here
    assert "mallory" not in [row[0] for row in server.core.session_rows()]
    screenshot(desk.top, display, "client-changed-key.png")
    w.trust_back.invoke()
    assert desk.panel() == "connect"


@pytest_twisted.inlineCallbacks
def test_form_errors_and_a_wrong_password_are_said_in_the_window(tk_root, server, tmp_path,
                                                                 pins, display):
    owner = yield connect_client(server, pins, "dana", password="correct horse",
                                 register=True)
    yield owner.logout()
    root, desks = tk_root
    desk = Desk(root, desk_config(server), tmp_path / "desk-config")
    desks.append(desk)
    desk.fill(port="http", name="dana")
    desk.press_connect()
    assert desk.window.connect_message.cget("text") == "the port must be a number, not 'http'"
    desk.fill(port=server.address.port, name="")
    desk.press_connect()
    assert desk.window.connect_message.cget("text") == "enter the name to chat under"
    desk.fill(port=server.address.port, name="dana", password="wrong horse")
    desk.press_connect()
    yield wait_until(lambda: desk.panel() == "trust")
    desk.window.trust_button.invoke()
    yield wait_until(lambda: "wrong name or password" in desk.window.connect_message.cget("text"))
    assert desk.panel() == "connect"
    screenshot(desk.top, display, "client-wrong-password.png")
    # The form is remembered for next time, but never the password.
    saved = (tmp_path / "desk-config" / "desktop.json").read_text()
    assert '"name": "dana"' in saved and "horse" not in saved
    desk.fill(password="correct horse")
    desk.press_connect()
    yield wait_until(lambda: desk.status() == "connected as dana")


@pytest_twisted.inlineCallbacks
def test_the_desktop_command_connects_and_logs_out_cleanly_on_sigterm(tmp_path, pins, display):
    server = ServerProcess(tmp_path)
    try:
        env = subprocess_env(tmp_path, DISPLAY=display)
        PinStore(tmp_path / "client-config").trust("127.0.0.1", server.port, server.fingerprint)
        watcher = yield connect_client(None, PinStore(tmp_path / "watcher"), "watcher",
                                       port=server.port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "spchat.client", "--host", "127.0.0.1",
             "--port", str(server.port), "--name", "zed"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            yield wait_until(lambda: any(getattr(e, "text", "") == "zed joined"
                                         for e in watcher.rec.events), timeout=30)
            proc.send_signal(signal.SIGTERM)
            yield wait_until(lambda: proc.poll() is not None, timeout=15)
            output = proc.stdout.read()
            assert proc.returncode == 0, output
            assert "Traceback" not in output
            yield wait_until(lambda: any(getattr(e, "text", "") == "zed left"
                                         for e in watcher.rec.events))
        finally:
            if proc.poll() is None:
                proc.kill()
        yield watcher.logout()
    finally:
        server.stop()


def test_without_a_display_the_command_says_what_to_do(tmp_path):
    env = subprocess_env(tmp_path)
    env.pop("DISPLAY", None)
    result = subprocess.run([sys.executable, "-m", "spchat.client"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot open a window" in result.stderr and "--cli" in result.stderr
    assert "Traceback" not in result.stderr


def _ignore_sigint():  # as in a background job of a non-interactive shell
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
@pytest_twisted.inlineCallbacks
def test_the_example_runs_a_server_and_three_windows_and_cleans_up(tmp_path, display, stop):
    env = subprocess_env(tmp_path, DISPLAY=display)
    proc = subprocess.Popen([sys.executable, "scripts/example.py"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint)
    try:
        first = proc.stdout.readline()
        found = re.search(r"server on 127\.0\.0\.1:(\d+), key (\S+)", first)
        assert found, first + proc.stdout.read()
        port, fingerprint = int(found.group(1)), found.group(2)
        workdir = re.search(r"everything is in (\S+)", proc.stdout.readline()).group(1)
        pins = PinStore(tmp_path / "watcher")
        pins.trust("127.0.0.1", port, fingerprint)
        watcher = yield connect_client(None, pins, "watcher", port=port)
        yield wait_until(lambda: {"alice", "bob", "carol"} <= {n for n, _ in watcher.members},
                         timeout=30)
        proc.send_signal(stop)  # Ctrl-C, or a service manager's stop
        yield wait_until(lambda: proc.poll() is not None, timeout=30)
        assert proc.returncode == 0
        assert "example: done" in proc.stdout.read()
        assert not os.path.exists(workdir)
        # The windows logged out on the way (not "connection lost").
        texts = {getattr(e, "text", "") for e in watcher.rec.events}
        assert {"alice left", "bob left", "carol left"} <= texts
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_services()  # the watcher: no redialling a server that is gone


@pytest_twisted.inlineCallbacks
def test_history_is_marked_and_scrolling_up_loads_older_pages(tk_root, tmp_path, pins, display):
    server = start_service(server_config(tmp_path / "data", **{"idle-after": "1", "flood-burst": "1000"}))
    try:
        bob = yield connect_client(server, pins, "bob")
        for n in range(1, 121):
            bob.say(f"message {n}")
        assert (yield bob.wait_acked(20))
        alice = yield log_in(tk_root, server, tmp_path, "alice")
        yield wait_until(lambda: "bob: message 120\n" in alice.text())
        bob.say("and this one is new")
        yield wait_until(lambda: "bob: and this one is new" in alice.text())
        text = alice.text()
        # The last 50 came as history, marked off from what is new.
        assert "bob: message 71\n" in text and "bob: message 70\n" not in text
        assert text.index("message 120") < text.index("alice joined")
        assert text.index("message 120") < text.index("— earlier messages above —") < text.index(
            "and this one is new")
        t = alice.window.text
        assert alice.window.text.yview()[1] == 1.0  # it opens at the newest line

        def drag_scrollbar_to_top():  # what Tk does when the user drags the thumb
            alice.window.scroll.tk.call(alice.window.scroll.cget("command"), "moveto", 0)

        drag_scrollbar_to_top()  # the page before arrives
        yield wait_until(lambda: "bob: message 21\n" in alice.text())
        # Where the user was reading is still in sight, not a jump.
        yield wait_until(lambda: "message 71" in t.get("@0,0 linestart", "@0,0 lineend"))
        drag_scrollbar_to_top()
        yield wait_until(lambda: "bob: message 1\n" in alice.text())
        lines = [l for l in alice.text().splitlines() if "bob: message" in l]
        assert [int(l.rsplit(" ", 1)[1]) for l in lines] == list(range(1, 121))
        assert alice.controller.presenter.reached_top() is False  # nothing older
        # Bob has said nothing for a while: idle, in amber.
        yield wait_until(lambda: "● bob — idle" in alice.members(), timeout=10)
        t.see("end")
        alice.say("hi bob, catching up on what I missed")
        yield wait_until(lambda: "(sending…)" not in alice.text()
                         and "catching up" in alice.text())
        screenshot(alice.top, display, "client-history.png")
    finally:
        stop_services(server)


# --- file sharing: offers with a Download button, progress rows ----------------


@pytest_twisted.inlineCallbacks
def test_an_offer_has_a_download_button_that_saves_the_file_with_a_progress_bar(
        tk_root, server, tmp_path, pins, display):
    from spchat.p2p.node import SharingNode

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
    assert bob.controller.sharing is not None and bob.controller.sharing.port
    # alice shares from her own client, slowly enough for the bar to be seen.
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(1536 * 1024))
    alice = yield connect_client(server, pins, "alice")
    node = SharingNode(reactor, alice, upload_bps=512 * 1024)
    node.start()
    try:
        file_id, _ = yield node.share(source)
        yield wait_until(lambda: bob.window.offer_buttons(file_id))
        assert re.search(rf"^{STAMP}  ⇩ alice shares talk.bin \(1.5 MiB\)  $", bob.text(), re.M)
        (button,) = bob.window.offer_buttons(file_id)
        assert button.cget("text") == "Download" and not button.instate(["disabled"])
        button.invoke()
        # A row with a bar and its line; the offer's button is disabled meanwhile.
        rows = bob.window.download_bar.rows
        yield wait_until(lambda: rows)
        yield wait_until(lambda: any(
            "talk.bin: " in row.label.cget("text") and "%" in row.label.cget("text")
            for row in rows.values()))
        (button,) = bob.window.offer_buttons(file_id)
        assert button.instate(["disabled"]) and button.cget("text") == "Downloading…"
        (row,) = rows.values()
        assert bob.window.downloads.winfo_manager() == "pack"
        assert row.visible_buttons() == ["Cancel"]
        yield wait_until(lambda: 0 < row.bar.cget("value") < 1000, timeout=10)
        screenshot(bob.top, display, "client-download-progress.png")
        # Done: the file as shared, a "saved" line, and the row saved till closed.
        yield wait_until(lambda: "saved " in bob.text(), timeout=30)
        saved = downloads / "talk.bin"
        assert saved.read_bytes() == source.read_bytes()
        assert re.search(rf"^{STAMP}  \* saved {re.escape(str(saved))} \(1.5 MiB in ", bob.text(),
                         re.M)
        yield wait_until(lambda: row.visible_buttons() == ["Close", "Open folder"])
        assert row.label.cget("text") == f"talk.bin: saved in {downloads}"
        row.buttons["Close"].invoke()
        yield wait_until(lambda: not rows)
        assert not bob.window.downloads.winfo_manager()
        (button,) = bob.window.offer_buttons(file_id)
        assert button.instate(["disabled"]) and button.cget("text") == "Saved"
        screenshot(bob.top, display, "client-download-saved.png")
    finally:
        yield node.stop()


@pytest_twisted.inlineCallbacks
def test_share_files_and_get_typed_in_two_windows(tk_root, server, tmp_path, display):
    downloads = tmp_path / "bob-downloads"
    downloads.mkdir()
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
    source = tmp_path / "notes one.txt"
    source.write_bytes(os.urandom(70_000))
    alice.say(f"/share {source}")
    yield wait_until(lambda: "sharing notes one.txt (68.4 KiB) as " in alice.text())
    file_id = re.search(r"sharing notes one.txt \(68.4 KiB\) as (\w+)", alice.text()).group(1)
    # Her own offer, marked as hers, has Stop sharing; bob's has Download.
    yield wait_until(lambda: "alice shares notes one.txt" in bob.text())
    assert "⇩ alice (you) shares notes one.txt (68.4 KiB)" in alice.text()
    assert [b.cget("text") for _, b in alice.window._offer_buttons] == ["Stop sharing"]
    assert [b.cget("text") for _, b in bob.window._offer_buttons] == ["Download"]
    bob.say("/files")
    yield wait_until(lambda: "offered files:" in bob.text())
    assert f"{file_id}  notes one.txt (68.4 KiB) from alice, 1 peer online" in bob.text()
    bob.say(f"/get {file_id[:8]}")
    yield wait_until(lambda: "saved " in bob.text() or "! " in bob.text(), timeout=30)
    assert "! " not in bob.text()
    assert (downloads / "notes one.txt").read_bytes() == source.read_bytes()
    # The offer's button follows a download started by /get too.
    yield wait_until(lambda: bob.window._offer_buttons[0][1].cget("text") == "Saved")
    yield wait_until(lambda: [row.visible_buttons() for row in bob.window.download_bar.rows.values()]
                     == [["Close", "Open folder"]])
    bob.say("/get 0123456789ab")
    yield wait_until(lambda: re.search(rf"^{STAMP}  ! cannot get 0123456789ab: ", bob.text(),
                                       re.M))
    assert "error" in bob.window.text.tag_names(bob.window.text.search("! cannot get", "1.0"))
    screenshot(bob.top, display, "client-share-commands.png")


@pytest_twisted.inlineCallbacks
def test_a_taken_peer_port_turns_sharing_off_not_the_chat(tk_root, server, tmp_path, display):
    taken = reactor.listenTCP(0, Factory(), interface="0.0.0.0")
    try:
        desk = yield log_in(tk_root, server, tmp_path, "carol", p2p_port=taken.getHost().port)
        assert desk.controller.sharing is None
        assert (f"file sharing is off: cannot take peer connections on port "
                f"{taken.getHost().port}" in desk.text())
        desk.say("/files")
        yield wait_until(lambda: "file sharing is off in this window" in desk.text())
        desk.say("still chatting")
        yield wait_until(lambda: "carol (you): still chatting\n" in desk.text())
    finally:
        yield taken.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_message_over_the_limit_stays_in_the_entry(tk_root, tmp_path, display):
    server = start_service(server_config(tmp_path / "data", **{"max-message-bytes": "100"}))
    try:
        alice = yield log_in(tk_root, server, tmp_path, "alice")
        long_text = "a rather long thought " * 10  # 220 bytes
        alice.say(long_text)
        yield wait_until(lambda: "it is still in the entry" in alice.text())
        assert alice.window.entry.value() == long_text  # kept, to shorten or split
        assert "the limit is 100 bytes" in alice.text()
        alice.window.entry.set_value("")
        alice.say("short enough")
        yield wait_until(lambda: "short enough" in alice.text())
        assert alice.window.entry.value() == ""  # what is taken goes
        screenshot(alice.top, display, "client-too-long.png")
    finally:
        stop_services(server)
