"""Who is connected on the other nodes, as they tell it (``roster``
notices, see ``spchat.cluster.roster_notices``).  Sans-IO: a clock, and an
``on_change(before, after, departures)`` told of each remote session
that came, changed or went.

The rules, so that the bus may lose, delay or repeat notices:

- A node numbers what it says; what we have of each of its sessions is
  as of a number, and a notice older than that changes nothing (nor does
  one older than a session's going offline: it cannot come back).
- A snapshot is the node's every session at its number: once all its
  parts are heard, a session it does not list (and that nothing newer
  told of) is gone, and nothing older than it is believed any more.
- A node says its snapshot every ``SNAPSHOT_SECONDS``: one not heard
  from for ``SILENT_SECONDS`` is gone (killed, or cut from the bus), its
  sessions with it.  A node heard in a newer run (``boot``) restarted:
  the sessions of its old run are gone.
"""

from __future__ import annotations

from typing import Callable

from spchat.cluster.roster_notices import Departure, RemoteSession, Roster, read_roster

SNAPSHOT_SECONDS = 3.0
# Three snapshots missed, and a little more for a busy node.
SILENT_SECONDS = 10.0

# (before, after, why it left rooms: by room key); None before: new, after: gone.
Changed = Callable[[RemoteSession | None, RemoteSession | None, dict[str, Departure]], None]


class _Node:
    __slots__ = ("boot", "sessions", "seqs", "gone", "floor", "heard", "snapshot")

    def __init__(self, boot: int, now: float):
        self.boot = boot
        self.sessions: dict[str, RemoteSession] = {}  # by id
        self.seqs: dict[str, int] = {}  # by id: the number what we have of it is as of
        self.gone: dict[str, int] = {}  # by id: the number it went offline at
        self.floor = 0  # the newest whole snapshot's number: nothing older is believed
        self.heard = now
        self.snapshot: _Snapshot | None = None  # the one whose parts are coming


class _Snapshot:
    __slots__ = ("seq", "parts", "heard", "ids")

    def __init__(self, seq: int, parts: int):
        self.seq = seq
        self.parts = parts
        self.heard: set[int] = set()
        self.ids: set[str] = set()


class RemoteRoster:
    def __init__(self, clock, own: str, on_change: Changed):
        """``own``: this node's name (its own notices are not remote)."""
        self.clock = clock
        self.own = own
        self.on_change = on_change
        self.nodes: dict[str, _Node] = {}
        self.by_key: dict[str, RemoteSession] = {}
        self.by_room: dict[str, dict[str, RemoteSession]] = {}  # room key -> by session key
        # Every node's entry of each name: a session that moves to another
        # node is listed by both for a moment (the new node tells of it
        # before the old one hears that it left).
        self.copies: dict[str, list[RemoteSession]] = {}
        self.ignored = 0  # notices that did not parse
        self._call = clock.callLater(SNAPSHOT_SECONDS, self._sweep)

    def sessions(self) -> list[RemoteSession]:
        return [s for node in self.nodes.values() for s in node.sessions.values()]

    def in_room(self, key: str) -> dict[str, RemoteSession]:
        """The remote members of the room ``key``, by session key."""
        return self.by_room.get(key, {})

    def listed(self, key: str, room: str, besides: RemoteSession | None) -> RemoteSession | None:
        """An entry of the name ``key`` in the room ``room`` other than
        ``besides``: the same member, on another node."""
        for copy in self.copies.get(key, ()):
            if copy is not besides and room in copy.rooms:
                return copy
        return None

    def heard(self, node: str, body: dict) -> None:
        if node == self.own:
            return
        roster = read_roster(node, body)
        if roster is None:
            self.ignored += 1
            return
        state = self.nodes.get(node)
        if state is not None and roster.boot < state.boot:
            return  # from its run before a restart
        if state is None or roster.boot > state.boot:
            if state is not None:
                self._forget(state, "restarted")
            state = self.nodes[node] = _Node(roster.boot, self.clock.seconds())
        state.heard = self.clock.seconds()
        if roster.seq <= state.floor:
            return  # older than a whole snapshot
        for session in roster.sessions:
            self._set(state, roster.seq, session, roster.left.get(session.id, {}))
        for session_id in roster.gone:
            self._remove(state, roster.seq, session_id, roster.left.get(session_id, {}))
        if roster.full:
            self._snapshot_part(state, roster)

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()

    # --- the rules ---------------------------------------------------------------

    def _set(self, state: _Node, seq: int, session: RemoteSession, left) -> None:
        if seq <= state.seqs.get(session.id, 0) or seq <= state.gone.get(session.id, 0):
            return
        before = state.sessions.get(session.id)
        state.seqs[session.id] = seq
        if before == session:
            return  # a snapshot's news of most: nothing new
        state.sessions[session.id] = session
        if before is not None:
            self._unindex(before)
        self._index(session)
        self.on_change(before, session, left)

    def _remove(self, state: _Node, seq: int, session_id: str, left) -> None:
        if seq <= state.seqs.get(session_id, 0):
            return  # something newer says it is there
        state.gone[session_id] = max(seq, state.gone.get(session_id, 0))
        state.seqs.pop(session_id, None)
        before = state.sessions.pop(session_id, None)
        if before is not None:
            self._unindex(before)
            self.on_change(before, None, left)

    def _snapshot_part(self, state: _Node, roster: Roster) -> None:
        snap = state.snapshot
        if snap is None or snap.seq < roster.seq:
            snap = state.snapshot = _Snapshot(roster.seq, roster.parts)
        if snap.seq != roster.seq or snap.parts != roster.parts:
            return  # a part of an older one, come late
        snap.heard.add(roster.part)
        snap.ids.update(s.id for s in roster.sessions)
        if len(snap.heard) < snap.parts:
            return
        state.snapshot = None
        for session_id in [i for i in state.sessions if i not in snap.ids]:
            self._remove(state, snap.seq, session_id, {})
        state.floor = snap.seq
        state.gone = {i: seq for i, seq in state.gone.items() if seq > snap.seq}

    def _sweep(self) -> None:
        now = self.clock.seconds()
        for name, state in list(self.nodes.items()):
            if now - state.heard >= SILENT_SECONDS:
                del self.nodes[name]
                self._forget(state, "its server is gone")
        self._call = self.clock.callLater(SNAPSHOT_SECONDS, self._sweep)

    def _forget(self, state: _Node, why: str) -> None:
        """Every session of a node that is gone."""
        sessions, state.sessions = state.sessions, {}
        for session in sessions.values():
            self._unindex(session)
            quit_ = Departure("quit", f"{session.name} left ({why})", "", why)
            self.on_change(session, None, {room: quit_ for room in session.rooms})

    def _index(self, session: RemoteSession) -> None:
        self.copies.setdefault(session.key, []).append(session)
        self.by_key[session.key] = session
        for room in session.rooms:
            self.by_room.setdefault(room, {})[session.key] = session

    def _unindex(self, session: RemoteSession) -> None:
        copies = [copy for copy in self.copies.get(session.key, ()) if copy is not session]
        if copies:
            self.copies[session.key] = copies
        else:
            self.copies.pop(session.key, None)
        if self.by_key.get(session.key) is session:
            if copies:  # still listed by another node
                self.by_key[session.key] = copies[-1]
            else:
                del self.by_key[session.key]
        for room in session.rooms:
            members = self.by_room.get(room, {})
            if members.get(session.key) is session:
                other = self.listed(session.key, room, session)
                if other is not None:
                    members[session.key] = other
                else:
                    del members[session.key]
                    if not members:
                        del self.by_room[room]
