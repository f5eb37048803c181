"""Sharing and downloading from the chat window, as a person does it: real
Tk windows under Xvfb, a real server and real peers on loopback.

Share file… opens the window's own picker (no modal dialog: the chat goes
on behind it); a download's row has Cancel while it runs and Open folder
once saved.
"""

import os
import sys

import pytest_twisted
from twisted.internet import reactor

from conftest import connect_client, screenshot, wait_until
from spchat.client.folders import FolderOpener
import window_desks
from window_desks import log_in

tk_root, server = window_desks.tk_root, window_desks.server


def click_in_listing(picker, label):
    """A double-click on a row of the picker's listing."""
    listing = picker.listing
    index = list(listing.get(0, "end")).index(label)
    listing.selection_clear(0, "end")
    listing.selection_set(index)
    listing.event_generate("<<ListboxSelect>>")
    listing.update()
    picker.open_selected()  # what <Double-Button-1> runs


@pytest_twisted.inlineCallbacks
def test_share_file_picks_a_file_in_the_picker_and_another_window_fetches_it(
        tk_root, server, tmp_path, display):
    downloads = tmp_path / "bob-downloads"
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
    folder = tmp_path / "alice-files"
    (folder / "talks").mkdir(parents=True)
    source = folder / "talks" / "slides.pdf"
    source.write_bytes(os.urandom(200_000))
    (folder / "readme.txt").write_text("hi")
    alice.window._picker_folder = folder
    alice.window.share_button.invoke()
    picker = alice.window.picker
    assert picker.is_open() and picker.folder_label.cget("text") == f"In {folder}"
    assert list(picker.listing.get(0, "end")) == ["talks/", "readme.txt    (2 bytes)"]
    click_in_listing(picker, "talks/")
    assert list(picker.listing.get(0, "end")) == ["slides.pdf    (195.3 KiB)"]
    # Not modal: the chat goes on while the picker is open.
    bob.say("are you sharing the slides?")
    yield wait_until(lambda: "bob: are you sharing the slides?" in alice.text())
    picker.listing.selection_set(0)
    picker.listing.event_generate("<<ListboxSelect>>")
    picker.top.update()
    assert picker.name.get() == "slides.pdf"
    screenshot(picker.top, display, "client-file-picker.png")
    picker.share_button.invoke()
    assert not picker.is_open()
    yield wait_until(lambda: "sharing slides.pdf (195.3 KiB) as " in alice.text())
    # Shared in the open room, as /share does; bob downloads it.
    yield wait_until(lambda: "alice shares slides.pdf (195.3 KiB)" in bob.text())
    ((file_id, button),) = bob.window._offer_buttons
    button.invoke()
    yield wait_until(lambda: "saved " in bob.text(), timeout=30)
    assert (downloads / "slides.pdf").read_bytes() == source.read_bytes()
    # The next picker opens where this one left off.
    alice.window.share_button.invoke()
    assert alice.window.picker.chooser.folder == folder / "talks"
    alice.window.picker.cancel_button.invoke()
    assert not alice.window.picker.is_open()


@pytest_twisted.inlineCallbacks
def test_stop_sharing_on_ones_own_offer_takes_it_off_the_room(tk_root, server, tmp_path):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    bob = yield log_in(tk_root, server, tmp_path, "bob")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"minutes\n" * 100)
    alice.say(f"/share {source}")
    yield wait_until(lambda: alice.window._offer_buttons)
    ((file_id, button),) = alice.window._offer_buttons
    assert button.cget("text") == "Stop sharing"
    button.invoke()
    yield wait_until(lambda: f"no longer sharing {file_id[:12]}" in alice.text())
    assert alice.window._offer_buttons == []  # shared no more: nothing to stop
    bob.say("/files")
    yield wait_until(lambda: "no files are offered" in bob.text())


@pytest_twisted.inlineCallbacks
def test_the_picker_says_what_is_wrong_with_a_typed_name_and_stays_open(
        tk_root, server, tmp_path):
    alice = yield log_in(tk_root, server, tmp_path, "alice")
    alice.window._picker_folder = tmp_path
    alice.window.share_button.invoke()
    picker = alice.window.picker
    picker.name.insert(0, "nope.txt")
    picker.share_button.invoke()
    assert picker.is_open()
    assert picker.problem.cget("text") == f"no file nope.txt in {tmp_path}"
    picker.up_button.invoke()
    assert picker.folder_label.cget("text") == f"In {tmp_path.parent}"
    picker.listing.focus_force()  # keys go to the focused window, as for a user
    picker.top.update()
    picker.listing.event_generate("<Escape>")
    picker.top.update()
    assert not picker.is_open()


@pytest_twisted.inlineCallbacks
def test_cancel_stops_a_running_download_hangs_up_its_peer_and_keeps_the_part(
        tk_root, server, tmp_path, pins, display):
    from spchat.p2p.node import SharingNode

    downloads = tmp_path / "downloads"
    bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(4 * 1024 * 1024))
    alice = yield connect_client(server, pins, "alice")
    node = SharingNode(reactor, alice, upload_bps=256 * 1024)  # 16 s for the whole
    node.start()
    try:
        file_id, _ = yield node.share(source, "lobby")
        yield wait_until(lambda: bob.window.offer_buttons(file_id))
        bob.window.offer_buttons(file_id)[0].invoke()
        rows = bob.window.download_bar.rows
        yield wait_until(lambda: rows and "%" in next(iter(rows.values())).label.cget("text"))
        (row,) = rows.values()
        yield wait_until(lambda: row.bar.cget("value") > 0, timeout=10)
        seed = node.seeds[file_id][0]
        yield wait_until(lambda: seed.peers)  # bob is fetching from alice
        assert row.visible_buttons() == ["Cancel"]
        row.buttons["Cancel"].invoke()
        yield wait_until(lambda: row.visible_buttons() == ["Close"])
        assert row.label.cget("text").startswith("talk.bin: cancelled at ")
        assert row.label.cget("text").endswith("%; what was fetched is kept, Download resumes it")
        # Stopped: the peer connection is gone on both sides, no file saved,
        # the part kept; the offer's button offers the download again.
        yield wait_until(lambda: not seed.peers)
        assert bob.controller.sharing.fetches == {}
        assert not (downloads / "talk.bin").exists() and (downloads / "talk.bin.part").exists()
        (button,) = bob.window.offer_buttons(file_id)
        assert button.cget("text") == "Download" and not button.instate(["disabled"])
        assert "! " not in bob.text()  # said in the row, not as an error
        screenshot(bob.top, display, "client-download-cancelled.png")
        row.buttons["Close"].invoke()
        yield wait_until(lambda: not rows)
        assert not bob.window.downloads.winfo_manager()
    finally:
        yield node.stop()


def opener_that_records(tmp_path):
    """A stand-in for xdg-open: a real program that writes down its arguments."""
    record = tmp_path / "opened.txt"
    script = tmp_path / "opener.py"
    script.write_text("import sys\n"
                      f"open({str(record)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n")
    return (sys.executable, str(script)), record


@pytest_twisted.inlineCallbacks
def test_open_folder_runs_the_opener_on_the_downloads_folder_or_shows_the_path(
        tk_root, server, tmp_path, pins, display):
    from spchat.p2p.node import SharingNode

    downloads = tmp_path / "downloads"
    bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
    command, record = opener_that_records(tmp_path)
    bob.controller.folder_opener = FolderOpener(reactor, command)
    alice = yield connect_client(server, pins, "alice")
    node = SharingNode(reactor, alice)
    node.start()
    try:
        for name in ("one.txt", "two.txt"):
            (tmp_path / name).write_bytes(os.urandom(30_000))
            file_id, _ = yield node.share(tmp_path / name, "lobby")
            yield wait_until(lambda: bob.window.offer_buttons(file_id))
            bob.window.offer_buttons(file_id)[0].invoke()
            yield wait_until(lambda: (downloads / name).exists(), timeout=30)
        rows = bob.window.download_bar.rows
        yield wait_until(lambda: [r.visible_buttons() for r in rows.values()]
                         == [["Close", "Open folder"]] * 2)
        first, second = rows.values()
        first.buttons["Open folder"].invoke()
        yield wait_until(record.exists)
        yield wait_until(lambda: record.read_text() == str(downloads))
        assert not first.folder.winfo_manager()
        # With no program to open folders, the row shows the path to copy.
        bob.controller.folder_opener = FolderOpener(reactor, ("no-such-opener-here",))
        second.buttons["Open folder"].invoke()
        yield wait_until(lambda: second.folder.winfo_manager())
        assert second.folder.get() == str(downloads)
        assert str(second.folder.cget("state")) == "readonly"  # selectable, not editable
        screenshot(bob.top, display, "client-download-open-folder.png")
    finally:
        yield node.stop()
