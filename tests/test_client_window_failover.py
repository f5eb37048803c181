"""The window's Server field takes the nodes of one server (``a,b:7001``):
the window trusts their one key once, says which node it is on, and
follows its client to another node when its node stops.  Real Tk under
Xvfb, real servers on loopback (a store each: one key, not one chat)."""

import pytest_twisted

from spchat import wire
from spchat.client.connect import load_last

from cluster_nodes import start_nodes
from conftest import connect_client, screenshot, stop_servers, stop_services, wait_until
from helpers import dead_port
import window_desks as gui

tk_root = gui.tk_root


@pytest_twisted.inlineCallbacks
def test_the_server_field_takes_a_list_and_the_window_follows_its_node(tk_root, tmp_path,
                                                                       pins, display):
    first, second = start_nodes(tmp_path, 2)
    at = {node: f"127.0.0.1:{node.address.port}" for node in (first, second)}
    try:
        root, desks = tk_root
        desk = gui.Desk(root, gui.desk_config(first), tmp_path / "alice-config")
        desks.append(desk)
        listed = f"127.0.0.1:{dead_port()}, {at[first]}, {at[second]}"
        desk.fill(host="a,,b", port=first.address.port, name="alice")
        desk.press_connect()
        assert desk.window.connect_message.cget("text") == (
            "the server address 'a,,b' has an empty item between its commas")
        desk.fill(host=listed)
        screenshot(desk.top, display, "connect-several-nodes.png")
        desk.press_connect()
        yield wait_until(lambda: desk.panel() == "trust")  # asked once, for the first that answered
        assert desk.window.trust_fingerprint.get() == first.fingerprint
        desk.window.trust_button.invoke()
        yield wait_until(lambda: desk.panel() == "chat"
                         and desk.status() == f"connected as alice on {at[first]}")
        assert desk.top.title().endswith(f"alice@{at[first]}")
        assert load_last(tmp_path / "alice-config")["host"] == listed  # remembered as typed

        bob = yield connect_client(second, pins, "bob")
        yield stop_servers(first)
        # On the second node without a question: its key is the list's.
        yield wait_until(lambda: desk.status() == f"connected as alice on {at[second]}",
                         timeout=20)
        assert desk.panel() == "chat"
        assert desk.top.title().endswith(f"alice@{at[second]}")
        desk.say("on the second node")
        yield wait_until(lambda: any(m.text == "on the second node"
                                     for m in bob.rec.of(wire.RoomMessage)))
    finally:
        yield stop_services(first, second)
