"""Direct messages to a session on another node: carried there on the bus,
delivered there once each and in the conversation's order.  Sans-IO: a
clock, the cluster node (``on``, ``send``), the session table, the
store's ``after`` and ``last_before_time``, and a ``deliver(session,
record)`` that sends a saved direct line to a session here.

The sender's node saves the line (numbering it in its conversation) and
sends it on the bus (``direct`` notice); the node that has the recipient
delivers it.  Its lines and those saved here (the session's own, whose
copy is its acknowledgement) come in two streams, in either order, and
the bus may lose a notice: so every direct line to a session here goes
through ``send``, which keeps, for each session and conversation, the
number up to which it has had everything (its floor).  The line after
the floor goes out at once, and those after it that waited; a line
further on waits ``GAP_GRACE_SECONDS`` for the ones between, then they
are read from the database.  Nothing is sent twice, and nothing
overtakes a line before it (a client keeps only the newest number of
each conversation).  A conversation's first line starts after its newest
number when the session's connection was made (older ones are the
replay's, which tells what it sent with ``reached``).

A line the session's client sends again after a resume, saved before, is
acknowledged once more (``again``): the client waits for it, so it is
never dropped as reached.  At or below the floor nothing before it is
missing and it goes at once; above, it takes its turn like any line, after
the lines before it (another node's, maybe still on the bus).

A notice is lost only while a node is cut from the bus: when it is back,
it says again the lines it saved since it was last connected (the newest
``RESEND_MAX``, of the last ``RESEND_SECONDS``), and it reads those sent
to its sessions since then (a page each): what reached them already is
left out as above.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.logger import Logger

from spchat.server.records import Record
from spchat.server.sessions import Session, SessionTable

DIRECT = "direct"
GAP_GRACE_SECONDS = 0.2
READ_RETRY_SECONDS = 1.0
PAGE_RECORDS = 200
# Lines of one conversation from the bus that wait for a gap; more are read.
MAX_EARLY = 1000
RESEND_MAX = 1000
RESEND_SECONDS = 600.0
_FIELDS = len(Record._fields)

log = Logger()


class _Thread:
    """One direct conversation of one session here."""

    __slots__ = ("floor", "above", "early", "acks", "timer", "reading")

    def __init__(self):
        self.floor: int | None = None  # every number up to here reached it (None: unknown yet)
        self.above: set[int] = set()  # numbers past the floor that reached it
        self.early: dict[int, Record] = {}  # lines from the bus that wait for a gap
        self.acks: dict[int, Record] = {}  # sent again, while the floor is unknown
        self.timer = None
        self.reading = False


class DirectCarrier:
    def __init__(self, clock, cluster, sessions: SessionTable, read_after: Callable,
                 last_before_time: Callable, read_since: Callable,
                 deliver: Callable[[Session, Record], None]):
        """``read_after``: ``IMessageLog.after``; ``last_before_time``: its
        namesake; ``read_since(session, since_ms)``: a page of the direct
        lines to a session since then (``IMessageLog.direct_since``)."""
        self.clock = clock
        self.read_since = read_since
        self.cluster = cluster
        self.sessions = sessions
        self.read_after = read_after
        self.last_before_time = last_before_time
        self.deliver = deliver
        # By session id, then conversation.
        self.threads: dict[str, dict[str, _Thread]] = {}
        self.sent: deque[tuple[float, Record]] = deque(maxlen=RESEND_MAX)
        self.connected_at: float | None = None  # when the bus was last (re)joined
        self.ignored = 0  # notices whose body did not parse
        self.reads = 0  # of the database, for gaps
        self.stopped = False
        cluster.on(DIRECT, self._heard)
        cluster.on_connected.append(self.connected)

    def saved(self, record: Record) -> None:
        """A direct line saved here, to someone not here: to every node."""
        self.sent.append((self.clock.seconds(), record))
        self.cluster.send(DIRECT, {"row": list(record)})

    def send(self, session: Session, record: Record) -> None:
        """A direct line saved here, to (or from) a session here: to it in order."""
        self._take(session, record)

    def again(self, session: Session, record: Record) -> None:
        """The session's own line, saved before, sent again by its client:
        acknowledged once more, in order (see the module's docstring)."""
        self._take(session, record, again=True)

    def reached(self, session: Session, record: Record) -> None:
        """A direct line reached a session here another way (a replay)."""
        self._mark(self._thread(session, record.conversation), record.seq)

    def connected(self) -> None:
        """Back on the bus: what may have been lost meanwhile, said again
        and read."""
        now = self.clock.seconds()
        since, self.connected_at = self.connected_at, now
        if since is None:
            return  # the first time: nothing was said before
        since = max(since, now - RESEND_SECONDS)
        for saved_at, record in self.sent:
            if saved_at >= since:
                self.cluster.send(DIRECT, {"row": list(record)})
        for session in list(self.sessions.by_id.values()):
            self.reads += 1
            self.read_since(session, int(since * 1000)).addCallbacks(
                self._missed, self._missed_unread, (session,), None, (session,))

    def forget(self, session: Session) -> None:
        """The session went offline."""
        for thread in self.threads.pop(session.id, {}).values():
            if thread.timer is not None and thread.timer.active():
                thread.timer.cancel()

    def stop(self) -> None:
        self.stopped = True
        for session_id in list(self.threads):
            for thread in self.threads.pop(session_id).values():
                if thread.timer is not None and thread.timer.active():
                    thread.timer.cancel()

    # --- heard on the bus ------------------------------------------------------------

    def _heard(self, node: str, body: dict) -> None:
        record = _record(body.get("row"))
        if record is None:
            self.ignored += 1
            return
        if node != self.cluster.name:  # else saved here: delivered here already
            self._offer(record)

    def _missed(self, records: list[Record], session: Session) -> None:
        for record in records:
            if record.to_key == session.key:
                self._offer(record)

    def _missed_unread(self, failure, session: Session) -> None:
        log.warn("cannot read the direct messages to {name} after the bus was away: {error}",
                 name=session.name, error=failure.getErrorMessage())

    def _offer(self, record: Record) -> None:
        """A saved direct line, maybe for a session here."""
        session = self.sessions.by_key.get(record.to_key or "")
        if session is not None and record.readable_by(session.lineage):
            self._take(session, record)

    def _take(self, session: Session, record: Record, again: bool = False) -> None:
        if self.stopped:
            return
        thread = self._thread(session, record.conversation)
        if thread.floor is None and not thread.reading:
            self._start(session, thread, record.conversation)
        if thread.floor is None and again:
            thread.acks[record.seq] = record  # at once or in turn: the floor tells
            return
        if thread.floor is not None and (record.seq <= thread.floor
                                         or record.seq in thread.above):
            if again:  # nothing before it is missing
                self.deliver(session, record)
            return  # else heard twice, or read already
        if len(thread.early) < MAX_EARLY:
            thread.early[record.seq] = record
        self._release(session, thread, record.conversation)

    def _start(self, session: Session, thread: _Thread, conversation: str) -> None:
        """A conversation's first line from the bus: its floor is where the
        session's replay started it, the position its client named (it has
        every line up to there); for one it named none, the newest number
        before the time the replay started the others from, or, with no
        replay, before the connection was made.  By time alone, a line
        accepted before the connection and saved after the replay read the
        log would be taken for the replay's, and never reach it."""
        thread.reading = True
        named = session.replayed_from.get(conversation)
        if named is not None:
            self._floor_found(named, session, thread, conversation)
            return
        link = session.link
        opened = int((link.opened_at if link is not None else session.state_since) * 1000)
        since = opened if session.replayed_since is None else min(session.replayed_since, opened)
        self.reads += 1
        self.last_before_time(conversation, since).addCallbacks(
            self._floor_found, self._read_failed, (session, thread, conversation), None,
            (session, thread, conversation))

    def _floor_found(self, newest: int, session: Session, thread: _Thread,
                     conversation: str) -> None:
        thread.reading = False
        if self._gone(session):
            return
        thread.floor = max(newest, thread.floor or 0)
        self._mark(thread, thread.floor)
        acks, thread.acks = thread.acks, {}
        for record in acks.values():
            self._take(session, record, again=True)
        self._release(session, thread, conversation)

    # --- in order ---------------------------------------------------------------------

    def _release(self, session: Session, thread: _Thread, conversation: str) -> None:
        """The lines that follow the floor go out; a gap before the others
        is read after its grace."""
        if thread.reading or thread.floor is None:
            return
        while thread.floor + 1 in thread.early:
            record = thread.early.pop(thread.floor + 1)
            self._mark(thread, record.seq)
            self.deliver(session, record)
        for seq in [s for s in thread.early if s <= thread.floor or s in thread.above]:
            del thread.early[seq]  # reached it meanwhile by another way
        if thread.early and thread.timer is None:
            thread.timer = self.clock.callLater(GAP_GRACE_SECONDS, self._read, session,
                                                thread, conversation)
        elif not thread.early and thread.timer is not None and thread.timer.active():
            thread.timer.cancel()  # the lines between came by the bus
            thread.timer = None

    def _read(self, session: Session, thread: _Thread, conversation: str) -> None:
        thread.timer = None
        if self._gone(session) or not thread.early:
            return
        thread.reading = True
        self.reads += 1
        top = max(thread.early)  # saved before the read began: it sees all up to there
        self.read_after(conversation, thread.floor, PAGE_RECORDS, session.lineage).addCallbacks(
            self._read_back, self._read_failed, (session, thread, conversation, top), None,
            (session, thread, conversation))

    def _read_back(self, records: list[Record], session: Session, thread: _Thread,
                   conversation: str, top: int) -> None:
        thread.reading = False
        if self._gone(session) or thread.floor is None:
            return
        for record in records:
            if record.seq <= thread.floor or record.seq in thread.above:
                continue
            thread.early.pop(record.seq, None)
            self._mark(thread, record.seq)
            self.deliver(session, record)  # its own too: the copy is the acknowledgement
        if len(records) < PAGE_RECORDS:
            # Numbers up to ``top`` it did not find are not this session's
            # to read (another holder of the name) or were pruned.
            self._mark(thread, top, through=True)
        self._release(session, thread, conversation)

    def _read_failed(self, failure, session: Session, thread: _Thread,
                     conversation: str) -> None:
        log.warn("cannot read direct messages to {name}: {error}; trying again",
                 name=session.name, error=failure.getErrorMessage())
        thread.reading = False
        if not self._gone(session):
            thread.timer = self.clock.callLater(READ_RETRY_SECONDS, self._retry, session,
                                                thread, conversation)

    def _retry(self, session: Session, thread: _Thread, conversation: str) -> None:
        thread.timer = None
        if thread.floor is None:
            self._start(session, thread, conversation)
        else:
            self._release(session, thread, conversation)

    # --- the numbers ------------------------------------------------------------------

    def _thread(self, session: Session, conversation: str) -> _Thread:
        threads = self.threads.setdefault(session.id, {})
        thread = threads.get(conversation)
        if thread is None:
            thread = threads[conversation] = _Thread()
        return thread

    @staticmethod
    def _mark(thread: _Thread, seq: int, through: bool = False) -> None:
        """``seq`` reached the session (``through``: and all before it)."""
        if thread.floor is None:
            thread.above.add(seq)
            return
        if through:
            thread.floor = max(thread.floor, seq)
        elif seq > thread.floor:
            thread.above.add(seq)
        while thread.floor + 1 in thread.above:
            thread.floor += 1
        thread.above = {s for s in thread.above if s > thread.floor}

    def _gone(self, session: Session) -> bool:
        """The session went offline (or the node is stopping): forget it."""
        if self.stopped or self.sessions.by_id.get(session.id) is not session:
            self.forget(session)
            return True
        return False


def _record(row) -> Record | None:
    """A saved direct line, if the row is one."""
    if not isinstance(row, list) or len(row) != _FIELDS:
        return None
    record = Record._make(row)
    if not (_number(record.seq) and record.seq > 0 and _number(record.ts)
            and record.room is None
            and all(isinstance(v, str) for v in record[2:6])
            and all(isinstance(v, str) for v in (record.to, record.to_key))
            and all(v is None or isinstance(v, str) for v in (record.lineage,
                                                               record.to_lineage))):
        return None
    return record


def _number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
