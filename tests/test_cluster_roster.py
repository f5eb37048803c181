"""Who is connected on the other nodes, sans-IO: what a node tells of its
sessions, and the rules that keep the others' rosters right when the bus
loses, delays or repeats what it says."""

from __future__ import annotations

import pytest

from spchat.cluster import roster_notices
from spchat.cluster.roster import SILENT_SECONDS, SNAPSHOT_SECONDS, RemoteRoster
from spchat.cluster.roster_announcer import CHANGE_SECONDS, RosterAnnouncer
from spchat.cluster.roster_notices import ENTRIES_PER_NOTICE, RemoteSession


def session(name, rooms=("lobby",), state="online", node="a"):
    return RemoteSession(node, f"id-{name}", name, name.lower(), f"guest:id-{name}", False,
                         frozenset(rooms), state, "127.0.0.1:1", "test/1", 1000, 1000, 1000,
                         0, 0, 0)


class Sayer:
    """A node's announcer, with the sessions it has and what it said."""

    def __init__(self, clock):
        self.have: dict[str, RemoteSession] = {}
        self.said: list[dict] = []
        self.announcer = RosterAnnouncer(clock, lambda body: self.said.append(body),
                                         lambda: dict(self.have))

    def add(self, *sessions):
        for s in sessions:
            self.have[s.id] = s
        self.announcer.tell_changes()

    def drop(self, name):
        del self.have[f"id-{name}"]
        self.announcer.tell_changes()

    def take(self):
        said, self.said = self.said, []
        return said


class Hearer:
    """Another node's roster, and the changes it reported."""

    def __init__(self, clock):
        self.changes = []
        self.roster = RemoteRoster(clock, "b", self.changed)

    def changed(self, before, after, departures):
        self.changes.append((before and before.name, after and after.name,
                             {room: d.kind for room, d in departures.items()}))

    def hear(self, bodies, node="a"):
        for body in bodies:
            self.roster.heard(node, body)

    def names(self):
        return sorted(s.name for s in self.roster.sessions())


def test_sessions_come_change_rooms_and_go_with_why(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice"), session("bob", ("lobby", "dev")))
    b.hear(a.take())
    assert b.names() == ["alice", "bob"] and set(b.roster.in_room("dev")) == {"bob"}
    a.announcer.member_left("id-bob", "dev", "kick", "bob was kicked", "carol", "spam")
    a.add(session("bob"))
    a.drop("alice")
    b.hear(a.take())
    assert b.names() == ["bob"] and b.roster.in_room("dev") == {}
    assert b.changes[-2:] == [("bob", "bob", {"dev": "kick"}), ("alice", None, {})]


def test_a_late_notice_cannot_undo_a_newer_one(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice"))
    joined = a.take()
    a.drop("alice")
    gone = a.take()
    b.hear(gone + joined)  # the join comes after the going
    assert b.names() == [] and b.changes == []
    a.add(session("bob", ("dev",)))
    moved = a.take()
    a.add(session("bob", ("lobby",)))
    b.hear(a.take() + moved)
    assert set(b.roster.in_room("lobby")) == {"bob"} and b.roster.in_room("dev") == {}


def test_a_snapshot_mends_what_was_lost_and_older_news_is_not_believed(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice"), session("bob"))
    b.hear(a.take())
    a.drop("alice")
    late = a.take()  # lost, for now
    a.add(session("carol"))
    lost = a.take()  # lost
    a.announcer.tell_all()
    b.hear(a.take())
    assert b.names() == ["bob", "carol"]
    b.hear(late + lost)
    assert b.names() == ["bob", "carol"]


def test_a_snapshot_in_parts_drops_no_one_until_all_parts_are_heard(clock):
    a, b = Sayer(clock), Hearer(clock)
    many = [session(f"user{i}") for i in range(ENTRIES_PER_NOTICE + 5)]
    a.add(*many)
    b.hear(a.take()[:1])  # the second part of the change lost
    assert len(b.names()) == ENTRIES_PER_NOTICE
    a.drop("user0")
    a.take()  # lost too
    a.announcer.tell_all()
    first, second = a.take()
    assert first["parts"] == second["parts"] == 2
    b.hear([first])
    assert "user0" in b.names()  # maybe in the part not heard yet
    b.hear([second])
    assert "user0" not in b.names() and len(b.names()) == len(many) - 1


def test_changes_are_told_together_and_snapshots_periodically(clock):
    sessions = {}
    said = []
    announcer = RosterAnnouncer(clock, said.append, lambda: dict(sessions))
    sessions["x"] = session("alice")
    announcer.changed()
    announcer.changed()
    assert said == []
    clock.advance(CHANGE_SECONDS)
    assert [(body["full"], len(body["sessions"])) for body in said] == [(False, 1)]
    announcer.changed()  # nothing changed: nothing said
    clock.advance(CHANGE_SECONDS)
    clock.advance(SNAPSHOT_SECONDS)
    assert [(body["full"], len(body["sessions"])) for body in said[1:]] == [(True, 1)]
    announcer.stop()  # going down: its sessions with it
    assert said[-1]["full"] and said[-1]["sessions"] == []
    assert not clock.getDelayedCalls()


def test_a_node_that_falls_silent_is_gone_with_its_sessions(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice", ("lobby", "dev")))
    b.hear(a.take())
    for _ in range(2):
        clock.advance(SNAPSHOT_SECONDS)
        b.hear(a.take())  # its snapshots: still there
    assert b.names() == ["alice"]
    clock.advance(SILENT_SECONDS + SNAPSHOT_SECONDS)  # it said nothing since (killed)
    assert b.names() == [] and b.roster.by_key == {} and b.roster.by_room == {}
    assert b.changes[-1] == ("alice", None, {"lobby": "quit", "dev": "quit"})


def test_a_restarted_node_drops_its_old_run_and_its_old_notices(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice"))
    old = a.take()
    b.hear(old)
    clock.advance(1)
    again = Sayer(clock)  # the same node, run again
    again.add(session("bob"))
    b.hear(again.take() + old)
    assert b.names() == ["bob"]


def test_bodies_that_do_not_parse_are_counted_and_own_notices_ignored(clock):
    a, b = Sayer(clock), Hearer(clock)
    a.add(session("alice"))
    good = a.take()[0]
    bad = [{}, {**good, "seq": -1}, {**good, "sessions": [["short"]]},
           {**good, "sessions": [good["sessions"][0][:6] + ["asleep"] + good["sessions"][0][7:]]},
           {**good, "gone": [5]}, {**good, "left": [["x"]]}, {**good, "part": 1}]
    b.hear(bad)
    assert b.roster.ignored == len(bad) and b.names() == []
    b.hear([good], node="b")  # its own name: this node's own notice
    assert b.names() == []
    assert roster_notices.read_roster("a", good) is not None


def test_admin_rows_say_their_node_only_with_other_nodes():
    from spchat import wire
    from spchat.admin import sessions_table

    alone = ("alice", "127.0.0.1:1", "connected", "test/1", 1.0, 1000, 1000, 0, 0, 0)
    clustered = ("bob", *alone[1:], "node-b")
    for rows in ([alone], [alone, clustered]):
        reply = wire.decode(wire.encode(wire.AdminReply("r", True, "ok", sessions=tuple(rows))))
        assert reply.sessions == tuple(rows)
    assert "NODE" not in sessions_table((alone,))
    assert sessions_table((clustered,)).split("\n")[1].endswith("node-b")
    too_long = wire.encode(wire.AdminReply("r", True, "ok", sessions=((*clustered, "x"),)))
    with pytest.raises(wire.WireError):
        wire.decode(too_long)
