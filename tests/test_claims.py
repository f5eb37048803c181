"""Names claimed across nodes, sans-IO: the rules of who may take a name
(``spchat.server.claims``, its in-memory engine, with task.Clock), and
sessions that move between cores sharing one store, one book of claims
and an in-memory bus."""

from __future__ import annotations

import pytest

from spchat import wire
from spchat.cluster import moves
from spchat.cluster.seal import bus_key
from spchat.server.claims import NODE_TIMEOUT, Claim, ClaimBook, LocalClaims, token_hash
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore
from spchat.server.records import RoomRecord

from helpers import InstantPasswords, SharedBus, fired, login, settle

KEY = bus_key(b"k" * 32)


def claim(key, session, node, **fields):
    return Claim(key, session, node, token_hash(f"token {session}"), key, False,
                 f"guest:{session}", **fields)


@pytest.fixture
def book():
    return ClaimBook()


def engines(clock, book, *nodes):
    found = [LocalClaims(clock, node, book) for node in nodes]
    for engine in found:
        fired(engine.open())
    return found


# --- the rules ---------------------------------------------------------------------


def test_a_name_held_on_a_live_node_is_refused_and_taken_over_only_by_its_owner(clock, book):
    a, b = engines(clock, book, "a", "b")
    held = claim("alice", "s1", "a")
    assert fired(a.claim(held, takeover=False)).granted
    assert not fired(b.claim(claim("alice", "s2", "b"), takeover=False)).granted
    assert book.claims["alice"] == held
    # The registered owner, its password checked: the holder is replaced.
    taken = fired(b.claim(claim("alice", "s3", "b"), takeover=True))
    assert taken.granted and taken.replaced == held
    assert book.claims["alice"].session == "s3"


def test_the_names_of_a_node_not_heard_from_for_the_timeout_are_free(clock, book):
    a, b = engines(clock, book, "a", "b")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    clock.advance(NODE_TIMEOUT - 1)
    fired(b.beat())
    assert not fired(b.claim(claim("alice", "s2", "b"), takeover=False)).granted
    fired(a.beat())  # alive: the timeout starts again
    clock.advance(NODE_TIMEOUT - 1)
    assert not fired(b.claim(claim("alice", "s2", "b"), takeover=False)).granted
    clock.advance(1)  # a is dead now
    taken = fired(b.claim(claim("alice", "s2", "b"), takeover=False))
    assert taken.granted and taken.replaced.node == "a"


def test_a_claim_of_this_node_left_behind_is_this_nodes_to_give_again(clock, book):
    (a,) = engines(clock, book, "a")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    # Its sessions decide (the login checked that none holds the name).
    assert fired(a.claim(claim("alice", "s2", "a"), takeover=False)).granted


def test_a_claim_is_given_back_or_updated_only_by_its_session_on_its_node(clock, book):
    a, b = engines(clock, book, "a", "b")
    held = claim("alice", "s1", "a")
    fired(a.claim(held, takeover=False))
    fired(b.release("alice", "s1"))  # not b's
    fired(a.release("alice", "s0"))  # not that session's
    fired(b.update(claim("alice", "s1", "b", rooms=("x",))))
    assert book.claims["alice"] == held
    fired(a.update(claim("alice", "s1", "a", rooms=("lobby",))))
    assert book.claims["alice"].rooms == ("lobby",)
    fired(a.release("alice", "s1"))
    assert "alice" not in book.claims


def test_a_resume_moves_the_claim_with_its_token_only(clock, book):
    a, b = engines(clock, book, "a", "b")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    assert fired(b.resume("s1", token_hash("a guess"))) is None
    moved = fired(b.resume("s1", token_hash("token s1")))
    assert moved.node == "a" and book.claims["alice"].node == "b"
    assert fired(b.beat()) == {"s1": "alice"} and fired(a.beat()) == {}


def test_a_claim_handed_back_goes_where_it_was_unless_it_moved_on(clock, book):
    a, b, c = engines(clock, book, "a", "b", "c")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    was = fired(b.resume("s1", token_hash("token s1")))  # b's client went meanwhile
    fired(b.hand_back(was))
    assert book.claims["alice"] == claim("alice", "s1", "a")
    was = fired(b.resume("s1", token_hash("token s1")))
    assert fired(c.resume("s1", token_hash("token s1"))).node == "b"  # c's came too, later
    fired(b.hand_back(was))  # not b's any more: it stays c's
    fired(c.hand_back(claim("alice", "s2", "a")))  # nor another session's
    assert (book.claims["alice"].node, book.claims["alice"].session) == ("c", "s1")


def test_a_node_starting_drops_the_claims_it_left(clock, book):
    a, b = engines(clock, book, "a", "b")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    fired(b.claim(claim("bob", "s2", "b"), takeover=False))
    fired(LocalClaims(clock, "a", book).open())  # a again, after a crash
    assert list(book.claims) == ["bob"]


# --- sessions moving between nodes ------------------------------------------------------


@pytest.fixture
def cluster(clock, book):
    store = MemoryStore()
    # A room every node knows (rooms made on one node, seen by the
    # others, are another part's).
    fired(store.save_room(RoomRecord("dev", "dev", created=1)))
    bus = SharedBus()
    cores = {}
    for node in ("a", "b"):
        core = ChatCore(clock, Limits(), store=store, passwords=InstantPasswords(),
                        bus=bus.port(), bus_key=KEY, node=node,
                        names=LocalClaims(clock, node, book))
        fired(core.start())
        cores[node] = core
    cores["bus"] = bus
    return cores


def test_a_name_held_on_one_node_is_taken_on_the_other(cluster):
    login(cluster["a"], "alice")
    _, conn = login(cluster["b"], "ALICE")
    assert conn.of(wire.Error)[0].code == "name_taken"
    assert "alice" not in cluster["b"].by_key


def test_a_guest_resumes_on_another_node_with_its_name_rooms_and_lineage(cluster, clock, book):
    a, b = cluster["a"], cluster["b"]
    link, alice = login(a, "alice")
    _, carol = login(a, "carol")
    settle(a)
    a.receive(link, wire.Join("dev"))
    a.receive(link, wire.Say("before", "c1", "dev"))
    settle(a)
    session = a.by_key["alice"]
    lineage = session.lineage
    assert book.claims["alice"].rooms == ("dev", "lobby")
    welcome = alice.of(wire.Welcome)[0]
    carol.clear()
    new = b.open_link(moved := type(alice)(), "127.0.0.1:9")
    b.receive(new, wire.Resume(welcome.session, welcome.token, (("#dev", 1), ("#lobby", 0)),
                               welcome.server_time))
    settle(b)
    again = moved.of(wire.Welcome)[0]
    assert (again.name, again.session, again.resumed) == ("alice", welcome.session, True)
    assert sorted(again.rooms) == ["dev", "lobby"]
    there = b.by_key["alice"]
    assert there.lineage == lineage and there.rooms == {"dev", "lobby"}
    assert book.claims["alice"].node == "b"
    # Its old node heard: its copy ended, no one told it left, its
    # connection closed (the client had moved).
    assert "alice" not in a.by_key and alice.closed[0] == "replaced"
    assert not [n for n in carol.of(wire.Notice) if "alice" in n.text]
    # A line re-sent after the move is the same line, not a new one.
    b.receive(new, wire.Say("before", "c1", "dev"))
    settle(b)
    assert fired(b.store.after("#dev", 0, 10))[-1].seq == 1


def test_a_registered_name_logging_in_on_another_node_replaces_its_session(cluster):
    a, b = cluster["a"], cluster["b"]
    _, first = login(a, "alice", password="correct horse", register=True)
    assert first.of(wire.Welcome)
    _, second = login(b, "alice", password="correct horse")
    assert second.of(wire.Welcome)
    assert first.closed == ("replaced", "you logged in from somewhere else")
    assert "alice" not in a.by_key and "alice" in b.by_key


def test_a_session_whose_claim_went_while_the_bus_was_away_ends_when_two_beats_say_so(
        cluster, clock):
    a, b = cluster["a"], cluster["b"]
    _, first = login(a, "alice", password="correct horse", register=True)
    welcome = first.of(wire.Welcome)[0]
    cluster["bus"].up = False
    new = b.open_link(moved := type(first)(), "127.0.0.1:9")
    b.receive(new, wire.Resume(welcome.session, welcome.token, (), welcome.server_time))
    assert moved.of(wire.Welcome) and "alice" in a.by_key  # a did not hear
    clock.advance(a.moves.beat_seconds)
    # Its client is connected to a: the claim may be on its way back.
    assert "alice" in a.by_key and first.closed is None
    clock.advance(a.moves.beat_seconds)
    assert "alice" not in a.by_key and first.closed[0] == "replaced"
    assert "alice" in b.by_key


def test_a_taken_notice_that_does_not_parse_is_dropped_and_counted(cluster):
    a, b = cluster["a"], cluster["b"]
    login(a, "alice")
    b.cluster.send(moves.TAKEN, {"session": 3, "key": "alice", "why": "moved"})
    b.cluster.send(moves.TAKEN, {"session": "x", "key": "alice", "why": "because"})
    assert a.moves.ignored == 2 and "alice" in a.by_key


def test_a_look_alike_of_a_name_online_on_another_node_is_refused(cluster):
    login(cluster["a"], "alice")
    _, conn = login(cluster["b"], "\u0430lice")  # a Cyrillic a
    error = conn.of(wire.Error)[0]
    assert error.code == "name_lookalike"
    assert error.text == ("the name '\u0430lice' looks like 'alice', who is online; "
                          "choose another")


def test_a_claim_left_with_no_session_behind_it_is_given_back_at_the_next_beat(
        cluster, clock, book):
    a = cluster["a"]
    login(a, "alice")
    book.claims["bob"] = claim("bob", "gone", "a")  # its release never reached the database
    clock.advance(a.moves.beat_seconds)
    assert sorted(book.claims) == ["alice"]
    assert "alice" in a.by_key


def test_a_claim_is_not_handed_back_to_a_dead_node(clock, book):
    # There any login could take the name: it stays where the session waits.
    a, b = engines(clock, book, "a", "b")
    fired(a.claim(claim("alice", "s1", "a"), takeover=False))
    fired(a.beat())
    clock.advance(a.node_timeout + 1)  # a is silent: dead
    fired(b.beat())
    was = fired(b.resume("s1", token_hash("token s1")))
    assert fired(b.hand_back(was)) is False
    assert book.claims["alice"].node == "b"
