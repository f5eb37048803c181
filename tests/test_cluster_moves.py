"""A session that moves from one node to another, sans-IO: three cores on
one store, one book of name claims and one bus, on a fake clock.  A move
is no news (nobody is told it joined or left, and member lists keep it),
leaves nothing behind on the node it left, and a ban holds wherever it
goes."""

import pytest
from twisted.internet import defer, task

from spchat import wire
from spchat.server.claims import ClaimBook, LocalClaims
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import InstantPasswords, MemoryClient, SharedBus, fired, login, run_for

KEY = b"k" * 32


class SlowBans(MemoryStore):
    """A store whose look-ups of bans take ``delay`` seconds of the clock
    (0: at once), as a busy database's may, and whose batches wait to be
    saved while ``saving`` is False, or those of a name in ``slow`` (its
    node's commit lags), until ``save_held()``."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.delay = 0.0
        self.saving = True
        self.slow: set[str] = set()
        self.held: list[tuple[list, defer.Deferred]] = []

    def append(self, records):
        if self.saving and not any(r.sender_key in self.slow for r in records):
            return super().append(records)
        self.held.append((records, d := defer.Deferred()))
        return d

    def save_held(self):
        self.saving = True
        self.slow.clear()
        held, self.held = self.held, []
        for records, d in held:
            d.callback(fired(defer.maybeDeferred(super().append, records)))

    def ban(self, key):
        if not self.delay:
            return super().ban(key)
        return task.deferLater(self.clock, self.delay, lambda: fired(super(SlowBans, self)
                                                                       .ban(key)))


class SlowClaims(LocalClaims):
    """Claims whose resume (a claim moving to this node) takes ``delay``
    seconds of the clock, and whose hand-back (a claim going back)
    ``handing`` seconds (0: at once), as a busy database's may."""

    delay = 0.0
    handing = 0.0

    def resume(self, session, token_hash):
        return self._after(self.delay, super().resume, session, token_hash)

    def hand_back(self, claim):
        return self._after(self.handing, super().hand_back, claim)

    def _after(self, delay, call, *args):
        if not delay:
            return call(*args)
        return task.deferLater(self.clock, delay, lambda: fired(call(*args)))


@pytest.fixture
def nodes(clock):
    store, book, bus = SlowBans(clock), ClaimBook(), SharedBus()
    cores = {}
    for node in "abc":
        core = ChatCore(clock, Limits(), store=store, passwords=InstantPasswords(),
                        bus=bus.port(), bus_key=KEY, node=node,
                        names=SlowClaims(clock, node, book))
        fired(core.start())
        cores[node] = core
    cores["bus"], cores["book"] = bus, book
    return cores


def news_of(conn, name):
    """What a client was told of ``name`` coming and going."""
    return [(n.kind, n.text) for n in conn.of(wire.Notice)
            if n.name == name and n.kind in ("join", "leave", "quit")]


def resume_on(core, session, positions=(("#lobby", 0),)):
    """``session``'s client, back on another node with its resume token."""
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.Resume(session.id, session.token, positions, 0))
    return conn


def link_of(core, conn):
    return next(link for link in core.links if link.conn is conn)


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


def test_a_beat_while_a_resume_is_on_its_way_leaves_the_claim_to_the_session(
        nodes, four, clock):
    c = nodes["c"]
    bob = nodes["b"].by_key["bob"]
    c.store.delay = c.moves.beat_seconds + 1  # a beat of c's comes while it looks
    moved = resume_on(c, bob)
    run_for(clock, 4 * c.moves.beat_seconds)
    assert moved.of(wire.Welcome)[0].resumed and moved.closed is None
    assert "bob" in c.by_key
    assert nodes["book"].claims["bob"].node == "c"


def test_a_resume_is_not_told_a_room_is_behind_what_its_client_was_sent(nodes, four, clock):
    # b has not heard of alice's lines (their notice lost), but the
    # database has them: bob's replay there sends them.  A client takes
    # a room's number lower than its own as a server that lost its data,
    # and would take those lines as new again, so b must not say less.
    a, b = nodes["a"], nodes["b"]
    alice = next(link for link in a.links if link.session is not None
                 and link.session.name == "alice")
    nodes["bus"].up = False
    for n in range(3):
        a.receive(alice, wire.Say(f"c{n}", f"line {n}", "lobby"))
    nodes["bus"].up = True
    bob = b.by_key["bob"]
    assert b.directory.get("lobby").last_seq == 0  # b's watermark: not heard yet
    seen = 0
    for _ in range(2):
        b.link_lost(bob.link)
        conn = MemoryClient()
        link = b.open_link(conn, "127.0.0.1:9")
        b.receive(link, wire.Resume(bob.id, bob.token, (("#lobby", seen),), 0))
        run_for(clock, 0.1)
        assert conn.of(wire.RoomState)[0].last_seq >= seen
        seen = max([seen] + [m.seq for m in conn.of(wire.RoomMessage)])
    assert seen == 3


@pytest.mark.parametrize("taking", [0.0, 6.0], ids=["at-once", "over-a-beat"])
def test_a_session_back_on_a_node_that_missed_its_move_takes_its_claim_back(
        nodes, four, clock, taking):
    b, c = nodes["b"], nodes["c"]
    b.names.delay = taking  # longer than a beat: one comes while it is taken back
    bob = b.by_key["bob"]
    b.link_lost(bob.link)
    nodes["bus"].up = False  # b does not hear that c took bob's claim
    on_c = resume_on(c, bob)
    nodes["bus"].up = True
    assert on_c.of(wire.Welcome)[0].resumed and "bob" in b.by_key
    on_c_link = next(link for link in c.links if link.conn is on_c)
    c.link_lost(on_c_link)
    back = resume_on(b, bob)  # and back on b, which still has it
    run_for(clock, 4 * b.moves.beat_seconds)
    assert back.of(wire.Welcome)[0].resumed and back.closed is None
    assert nodes["book"].claims["bob"].node == "b"
    assert "bob" in b.by_key and "bob" not in c.by_key



def test_a_line_sent_again_is_acknowledged_in_its_rooms_order_on_a_node_behind(
        nodes, four, clock):
    # bob's line is saved, then alice's, both after her replay on c read
    # the log; her client sends hers again on c, which has heard of
    # neither yet.  The copy's acknowledgement is the line itself: sent at
    # once, it would overtake bob's, and her client, past it, would never
    # show bob's line when it comes.
    a, b, c, store = nodes["a"], nodes["b"], nodes["c"], nodes["a"].store
    alice = a.by_key["alice"]
    nodes["bus"].up = False  # c hears of neither line
    store.saving = False
    b.receive(b.by_key["bob"].link, wire.Say("bob's", "b1", "lobby"))
    a.receive(alice.link, wire.Say("alice's", "a1", "lobby"))
    clock.advance(0)
    a.link_lost(alice.link)  # before its acknowledgement
    on_c = resume_on(c, alice)
    run_for(clock, 0.1)  # her replay: nothing saved yet
    store.save_held()  # bob's line 1, alice's 2
    on_c_link = next(link for link in c.links if link.conn is on_c)
    c.receive(on_c_link, wire.Say("alice's", "a1", "lobby"))
    run_for(clock, 0.1)  # her copy is found saved
    nodes["bus"].back()
    run_for(clock, 1)
    told = [(m.seq, m.cid) for m in on_c.of(wire.RoomMessage) if m.room == "lobby"]
    assert [seq for seq, _ in told] == [1, 2], told
    assert told[-1][1] == "a1"  # acknowledged


def test_a_session_cut_right_after_its_welcome_resumes_elsewhere_in_its_rooms(nodes, clock):
    # The login's rooms must be in its claim before the client can be cut
    # and resume on another node, which knows its rooms from the claim only.
    link, _ = login(nodes["a"], "dana")
    session = link.session
    assert session.rooms  # in #lobby, the default room
    nodes["a"].link_lost(link)
    moved = resume_on(nodes["b"], session)  # before a's clock turns again
    assert moved.of(wire.Welcome)[0].rooms == ("lobby",)
    assert "lobby" in nodes["b"].by_key["dana"].rooms


def only_on(nodes, node, name):
    """Whether ``name``'s session is on ``node`` and on no other."""
    return [n for n in "abc" if name in nodes[n].by_key] == [node]


@pytest.mark.parametrize("handing", [0.0, 6.0], ids=["given-back-at-once", "over-a-beat"])
@pytest.mark.parametrize("slow", ["a", "b"], ids=["from-elsewhere", "back-to-its-node"])
def test_a_resume_whose_link_went_before_its_claim_came_leaves_the_live_one_alone(
        nodes, four, clock, slow, handing):
    # The client resumes on a slow node (its claim on its way there), is
    # cut, and resumes on c, welcomed at once.  When the slow node's claim
    # move comes back, its link is gone: it must not take the session from
    # c, whose client is live.  ("back-to-its-node": bob's claim went to c
    # while b did not hear of it, so b still has his session and takes
    # its claim back.)
    b, c = nodes["b"], nodes["c"]
    bob = b.by_key["bob"]
    b.link_lost(bob.link)
    if slow == "b":
        nodes["bus"].up = False  # b does not hear that c took bob's claim
        c.link_lost(link_of(c, resume_on(c, bob)))
        nodes["bus"].up = True
    slow_node = nodes[slow]
    slow_node.names.delay = 2.0
    slow_node.names.handing = handing  # longer than a beat: c's comes meanwhile
    cut = resume_on(slow_node, bob)
    slow_node.link_lost(link_of(slow_node, cut))
    live = resume_on(c, bob)
    assert live.of(wire.Welcome)[0].resumed
    run_for(clock, 4 * c.moves.beat_seconds)
    assert live.closed is None
    assert nodes["book"].claims["bob"].node == "c"
    assert only_on(nodes, "c", "bob")
    assert news_of(four["alice"], "bob") == []


def test_a_resume_whose_link_went_leaves_the_session_to_a_later_one(nodes, four, clock):
    # The slow node's claim move comes back first, its link already gone:
    # the session is where it was until the client resumes again.
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    bob = b.by_key["bob"]
    b.link_lost(bob.link)
    a.names.delay = 2.0
    a.link_lost(link_of(a, resume_on(a, bob)))
    run_for(clock, 3)
    assert "bob" not in a.by_key
    assert nodes["book"].claims["bob"].node == "b" and "bob" in b.by_key
    live = resume_on(c, bob)
    run_for(clock, 4 * c.moves.beat_seconds)
    assert live.of(wire.Welcome)[0].resumed and live.closed is None
    assert only_on(nodes, "c", "bob")
    assert news_of(four["alice"], "bob") == []


def test_of_two_live_resumes_of_one_session_the_last_to_finish_has_it(nodes, four, clock):
    # Two clients with one token (or a cut the slow node has not seen):
    # both links live, as on one node the newer one has the session, and
    # there is one copy only.
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    bob = b.by_key["bob"]
    a.names.delay = 2.0
    slow = resume_on(a, bob)
    first = resume_on(c, bob)
    assert first.of(wire.Welcome)[0].resumed
    run_for(clock, 4 * c.moves.beat_seconds)
    assert slow.of(wire.Welcome)[0].resumed and slow.closed is None
    assert first.closed == ("replaced", "this session continues on another node")
    assert nodes["book"].claims["bob"].node == "a"
    assert only_on(nodes, "a", "bob")


def test_a_session_taken_while_it_arrived_is_not_left_live_in_two_places(nodes, four, clock):
    # Two live resumes: a's claim move finishes first, but a looks for a
    # ban meanwhile; c's move takes the claim from a and c tells a, which
    # has no session yet.  When a's look-up ends, a must not keep a second
    # live copy until its beats find out.
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    bob = b.by_key["bob"]
    a.store.delay = 2.0  # a's look-up of bans only (c's starts after it is reset)
    slow = resume_on(a, bob)
    a.store.delay = 0.0
    assert nodes["book"].claims["bob"].node == "a"
    fast = resume_on(c, bob)
    assert fast.of(wire.Welcome)[0].resumed and nodes["book"].claims["bob"].node == "c"
    run_for(clock, 2.1)
    assert only_on(nodes, "c", "bob")
    assert slow.closed == ("replaced", "this session continues on another node")
    assert fast.closed is None
    run_for(clock, 4 * c.moves.beat_seconds)
    assert only_on(nodes, "c", "bob") and fast.closed is None


def test_a_direct_line_sent_again_is_acknowledged_after_the_lines_before_it(
        nodes, four, clock):
    # carol's line to bob waits to be saved (her node's commit lags) while
    # her client, cut before its acknowledgement, resumes on a, where bob's
    # first line reaches her.  His second is saved, then hers, and their
    # notices are lost.  Her client sends hers again on a: its copy, sent
    # at once, would overtake bob's second, which her client, past it,
    # would then drop as old.
    a, b, c, bus, store = nodes["a"], nodes["b"], nodes["c"], nodes["bus"], nodes["a"].store
    bus.back()  # joined: from now on, a node back on the bus says again what it saved
    carol, bob = c.by_key["carol"], b.by_key["bob"]
    store.slow.add("carol")
    c.receive(carol.link, wire.Direct("bob", "carol's", "c1"))
    clock.advance(0)
    c.link_lost(carol.link)
    on_a = resume_on(a, carol, (("#lobby", 0), ("@bob", 0)))
    run_for(clock, 0.1)  # her replay: nothing saved yet
    b.receive(bob.link, wire.Direct("carol", "bob's first", "b1"))  # 1: to her on a
    run_for(clock, 0.1)
    bus.up = False
    b.receive(bob.link, wire.Direct("carol", "bob's second", "b2"))  # 2
    run_for(clock, 0.1)
    store.save_held()  # carol's: 3
    a.receive(link_of(a, on_a), wire.Direct("bob", "carol's", "c1"))
    run_for(clock, 0.1)  # her copy is found saved
    bus.back()
    run_for(clock, 1)
    told = [(m.seq, m.cid) for m in on_a.of(wire.DirectMessage)]
    assert [seq for seq, _ in told] == [1, 2, 3], told
    assert told[-1][1] == "c1"  # acknowledged
    # Sent again once more (its acknowledgement lost, say): at or below
    # what reached her, it is acknowledged at once.
    a.receive(link_of(a, on_a), wire.Direct("bob", "carol's", "c1"))
    run_for(clock, 0.1)
    assert [(m.seq, m.cid) for m in on_a.of(wire.DirectMessage)][3:] == [(3, "c1")]


def test_a_direct_line_saved_before_the_connection_is_acknowledged_when_sent_again(
        nodes, four, clock):
    # Saved once her replay on a had read the log: newer than the replay,
    # older than a's floor for the conversation (its newest when she
    # connected, by time).  Dropped as reached, her client would wait for
    # its acknowledgement for ever.
    a, c, store = nodes["a"], nodes["c"], nodes["a"].store
    carol = c.by_key["carol"]
    store.saving = False
    c.receive(carol.link, wire.Direct("bob", "carol's", "c1"))
    run_for(clock, 0.1)
    c.link_lost(carol.link)
    on_a = resume_on(a, carol, (("#lobby", 0), ("@bob", 0)))
    run_for(clock, 0.1)  # her replay: nothing saved yet
    store.save_held()  # 1
    a.receive(link_of(a, on_a), wire.Direct("bob", "carol's", "c1"))
    run_for(clock, 1)
    assert [(m.seq, m.cid) for m in on_a.of(wire.DirectMessage)] == [(1, "c1")]


def carol_told_of_bobs_line_saved_after_her_replay(nodes, positions, since):
    """bob's line to carol is accepted before her client resumes on a (with
    ``positions``, ``since``), and saved (b's commit lags) once her replay
    there has read the log: what carol's client on a is given of it."""
    a, b, c, store = nodes["a"], nodes["b"], nodes["c"], nodes["a"].store
    bob, carol = b.by_key["bob"], c.by_key["carol"]
    store.slow.add("bob")
    b.receive(bob.link, wire.Direct("carol", "before you moved", "b1"))
    run_for(a.clock, 0.1)
    c.link_lost(carol.link)
    conn = MemoryClient()
    a.receive(a.open_link(conn, "127.0.0.1:9"),
              wire.Resume(carol.id, carol.token, positions, since))
    run_for(a.clock, 0.1)  # her replay: nothing saved yet
    store.save_held()  # bob's: 1, told on the bus
    run_for(a.clock, 1)
    return [(m.seq, m.text) for m in conn.of(wire.DirectMessage)]


def test_a_direct_line_accepted_before_a_resume_and_saved_after_its_replay_reaches_it(
        nodes, four):
    # By its time it is older than her connection to a, but the replay
    # never sent it: it must come live, not be taken for the replay's.
    assert carol_told_of_bobs_line_saved_after_her_replay(
        nodes, (("#lobby", 0), ("@bob", 0)), 0) == [(1, "before you moved")]


def test_a_direct_line_of_a_conversation_not_named_saved_after_the_replay_reaches_it(
        nodes, four):
    # The same, in a conversation her client has no position for: the
    # replay reads those from the time it names, and so does the carrier.
    since = nodes["a"].now_ms()
    assert carol_told_of_bobs_line_saved_after_her_replay(
        nodes, (("#lobby", 0),), since) == [(1, "before you moved")]


def test_a_resume_whose_link_went_keeps_the_claim_of_a_dead_node(nodes, four, clock):
    # b died; bob's client resumes on a, slowly, and is cut meanwhile.
    # Given back to b, his claim would be a dead node's, which any login
    # may take: his name, and his session, lost while his client comes
    # back.  It stays on a, where his session waits for him.
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    bob = b.by_key["bob"]
    nodes["bus"].deafen(b)
    b.stop()  # no beat either
    run_for(clock, a.names.node_timeout + 1)
    a.names.delay = 2.0
    a.link_lost(link_of(a, resume_on(a, bob)))
    run_for(clock, 3)
    assert nodes["book"].claims["bob"].node == "a" and "bob" in a.by_key
    _, impostor = login(c, "bob")
    assert not impostor.of(wire.Welcome)
    live = resume_on(c, bob)
    run_for(clock, 4 * c.moves.beat_seconds)
    assert live.of(wire.Welcome)[0].resumed and live.closed is None
    assert [n for n in "ac" if "bob" in nodes[n].by_key] == ["c"]
