"""A session that moves from one node to another, sans-IO: three cores on
one store, one book of name claims and one bus, on a fake clock.  A move
is no news (nobody is told it joined or left, and member lists keep it),
leaves nothing behind on the node it left, and a ban holds wherever it
goes."""

import pytest

from spchat import wire
from spchat.server.claims import ClaimBook, LocalClaims
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import InstantPasswords, MemoryClient, SharedBus, fired, login, run_for

KEY = b"k" * 32


@pytest.fixture
def nodes(clock):
    store, book, bus = MemoryStore(), ClaimBook(), SharedBus()
    cores = {}
    for node in "abc":
        core = ChatCore(clock, Limits(), store=store, passwords=InstantPasswords(),
                        bus=bus.port(), bus_key=KEY, node=node,
                        names=LocalClaims(clock, node, book))
        fired(core.start())
        cores[node] = core
    cores["bus"], cores["book"] = bus, book
    return cores


def news_of(conn, name):
    """What a client was told of ``name`` coming and going."""
    return [(n.kind, n.text) for n in conn.of(wire.Notice)
            if n.name == name and n.kind in ("join", "leave", "quit")]


def resume_on(core, session):
    """``session``'s client, back on another node with its resume token."""
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.Resume(session.id, session.token, (("#lobby", 0),), 0))
    return conn


@pytest.fixture
def four(nodes, clock):
    """alice on a, bob and erin on b, carol on c, all in #lobby and known
    to every node."""
    clients = {}
    for name, node in (("alice", "a"), ("bob", "b"), ("erin", "b"), ("carol", "c")):
        clients[name] = login(nodes[node], name)[1]
    run_for(clock, 5)  # the rosters go round
    for conn in clients.values():
        conn.clear()
    return clients


def test_a_session_that_moves_is_news_to_nobody_and_stays_in_every_list(nodes, four, clock):
    moved = resume_on(nodes["c"], nodes["b"].by_key["bob"])
    run_for(clock, 15)  # notices, snapshots, a sweep
    assert moved.of(wire.Welcome)[0].resumed
    for watcher in ("alice", "erin", "carol"):
        assert news_of(four[watcher], "bob") == [], watcher
    # Every node still has bob in #lobby: a's and b's from the roster,
    # c's as its own member.
    for node in "ab":
        assert "bob" in nodes[node].roster.remote.in_room("lobby"), node
    assert "bob" in nodes["c"].directory.get("lobby").members


def test_a_session_resumed_after_its_node_died_is_not_said_to_have_left(nodes, four, clock):
    b = nodes["b"]
    bob = b.by_key["bob"]
    # b dies: it hears nothing more, and says nothing more.
    nodes["bus"].deafen(b)
    moved = resume_on(nodes["c"], bob)
    run_for(clock, 20)
    assert moved.of(wire.Welcome) and moved.of(wire.Welcome)[0].resumed
    assert news_of(four["alice"], "bob") == []
    assert "bob" in nodes["a"].roster.remote.in_room("lobby")


def test_a_session_that_moved_leaves_no_direct_conversation_state_behind(nodes, four, clock):
    a, b = nodes["a"], nodes["b"]
    alink = a.by_key["alice"].link
    a.receive(alink, wire.Direct("bob", "one", "d1"))
    run_for(clock, 1)
    bob = b.by_key["bob"]
    assert bob.id in b.messaging.directs.threads
    resume_on(nodes["c"], bob)
    run_for(clock, 1)
    assert bob.id not in b.messaging.directs.threads


def test_a_name_banned_while_its_session_was_on_its_way_cannot_resume_elsewhere(
        nodes, four, clock):
    b = nodes["b"]
    bob = b.by_key["bob"]
    # Banned in the store (the act's notice to b was lost).
    fired(b.store.set_ban("bob", "bob", None, "spam", 0))
    moved = resume_on(nodes["c"], bob)
    run_for(clock, 1)
    assert [e.code for e in moved.of(wire.Error)] == ["banned"]
    assert "bob" not in nodes["c"].by_key
    claim = nodes["book"].claims.get("bob")
    assert claim is None or claim.node != "c"  # not taken here


def test_a_session_resumed_on_another_node_is_told_to_offer_its_files_again(nodes, four,
                                                                             clock):
    bob = nodes["b"].by_key["bob"]
    nodes["bus"].deafen(nodes["b"])  # bob's node dies with what he offered
    moved = resume_on(nodes["c"], bob)
    welcome = moved.of(wire.Welcome)[0]
    assert welcome.resumed and not welcome.shares_kept
    # Back on its own node, its offers are known there still.
    carol = nodes["c"].by_key["carol"]
    nodes["c"].link_lost(carol.link)
    back = resume_on(nodes["c"], carol)
    assert back.of(wire.Welcome)[0].shares_kept
