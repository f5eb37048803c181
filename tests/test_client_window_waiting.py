"""Direct messages that waited for a registered user who was offline, as
the window shows them at login: in the conversation with their sender,
its row in the list, with the times they were sent.  Real Tk under Xvfb,
a real server on loopback."""

import pytest_twisted
from twisted.internet import reactor, task

from spchat import wire
from spchat.client.presenter import local_time

from conftest import connect_client, screenshot, wait_until
import window_desks as gui
from window_desks import log_in
from window_helpers import click_conversation, conversation_rows

tk_root, server = gui.tk_root, gui.server

PASSWORD = "bob's password"


@pytest_twisted.inlineCallbacks
def test_lines_sent_while_bob_was_out_open_their_conversation_at_login(
        tk_root, server, tmp_path, pins, display):
    bob = yield connect_client(server, pins, "bob", password=PASSWORD, register=True)
    yield wait_until(lambda: any(n.kind == "account" for n in bob.rec.of(wire.Notice)))
    yield bob.logout()
    alice = yield connect_client(server, pins, "alice")
    lines = ["are you there?", "the release is on Friday", "call me"]
    for text in lines:
        alice.direct("bob", text)
    yield wait_until(lambda: len(alice.rec.of(wire.DirectMessage)) == 3)
    acks = alice.rec.of(wire.DirectMessage)
    yield task.deferLater(reactor, 1.1, lambda: None)  # their times are not the login's

    desk = yield log_in(tk_root, server, tmp_path, "bob", password=PASSWORD)
    yield wait_until(lambda: ("alice", "3") in conversation_rows(desk.window))
    click_conversation(desk.window, [row[0] for row in conversation_rows(desk.window)]
                       .index("alice"))
    yield wait_until(lambda: desk.window.header.cget("text") == "direct conversation with alice")
    assert conversation_rows(desk.window)[-1] == ("alice", "")  # read now
    shown = [line for line in desk.text().splitlines() if "alice" in line]
    assert [line for line in shown if any(text in line for text in lines)] == [
        f"{local_time(ack.ts)}  alice: {ack.text}" for ack in acks]
    yield wait_until(lambda: desk.members())  # the lobby's, beside the conversation
    screenshot(desk.top, display, "client-waiting-directs.png")
