"""Direct messages to a registered user who is offline: kept, and delivered
at their next login, in order, once (the core on the memory store)."""

import pytest
from twisted.internet import defer, task

from spchat import wire
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import Batching, InstantPasswords, MemoryClient, SharedBus, fired, login, settle


@pytest.fixture
def core(clock):
    return ChatCore(clock, Limits(max_waiting_directs=3), passwords=InstantPasswords())


def register(core, name):
    link, conn = login(core, name, password="secret-words", register=True)
    assert conn.of(wire.Welcome), conn.sent
    core.receive(link, wire.Logout())
    settle(core)


def directs(conn):
    return [(m.sender, m.to, m.text) for m in conn.of(wire.DirectMessage)]


def test_lines_to_an_offline_account_wait_for_its_next_login_and_come_once(core, clock):
    register(core, "bob")
    alice, a = login(core, "alice")
    for i in range(3):
        core.receive(alice, wire.Direct("BOB", f"line {i}", f"d{i}"))
        clock.advance(1)
    # Acknowledged as any line, with the recipient's name as registered.
    assert [(m.cid, m.to) for m in a.of(wire.DirectMessage)] == [
        ("d0", "bob"), ("d1", "bob"), ("d2", "bob")]
    assert not a.of(wire.Error)
    (told,) = [n for n in a.of(wire.Notice) if n.kind == "waiting"]  # once, not per line
    assert told.text == "bob is offline: they will get your messages when they log in"
    bob, b = login(core, "bob", password="secret-words")
    got = b.of(wire.DirectMessage)
    assert directs(b) == [("alice", "bob", f"line {i}") for i in range(3)]
    assert [m.seq for m in got] == [1, 2, 3] and not any(m.history for m in got)
    assert [m.ts for m in got] == [m.ts for m in a.of(wire.DirectMessage)]  # their own times
    core.receive(bob, wire.Logout())
    _, again = login(core, "bob", password="secret-words")
    assert directs(again) == []


def test_a_line_sent_while_the_waiting_ones_are_read_comes_after_them(core, clock):
    register(core, "bob")
    alice, a = login(core, "alice")
    core.receive(alice, wire.Direct("bob", "first", "d1"))
    # The store's answer held back, as a busy disk would.
    store, reading = core.store, defer.Deferred()
    waiting_directs, store.waiting_directs = store.waiting_directs, lambda *args: reading
    bob, b = login(core, "bob", password="secret-words")
    clock.advance(1)
    core.receive(alice, wire.Direct("bob", "second", "d2"))
    assert b.of(wire.DirectMessage) == []  # not before what waited for him
    store.waiting_directs = waiting_directs
    waiting_directs("bob", 50).chainDeferred(reading)
    assert [m.text for m in b.of(wire.DirectMessage)] == ["first", "second"]
    assert [m.text for m in a.of(wire.DirectMessage)] == ["first", "second"]


def test_a_guest_name_offline_is_refused_plainly(core):
    alice, a = login(core, "alice")
    core.receive(alice, wire.Direct("nobody", "?", "d1"))
    (refused,) = a.of(wire.Error)
    assert (refused.code, refused.cid) == ("unknown_user", "d1")
    assert refused.text == ("nobody called 'nobody' is online, and direct messages are kept "
                            "only for registered names: send it again when they are back")
    assert not a.of(wire.DirectMessage)


def test_no_more_wait_for_one_account_than_the_limit(core):
    register(core, "bob")
    alice, a = login(core, "alice")
    for i in range(4):
        core.receive(alice, wire.Direct("bob", f"line {i}", f"d{i}"))
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d0", "d1", "d2"]
    (refused,) = a.of(wire.Error)
    assert (refused.code, refused.cid) == ("inbox_full", "d3")
    assert refused.text == ("bob is offline and has 3 messages waiting already: "
                            "send it again when they are back")
    # Had, they no longer count.
    bob, _ = login(core, "bob", password="secret-words")
    core.receive(bob, wire.Logout())
    core.receive(alice, wire.Direct("bob", "line 4", "d4"))
    assert a.of(wire.DirectMessage)[-1].cid == "d4"


def test_one_sender_cannot_fill_an_inbox_and_keep_the_others_out(clock):
    core = ChatCore(clock, Limits(max_waiting_directs=5, max_waiting_from_one=2),
                    passwords=InstantPasswords())
    register(core, "bob")
    alice, a = login(core, "alice")
    for i in range(3):
        core.receive(alice, wire.Direct("bob", f"line {i}", f"d{i}"))
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d0", "d1"]
    (refused,) = a.of(wire.Error)
    assert (refused.code, refused.cid, refused.text) == (
        "inbox_full", "d2", "bob is offline and has 2 messages from you waiting already: "
        "send it again when they are back")
    settle(core)  # saved now: counted by the store, not as accepted
    core.receive(alice, wire.Direct("bob", "line 3", "d3"))
    assert a.of(wire.Error)[-1].cid == "d3"
    carol, c = login(core, "carol")  # someone else still gets in
    core.receive(carol, wire.Direct("bob", "hi bob", "c1"))
    assert [m.cid for m in c.of(wire.DirectMessage)] == ["c1"] and not c.of(wire.Error)
    _, b = login(core, "bob", password="secret-words")
    assert directs(b) == [("alice", "bob", "line 0"), ("alice", "bob", "line 1"),
                          ("carol", "bob", "hi bob")]


def test_a_line_resent_after_a_drop_is_not_kept_twice(core):
    register(core, "bob")
    alice, a = login(core, "alice")
    core.receive(alice, wire.Direct("bob", "once", "d1"))
    core.receive(alice, wire.Direct("bob", "once", "d1"))
    assert [m.seq for m in a.of(wire.DirectMessage)] == [1, 1]
    _, b = login(core, "bob", password="secret-words")
    assert directs(b) == [("alice", "bob", "once")]


def test_none_wait_when_the_limit_is_zero(clock):
    core = ChatCore(clock, Limits(max_waiting_directs=0), passwords=InstantPasswords())
    register(core, "bob")
    alice, a = login(core, "alice")
    core.receive(alice, wire.Direct("bob", "?", "d1"))
    (refused,) = a.of(wire.Error)
    assert refused.text == ("nobody called 'bob' is online, and direct messages are kept "
                            "for nobody away: send it again when they are back")


def test_a_line_kept_while_its_account_logged_in_is_had_when_it_reaches_it_live(core):
    register(core, "bob")
    alice, a = login(core, "alice")
    committer = Batching(core)
    core.receive(alice, wire.Direct("bob", "just now", "d1"))  # kept: bob is not on
    bob, b = login(core, "bob", password="secret-words")  # nothing saved to read yet
    committer.commit()
    assert directs(b) == [("alice", "bob", "just now")]  # live, as saved
    core.receive(bob, wire.Logout())
    _, again = login(core, "bob", password="secret-words")
    assert directs(again) == []


def test_a_line_to_an_account_whose_connection_dropped_waits_if_it_does_not_resume(core,
                                                                                    clock):
    register(core, "bob")
    alice, a = login(core, "alice")
    bob, _ = login(core, "bob", password="secret-words")
    core.link_lost(bob)
    core.receive(alice, wire.Direct("bob", "call me", "d1"))
    assert not [n for n in a.of(wire.Notice) if n.kind == "waiting"]  # he may be back soon
    clock.advance(core.limits.resume_grace)  # he was not: a new client logs in later
    _, b = login(core, "bob", password="secret-words")
    assert directs(b) == [("alice", "bob", "call me")]


def test_a_line_replayed_at_a_resume_does_not_wait_for_the_next_login(core):
    register(core, "bob")
    alice, a = login(core, "alice")
    bob, first = login(core, "bob", password="secret-words")
    core.link_lost(bob)
    core.receive(alice, wire.Direct("bob", "call me", "d1"))
    welcome = first.of(wire.Welcome)[0]
    back = MemoryClient()
    link = core.open_link(back, "127.0.0.1:2")
    core.receive(link, wire.Resume(welcome.session, welcome.token, (), welcome.server_time))
    assert directs(back) == [("alice", "bob", "call me")]
    core.receive(link, wire.Logout())
    _, again = login(core, "bob", password="secret-words")
    assert directs(again) == []


def two_nodes(clock):
    """Nodes a and b on one store, and their bus."""
    store, hub = MemoryStore(), SharedBus()
    cores = [ChatCore(clock, Limits(), store=store, bus=hub.port(), bus_key=b"k" * 32,
                      node=name, passwords=InstantPasswords()) for name in ("a", "b")]
    for core in cores:
        core.start()
    return cores[0], cores[1], hub


def test_a_line_to_an_account_dropped_on_another_node_waits_if_it_does_not_resume(clock):
    a, b, _ = two_nodes(clock)
    register(b, "bob")
    alice, sent = login(a, "alice")
    bob, _ = login(b, "bob", password="secret-words")
    clock.advance(1)  # the roster: bob is on b
    b.link_lost(bob)
    clock.advance(1)  # ... and reconnecting
    a.receive(alice, wire.Direct("bob", "call me", "d1"))
    clock.advance(1)
    assert sent.of(wire.DirectMessage)[-1].cid == "d1"
    clock.advance(b.limits.resume_grace)  # he was not back: a new client logs in, on a
    _, again = login(a, "bob", password="secret-words")
    clock.advance(1)
    assert directs(again) == [("alice", "bob", "call me")]


def test_a_line_to_an_account_dropped_on_another_node_is_had_when_it_resumes(clock):
    a, b, _ = two_nodes(clock)
    register(b, "bob")
    alice, _ = login(a, "alice")
    bob, first = login(b, "bob", password="secret-words")
    clock.advance(1)
    b.link_lost(bob)
    clock.advance(1)
    a.receive(alice, wire.Direct("bob", "call me", "d1"))
    clock.advance(1)
    welcome = first.of(wire.Welcome)[0]
    back = MemoryClient()
    link = b.open_link(back, "127.0.0.1:2")
    b.receive(link, wire.Resume(welcome.session, welcome.token, (), welcome.server_time))
    clock.advance(1)
    assert directs(back) == [("alice", "bob", "call me")]  # in the resume's replay
    b.receive(link, wire.Logout())
    clock.advance(1)
    _, again = login(a, "bob", password="secret-words")
    clock.advance(1)
    assert directs(again) == []  # had: it waits no more


@pytest.mark.parametrize("heard", ["while-read", "after-read"])
def test_a_line_kept_on_one_node_while_its_account_logs_in_on_another_comes_once(clock,
                                                                                  heard):
    # a has not heard that bob logged in on b (the bus was away): alice's
    # line waits for him, saved after b began to read what waits for him
    # and before that read answered, so the answer has it; and a's notice
    # of it reaches b while that answer is on its way, or after it.
    a, b, hub = two_nodes(clock)
    hub.back()  # joined: a node back on the bus says again what it saved meanwhile
    store = a.store
    register(b, "bob")
    alice, sent = login(a, "alice")
    clock.advance(1)
    waiting_directs, reading = store.waiting_directs, defer.Deferred()
    store.waiting_directs = lambda *args: reading
    hub.up = False
    bob, got = login(b, "bob", password="secret-words")
    a.receive(alice, wire.Direct("bob", "first", "d1"))
    clock.advance(1)  # nobody of that name is known: it waits, saved
    assert [n.kind for n in sent.of(wire.Notice)][-1] == "waiting"
    answer = fired(waiting_directs("bob", 50))
    assert [r.text for r in answer] == ["first"]
    store.waiting_directs = waiting_directs
    if heard == "while-read":
        hub.back()
        clock.advance(1)
    reading.callback(answer)
    hub.back()
    clock.advance(1)
    a.receive(alice, wire.Direct("bob", "second", "d2"))  # live: a knows of him now
    clock.advance(1)
    assert [m.text for m in got.of(wire.DirectMessage)] == ["first", "second"]
    b.receive(bob, wire.Logout())
    clock.advance(1)
    _, again = login(a, "bob", password="secret-words")
    clock.advance(1)
    assert directs(again) == []  # had: it waits no more


class LateMarks(MemoryStore):
    """A store whose ``directs_had`` lands ``lag`` seconds of the clock
    after it was asked for, as the writer thread's, busy with a commit,
    may land after a read asked for later (the reader's thread)."""

    lag = 0.05

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def directs_had(self, numbers):
        return task.deferLater(self.clock, self.lag, lambda: fired(
            super(LateMarks, self).directs_had(numbers)))


def test_a_line_in_a_returning_logins_replay_does_not_come_again_as_waiting(clock):
    # A client back after its session ended logs in with its positions:
    # the replay sends the line that waited for it, and what waited is
    # read after that, before the replay's mark that it was had landed.
    core = ChatCore(clock, Limits(), store=LateMarks(clock), passwords=InstantPasswords())
    core.start()
    register(core, "bob")
    _, first = login(core, "bob", password="secret-words")
    view_began = first.of(wire.Welcome)[0].server_time
    core.receive(first.session.link, wire.Logout())
    clock.advance(1)
    alice, _ = login(core, "alice")
    core.receive(alice, wire.Direct("bob", "call me", "d1"))
    clock.advance(1)
    _, back = login(core, "bob", password="secret-words", positions=(), since=view_began)
    clock.advance(1)
    assert directs(back) == [("alice", "bob", "call me")]
    core.receive(back.session.link, wire.Logout())
    clock.advance(1)
    _, again = login(core, "bob", password="secret-words")
    clock.advance(1)
    assert directs(again) == []


def test_a_line_kept_before_a_login_and_saved_while_what_waits_is_read_comes_once(core,
                                                                                clock):
    # Kept for bob before he logged in, saved once the read of what waits
    # for him had begun (without it): it comes live, held back behind that
    # read, which must then send it, though older than the login.
    register(core, "bob")
    alice, _ = login(core, "alice")
    committer = Batching(core)
    core.receive(alice, wire.Direct("bob", "just before", "d1"))
    clock.advance(1)
    store, reading = core.store, defer.Deferred()
    waiting_directs, store.waiting_directs = store.waiting_directs, lambda *args: reading
    bob, b = login(core, "bob", password="secret-words")
    committer.commit()
    store.waiting_directs = waiting_directs
    reading.callback([])  # read before it was saved
    assert directs(b) == [("alice", "bob", "just before")]
    core.receive(bob, wire.Logout())
    _, again = login(core, "bob", password="secret-words")
    assert directs(again) == []


def test_a_line_kept_on_one_node_and_saved_while_another_reads_what_waits_comes_once(clock):
    # bob's client has connected to b, not logged in yet, when a keeps
    # alice's line for him; a saves it once b began to read what waits for
    # him (without it).  It comes to b on the bus, held back behind that
    # read, which must then send it, though older than the login.
    a, b, _ = two_nodes(clock)
    register(b, "bob")
    alice, _ = login(a, "alice")
    clock.advance(1)
    committer = Batching(a)
    got = MemoryClient()
    link = b.open_link(got, "127.0.0.1:2")
    a.receive(alice, wire.Direct("bob", "just before", "d1"))
    clock.advance(1)  # nobody of that name is known: it waits
    store, reading = a.store, defer.Deferred()
    waiting_directs, store.waiting_directs = store.waiting_directs, lambda *args: reading
    b.receive(link, wire.Login("bob", password="secret-words"))
    committer.commit()
    store.waiting_directs = waiting_directs
    reading.callback([])  # read before it was saved
    clock.advance(1)
    assert directs(got) == [("alice", "bob", "just before")]
    b.receive(link, wire.Logout())
    clock.advance(1)
    _, again = login(a, "bob", password="secret-words")
    clock.advance(1)
    assert directs(again) == []


def test_lines_to_a_dropped_account_wait_within_the_same_limits(clock):
    """A line to an account whose connection dropped waits in case it
    logs in afresh: as many as for one away, no more (its inbox is no
    way to fill the disk, nor one sender's to fill it), and none where
    none may wait.  All reach it if it resumes."""
    core = ChatCore(clock, Limits(max_waiting_directs=5, max_waiting_from_one=2),
                    passwords=InstantPasswords())
    register(core, "bob")
    alice, a = login(core, "alice")
    bob, _ = login(core, "bob", password="secret-words")
    core.link_lost(bob)
    for i in range(4):
        core.receive(alice, wire.Direct("bob", f"line {i}", f"d{i}"))
    settle(core)
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d0", "d1", "d2", "d3"]  # saved
    assert not a.of(wire.Error)
    clock.advance(core.limits.resume_grace + 1)  # he does not resume: logs in afresh
    _, b = login(core, "bob", password="secret-words")
    settle(core)
    assert directs(b) == [("alice", "bob", "line 0"), ("alice", "bob", "line 1")]


def test_no_line_to_a_dropped_account_waits_where_none_may(clock):
    core = ChatCore(clock, Limits(max_waiting_directs=0), passwords=InstantPasswords())
    register(core, "bob")
    alice, a = login(core, "alice")
    bob, _ = login(core, "bob", password="secret-words")
    core.link_lost(bob)
    core.receive(alice, wire.Direct("bob", "call me", "d1"))
    settle(core)
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d1"]
    clock.advance(core.limits.resume_grace + 1)
    _, b = login(core, "bob", password="secret-words")
    settle(core)
    assert directs(b) == []


def test_direct_lines_keep_their_order_while_the_store_is_asked_about_the_first(core, clock):
    """The first line to a dropped account waits for the store (how many
    wait for it); the account is back before the second is sent, which
    needs no store: it must not be numbered first."""
    register(core, "bob")
    alice, a = login(core, "alice")
    bob, first = login(core, "bob", password="secret-words")
    core.link_lost(bob)
    store, asked = core.store, defer.Deferred()
    waiting_for, store.waiting_for = store.waiting_for, lambda *args: asked
    core.receive(alice, wire.Direct("bob", "one", "d1"))
    welcome = first.of(wire.Welcome)[0]
    back = MemoryClient()
    core.receive(core.open_link(back, "127.0.0.1:2"),
                 wire.Resume(welcome.session, welcome.token, (), welcome.server_time))
    core.receive(alice, wire.Direct("bob", "two", "d2"))
    store.waiting_for = waiting_for
    waiting_for("bob", "@alice bob").chainDeferred(asked)
    settle(core)
    assert [(m.seq, m.cid) for m in a.of(wire.DirectMessage)] == [(1, "d1"), (2, "d2")]
    assert [(m.seq, m.text) for m in back.of(wire.DirectMessage)] == [(1, "one"), (2, "two")]


def test_a_logout_waits_for_the_direct_lines_held_behind_a_read(core):
    register(core, "bob")
    alice, a = login(core, "alice")
    store, asked = core.store, defer.Deferred()
    waiting_for, store.waiting_for = store.waiting_for, lambda *args: asked
    core.receive(alice, wire.Direct("bob", "one", "d1"))  # bob is away: asked
    core.receive(alice, wire.Direct("bob", "two", "d2"))  # behind it
    core.receive(alice, wire.Logout())
    assert a.closed is None  # the goodbye waits for both
    store.waiting_for = waiting_for
    waiting_for("bob", "@alice bob").chainDeferred(asked)
    settle(core)
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d1", "d2"]
    assert a.closed is not None and a.closed[0] == "logout"
    _, b = login(core, "bob", password="secret-words")
    assert directs(b) == [("alice", "bob", "one"), ("alice", "bob", "two")]
