"""Each room's saved lines, delivered on this node once each and in the
room's order, whichever way they came: this node's own commits, the bus,
or a read of the database.

Sans-IO: a clock, the room directory, a ``read_after(conversation, seq,
limit)`` that fires with records (``IMessageLog.after``) and a
``deliver(records)`` that fans consecutive lines of one room out to its
members here and sets the room's ``last_seq``.

``Room.last_seq`` is the watermark: the newest number delivered here.
Lines that follow it go out at once.  Lines further on (a notice lost or
late, another node's commit that came first), or a notice that only says
which numbers exist, open a gap: from then on nothing of that room goes
out until what is missing has been read from the database; the lines that
came meanwhile wait (up to ``MAX_EARLY``; the rest are read too).  A gap
that the bus may still fill (a line further on: the lines between are
likely on their way) is given ``GAP_GRACE_SECONDS`` first.  A line
at or below the watermark was delivered already and is dropped: a node's
own commits coming back from the bus, a notice heard twice.
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from spchat.server.records import Record, room_conversation
from spchat.server.rooms import RoomDirectory

PAGE_RECORDS = 200
# Lines of one room kept while its gap is read; more are read again.
MAX_EARLY = 1000
READ_RETRY_SECONDS = 1.0
# A gap opened by a line further on waits this long for the lines between
# before it reads them: they are usually a moment behind on the bus
# (another node's commit, numbered first), and the database is spared a
# read for each batch when several nodes write to one room.
GAP_GRACE_SECONDS = 0.05

log = Logger()


class _Gap:
    __slots__ = ("top", "early", "reading", "asked", "timer")

    def __init__(self, top: int):
        self.top = top  # the newest number known to exist
        self.early: dict[int, Record] = {}  # lines past the gap, by number
        self.reading = False
        # ``top`` when the last read began: a notice is sent after its
        # commit, so that read sees every line up to there.
        self.asked = 0
        self.timer = None  # a read later: after the grace, or tried again


class RoomOrder:
    def __init__(self, clock, directory: RoomDirectory,
                 read_after: Callable, deliver: Callable[[list[Record]], None],
                 page: int = PAGE_RECORDS):
        self.clock = clock
        self.directory = directory
        self.read_after = read_after
        self.deliver = deliver
        self.page = page
        self.gaps: dict[str, _Gap] = {}  # by room key
        self.stopped = False
        self.reads = 0  # of the database, for gaps (backfills)

    def offer(self, key: str, records: list[Record]) -> None:
        """Saved lines of the room ``key``, consecutive, in order."""
        room = self.directory.get(key)
        if room is None or self.stopped:
            self._elsewhere(key, records[-1].seq)
            return
        fresh = [r for r in records if r.seq > room.last_seq]
        if not fresh:
            return
        gap = self.gaps.get(key)
        if gap is None and fresh[0].seq == room.last_seq + 1:
            self.deliver(fresh)
            return
        opened = gap is None
        gap = self._gap(key, fresh[-1].seq)
        for record in fresh:
            if len(gap.early) >= MAX_EARLY:
                break
            gap.early[record.seq] = record
        if not gap.reading:
            self._deliver_early(room, gap)  # what the gap waited for, come by the bus
            if room.last_seq >= gap.top and not gap.early:
                self._close(key, gap)
                return
        self._mind(key, gap, GAP_GRACE_SECONDS if opened else 0.0)

    def announced(self, key: str, last: int, grace: bool = False) -> None:
        """The room ``key`` has lines up to ``last`` (a notice without them).
        ``grace``: their notices may still come (a node's newest numbers)."""
        room = self.directory.get(key)
        if room is None or self.stopped:
            self._elsewhere(key, last)
            return
        if last <= room.last_seq:
            return
        self._mind(key, self._gap(key, last), GAP_GRACE_SECONDS if grace else 0.0)

    def resync(self) -> None:
        """Notices may have been lost (the bus was away): every room with
        members here reads what came since its watermark."""
        for key, room in list(self.directory.rooms.items()):
            if _anyone_here(room):
                gap = self._gap(key, room.last_seq)
                gap.asked = -1  # a read under way began before: one more after it
                self._mind(key, gap)

    def stop(self) -> None:
        self.stopped = True
        for gap in self.gaps.values():
            if gap.timer is not None and gap.timer.active():
                gap.timer.cancel()
        self.gaps.clear()

    def _elsewhere(self, key: str, last: int) -> None:
        """A room this node does not have (none of its members are here):
        made here later, it starts at its number, its lines so far history."""
        seqs = self.directory.deleted_seqs
        seqs[key] = max(seqs.get(key, 0), last)

    # --- the gaps -------------------------------------------------------------

    def _gap(self, key: str, top: int) -> _Gap:
        gap = self.gaps.get(key)
        if gap is None:
            gap = self.gaps[key] = _Gap(top)
        gap.top = max(gap.top, top)
        return gap

    def _close(self, key: str, gap: _Gap) -> None:
        if gap.timer is not None and gap.timer.active():
            gap.timer.cancel()
        del self.gaps[key]

    def _mind(self, key: str, gap: _Gap, wait: float = 0.0) -> None:
        """Read the gap now, or in ``wait`` seconds (unless it closes first)."""
        if gap.reading or gap.timer is not None:
            return
        room = self.directory.get(key)
        if room is None:  # deleted meanwhile
            del self.gaps[key]
            return
        if not _anyone_here(room):
            # Nobody to deliver to: a later join reads the room's history.
            room.last_seq = max(room.last_seq, gap.top)
            del self.gaps[key]
            return
        if wait > 0:
            gap.timer = self.clock.callLater(wait, self._again, key, gap)
            return
        gap.reading = True
        gap.asked = gap.top
        self.reads += 1
        d = self.read_after(room_conversation(key), room.last_seq, self.page)
        d.addCallbacks(self._read, self._failed, (key, gap), None, (key, gap))

    def _read(self, records: list[Record], key: str, gap: _Gap) -> None:
        gap.reading = False
        room = self.directory.get(key)
        if self.gaps.get(key) is not gap or room is None:
            self.gaps.pop(key, None)
            return  # stopped, or the room deleted meanwhile
        before = room.last_seq
        fresh = [r for r in records if r.seq > room.last_seq]
        if fresh:
            self.deliver(fresh)
        self._deliver_early(room, gap)
        if room.last_seq >= gap.top and not gap.early:
            del self.gaps[key]
        elif len(records) >= self.page or room.last_seq > before or gap.top > gap.asked:
            self._mind(key, gap)  # more to read, or news of more during the read
        else:
            # The log has nothing past the watermark, yet a notice said
            # there is more: numbers deleted since (a room deleted, old
            # lines pruned).  What waits goes, and the room goes on.
            waiting = [gap.early[seq] for seq in sorted(gap.early) if seq > room.last_seq]
            if waiting:
                self.deliver(waiting)
            room.last_seq = max(room.last_seq, gap.top)
            del self.gaps[key]

    def _deliver_early(self, room, gap: _Gap) -> None:
        for seq in [seq for seq in gap.early if seq <= room.last_seq]:
            del gap.early[seq]
        run = []
        seq = room.last_seq + 1
        while seq in gap.early:
            run.append(gap.early.pop(seq))
            seq += 1
        if run:
            self.deliver(run)

    def _failed(self, failure, key: str, gap: _Gap) -> None:
        gap.reading = False
        if self.gaps.get(key) is not gap:
            return
        log.warn("cannot read the missed lines of #{room}: {error}; trying again",
                 room=key, error=failure.getErrorMessage())
        gap.timer = self.clock.callLater(READ_RETRY_SECONDS, self._again, key, gap)

    def _again(self, key: str, gap: _Gap) -> None:
        gap.timer = None
        if self.gaps.get(key) is gap:
            self._mind(key, gap)


def _anyone_here(room) -> bool:
    return room is not None and any(m.link is not None for m in room.members.values())
