"""What this node tells the others about its own sessions (``roster``
notices, see ``spchat.cluster.roster_notices``).  Sans-IO: a clock, a
``send(body)`` onto the bus and ``sessions()``: this node's sessions now,
as ``RemoteSession`` entries by id.

A change (a login, a session going offline, a join or part, a state
changed) is told ``CHANGE_SECONDS`` later, with whatever else changed
meanwhile: what differs from what was told last.  Every
``SNAPSHOT_SECONDS``, and on each (re)connection to the bus, all of them:
a change lost on the bus is mended by the next snapshot, and the
snapshot is what tells the others this node is still there.
"""

from __future__ import annotations

from typing import Callable

from spchat.cluster import roster_notices
from spchat.cluster.roster import SNAPSHOT_SECONDS
from spchat.cluster.roster_notices import ENTRIES_PER_NOTICE, RemoteSession

# Changes of a join storm go in a few notices, not one each.
CHANGE_SECONDS = 0.05


class RosterAnnouncer:
    def __init__(self, clock, send: Callable[[dict], None],
                 sessions: Callable[[], dict[str, RemoteSession]]):
        self.clock = clock
        self.send = send
        self.sessions = sessions
        self.boot = int(clock.seconds() * 1000)  # this run: greater than the one before
        self.seq = 0
        self.told: dict[str, RemoteSession] = {}
        self.left: list[list] = []  # [session id, room key, kind, text, by, reason]
        self._soon = None
        self.stopped = False
        self._every = clock.callLater(SNAPSHOT_SECONDS, self._periodic)

    def changed(self) -> None:
        """Something may have changed: told soon, with what else does."""
        if self._soon is None and not self.stopped:
            self._soon = self.clock.callLater(CHANGE_SECONDS, self.tell_changes)

    def member_left(self, session_id: str, room: str, kind: str, text: str, by: str,
                    reason: str) -> None:
        self.left.append([session_id, room, kind, text, by, reason])
        self.changed()

    def tell_changes(self) -> None:
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        now = self.sessions()
        fresh = [s.entry() for i, s in now.items() if not s.same_standing(self.told.get(i))]
        gone = [i for i in self.told if i not in now]
        left, self.left = self.left, []
        self.told = now
        step = ENTRIES_PER_NOTICE
        for start in range(0, max(len(fresh), len(gone), len(left)), step):  # each bounded
            self.seq += 1
            self.send(roster_notices.change(self.boot, self.seq, fresh[start:start + step],
                                            gone[start:start + step], left[start:start + step]))

    def tell_all(self) -> None:
        """Every session: after a (re)connection, and periodically."""
        self.tell_changes()  # first, with why members left their rooms
        self.seq += 1
        for body in roster_notices.snapshot(self.boot, self.seq,
                                            [s.entry() for s in self.told.values()]):
            self.send(body)

    def stop(self) -> None:
        """This node is going down: its sessions go with it (a last,
        empty snapshot; if it is lost, the others see the node fall silent)."""
        if not self.stopped:
            self.seq += 1
            for body in roster_notices.snapshot(self.boot, self.seq, []):
                self.send(body)
        self.stopped = True
        for call in (self._soon, self._every):
            if call is not None and call.active():
                call.cancel()

    def _periodic(self) -> None:
        self.tell_all()
        self._every = self.clock.callLater(SNAPSHOT_SECONDS, self._periodic)
