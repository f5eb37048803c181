"""The bus between nodes, sans-IO: each room's lines delivered once and in
order whichever way they come, and what goes over the bus."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import defer, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from spchat.cluster import notices
from spchat.cluster.node import TOPS_PER_NOTICE, TOPS_SECONDS, ClusterNode
from spchat.cluster.seal import MAX_AGE_SECONDS, Notice, Seal, bus_key
from spchat.cluster.order import GAP_GRACE_SECONDS, MAX_EARLY, READ_RETRY_SECONDS, RoomOrder
from spchat.server.records import Record, RoomRecord
from spchat.server.rooms import Room, RoomDirectory


def line(seq, room="lobby", text=None):
    return Record(seq, 1000 + seq, "alice", "alice", text or f"line {seq}", f"c{seq}",
                  room=room, lineage="account:alice")


class Log:
    """The database's lines; each read waits until ``answer()`` unless ``at_once``."""

    def __init__(self, at_once=True):
        self.lines: dict[str, list[Record]] = {}
        self.at_once = at_once
        self.reads = []  # (conversation, after, Deferred)
        self.failing = False

    def save(self, *records):
        for r in records:
            self.lines.setdefault("#" + r.room, []).append(r)

    def after(self, conversation, seq, limit):
        d = defer.Deferred()
        # What the read sees is what was saved when it began.
        seen = [r for r in self.lines.get(conversation, []) if r.seq > seq][:limit]
        self.reads.append((conversation, seq, d, seen))
        if self.at_once:
            self.answer()
        return d

    def answer(self):
        conversation, seq, d, seen = self.reads.pop(0)
        if self.failing:
            d.errback(RuntimeError("the database is away"))
            return
        d.callback(seen)


class Node:
    """A room directory with one member online in each room, and what it delivered."""

    def __init__(self, clock, log, rooms=("lobby", "dev"), members=True):
        self.directory = RoomDirectory(clock, lambda session, now: "online")
        for key in rooms:
            room = self.directory.add(Room(RoomRecord(key, key)))
            if members:
                room.members["bob"] = SimpleNamespace(link=object())
        self.delivered: list[tuple[str, int]] = []
        self.order = RoomOrder(clock, self.directory, log.after, self.deliver)

    def deliver(self, records):
        room = self.directory.get(records[0].room)
        seqs = [room.last_seq] + [r.seq for r in records]
        assert seqs == sorted(set(seqs)), seqs  # newer each, none twice
        room.last_seq = records[-1].seq
        self.delivered += [(r.room, r.seq) for r in records]

    def seqs(self, room="lobby"):
        return [seq for key, seq in self.delivered if key == room]


def test_lines_in_order_go_out_at_once_and_a_line_heard_again_is_dropped(clock):
    log = Log()
    node = Node(clock, log)
    node.order.offer("lobby", [line(1), line(2)])
    node.order.offer("lobby", [line(2)])  # this node's own, back from the bus
    node.order.offer("lobby", [line(3)])
    assert node.seqs() == [1, 2, 3] and log.reads == [] and not node.order.gaps


def test_a_gap_is_read_from_the_database_before_anything_newer(clock):
    log = Log(at_once=False)
    log.save(*map(line, range(1, 6)))
    node = Node(clock, log)
    node.order.offer("lobby", [line(1)])
    node.order.offer("lobby", [line(4)])  # 2 and 3: lost on the bus
    assert log.reads == []  # they may still come
    clock.advance(GAP_GRACE_SECONDS)
    node.order.offer("lobby", [line(5)])  # during the read: waits
    assert node.seqs() == [1] and [r[:2] for r in log.reads] == [("#lobby", 1)]
    log.answer()
    assert node.seqs() == [1, 2, 3, 4, 5] and not node.order.gaps
    node.order.offer("lobby", [line(3), line(4), line(5)])  # late copies
    assert node.seqs() == [1, 2, 3, 4, 5]


def test_lines_a_moment_behind_on_the_bus_close_the_gap_without_a_read(clock):
    log = Log(at_once=False)
    node = Node(clock, log)
    node.order.offer("lobby", [line(1)])
    node.order.offer("lobby", [line(3)])  # this node's own, numbered after another's 2
    node.order.offer("lobby", [line(2)])  # which comes now
    assert node.seqs() == [1, 2, 3] and not node.order.gaps
    assert log.reads == [] and not clock.getDelayedCalls()


def test_a_notice_without_lines_is_read_and_other_rooms_go_on_meanwhile(clock):
    log = Log(at_once=False)
    log.save(line(1), line(2))
    node = Node(clock, log)
    node.order.announced("lobby", 2)
    node.order.offer("dev", [line(1, "dev")])
    assert node.delivered == [("dev", 1)]
    log.answer()
    assert node.seqs() == [1, 2]


def test_news_of_more_during_a_read_is_read_too(clock):
    log = Log(at_once=False)
    log.save(line(1), line(2))
    node = Node(clock, log, rooms=("lobby",))
    node.order.offer("lobby", [line(1), line(2)])
    node.order.resync()  # the read begins before line 3 is saved: it cannot see it
    log.save(line(3), line(4))
    node.order.offer("lobby", [line(4)])  # 3's notice lost
    log.answer()
    assert node.seqs() == [1, 2] and len(log.reads) == 1
    log.answer()
    assert node.seqs() == [1, 2, 3, 4] and not node.order.gaps


def test_a_failed_read_pauses_the_room_and_is_tried_again(clock):
    log = Log()
    log.save(line(1), line(2))
    node = Node(clock, log)
    log.failing = True
    node.order.offer("lobby", [line(2)])
    clock.advance(GAP_GRACE_SECONDS)
    assert node.seqs() == [] and node.order.gaps and not log.reads
    log.failing = False
    clock.advance(READ_RETRY_SECONDS)
    assert node.seqs() == [1, 2] and not node.order.gaps


def test_a_room_deleted_while_its_read_waits_to_be_tried_again_is_forgotten(clock):
    log = Log()
    node = Node(clock, log)
    log.failing = True
    node.order.announced("lobby", 2)
    node.directory.remove(node.directory.get("lobby"))
    clock.advance(READ_RETRY_SECONDS)
    assert not node.order.gaps and not clock.getDelayedCalls()


def test_a_reconnect_reads_every_room_with_members_here(clock):
    log = Log()
    log.save(line(1), line(2), line(1, "dev"))
    node = Node(clock, log)
    node.directory.add(Room(RoomRecord("empty", "empty")))
    node.order.resync()
    assert sorted(node.delivered) == [("dev", 1), ("lobby", 1), ("lobby", 2)]
    assert not node.order.gaps


def test_a_room_without_members_here_is_not_read_but_moves_on(clock):
    log = Log()
    node = Node(clock, log, members=False)
    node.order.announced("lobby", 7)
    assert log.reads == [] and node.directory.get("lobby").last_seq == 7


def test_a_room_made_on_another_node_starts_here_at_its_number(clock):
    log = Log()
    node = Node(clock, log)
    node.order.announced("new", 7)
    node.order.offer("new", [line(8, "new")])
    node.order.announced("new", 5)  # late
    assert node.directory.deleted_seqs == {"new": 8} and node.delivered == []


def test_numbers_the_log_no_longer_has_do_not_stop_the_room(clock):
    # Pruned: 2 and 3 are gone, 4 is there.
    log = Log()
    log.save(line(1), line(4))
    node = Node(clock, log)
    node.order.offer("lobby", [line(1)])
    node.order.announced("lobby", 3)
    node.order.offer("lobby", [line(4)])
    assert node.seqs() == [1, 4] and not node.order.gaps


def test_early_lines_past_the_bound_are_read_not_kept(clock):
    log = Log(at_once=False)
    records = [line(seq) for seq in range(1, MAX_EARLY + 10)]
    log.save(*records)
    node = Node(clock, log)
    node.order.offer("lobby", records[1:])
    assert len(node.order.gaps["lobby"].early) == MAX_EARLY
    clock.advance(GAP_GRACE_SECONDS)
    while log.reads:
        log.answer()
    assert node.seqs() == list(range(1, MAX_EARLY + 10))


# --- the notices --------------------------------------------------------------


KEY = bus_key(b"k" * 32)


def through(body):
    """A body as another node reads it: sealed, sent, opened."""
    seal = Seal(KEY, "node-a", task.Clock())
    return seal.open(seal.seal("x", body)).body


def test_a_notice_carries_its_lines_if_they_are_small():
    sent = notices.read_saved(through(notices.saved("lobby", [line(3), line(4)])))
    assert sent == notices.Saved("lobby", 3, 4, (line(3), line(4)))
    big = notices.saved("lobby", [line(1, text="x" * notices.MAX_ROWS_BYTES)])
    assert notices.read_saved(through(big)) == notices.Saved("lobby", 1, 1, None)
    assert notices.read_tops(through(notices.tops({"lobby": 4}))) == notices.Tops({"lobby": 4})


def test_what_is_not_a_notice_is_dropped_and_lines_out_of_their_range_are_read():
    assert notices.read_tops({}) is None and notices.read_tops({"tops": {"a": "1"}}) is None
    for junk in ({}, {"room": "a", "first": 3, "last": 2}, {"room": 1, "first": 1, "last": 1},
                 {"room": "a", "first": True, "last": 1}):
        assert notices.read_saved(junk) is None, junk
    wrong = through({"room": "lobby", "first": 1, "last": 2, "rows": [line(1), line(3)]})
    assert notices.read_saved(wrong) == notices.Saved("lobby", 1, 2, None)
    other_room = through({"room": "lobby", "first": 1, "last": 1, "rows": [line(1, "dev")]})
    assert notices.read_saved(other_room).records is None


def test_only_fresh_notices_sealed_with_the_cluster_key_are_opened(clock):
    ours, theirs = Seal(KEY, "a", clock), Seal(bus_key(b"x" * 32), "a", clock)
    sealed = ours.seal("kick", {"name": "bob"})
    assert Seal(KEY, "b", clock).open(sealed) == Notice("kick", "a", {"name": "bob"}, ours.run)
    hearer = Seal(KEY, "b", clock)
    assert hearer.open(theirs.seal("kick", {"name": "bob"})) is None  # another key
    forged = sealed.replace(b'"bob"', b'"eve"')
    assert hearer.open(forged) is None  # changed after sealing
    for junk in (b"", b"spc1.", b"spc1.00.{}", "not bytes", b'{"k":"kick"}'):
        assert hearer.open(junk) is None, junk
    assert hearer.open(sealed) is not None
    assert hearer.open(sealed) is None  # heard twice: a replay
    old = ours.seal("kick", {"name": "bob"})
    clock.advance(MAX_AGE_SECONDS + 1)
    assert hearer.open(old) is None  # too old to be news
    early = Seal(KEY, "a", task.Clock())
    early.clock.advance(clock.seconds() + MAX_AGE_SECONDS + 1)
    assert hearer.open(early.seal("kick", {})) is None  # from too far ahead
    assert hearer.open(ours.seal("kick", {})) is not None


class Bus:
    """What a node published, opened as the other nodes open it."""

    def __init__(self, clock):
        self.sent = []
        self.reader = Seal(KEY, "reader", clock)

    def listen(self, heard, connected):
        self.heard, self.connected = heard, connected

    def publish(self, data):
        notice = self.reader.open(data)
        read = notices.read_tops if notice.kind == notices.TOPS else notices.read_saved
        self.sent.append(read(notice.body))


def test_a_node_publishes_what_it_saved_and_its_newest_numbers(clock):
    log = Log()
    log.save(line(1), line(2), line(3))
    node = Node(clock, log)
    bus = Bus(clock)
    other = Seal(KEY, "other", clock)
    cluster = ClusterNode(clock, bus, Seal(KEY, "here", clock), log.after, node.directory,
                          node.deliver)
    cluster.saved_here("lobby", [line(1)])
    assert node.seqs() == [1] and bus.sent == [notices.Saved("lobby", 1, 1, (line(1),))]
    bus.heard(other.seal(notices.SAVED, notices.saved("lobby", [line(1)])))  # heard again
    bus.heard(other.seal(notices.TOPS, notices.tops({"lobby": 3})))  # another node is further
    bus.heard(b"not ours")
    bus.heard(Seal(bus_key(b"x" * 32), "eve", clock).seal(notices.TOPS,
                                                         notices.tops({"lobby": 9})))
    bus.heard(other.seal("unknown kind", {}))
    bus.heard(other.seal(notices.TOPS, {"tops": "all"}))
    clock.advance(GAP_GRACE_SECONDS)
    # Only the sealed notices moved it; the forged "9" opened no gap.
    assert node.seqs() == [1, 2, 3] and cluster.ignored == 4
    assert node.directory.get("lobby").last_seq == 3 and not cluster.order.gaps
    clock.advance(TOPS_SECONDS)
    assert bus.sent[-1] == notices.Tops({"lobby": 3})
    reconnected = []
    cluster.on_connected.append(lambda: reconnected.append(True))
    bus.connected()  # a reconnect: reads, and says where it is
    assert bus.sent[-1] == notices.Tops({"lobby": 3}) and reconnected == [True]
    cluster.stop()
    assert not clock.getDelayedCalls()


def a_node(clock):
    """A node named "here" with rooms of its own, on a bus of its own."""
    log = Log()
    node = Node(clock, log)
    bus = Bus(clock)
    return ClusterNode(clock, bus, Seal(KEY, "here", clock), log.after, node.directory,
                       node.deliver), bus


def test_other_parts_add_their_kinds_of_notice(clock):
    cluster, bus = a_node(clock)
    heard = []
    cluster.on("kick", lambda sender, body: heard.append((sender, body)))
    with pytest.raises(ValueError):
        cluster.on("kick", lambda sender, body: None)
    with pytest.raises(ValueError):
        cluster.on(notices.SAVED, lambda sender, body: None)
    bus.heard(Seal(KEY, "there", clock).seal("kick", {"name": "bob"}))
    assert heard == [("there", {"name": "bob"})] and cluster.name == "here"
    published = []
    bus.publish = published.append
    cluster.send("kick", {"name": "carol"})
    bus.heard(published[0])  # its own, back
    assert heard[-1] == ("here", {"name": "carol"})
    cluster.stop()


def test_the_newest_numbers_go_in_notices_of_bounded_size(clock):
    log = Log()
    node = Node(clock, log, rooms=[f"room{i}" for i in range(TOPS_PER_NOTICE + 1)])
    for room in node.directory.rooms.values():
        room.last_seq = 3
    bus = Bus(clock)
    ClusterNode(clock, bus, Seal(KEY, "here", clock), log.after, node.directory,
                node.deliver).connected()
    assert [len(notice.tops) for notice in bus.sent] == [TOPS_PER_NOTICE, 1]


def test_a_handler_that_raises_costs_that_notice_only(clock):
    cluster, bus = a_node(clock)
    heard = []

    def broken(sender, body):
        if body.get("bad"):
            raise KeyError("a field the sender did not send")
        heard.append(body)

    cluster.on("news", broken)
    there = Seal(KEY, "there", clock)
    bus.heard(there.seal("news", {"bad": True}))  # raised inside the handler: not here
    bus.heard(there.seal("news", {"n": 1}))
    assert heard == [{"n": 1}] and cluster.failed == 1
    cluster.stop()


def test_a_node_that_hears_its_own_name_from_another_process_says_so(clock):
    cluster, bus = a_node(clock)
    said = []

    def observe(event):
        if event.get("log_level") == LogLevel.error:
            said.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        published = []
        bus.publish = published.append
        cluster.send(notices.TOPS, notices.tops({}))
        bus.heard(published[0])  # its own, back: nothing to say
        assert said == [] and cluster.twins == 0
        twin = Seal(KEY, "here", clock)  # another start under the same name
        bus.heard(twin.seal(notices.TOPS, notices.tops({})))
        bus.heard(twin.seal(notices.TOPS, notices.tops({})))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert cluster.twins == 2 and len(said) == 1
    assert "also node here" in said[0] and "--node" in said[0]
    cluster.stop()
