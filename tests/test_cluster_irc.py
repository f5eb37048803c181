"""The IRC gateway on every node of a cluster: an IRC client on one node
and a native client on another share a room, each line once, in the
room's order.  Real PostgreSQL, Redis and IRC connections."""

from __future__ import annotations

import re

import pytest_twisted
from twisted.internet import reactor, task

from spchat import wire

from conftest import connect_client, server_config, start_service, stop_services, wait_until
from helpers import node_dirs
from irc_peer import irc_peer

LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


def privmsgs(peer, channel="#lobby"):
    """(sender, text) of the PRIVMSGs an IRC peer got in ``channel``."""
    return re.findall(rf":([^!\s]+)!\S+ PRIVMSG {channel} :([^\r]*)\r\n", peer.data.decode())


@pytest_twisted.inlineCallbacks
def test_an_irc_client_on_one_node_and_a_native_one_on_another_share_a_room(
        tmp_path, pins, pg_url, redis_server):
    servers = [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                           irc=LOOPBACK_ANY_PORT))
               for data_dir in node_dirs(tmp_path, 2)]
    try:
        yield wait_until(lambda: all(s.bus.joined for s in servers))
        carol = yield irc_peer(servers[0].irc_port.getHost().port, nick="carol")
        carol.send("JOIN #lobby")
        yield wait_until(lambda: b" 366 carol #lobby" in carol.data)
        bob = yield connect_client(servers[1], pins, "bob")
        for i in range(3):
            carol.send(f"PRIVMSG #lobby :from irc {i}")
            bob.say(f"from native {i}")
        yield wait_until(lambda: len([m for m in bob.rec.of(wire.RoomMessage)
                                      if not m.history]) == 6)
        # Carol's own lines are not echoed back (no echo-message asked for).
        yield wait_until(lambda: len(privmsgs(carol)) == 3)
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
        seen_by_bob = [(m.sender, m.text) for m in bob.rec.of(wire.RoomMessage)
                       if not m.history]
        assert sorted(seen_by_bob) == sorted(
            [("carol", f"from irc {i}") for i in range(3)]
            + [("bob", f"from native {i}") for i in range(3)])
        assert privmsgs(carol) == [(s, t) for s, t in seen_by_bob if s == "bob"]
    finally:
        yield stop_services(*servers)
