"""File sharing across nodes, real servers all (two nodes on one
PostgreSQL and one Redis): an offer made on one node is seen, listed and
fetched on the other, directly or through the relay of the downloader's
node, and it goes when its holder does; its holder's node dies, and it
is offered again from the node the holder resumes on."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from spchat import wire
from spchat.cluster.roster import SILENT_SECONDS, SNAPSHOT_SECONDS
from spchat.p2p.node import SharingError, SharingNode

from cluster_nodes import start_nodes, twistd_nodes
from conftest import connect_client, stop_services, wait_until
from irc_peer import irc_peer


@pytest.fixture
def two_nodes(tmp_path, pg_url, redis_server):
    nodes = start_nodes(tmp_path, 2, database=pg_url, bus=redis_server.url)
    yield nodes
    stop_services(*nodes)


def listed(client):
    """The file ids of the newest ``file_list`` the client was sent."""
    lists = client.rec.of(wire.FileList)
    return [row[0] for row in lists[-1].files] if lists else None


@pytest_twisted.inlineCallbacks
def list_until(client, sharing, wanted, timeout=20):
    """Ask for the list until it is ``wanted`` (the other node hears of
    changes within a moment)."""
    def check():
        sharing.list_files()
        return listed(client) == wanted
    yield wait_until(check, timeout=timeout, interval=0.3)


@pytest_twisted.inlineCallbacks
def sharers(two_nodes, pins, direct=True):
    """alice on the first node and bob on the second, each with a sharing node."""
    alice = yield connect_client(two_nodes[0], pins, "alice")
    bob = yield connect_client(two_nodes[1], pins, "bob")
    nodes = [SharingNode(reactor, client, direct=direct) for client in (alice, bob)]
    for sharing in nodes:
        sharing.start()
    return alice, bob, nodes


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "relay"])
@pytest_twisted.inlineCallbacks
def test_a_file_shared_on_one_node_is_listed_and_fetched_on_another(two_nodes, pins,
                                                                    tmp_path, direct):
    alice, bob, (seeder, getter) = yield sharers(two_nodes, pins, direct)
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(700_000))
    try:
        file_id, _ = yield seeder.share(source)
        yield list_until(bob, getter, [file_id])
        assert bob.rec.of(wire.FileList)[-1].files[0][1:] == ("notes.bin", 700_000, "alice", 1)
        # The offer reached the room's members on the other node as news.
        assert [(m.file, m.sharer) for m in bob.rec.of(wire.Offer)] == [(file_id, "alice")]
        (tmp_path / "got").mkdir()
        fetch = yield getter.fetch(file_id[:8], tmp_path / "got")
        yield fetch.result.addTimeout(30, reactor)
        assert (tmp_path / "got" / "notes.bin").read_bytes() == source.read_bytes()
        assert fetch.summary()["from"]["alice"]["path"] == ("direct" if direct else "relay")
        if not direct:  # carried by the relay of bob's node
            assert two_nodes[1].relay.relayed_bytes > 700_000
            assert two_nodes[0].relay.relayed_bytes == 0
    finally:
        for sharing in (seeder, getter):
            yield sharing.stop()


@pytest.mark.parametrize("how", ["logout", "unshare"])
@pytest_twisted.inlineCallbacks
def test_an_offer_goes_when_its_only_holder_on_another_node_stops(two_nodes, pins, tmp_path,
                                                                   how):
    alice, bob, (seeder, getter) = yield sharers(two_nodes, pins)
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(50_000))
    try:
        file_id, _ = yield seeder.share(source)
        yield list_until(bob, getter, [file_id])
        if how == "logout":
            yield seeder.stop()
            yield alice.logout()
        else:
            assert seeder.unshare(file_id) == file_id
        yield list_until(bob, getter, [])
        with pytest.raises(SharingError, match="no file"):
            yield getter.fetch(file_id, tmp_path)
    finally:
        for sharing in (seeder, getter):
            yield sharing.stop()


@pytest_twisted.inlineCallbacks
def test_an_offer_outlives_the_death_of_its_sharers_node(tmp_path, pins, pg_url, redis_server):
    nodes = twistd_nodes(tmp_path, 2, pg_url, redis_server, "--irc", "tcp:0:interface=127.0.0.1")
    ports = [node.port for node in nodes]
    sharing = []
    try:
        alice = yield connect_client(None, pins, "alice", port=ports[0], presence=False,
                                     host=",".join(f"127.0.0.1:{port}" for port in ports))
        bob = yield connect_client(None, pins, "bob", port=ports[1], presence=False)
        carol = yield irc_peer(nodes[1].irc_port, nick="carol")
        carol.send("JOIN #lobby")
        yield wait_until(lambda: b" 366 carol #lobby" in carol.data)
        seeder, getter = sharing[:] = [SharingNode(reactor, c) for c in (alice, bob)]
        for node in sharing:
            node.start()
        source = tmp_path / "notes.bin"
        source.write_bytes(os.urandom(300_000))
        file_id, _ = yield seeder.share(source)
        yield list_until(bob, getter, [file_id])
        nodes[0].proc.kill()
        yield wait_until(lambda: alice.connected and alice.port == ports[1], timeout=30)
        # Long enough for the dead node's sessions, and what it said of
        # them, to be forgotten: what is offered now is offered from here.
        yield task.deferLater(reactor, SILENT_SECONDS + 2 * SNAPSHOT_SECONDS, lambda: None)
        yield list_until(bob, getter, [file_id])
        assert bob.rec.of(wire.FileList)[-1].files[0][4] == 1
        (tmp_path / "got").mkdir()
        fetch = yield getter.fetch(file_id, tmp_path / "got")
        yield fetch.result.addTimeout(30, reactor)
        assert (tmp_path / "got" / "notes.bin").read_bytes() == source.read_bytes()
        # Offered again from the node alice resumed on: the same offer, no
        # news to bob, nor to carol on IRC.
        assert [offer.file for offer in bob.rec.of(wire.Offer)] == [file_id]
        assert carol.data.count(b"alice shares 'notes.bin'") == 1
    finally:
        for node in sharing:
            yield node.stop()
        yield stop_services()
        nodes[0].proc.kill()
        nodes[0].proc.wait()
        nodes[1].stop()
    for node in nodes:
        assert "Traceback" not in "".join(node.log)
