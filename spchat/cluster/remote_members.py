"""The roster on this node: what it tells the others of its sessions, and
the others' sessions as members of its rooms.  Sans-IO: the cluster node
(``ClusterNode``: ``on``, ``send``, ``on_connected``, ``name``), a clock,
the session table, the room directory and the presence of a session here.

A remote member is listed like one here (``RoomDirectory.remote``), and
its joins, parts, quits and changes of state reach the members here as
the same events as those of members here.  A remote session whose name
is also on this node (a name held on two nodes for a moment) is left to
the one here.
"""

from __future__ import annotations

from typing import Callable

from spchat.cluster.roster import RemoteRoster
from spchat.cluster.roster_announcer import RosterAnnouncer
from spchat.cluster.roster_notices import ROSTER, Departure, RemoteSession
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.sessions import Session, SessionTable


class ClusterRoster:
    def __init__(self, clock, cluster, table: SessionTable, directory: RoomDirectory,
                 presence_state: Callable[[Session, float], str],
                 on_change: Callable[[], None] = lambda: None):
        """``on_change()``: someone elsewhere came, went or changed (the
        administrators' table, the presence beacon)."""
        self.clock = clock
        self.node = cluster.name
        self.table = table
        self.directory = directory
        self.presence_state = presence_state
        self.on_change = on_change
        self.remote = RemoteRoster(clock, cluster.name, self._changed)
        # Sessions of this node that went on on another node (by id, with
        # when): their arrival there is no join here.
        self._moved: dict[str, float] = {}
        self.announcer = RosterAnnouncer(clock, lambda body: cluster.send(ROSTER, body),
                                         self.own_sessions)
        cluster.on(ROSTER, self.remote.heard)
        cluster.on_connected.append(self.announcer.tell_all)
        directory.remote = self.remote.in_room
        directory.on_leave = self._left_here

    def changed(self) -> None:
        """A session here may have come, gone or changed."""
        self.announcer.changed()

    def stop(self) -> None:
        self.announcer.stop()
        self.remote.stop()

    def moved_away(self, session: Session) -> None:
        """A session here went on on another node: the others are told so,
        and its arrival there is no join here."""
        self._mark_moved(session.id)
        for room in sorted(session.rooms):
            self.announcer.member_left(session.id, room, MOVED, "", "", "")

    def _mark_moved(self, session_id: str) -> None:
        now = self.clock.seconds()
        self._moved.pop(session_id, None)  # oldest first, for the pruning below
        self._moved[session_id] = now
        while self._moved and now - next(iter(self._moved.values())) > MOVE_SECONDS:
            self._moved.pop(next(iter(self._moved)))

    def elsewhere(self, key: str) -> RemoteSession | None:
        """The session of the name ``key`` on another node, if any."""
        session = self.remote.by_key.get(key)
        return None if session is None or key in self.table.by_key else session

    def own_sessions(self) -> dict[str, RemoteSession]:
        now = self.clock.seconds()
        return {s.id: RemoteSession(
            self.node, s.id, s.name, s.key, s.lineage, s.registered, frozenset(s.rooms),
            self.presence_state(s, now), s.address, s.agent, _ms(s.first_connected_at),
            _ms(s.state_since), _ms(s.last_activity), s.messages_sent, s.bytes_in,
            s.bytes_out) for s in self.table.by_id.values()}

    def admin_rows(self, now: float) -> list[tuple]:
        """The other nodes' sessions in the administrators' table
        (wire.SESSION_FIELDS)."""
        return [(s.name, s.address, _SESSION_STATE[s.state], s.agent,
                 round(max(0.0, now - s.state_ms / 1000), 3), s.connected_ms, s.active_ms,
                 s.messages, s.bytes_in, s.bytes_out, s.node)
                for s in self.remote.sessions() if s.key not in self.table.by_key]

    def _left_here(self, room, session: Session, notice) -> None:
        self.announcer.member_left(session.id, room.key, notice.kind, notice.text,
                                   notice.by or "", notice.reason or "")

    def _changed(self, before: RemoteSession | None, after: RemoteSession | None,
                 departures: dict[str, Departure]) -> None:
        """A remote session came, changed or went: the news to its rooms here."""
        was = before.rooms if before is not None else frozenset()
        now = after.rooms if after is not None else frozenset()
        if after is not None:
            # A session that moves between nodes is listed by both for a
            # moment, and came from here if it moved away from this node:
            # neither is news of a join.
            moved = before is None and self._moved.pop(after.id, None) is not None
            for room in self._rooms(now - was, after):
                if moved or self.remote.listed(after.key, room.key, after) is not None:
                    self.directory.updated(room, after.name, after.key, after.state)
                else:
                    self.directory.joined(room, after.name, after.key, after.state)
        if before is not None:
            for room in self._rooms(was - now, before):
                still = self.remote.listed(before.key, room.key, after)
                if still is not None:  # it went on on another node
                    self.directory.updated(room, still.name, still.key, still.state)
                    continue
                why = departures.get(room.key) or _default(before, after is None)
                if why.kind == MOVED:  # on its way to another node: no news
                    self._mark_moved(before.id)
                    continue
                if why.kind in PUT_OUT:  # told here by the room notice of the node that did it
                    self.directory.updated(room, before.name, before.key, "gone")
                    continue
                self.directory.left(room, before.name, before.key, why.kind, why.text,
                                    why.by, why.reason)
        if before is not None and after is not None and before.state != after.state:
            for room in self._rooms(was & now, after):
                self.directory.updated(room, after.name, after.key, after.state)
        self.on_change()

    def _rooms(self, keys, session: RemoteSession) -> list[Room]:
        """The rooms here of these keys where the news of this member is news."""
        rooms = (self.directory.get(key) for key in sorted(keys))
        return [room for room in rooms if room is not None and session.key not in room.members]


# Why a session left its rooms on a node when it went on on another.
MOVED = "moved"
# Departures an operator's act caused: every node tells its members of
# them from the act's room notice (spchat.cluster.room_news), so the roster
# news of one is not told again.
PUT_OUT = ("kick", "ban")
# How long a session that moved away is remembered, for its arrival on the
# other node to be told as no join (the roster's notices come within seconds).
MOVE_SECONDS = 60.0

# A session's state in the administrators' table, from its presence.
_SESSION_STATE = {"online": "connected", "idle": "connected", "reconnecting": "reconnecting"}


def _default(session: RemoteSession, offline: bool) -> Departure:
    """Why, when the notice that said it was lost (a snapshot mended it)."""
    if offline:
        return Departure("quit", f"{session.name} left", "", "")
    return Departure("leave", f"{session.name} left", "", "")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
