"""The bus between nodes, sans-IO: each room's lines delivered once and in
order whichever way they come, and what goes over the bus."""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet import defer

from spchat.cluster import notices
from spchat.cluster.node import TOPS_PER_NOTICE, TOPS_SECONDS, ClusterNode
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


def test_a_notice_carries_its_lines_if_they_are_small():
    sent = notices.decode(notices.saved("lobby", [line(3), line(4)]))
    assert sent == notices.Saved("lobby", 3, 4, (line(3), line(4)))
    big = notices.decode(notices.saved("lobby", [line(1, text="x" * notices.MAX_ROWS_BYTES)]))
    assert big == notices.Saved("lobby", 1, 1, None)
    assert notices.decode(notices.tops({"lobby": 4})) == notices.Tops({"lobby": 4})


def test_what_is_not_a_notice_is_dropped_and_lines_out_of_their_range_are_read():
    for junk in (b"\xff", b"[]", b"{}", b'{"v":2,"tops":{}}', b'{"v":1,"tops":{"a":"1"}}',
                 b'{"v":1,"room":"a","first":3,"last":2}', b'{"v":1,"room":1,"first":1,"last":1}'):
        assert notices.decode(junk) is None, junk
    wrong = json.dumps({"v": 1, "room": "lobby", "first": 1, "last": 2,
                        "rows": [list(line(1)), list(line(3))]})
    assert notices.decode(wrong) == notices.Saved("lobby", 1, 2, None)
    other_room = json.dumps({"v": 1, "room": "lobby", "first": 1, "last": 1,
                             "rows": [list(line(1, "dev"))]})
    assert notices.decode(other_room).records is None


class Bus:
    def __init__(self):
        self.sent = []

    def listen(self, heard, connected):
        self.heard, self.connected = heard, connected

    def publish(self, data):
        self.sent.append(notices.decode(data))


def test_a_node_publishes_what_it_saved_and_its_newest_numbers(clock):
    log = Log()
    log.save(line(1), line(2), line(3))
    node = Node(clock, log)
    bus = Bus()
    cluster = ClusterNode(clock, bus, log.after, node.directory, node.deliver)
    cluster.saved_here("lobby", [line(1)])
    assert node.seqs() == [1] and bus.sent == [notices.Saved("lobby", 1, 1, (line(1),))]
    bus.heard(notices.saved("lobby", [line(1)]))  # its own, back
    bus.heard(notices.tops({"lobby": 3}))  # another node is further
    bus.heard(b"not ours")
    clock.advance(GAP_GRACE_SECONDS)
    assert node.seqs() == [1, 2, 3] and cluster.ignored == 1
    clock.advance(TOPS_SECONDS)
    assert bus.sent[-1] == notices.Tops({"lobby": 3})
    bus.connected()  # a reconnect: reads, and says where it is
    assert bus.sent[-1] == notices.Tops({"lobby": 3})
    cluster.stop()
    assert not clock.getDelayedCalls()


def test_the_newest_numbers_go_in_notices_of_bounded_size(clock):
    log = Log()
    node = Node(clock, log, rooms=[f"room{i}" for i in range(TOPS_PER_NOTICE + 1)])
    for room in node.directory.rooms.values():
        room.last_seq = 3
    bus = Bus()
    ClusterNode(clock, bus, log.after, node.directory, node.deliver).connected()
    assert [len(notice.tops) for notice in bus.sent] == [TOPS_PER_NOTICE, 1]
