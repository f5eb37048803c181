"""Rooms changed on one node, seen on the others.

After a change of a room's state is saved (its topic, modes, roles, bans,
mutes, voices; the room made or deleted), its node sends a ``room`` notice:
the room's key, the notice its members were told, and whom it put out of
the room (a kick or a ban of someone who may be on another node).  Each
other node reads the room again from the database (the truth: the notice
only says "read it") and tells its own members what changed
(``spchat.server.room_sync``).

The bus may lose a notice: every room is read again when this node
(re)joins the bus, and every ``CHECK_SECONDS``.  A read begun before a
change this node made to that room may be stale: it is read again.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from spchat import wire

ROOM = "room"
CHECK_SECONDS = 60.0
READ_RETRY_SECONDS = 5.0
MAX_AGAIN = 1000  # notices kept while the database cannot be read
MAX_TEXT_CHARS = 2000
_NOTICE_FIELDS = ("kind", "text", "name", "by", "reason")

log = Logger()


@dataclass(frozen=True)
class RoomNotice:
    room: str  # the room's key
    notice: wire.Notice | None  # what its members were told ("room" and "ts" are the reader's)
    leave: tuple[str, str, str] | None = None  # (key, code, text): put out of the room
    invite: tuple[str, str] | None = None  # (key, text): let in, and told so


def body(key: str, notice: wire.Notice | None, leave: tuple[str, str, str] | None = None,
         invite: tuple[str, str] | None = None) -> dict:
    return {"room": key,
            "notice": None if notice is None else [getattr(notice, f) for f in _NOTICE_FIELDS],
            "leave": None if leave is None else list(leave),
            "invite": None if invite is None else list(invite)}


def read_room_notice(body: dict) -> RoomNotice | None:
    """The body of a ``room`` notice, or None if it does not parse."""
    key, notice = body.get("room"), body.get("notice")
    leave, invite = body.get("leave"), body.get("invite")
    if not isinstance(key, str) or not _texts([key], 1):
        return None
    if not (notice is None or _texts(notice, len(_NOTICE_FIELDS))):
        return None
    if not (leave is None or _texts(leave, 3)) or not (invite is None or _texts(invite, 2)):
        return None
    return RoomNotice(key, None if notice is None else wire.Notice(key, 0, *notice),
                      None if leave is None else tuple(leave),
                      None if invite is None else tuple(invite))


def _texts(value, count: int) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) and len(v) <= MAX_TEXT_CHARS for v in value))


class RoomNews:
    def __init__(self, clock, cluster, store, commands):
        """``cluster``: this node's ``ClusterNode``; ``store``: its
        ``IRoomStore``; ``commands``: its ``RoomCommands`` (their writes,
        and their ``sync`` that takes a room as read)."""
        self.clock = clock
        self.cluster = cluster
        self.store = store
        self.commands = commands
        self.stopped = False
        self.reads = 0  # of one room, or of all (for the tests and the figures)
        # Reads of each room begun: what a read of all rooms begun before
        # one of them says of that room is older than what that one says.
        self._read_rooms: dict[str, int] = {}
        # Reads under way: with none, nothing is compared with the counts
        # (these and ``commands.writes``), which start again from nothing.
        self._reading = 0
        self._again: list[RoomNotice] = []  # reads that failed, tried again together
        self._again_all = False  # too many of them: every room read again instead
        self._retry = None
        commands.tell_nodes = self.send
        cluster.on(ROOM, self._heard)
        cluster.on_connected.append(self.check)
        self._timer = clock.callLater(CHECK_SECONDS, self._check_again)

    def send(self, key: str, notice: wire.Notice | None,
             leave: tuple[str, str, str] | None = None,
             invite: tuple[str, str] | None = None) -> None:
        if not self.stopped:
            self.cluster.send(ROOM, body(key, notice, leave, invite))

    def _heard(self, node: str, notice: dict) -> None:
        if node == self.cluster.name or self.stopped:
            return  # told here when it was made
        news = read_room_notice(notice)
        if news is None:
            self.cluster.drop("a room notice that does not parse")
            return
        self._read(news)

    def _read(self, news: RoomNotice) -> None:
        if self.stopped:
            return
        # On the store's writer: it sees the changes this node asked for
        # before, and two reads of a room come back in order.
        self._begin()
        asked = self.commands.writes.get(news.room, 0)
        self.reads += 1
        self._read_rooms[news.room] = self._read_rooms.get(news.room, 0) + 1
        d = self.store.room(news.room)
        d.addCallbacks(self._got, self._failed, (news, asked), None, (news,))
        d.addBoth(self._ended)

    def _begin(self) -> None:
        if not self._reading:
            self._forget_counts()
        self._reading += 1

    def _ended(self, _) -> None:
        self._reading -= 1
        if not self._reading:
            self._forget_counts()

    def _forget_counts(self) -> None:
        """No read under way: none compares the counts so far."""
        self._read_rooms.clear()
        self.commands.writes.clear()

    def _got(self, record, news: RoomNotice, asked: int) -> None:
        if self.stopped:
            return
        if self.commands.writes.get(news.room, 0) != asked:
            self._read(news)  # changed here meanwhile: read behind that change
            return
        self.commands.sync.apply(news.room, record, news.notice, news.leave, news.invite)

    def _failed(self, failure, news: RoomNotice) -> None:
        if self.stopped:
            return
        if not self._again:  # once for each time the database goes away
            log.warn("cannot read room #{room} as another node changed it: {error}; "
                     "trying again", room=news.room, error=failure.getErrorMessage())
        if len(self._again) < MAX_AGAIN:
            self._again.append(news)
        else:  # the rooms' state is caught up; what was told with them is not
            self._again_all = True
        if self._retry is None:
            self._retry = self.clock.callLater(READ_RETRY_SECONDS, self._read_again)

    def _read_again(self) -> None:
        self._retry = None
        again, self._again = self._again, []
        for news in again:
            self._read(news)
        if self._again_all:
            self._again_all = False
            self.check()

    # --- notices lost: every room read again ----------------------------------------

    def check(self) -> None:
        """Every room as the database has it (after this node's own
        changes are saved): what a lost notice said is caught up."""
        if not self.stopped:
            self.commands.after_writes(self._read_all)

    def _read_all(self) -> None:
        if self.stopped:
            return
        if self.commands.writing:  # asked for since: what is counted must be saved
            self.commands.after_writes(self._read_all)
            return
        self._begin()
        asked = self._changes()
        self.reads += 1
        d = self.store.load()
        d.addCallbacks(self._got_all, self._failed_all, (asked,))
        d.addBoth(self._ended)

    def _changes(self) -> dict[str, tuple[int, int]]:
        """Each room's writes asked for here and reads begun, so far."""
        writes, reads = self.commands.writes, self._read_rooms
        return {key: (writes.get(key, 0), reads.get(key, 0)) for key in set(writes) | set(reads)}

    def _got_all(self, records, asked: dict[str, tuple[int, int]]) -> None:
        if self.stopped:
            return
        now = self._changes()
        kept = {record.key: record for record in records}
        for key in sorted(set(kept) | set(self.commands.directory.rooms)):
            if now.get(key) != asked.get(key):
                continue  # changed here or read again since: that is newer
            if key in kept:
                self.commands.sync.apply(key, kept[key])
            else:  # deleted? Its members would be put out: made sure of first
                self._read(RoomNotice(key, None))

    def _failed_all(self, failure) -> None:
        if not self.stopped:
            log.warn("cannot read the rooms to compare with the other nodes': {error}",
                     error=failure.getErrorMessage())

    def _check_again(self) -> None:
        self.check()
        self._timer = self.clock.callLater(CHECK_SECONDS, self._check_again)

    def stop(self) -> None:
        self.stopped = True
        for timer in (self._timer, self._retry):
            if timer is not None and timer.active():
                timer.cancel()
