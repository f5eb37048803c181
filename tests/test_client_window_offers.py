"""Offers that stay, in the desktop window (real Tk under Xvfb, a real
server on loopback): who logs in after a file was shared sees the offer
in the room, after the room's history, with its Download button."""

import os
import re

import pytest_twisted
from twisted.internet import reactor

import window_desks
from conftest import connect_client, screenshot, wait_until
from window_desks import log_in

tk_root, server = window_desks.tk_root, window_desks.server

STAMP = r"\d\d:\d\d:\d\d"


@pytest_twisted.inlineCallbacks
def test_who_logs_in_after_a_share_sees_the_offer_after_the_history(tk_root, server, tmp_path,
                                                                    pins, display):
    from spchat.p2p.node import SharingNode

    alice = yield connect_client(server, pins, "alice")
    node = SharingNode(reactor, alice)
    node.start()
    source = tmp_path / "slides.pdf"
    source.write_bytes(os.urandom(300_000))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        alice.say("the slides, for who was not there")
        file_id, _ = yield node.share(source)
        bob = yield log_in(tk_root, server, tmp_path, "bob", download_dir=downloads)
        yield wait_until(lambda: bob.window.offer_buttons(file_id))
        text = bob.text()
        said = text.index("the slides, for who was not there")
        offer = re.search(rf"^{STAMP}  ⇩ alice shares slides.pdf \(293.0 KiB\)  $", text, re.M)
        assert offer and said < offer.start()
        screenshot(bob.top, display, "client-offer-seen-later.png")
        (button,) = bob.window.offer_buttons(file_id)
        button.invoke()
        yield wait_until(lambda: (downloads / "slides.pdf").exists(), timeout=30)
        assert (downloads / "slides.pdf").read_bytes() == source.read_bytes()
    finally:
        yield node.stop()
