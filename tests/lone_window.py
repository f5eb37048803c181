"""A chat window with no server: real Tk under Xvfb, its presenter's client
fed the server's messages by hand (``window``: in #lobby and #dev)."""

import time

import pytest

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.presenter import ChatPresenter
from spchat.client.session import ChatClient

T = int(time.time() * 1000)  # lines of today: their stamps are times alone


class Controller:
    """What ChatWindow calls, straight to the presenter (no reactor)."""

    def __init__(self, presenter):
        self.presenter, self.window = presenter, None

    def send(self, text):
        self.presenter.send(text)
        self.window.refresh()

    def open(self, view):
        self.presenter.open(view)
        self.window.refresh()

    def join(self, typed, private):
        self.presenter.join(typed, private)
        self.window.refresh()

    def act_on_member(self, name, action):
        self.presenter.act_on_member(name, action)
        self.window.refresh()

    def act_on_conversation(self, view, action):
        self.presenter.act_on_conversation(view, action)
        self.window.refresh()

    def reached_top(self):
        self.presenter.reached_top()

    def download(self, file_id):
        pass

    trust = back = leave = reconnect = submit = download


@pytest.fixture
def window(display, tmp_path):
    import tkinter as tk

    from spchat.client.tkui import ChatWindow

    root = tk.Tk()
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    client.sent = []
    client._request = client.sent.append
    presenter = ChatPresenter(client)
    controller = Controller(presenter)
    window = controller.window = ChatWindow(root, controller)
    client.on_event = presenter.event
    client.on_status = presenter.status
    for msg in (wire.Welcome("me", "s", "t", ("lobby",), T, 0, 2000, 10),
                wire.RoomState("lobby", "", False, False, 0),
                wire.Members("lobby", (("alice", "online", "owner"), ("me", "online", "member"),
                                       ("zed", "idle", "muted"))),
                wire.RoomState("dev", "release planning", True, False, 0),
                wire.Members("dev", (("bob", "online", "operator"), ("me", "online", "member")))):
        client.message_received(msg)
    window.show_chat(presenter)
    yield window
    root.destroy()
