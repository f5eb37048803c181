"""Reading back, paced by the reader: history and replays in pages.

Each session has one queue of catch-up jobs (a page of history asked for,
a room's history on a join, a replay after a reconnect), run one at a time
on its connection.  A job reads at most ``PAGE_RECORDS`` from the store
only once the connection has taken what came before
(``IChatClient.when_drained``), and sends them in parts of about
``PART_BYTES``, waiting for the connection to drain after each part: a
client that does not read holds one part queued at the server, however
much it asked for.

While a conversation is caught up, its live lines are not sent (they would
overtake the replay) and not kept either: its ``Hold`` only counts them,
and the job reads on past them.  A line is published only once saved, so a
read issued after a line was counted finds it; the job is done when a read
issued after the last counted line comes back short.  A waiting
conversation costs the same memory whatever its room says meanwhile.
"""

from __future__ import annotations

from collections import deque
from functools import partial
from typing import Any, Callable, Collection, Generator

from twisted.logger import Logger
from twisted.python.failure import Failure

from spchat.server.records import Record, reader_of

# Records in one read of the store.
PAGE_RECORDS = 50
# About this many bytes go out before the connection must drain again.
PART_BYTES = 64 * 1024
# Requests (history pages) that may wait in one session's queue.
MAX_WAITING_JOBS = 64
# Waiting a moment before reading again, when the store failed.
READ_RETRY_SECONDS = 1.0

log = Logger()

DRAIN = object()  # what a job yields to wait until the connection drained
PAUSE = object()  # ... to wait READ_RETRY_SECONDS
# A job: a generator that yields what it waits for (a Deferred, DRAIN or
# PAUSE) and is sent what that gave.
Job = Generator[Any, Any, None]


def wire_size(record: Record) -> int:
    """An upper bound on a record's size as sent (JSON doubles an escaped
    ASCII character; a character is at most 4 bytes of UTF-8)."""
    return len(record.text) * (2 if record.text.isascii() else 4) + 200


class Hold:
    """A conversation being caught up: its live lines only counted."""

    __slots__ = ("jobs", "noted", "covered", "sent", "oldest")

    def __init__(self):
        self.jobs = 0  # queued jobs that hold it
        self.noted = 0  # live lines not sent
        self.covered = 0  # ``noted`` when a read last reached the end
        self.sent = 0  # the highest number sent in it (history not counted)
        # The oldest time (ms) of the direct lines noted: a line is saved
        # (and comes live) a while after its time, which may be before the
        # time a read by time starts from.
        self.oldest: int | None = None

    def note(self, record: Record) -> None:
        """A live line not sent: a read sends it."""
        self.noted += 1
        if record.room is None and (self.oldest is None or record.ts < self.oldest):
            self.oldest = record.ts

    @property
    def behind(self) -> bool:
        return self.noted != self.covered


class CatchUp:
    """One session's catch-up jobs on one connection (``link``).

    A job is a generator that yields a store Deferred (and gets its result,
    a Failure included, back), ``DRAIN`` or ``PAUSE``.  Jobs run in a loop,
    not by recursion, so a store and a connection that answer at once (the
    memory store, the tests' client) do not deepen the stack.
    """

    def __init__(self, session, link, clock, answered: Callable[[], None]):
        """``answered()``: one job is over (done or dropped)."""
        self.session = session
        self.link = link
        self.clock = clock
        self.answered = answered
        self.jobs: deque[tuple[Job, str | None]] = deque()
        self.stopped = False
        self._current: tuple[Job, str | None] | None = None
        self._waiting = False
        self._running = False
        self._result = None

    def __len__(self) -> int:
        return len(self.jobs) + (self._current is not None)

    # --- holds ------------------------------------------------------------------------

    def hold(self, conversation: str) -> Hold:
        hold = self.session.catching_up.get(conversation)
        if hold is None:
            hold = self.session.catching_up[conversation] = Hold()
        hold.jobs += 1
        return hold

    def _release(self, conversation: str | None) -> None:
        if conversation is None:
            return
        hold = self.session.catching_up.get(conversation)
        if hold is not None:
            hold.jobs -= 1
            if hold.jobs <= 0:
                del self.session.catching_up[conversation]

    # --- running ----------------------------------------------------------------------

    def add(self, job: Job, holding: str | None = None) -> None:
        """Queue ``job``; ``holding``: the conversation whose live lines it
        holds back (the hold is taken now)."""
        self.jobs.append((job, holding))
        if not self._current and not self._running:
            self._loop()

    def stop(self, answer: bool = True) -> None:
        """The connection is gone or replaced: drop every job.  ``answer``
        False: the server is stopping, nothing that waits for them runs."""
        if self.stopped:
            return
        self.stopped = True
        dropped = list(self.jobs) + ([self._current] if self._current else [])
        self.jobs.clear()
        self._current = None
        for job, holding in dropped:
            job.close()
            self._release(holding)
        for _ in dropped if answer else ():
            self.answered()

    def _go_on(self, result=None) -> None:
        """A wait is over: go on, in the loop if it runs already."""
        if self.stopped or not self._waiting:
            return
        self._waiting = False
        self._result = result
        if not self._running:
            self._loop()

    def _loop(self) -> None:
        self._running = True
        try:
            while not self.stopped and not self._waiting:
                if self.session.link is not self.link:
                    self.stop()
                    break
                if self._current is None:
                    if not self.jobs:
                        break
                    self._current = self.jobs.popleft()
                    self._result = None
                job, holding = self._current
                result, self._result = self._result, None
                try:
                    wait = job.send(result)
                except Exception as e:  # StopIteration: done; anything else, a bug
                    if not isinstance(e, StopIteration):
                        log.failure("catching up failed", Failure())
                    self._current = None
                    self._release(holding)
                    self.answered()
                    continue
                self._waiting = True
                if wait is DRAIN:
                    self.link.conn.when_drained(self._go_on)
                elif wait is PAUSE:
                    self.clock.callLater(READ_RETRY_SECONDS, self._go_on)
                else:
                    wait.addBoth(self._go_on)
        finally:
            self._running = False


class Reader:
    """The jobs: what each reads and sends.  ``render(record, history)``
    makes a record's wire message for the session; ``tell`` sends one;
    ``failed(failure)`` says the store cannot be read."""

    def __init__(self, store, lineage: str, render, tell, failed):
        """``lineage``: the session's (Session.lineage): of a direct
        conversation it reads only the lines that lineage took part in."""
        self.store = store
        self.lineage = lineage
        self.render = render
        self.tell = tell
        self.failed = failed

    def send_parts(self, records: list[Record], history: bool,
                   still: Callable[[], bool] = lambda: True) -> Job:
        """Send ``records``, waiting for the connection to drain after each
        PART_BYTES but the last: what follows (the next read, or the live
        lines once caught up) waits for its own turn.  Stops early once
        ``still()`` is false."""
        size = 0
        for record in records:
            if size >= PART_BYTES:
                size = 0
                yield DRAIN
                if not still():
                    return
            self.tell(self.render(record, history))
            size += wire_size(record)

    def read(self, reading: Callable[[], object]) -> Generator[Any, Any, list[Record]]:
        """The records ``reading()`` fires with; after a failure (told to
        the client once) it tries again a moment later."""
        told = False
        while True:
            records = yield reading()
            if not isinstance(records, Failure):
                return records
            if not told:
                self.failed(records)
                told = True
            yield PAUSE

    def page(self, conversation: str, before: int, limit: int,
             after: Callable[[list[Record]], None]) -> Job:
        """Up to ``limit`` lines below ``before``, as history; then ``after``."""
        yield DRAIN
        records = yield self.store.before(conversation, before, limit,
                                          reader_of(conversation, self.lineage))
        if isinstance(records, Failure):
            self.failed(records)
            return
        yield from self.send_parts(records, history=True)
        after(records)

    def forward(self, conversation: str, start: int, hold: Hold,
                still: Callable[[], bool] = lambda: True) -> Job:
        """Every line above ``start`` not sent yet, as news, until a read
        issued after the last line held back comes back short (or, before a
        read, ``still()`` says the session has left the room)."""
        cursor = max(start, hold.sent)
        while True:
            yield DRAIN
            if not still():
                return
            mark = hold.noted
            records = yield from self.read(
                partial(self.store.after, conversation, cursor, PAGE_RECORDS,
                        reader_of(conversation, self.lineage)))
            fresh = [r for r in records if r.seq > hold.sent]
            if records:
                cursor = records[-1].seq
            if fresh:
                hold.sent = fresh[-1].seq
            yield from self.send_parts(fresh, history=False, still=still)
            if len(records) < PAGE_RECORDS and hold.noted == mark:
                hold.covered = mark
                return

    def join(self, conversation: str, before: int, limit: int, hold: Hold,
             after: Callable[[list[Record]], None], still: Callable[[], bool]) -> Job:
        """A join's history, then what came since the join (if anything did)."""
        yield from self.page(conversation, before, limit, after)
        if hold.behind:
            yield from self.forward(conversation, before - 1, hold, still)

    def directs(self, key: str, since: int, named: set[str], hold: Hold,
                sent: Collection[tuple[str, int]] = ()) -> Job:
        """Every direct message to or from ``key`` from ``since`` (ms) on (or
        from the oldest held back, if older: saved late, it came live after
        the read began), but those of the ``named`` conversations (replayed
        on their own)
        and those ``sent`` already, by (conversation, number).  Pages
        follow the store's order, (time, conversation, number)."""
        last = None  # the order key of the last one sent
        limit = PAGE_RECORDS
        if hold.oldest is not None:  # held back, and older than ``since``
            since = min(since, hold.oldest)
        while True:
            yield DRAIN
            mark = hold.noted
            records = yield from self.read(
                partial(self.store.direct_since, key, since, limit, self.lineage))
            fresh = [r for r in records if last is None or _order(r) > last]
            full = len(records) >= limit
            if records:
                last = _order(records[-1])
                # A full page of one millisecond: the next must be longer.
                stuck = full and records[0].ts == records[-1].ts == since
                limit = limit * 2 if stuck else PAGE_RECORDS
                since = records[-1].ts
            yield from self.send_parts([r for r in fresh if r.conversation not in named
                                        and (r.conversation, r.seq) not in sent],
                                       history=False)
            if not full and hold.noted == mark:
                hold.covered = mark
                return


    def waiting(self, key: str, since: int, hold: Hold, had: Callable[[list], object],
                marked: Callable[[], object]) -> Job:
        """The direct messages that waited for the account ``key`` to log
        in (spchat.server.waiting), by conversation and number, each marked
        ``had`` (a store write: fires, or fails) once sent; then the live
        ones held back meanwhile, from ``since`` (ms) on.  ``marked()``
        fires once the marks of those that reached it otherwise before (a
        returning login's replay) are written: the writes and the reads go
        on separate threads, and a read before them would send those again."""
        sent: set[tuple[str, int]] = set()
        yield marked()
        while True:
            yield DRAIN
            records = yield from self.read(partial(self.store.waiting_directs, key,
                                                   PAGE_RECORDS))
            yield from self.send_parts(records, history=False)
            numbers = [(r.conversation, r.seq) for r in records]
            sent.update(numbers)
            if records:
                marked = yield had(numbers)
                if isinstance(marked, Failure):
                    self.failed(marked)
                    break  # not had: they wait for the next login
            if len(records) < PAGE_RECORDS:
                break
        if hold.behind:
            yield from self.directs(key, since, set(), hold, sent)


def _order(record: Record) -> tuple[int, str, int]:
    return record.ts, record.conversation, record.seq
