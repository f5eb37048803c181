"""File sharing across nodes, sans-IO: two chat cores on one store (in
memory) and an in-memory bus, on a ``task.Clock``: offers seen and listed
everywhere, fetches introduced by the holder's node before the downloader
is answered, the relay of the downloader's node, and holders that go."""

from __future__ import annotations

import os

import pytest
from twisted.internet import task

from spchat import wire
from spchat.cluster import share_notices
from spchat.cluster.roster import SILENT_SECONDS
from spchat.cluster.roster_notices import ROSTER
from spchat.cluster.shares import INTRODUCE_SECONDS, RESEND_SECONDS, TELL_DELAY
from spchat.p2p.manifest import MIN_PIECE_SIZE, build_manifest
from spchat.p2p.tags import relay_name
from spchat.server.claims import ClaimBook, LocalClaims
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import MemoryClient, SharedBus, settle

KEY = b"k" * 32


class Cluster:
    def __init__(self, names=("a", "b")):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.hub = SharedBus()
        self.book = ClaimBook()  # names claimed on every node (a session may move)
        self.nodes = {}
        for name in names:
            core = ChatCore(self.clock, Limits(flood_burst=10_000), store=self.store,
                            bus=self.hub.port(), bus_key=KEY, node=name,
                            names=LocalClaims(self.clock, name, self.book))
            core.start()
            core.ports.relay = 7100 + len(self.nodes)
            self.nodes[name] = core

    def __getitem__(self, name) -> ChatCore:
        return self.nodes[name]

    def login(self, at, name, address, local="10.0.0.1:5000"):
        conn = MemoryClient()
        link = self.nodes[at].open_link(conn, address, local=local)
        self.nodes[at].receive(link, wire.Login(name))
        return link, conn

    def resume(self, at, session, address):
        """``session``'s client, back on node ``at`` with its resume token."""
        conn = MemoryClient()
        link = self.nodes[at].open_link(conn, address)
        self.nodes[at].receive(link, wire.Resume(session.id, session.token, (("#lobby", 0),), 0))
        return link, conn

    def settle(self):
        """Comings and goings, and the offers, told to every node."""
        for core in self.nodes.values():
            settle(core)
        self.clock.advance(TELL_DELAY)
        self.clock.advance(3.0)  # the roster's snapshot


@pytest.fixture
def cluster():
    return Cluster()


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "notes.bin"
    path.write_bytes(os.urandom(3 * MIN_PIECE_SIZE + 10))
    return build_manifest(path, MIN_PIECE_SIZE)


def shared_on_a(cluster, manifest):
    """alice on a shares the file; bob on b: both in the lobby."""
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    bob_link, bob = cluster.login("b", "bob", "198.51.100.9:4001", local="203.0.113.5:5000")
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s1"))
    cluster.settle()
    return alice_link, alice, bob_link, bob


def listing(core, link, conn):
    core.receive(link, wire.ListFiles())
    return conn.of(wire.FileList)[-1].files


def test_an_offer_on_one_node_is_news_and_listed_on_the_other(cluster, manifest):
    _, _, bob_link, bob = shared_on_a(cluster, manifest)
    assert [(o.file, o.name, o.sharer) for o in bob.of(wire.Offer)] == [
        (manifest.file_id, "notes.bin", "alice")]
    assert listing(cluster["b"], bob_link, bob) == (
        (manifest.file_id, "notes.bin", manifest.size, "alice", 1),)


def test_a_newcomer_on_one_node_is_shown_the_offers_made_on_another(cluster, manifest):
    shared_on_a(cluster, manifest)
    _, carol = cluster.login("b", "carol", "198.51.100.10:4002")
    assert [(o.file, o.sharer) for o in carol.of(wire.Offer)] == [(manifest.file_id, "alice")]


def test_a_fetch_across_nodes_waits_for_the_holders_node_to_tell_it(cluster, manifest):
    _, alice, bob_link, bob = shared_on_a(cluster, manifest)
    cluster.hub.up = False  # the holder's node does not hear the introduction
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id[:8], "f1"))
    assert bob.of(wire.Swarm) == [] and alice.of(wire.PeerRequest) == []
    cluster.clock.advance(INTRODUCE_SECONDS)
    assert bob.of(wire.Error)[-1] == wire.Error(
        "no_peers", "nobody who has notes.bin is online now", "f1")
    cluster.hub.up = True
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f2"))
    # The in-memory bus carries notices at once: alice heard of bob's key
    # before bob got it.
    (request,) = alice.of(wire.PeerRequest)
    (swarm,) = bob.of(wire.Swarm)
    assert (request.name, request.file, request.relay_port) == ("bob", manifest.file_id, 0)
    assert swarm.manifest == manifest.canonical().decode() and swarm.cid == "f2"
    assert swarm.peers == (("alice", "192.0.2.7", 7000, request.transfer, request.key),)


def test_the_relay_of_the_downloaders_node_carries_a_transfer_across_nodes(cluster, manifest):
    _, alice, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    (_, _, _, transfer, key), = bob.of(wire.Swarm)[-1].peers
    cluster["b"].receive(bob_link, wire.RelayRequest(transfer))
    assert bob.of(wire.RelayOpen) == [wire.RelayOpen(transfer, 7101)]
    relayed = alice.of(wire.PeerRequest)[-1]
    # alice dials bob's node at the address bob reached it at.
    assert (relayed.relay_port, relayed.relay_host) == (7101, "203.0.113.5")
    ticket = relay_name(transfer, bytes.fromhex(key))
    assert cluster["b"].relay_allowed(ticket) and not cluster["a"].relay_allowed(ticket)
    cluster["b"].receive(bob_link, wire.RelayRequest(transfer))  # asked again
    assert len(alice.of(wire.PeerRequest)) == 2  # no second dial of the relay


def test_a_downloader_elsewhere_becomes_a_holder_of_its_node(cluster, manifest):
    _, _, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    cluster.clock.advance(RESEND_SECONDS)  # a's offers said again meanwhile
    cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, 2, 7001))
    assert bob.of(wire.Error) == []
    carol_link, carol = cluster.login("a", "carol", "192.0.2.8:4002")
    cluster.settle()
    assert listing(cluster["a"], carol_link, carol)[0][4] == 2
    cluster["a"].receive(carol_link, wire.Fetch(manifest.file_id, "f1"))
    assert sorted(p[0] for p in carol.of(wire.Swarm)[-1].peers) == ["alice", "bob"]


def test_an_offer_goes_with_its_holder_and_with_its_holders_node(cluster, manifest):
    alice_link, _, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["a"].receive(alice_link, wire.Unshare(manifest.file_id))
    cluster.settle()
    assert listing(cluster["b"], bob_link, bob) == ()
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s2"))
    cluster.settle()
    assert len(listing(cluster["b"], bob_link, bob)) == 1
    cluster.hub.deafen(cluster["a"])  # node a dies
    cluster.clock.advance(SILENT_SECONDS + 3.0)
    assert listing(cluster["b"], bob_link, bob) == ()
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    assert bob.of(wire.Error)[-1].code == "no_such_file"
    cluster.clock.advance(RESEND_SECONDS)  # and what it said is forgotten
    assert "a" not in cluster["b"].shares.nodes and not cluster["b"].shares.holder_nodes


def offers_of(conn, file_id):
    return [(o.sharer, o.ts) for o in conn.of(wire.Offer) if o.file == file_id]


def shared_on_a_of_three(manifest):
    """Nodes a, b and c: alice on a shares the file, bob on b and carol on
    c see it offered."""
    cluster = Cluster(names=("a", "b", "c"))
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    _, bob = cluster.login("b", "bob", "198.51.100.9:4001")
    carol_link, carol = cluster.login("c", "carol", "198.51.100.10:4002")
    cluster.settle()
    text = manifest.canonical().decode()
    cluster["a"].receive(alice_link, wire.Share(text, 7000, "s1"))
    cluster.settle()
    return cluster, alice, bob, (carol_link, carol), text


def test_an_offer_made_again_after_its_node_died_is_no_news_but_a_new_one_is(
        manifest, tmp_path):
    cluster, alice, bob, (carol_link, carol), text = shared_on_a_of_three(manifest)
    ((_, offered_at),) = offers_of(alice, manifest.file_id)
    for conn in (bob, carol):
        assert offers_of(conn, manifest.file_id) == [("alice", offered_at)]
    # Node a dies; alice resumes on b, where her offers are not: her client
    # offers them again.
    cluster.hub.deafen(cluster["a"])
    cluster.clock.advance(5)
    session = cluster["a"].by_key["alice"]
    link, again = cluster.resume("b", session, "192.0.2.7:4010")
    assert not again.of(wire.Welcome)[0].shares_kept
    cluster["b"].receive(link, wire.Share(text, 7000, "s2"))
    cluster.clock.advance(SILENT_SECONDS)  # a is forgotten meanwhile
    cluster.settle()
    # The same offer to the room: told once, and confirmed to alice as it was.
    for conn in (bob, carol):
        assert offers_of(conn, manifest.file_id) == [("alice", offered_at)]
    assert offers_of(again, manifest.file_id) == [("alice", offered_at)]
    assert listing(cluster["c"], carol_link, carol) == (
        (manifest.file_id, "notes.bin", manifest.size, "alice", 1),)
    # A file not offered before is news still, everywhere.
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(MIN_PIECE_SIZE + 1))
    fresh = build_manifest(other, MIN_PIECE_SIZE)
    cluster["b"].receive(link, wire.Share(fresh.canonical().decode(), 7000, "s3"))
    cluster.settle()
    for conn in (bob, carol, again):
        assert [sharer for sharer, _ in offers_of(conn, fresh.file_id)] == ["alice"]


def test_an_offer_heard_before_its_sharer_is_news_once_the_sharer_is_known(cluster, manifest):
    _, bob = cluster.login("b", "bob", "198.51.100.9:4001")
    cluster.settle()
    # b hears of alice's session later than of her offer (the bus may
    # bring a roster notice after another's).
    handlers = cluster["b"].cluster._handlers
    held, roster = [], handlers[ROSTER]
    handlers[ROSTER] = lambda node, body: held.append((node, body))
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s1"))
    cluster.clock.advance(TELL_DELAY)
    assert offers_of(bob, manifest.file_id) == []  # whose holder b does not know yet
    handlers[ROSTER] = roster
    for node, body in held:
        roster(node, body)
    assert offers_of(bob, manifest.file_id) == offers_of(alice, manifest.file_id)  # at once
    cluster.settle()
    cluster.clock.advance(RESEND_SECONDS)  # and once
    assert len(offers_of(bob, manifest.file_id)) == 1


def test_a_node_back_on_the_bus_hears_the_offers_said_meanwhile(cluster, manifest):
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    bob_link, bob = cluster.login("b", "bob", "198.51.100.9:4001")
    cluster.settle()
    cluster.hub.up = False
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s1"))
    cluster.settle()
    assert listing(cluster["b"], bob_link, bob) == ()
    cluster.hub.back()
    cluster.settle()
    assert len(listing(cluster["b"], bob_link, bob)) == 1
    # And a notice lost without the bus noticing is mended within RESEND_SECONDS.
    cluster.hub.up = False
    cluster["a"].receive(alice_link, wire.Unshare(manifest.file_id))
    cluster.settle()
    cluster.hub.up = True
    cluster.clock.advance(RESEND_SECONDS)
    assert listing(cluster["b"], bob_link, bob) == ()


def test_notices_that_do_not_parse_are_dropped_and_counted(cluster, manifest):
    _, _, bob_link, bob = shared_on_a(cluster, manifest)
    before = cluster["b"].cluster.ignored
    good = share_notices.shares("x", False, [])
    for kind, body in [
        (share_notices.SHARES, {**good, "files": [["f" * 64, "n", -1, 1, "s", "r", "r", 0, []]]}),
        (share_notices.SHARES, {**good, "files": [["f" * 64, "n", 1, 1, "s", "r", "r", 0,
                                                  [["sid", 70000, 1]]]]}),
        (share_notices.SHARES, {"boot": "x"}),
        (share_notices.INTRODUCE, {"to": "b", "holder": "h"}),
        (share_notices.INTRODUCED, {"to": "b", "transfer": "t", "manifest": 5}),
    ]:
        cluster["a"].cluster.send(kind, body)
    assert cluster["b"].cluster.ignored == before + 5
    assert len(listing(cluster["b"], bob_link, bob)) == 1  # what it knew stands


def test_holders_of_a_file_offered_in_another_room_elsewhere_are_not_shown(cluster, manifest):
    """alice offers the file in a private room on a, bob the same file in
    the lobby on b: the lobby's downloaders are not introduced to alice
    (nor told her name and address), only to bob."""
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    bob_link, bob = cluster.login("b", "bob", "198.51.100.9:4001")
    dave_link, dave = cluster.login("b", "dave", "198.51.100.11:4003")
    cluster["a"].receive(alice_link, wire.Join("secret", True))
    cluster.settle()
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s1",
                                                "secret"))
    cluster["b"].receive(bob_link, wire.Share(manifest.canonical().decode(), 7001, "s2"))
    cluster.settle()
    assert listing(cluster["b"], dave_link, dave)[0][3:] == ("bob", 1)
    cluster["b"].receive(dave_link, wire.Fetch(manifest.file_id, "f1"))
    cluster.clock.advance(INTRODUCE_SECONDS)
    assert [p[0] for p in dave.of(wire.Swarm)[-1].peers] == ["bob"]
    assert alice.of(wire.PeerRequest) == []


@pytest.mark.parametrize("pieces", [0, 99], ids=["none", "too_many"])
def test_a_holding_not_taken_leaves_no_offer_of_another_node_here(cluster, manifest, pieces):
    """A downloader on b that says it holds none (or more pieces than the
    file has) of a's offer is not made a holder: no offer of it is left
    on b, to outlive a's and stand in the way of the file's next offer."""
    alice_link, _, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, pieces, 7001))
    assert manifest.file_id not in cluster["b"].sharing.tracker.files
    cluster["a"].receive(alice_link, wire.Unshare(manifest.file_id))
    cluster.settle()
    assert listing(cluster["b"], bob_link, bob) == ()


def shares_said_by(cluster, node):
    """How many ``shares`` notices ``node`` has put on the bus."""
    import json

    notices = [json.loads(data.split(b".", 2)[2]) for data in cluster.hub.kept]
    return sum(1 for n in notices if n["k"] == share_notices.SHARES and n["n"] == node)


def test_a_downloaders_progress_is_not_told_to_every_node_each_time(cluster, manifest):
    """A downloader says how many pieces it holds every few seconds (and
    a client may say it as often as it likes): the other nodes hear of a
    holder that came, went or became complete at once, of the rest with
    the next resend, not a notice of all the node's offers each time."""
    _, _, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    before = shares_said_by(cluster, "b")
    cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, 1, 7001))
    cluster.settle()
    assert shares_said_by(cluster, "b") == before + 1  # a new holder: told
    for pieces in (2, 1, 2, 3, 2, 3):
        cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, pieces, 7001))
        cluster.settle()
    assert shares_said_by(cluster, "b") == before + 1
    cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, 4, 7001))  # all of it
    cluster.settle()
    assert shares_said_by(cluster, "b") == before + 2
    holders = cluster["a"].shares.nodes["b"][1][manifest.file_id].holders
    assert [h.pieces for h in holders.values()] == [4]


def test_a_holder_changing_as_fast_as_it_can_is_told_once_a_second(cluster, manifest):
    """A client that says it holds all of a file and then not, again and
    again, makes its node put its offers on the bus at most once a second."""
    _, _, bob_link, bob = shared_on_a(cluster, manifest)
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    before = shares_said_by(cluster, "b")
    for pieces in [4, 3] * 10:  # complete, not: each a change
        cluster["b"].receive(bob_link, wire.Holding(manifest.file_id, pieces, 7001))
        cluster.clock.advance(0.1)
    assert shares_said_by(cluster, "b") - before <= 3  # in 2 s
    cluster.settle()  # the last change is told all the same
    holders = cluster["a"].shares.nodes["b"][1][manifest.file_id].holders
    assert [h.pieces for h in holders.values()] == [3]


def relay_asked_by_bob_on_a_unix_socket(cluster, manifest):
    """alice on a shares; bob, on b by a Unix socket (no address of its
    own), fetches and asks for the relay."""
    alice_link, alice = cluster.login("a", "alice", "192.0.2.7:4000")
    bob_link, bob = cluster.login("b", "bob", "198.51.100.9:4001", local=":0")
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s1"))
    cluster.settle()
    cluster["b"].receive(bob_link, wire.Fetch(manifest.file_id, "f1"))
    (_, _, _, transfer, _), = bob.of(wire.Swarm)[-1].peers
    cluster["b"].receive(bob_link, wire.RelayRequest(transfer))
    return alice, bob, transfer


def test_a_relay_host_set_is_the_address_a_holder_elsewhere_dials(cluster, manifest):
    """Behind NAT the address bob reached his node at is not one alice's
    client can reach: the node's ``relay_host`` is told instead, even where
    the downloader's connection gives no address at all."""
    cluster["b"].ports.relay_host = "relay-b.example.org"
    alice, bob, transfer = relay_asked_by_bob_on_a_unix_socket(cluster, manifest)
    assert bob.of(wire.RelayOpen) == [wire.RelayOpen(transfer, 7101)]
    relayed = alice.of(wire.PeerRequest)[-1]
    assert (relayed.relay_port, relayed.relay_host) == (7101, "relay-b.example.org")


def test_a_relay_across_nodes_with_no_address_to_tell_is_refused_plainly(cluster, manifest):
    """A downloader that reached its node on a Unix socket (behind a
    proxy) gives no address of the node's relay to tell the holder: the
    relay is refused in words, the holder never sent to its own node."""
    alice, bob, _ = relay_asked_by_bob_on_a_unix_socket(cluster, manifest)
    assert bob.of(wire.RelayOpen) == []
    assert bob.of(wire.Error)[-1].code == "no_relay"
    assert [r.relay_port for r in alice.of(wire.PeerRequest)] == [0]  # the fetch's only


def test_an_offer_withdrawn_and_made_again_is_news_to_who_came_meanwhile(cluster, manifest):
    """Only an offer whose node was lost is the same offer made again: one
    its sharer withdrew is gone, and made again it is told, as on a node
    alone, to those who never saw it (carol came in between)."""
    alice_link, alice, _, bob = shared_on_a(cluster, manifest)
    cluster["a"].receive(alice_link, wire.Unshare(manifest.file_id))
    cluster.settle()
    _, carol = cluster.login("b", "carol", "198.51.100.10:4002")
    _, dave = cluster.login("a", "dave", "198.51.100.11:4003")
    cluster.settle()
    assert offers_of(carol, manifest.file_id) == offers_of(dave, manifest.file_id) == []
    cluster.clock.advance(10)
    cluster["a"].receive(alice_link, wire.Share(manifest.canonical().decode(), 7000, "s2"))
    cluster.settle()
    assert [sharer for sharer, _ in offers_of(dave, manifest.file_id)] == ["alice"]
    assert [sharer for sharer, _ in offers_of(carol, manifest.file_id)] == ["alice"]


def test_an_offer_made_again_after_its_sharer_moved_is_no_news_where_it_was(cluster, manifest):
    """alice's client, cut from a (still up), resumes on b and offers her
    file again: those on a, shown it once, are not shown it again."""
    alice_link, alice, _, bob = shared_on_a(cluster, manifest)
    _, dave = cluster.login("a", "dave", "198.51.100.11:4003")
    cluster.settle()
    assert len(offers_of(dave, manifest.file_id)) == 1
    session = cluster["a"].by_key["alice"]
    link, again = cluster.resume("b", session, "192.0.2.7:4010")
    cluster["b"].receive(link, wire.Share(manifest.canonical().decode(), 7000, "s2"))
    cluster.settle()
    cluster.clock.advance(RESEND_SECONDS)
    for conn in (dave, bob):
        assert len(offers_of(conn, manifest.file_id)) == 1


def test_an_offer_made_again_late_after_its_sharer_moved_is_no_news(manifest):
    """As above, her client slow to offer again: the node she left says
    it has the offer no more before her new node says it has it; it was
    not withdrawn, and is no news anywhere."""
    cluster, _, bob, (_, carol), text = shared_on_a_of_three(manifest)
    session = cluster["a"].by_key["alice"]
    link, _ = cluster.resume("b", session, "192.0.2.7:4010")
    cluster.settle()
    cluster["b"].receive(link, wire.Share(text, 7000, "s2"))
    cluster.settle()
    for conn in (bob, carol):
        assert len(offers_of(conn, manifest.file_id)) == 1
