"""Direct lines to a session on another node, sans-IO: carried by the bus,
delivered once each and in order, and what the bus lost read from the
database."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import defer

from spchat.cluster.directs import DIRECT, GAP_GRACE_SECONDS, DirectCarrier
from spchat.server.records import Record, direct_conversation
from spchat.server.rules import TokenBucket
from spchat.server.sessions import Link, SessionTable

BOB_LINEAGE = "account:bob"


def dm(seq, sender="alice", to="bob", ts=None):
    return Record(seq, ts or 2_000_000_000_000 + seq, sender, sender, f"{sender} {seq}", f"c{seq}",
                  to=to, to_key=to, lineage=f"account:{sender}", to_lineage=f"account:{to}")


class Database:
    def __init__(self):
        self.lines: list[Record] = []
        self.reads = []

    def after(self, conversation, seq, limit, reader=None):
        self.reads.append(("after", seq))
        return defer.succeed([r for r in self.lines if r.conversation == conversation
                              and r.seq > seq and r.readable_by(reader)][:limit])

    def last_before_time(self, conversation, ts_ms):
        self.reads.append(("before", ts_ms))
        return defer.succeed(max((r.seq for r in self.lines if r.conversation == conversation
                                  and r.ts < ts_ms), default=0))

    def direct_since(self, session, since_ms):
        self.reads.append(("since", since_ms))
        return defer.succeed([r for r in self.lines if session.key in (r.sender_key, r.to_key)
                              and r.ts >= since_ms])


class Here:
    """A node with bob connected, its carrier, and what bob was sent."""

    def __init__(self, clock):
        self.clock = clock
        self.db = Database()
        self.said = []
        self.handlers = {}
        self.cluster = SimpleNamespace(name="here", send=lambda kind, body: self.said.append(
            (kind, body)), on=self.handlers.__setitem__, on_connected=[])
        self.table = SessionTable(clock)
        link = Link(object(), "127.0.0.1:1", clock.seconds())
        self.bob = self.table.create(link, "bob", "bob", TokenBucket(1, 1, 0), True)
        self.got = []
        self.carrier = DirectCarrier(clock, self.cluster, self.table, self.db.after,
                                     self.db.last_before_time, self.db.direct_since,
                                     self.deliver)

    def deliver(self, session, record):
        self.got.append(record.seq)

    def save(self, *records):
        self.db.lines += records

    def hear(self, record, node="there"):
        self.handlers[DIRECT](node, {"row": list(record)})


def test_lines_from_the_bus_go_out_in_order_once_each(clock):
    here = Here(clock)
    clock.advance(10)
    here.save(dm(1), dm(2), dm(3))
    here.hear(dm(1))
    here.hear(dm(3))  # 2 is a moment behind
    here.hear(dm(2))
    here.hear(dm(2))  # heard twice
    assert here.got == [1, 2, 3]
    assert here.db.reads == [("before", int((clock.seconds() - 10) * 1000))]


def test_a_lost_line_is_read_from_the_database_before_the_next(clock):
    here = Here(clock)
    here.save(dm(1), dm(2), dm(3), dm(4))
    here.hear(dm(1))
    here.hear(dm(3))  # 2 lost
    assert here.got == [1]
    here.hear(dm(4))
    clock.advance(GAP_GRACE_SECONDS)
    assert here.got == [1, 2, 3, 4] and here.db.reads[-1] == ("after", 1)
    here.hear(dm(2))  # late after all
    assert here.got == [1, 2, 3, 4]


def test_an_acknowledgement_waits_for_the_lines_from_the_bus_before_it(clock):
    here = Here(clock)
    mine = dm(3, sender="bob", to="alice")
    here.save(dm(1), dm(2), mine)
    here.carrier.send(here.bob, mine)  # saved here after alice's 1 and 2, still on the bus
    assert here.got == []
    here.hear(dm(1))
    here.hear(dm(2))
    assert here.got == [1, 2, 3] and not clock.getDelayedCalls()


def slow_floor(here):
    """The floor's read waits until the Deferred it returns (kept in
    ``floors``) is fired with the newest number before the connection."""
    here.floors = []
    here.carrier.last_before_time = lambda conversation, ts_ms: here.floors.append(
        d := defer.Deferred()) or d
    return here


def test_a_line_sent_again_at_or_below_the_floor_is_acknowledged_at_once(clock):
    here = slow_floor(Here(clock))
    mine = dm(2, sender="bob", to="alice")  # saved before this connection: its floor
    here.save(dm(1), mine)
    here.carrier.again(here.bob, mine)
    assert here.got == []  # the floor is not known yet
    here.floors[0].callback(2)
    assert here.got == [2]
    here.carrier.again(here.bob, mine)  # and again
    assert here.got == [2, 2]


def test_a_line_sent_again_above_the_floor_waits_for_those_before_it(clock):
    here = slow_floor(Here(clock))
    mine = dm(3, sender="bob", to="alice")
    here.save(dm(1), dm(2), mine)
    here.carrier.again(here.bob, mine)
    here.floors[0].callback(1)  # 1 was the replay's; alice's 2 is on the bus
    assert here.got == []
    here.hear(dm(2))
    assert here.got == [2, 3] and not clock.getDelayedCalls()


def test_the_sessions_own_line_read_for_a_gap_is_its_acknowledgement_once(clock):
    here = Here(clock)
    mine = dm(2, sender="bob", to="alice")
    here.save(dm(1), mine, dm(3))
    here.hear(dm(1))
    here.hear(dm(3))  # bob's own 2 saved here, its acknowledgement not handed over yet
    clock.advance(GAP_GRACE_SECONDS)
    assert here.got == [1, 2, 3]
    here.carrier.send(here.bob, mine)  # the acknowledgement, late: sent already
    here.hear(dm(4))
    assert here.got == [1, 2, 3, 4]


def test_lines_before_the_connection_are_the_replays_and_replayed_ones_are_not_sent_again(clock):
    here = Here(clock)
    old = dm(1, ts=int(clock.seconds() * 1000) - 5000)  # before bob connected
    clock.advance(5)
    here.save(old, dm(2), dm(3))
    here.carrier.reached(here.bob, dm(2))  # replayed after a resume
    here.hear(dm(3))
    assert here.got == [3]


def test_a_first_line_lost_is_found_by_the_next(clock):
    here = Here(clock)
    clock.advance(1)
    here.save(dm(1), dm(2))
    here.hear(dm(2))  # 1 lost: the conversation starts at the connection
    clock.advance(GAP_GRACE_SECONDS)
    assert here.got == [1, 2]


def test_back_on_the_bus_a_node_says_again_and_reads_what_was_lost(clock):
    here = Here(clock)
    for then in here.cluster.on_connected:
        then()  # joined
    clock.advance(5)
    to_alice = dm(1, sender="bob", to="alice")
    here.carrier.saved(to_alice)
    here.save(to_alice, dm(2))
    here.carrier.send(here.bob, to_alice)  # its acknowledgement  # alice's reply: its notice lost while the bus was away
    here.said.clear()
    clock.advance(5)
    for then in here.cluster.on_connected:
        then()  # back
    assert [body["row"][4] for kind, body in here.said] == ["bob 1"]
    assert [kind for kind, _ in here.db.reads] == ["before", "since"]
    clock.advance(GAP_GRACE_SECONDS)
    assert here.got == [1, 2]


def test_bodies_that_do_not_parse_are_counted_and_others_not_for_us_ignored(clock):
    here = Here(clock)
    for body in ({}, {"row": [1, 2]}, {"row": list(dm(1)._replace(room="lobby"))},
                 {"row": list(dm(1)._replace(text=5))}, {"row": list(dm(0))}):
        here.handlers[DIRECT]("there", body)
    assert here.carrier.ignored == 5
    here.hear(dm(1, to="carol"))  # not here
    here.hear(dm(1), node="here")  # saved here: delivered here already
    assert here.got == [] and here.db.reads == []
    here.carrier.forget(here.bob)
    assert here.carrier.threads == {}
    assert direct_conversation("alice", "bob") == dm(1).conversation
