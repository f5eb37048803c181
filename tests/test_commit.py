"""Group commit over any ``IMessageLog``: batching, the interval, failures and
retries, stopping; on the memory store and ``task.Clock`` (all synchronous),
then once on the SQLite store's writer thread."""

import itertools

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, capturedLogs, formatEvent

from spchat.server.commit import RETRY_SECONDS, GroupCommitter
from spchat.server.memory_store import MemoryStore
from spchat.server.records import Record
from spchat.server.store import DB_FILE, SQLiteStore

_cids = itertools.count(1)


def line(text="hi", room="lobby", sender="alice", cid=None):
    return Record(0, 1000, sender, sender.casefold(), text, cid or f"c{next(_cids)}", room=room)


class Published:
    """What ``on_committed`` was told: each batch's saved and re-sent lines."""

    def __init__(self):
        self.saved, self.again = [], []

    def __call__(self, saved, again):
        self.saved.append([(r.seq, r.text) for r in saved])
        self.again.append([(resent.cid, old.seq) for resent, old in again])


class ManualLog:
    """A log whose transactions end when the test says."""

    path = "/data/spchat.db"

    def __init__(self):
        self.transactions = []  # (batch, Deferred), oldest first
        self.seq = 0

    def append(self, records):
        d = defer.Deferred()
        self.transactions.append((list(records), d))
        return d

    def commit(self):
        batch, d = self.transactions.pop(0)
        saved = []
        for record in batch:
            self.seq += 1
            saved.append(record._replace(seq=self.seq))
        d.callback((saved, []))

    def fail(self, error):
        self.transactions.pop(0)[1].errback(error)


class FailingLog:
    """The memory store, but the next ``failures`` appends fail (a full disk)."""

    def __init__(self, failures=1, path="/data/spchat.db"):
        self.store = MemoryStore()
        self.failures = failures
        if path is not None:
            self.path = path

    def append(self, records):
        if self.failures:
            self.failures -= 1
            return defer.fail(OSError(28, "No space left on device"))
        return self.store.append(records)


def errors(events):
    return [formatEvent(e) for e in events if e["log_level"] is LogLevel.error]


def test_under_load_one_transaction_per_interval_and_at_once_when_idle():
    clock, published = task.Clock(), Published()
    committer = GroupCommitter(MemoryStore(), clock, published, interval=0.005)
    committer.add(line("1"))
    assert published.saved == []  # not inside add(): at the end of the turn
    clock.advance(0)  # the writer was idle: saved at once
    assert published.saved == [[(1, "1")]]
    clock.advance(0.001)
    committer.add(line("2"))
    clock.advance(0.001)
    committer.add(line("3"))
    clock.advance(0.002)  # 4 ms after the last transaction began: still waiting
    assert len(published.saved) == 1
    clock.advance(0.001)  # 5 ms: both in one transaction
    assert published.saved == [[(1, "1")], [(2, "2"), (3, "3")]]
    clock.advance(1.0)
    committer.add(line("4"))
    clock.advance(0)  # idle for longer than the interval: at once
    assert published.saved[-1] == [(4, "4")]


def test_one_transaction_at_a_time_and_what_arrives_meanwhile_is_the_next_batch():
    clock, log, published = task.Clock(), ManualLog(), Published()
    committer = GroupCommitter(log, clock, published)
    committer.add(line("a"))
    clock.advance(0)
    committer.add(line("b"))
    committer.add(line("c"))
    clock.advance(1)
    assert len(log.transactions) == 1  # b and c wait for a's transaction
    log.commit()
    assert published.saved == [[(1, "a")]]
    clock.advance(0)
    assert [[r.text for r in batch] for batch, _ in log.transactions] == [["b", "c"]]
    log.commit()
    assert published.saved[-1] == [(2, "b"), (3, "c")]


def test_resent_lines_are_published_with_what_was_saved_before():
    clock, published = task.Clock(), Published()
    committer = GroupCommitter(MemoryStore(), clock, published)
    committer.add(line("a", cid="x1"))
    clock.advance(0)
    committer.add(line("a", cid="x1"))  # again, after a reconnect
    committer.add(line("b", cid="x2"))
    clock.advance(0)
    assert published.saved == [[(1, "a")], [(2, "b")]]
    assert published.again == [[], [("x1", 1)]]


def test_a_failed_save_is_one_error_line_and_is_retried_first():
    clock, published = task.Clock(), Published()
    log = FailingLog()
    committer = GroupCommitter(log, clock, published, interval=0.005)
    with capturedLogs() as events:
        committer.add(line("a"))
        committer.add(line("b"))
        clock.advance(0)
        committer.add(line("c"))  # arrives while the first batch waits to be retried
        clock.advance(RETRY_SECONDS - 0.01)
        assert published.saved == []
        clock.advance(0.01)
    assert errors(events) == [
        "cannot save 2 message(s) to /data/spchat.db: [Errno 28] No space left on device; "
        "retrying"]
    assert published.saved == [[(1, "a"), (2, "b"), (3, "c")]]  # in the order accepted


def test_a_log_without_a_path_is_not_named():
    clock = task.Clock()
    committer = GroupCommitter(FailingLog(path=None), clock, Published())
    with capturedLogs() as events:
        committer.add(line("a"))
        clock.advance(0)
    assert errors(events) == [
        "cannot save 1 message(s): [Errno 28] No space left on device; retrying"]


def test_a_failure_to_publish_does_not_stop_saving():
    clock, seen = task.Clock(), []

    def on_committed(saved, again):
        seen.append([r.text for r in saved])
        raise RuntimeError("a bug while publishing")

    committer = GroupCommitter(MemoryStore(), clock, on_committed, interval=0.005)
    with capturedLogs() as events:
        committer.add(line("a"))
        clock.advance(0)
        committer.add(line("b"))
        clock.advance(0.005)
    assert seen == [["a"], ["b"]]
    assert [e["log_failure"].check(RuntimeError) for e in events
            if e["log_level"] is LogLevel.critical] == [RuntimeError, RuntimeError]


def fired(d):
    results = []
    d.addBoth(results.append)
    return results


def test_stop_saves_what_is_pending_without_waiting_for_the_interval():
    clock, published = task.Clock(), Published()
    committer = GroupCommitter(MemoryStore(), clock, published, interval=10)
    committer.add(line("a"))
    clock.advance(0)
    committer.add(line("b"))  # would wait 10 s
    assert fired(committer.stop()) == [None]
    assert published.saved == [[(1, "a")], [(2, "b")]]
    assert clock.getDelayedCalls() == []


def test_stop_with_nothing_pending_fires_at_once():
    committer = GroupCommitter(MemoryStore(), task.Clock(), Published())
    assert fired(committer.stop()) == [None]


def test_stop_waits_for_the_transaction_in_flight_then_saves_the_rest():
    clock, log, published = task.Clock(), ManualLog(), Published()
    committer = GroupCommitter(log, clock, published)
    committer.add(line("a"))
    clock.advance(0)
    committer.add(line("b"))
    stopped = fired(committer.stop())
    assert stopped == [] and len(log.transactions) == 1
    log.commit()  # a is saved; b goes at once
    assert stopped == [] and [[r.text for r in b] for b, _ in log.transactions] == [["b"]]
    log.commit()
    assert stopped == [None]
    assert published.saved == [[(1, "a")], [(2, "b")]]


def test_stop_saves_at_once_what_waits_for_a_retry():
    clock, published = task.Clock(), Published()
    committer = GroupCommitter(FailingLog(), clock, published)
    with capturedLogs():
        committer.add(line("a"))
        clock.advance(0)
    assert fired(committer.stop()) == [None]
    assert published.saved == [[(1, "a")]]


def test_stop_fails_if_the_last_save_fails():
    clock, published = task.Clock(), Published()
    committer = GroupCommitter(FailingLog(failures=2), clock, published)
    with capturedLogs() as events:
        committer.add(line("a"))
        clock.advance(0)
        stopped = fired(committer.stop())
    [failure] = stopped
    assert failure.check(OSError)
    assert errors(events)[-1] == (
        "cannot save 1 message(s) to /data/spchat.db: [Errno 28] No space left on device; "
        "not saved")
    assert published.saved == [] and clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_on_the_sqlite_writer_thread_each_turn_is_one_transaction(tmp_path):
    store = SQLiteStore(tmp_path / DB_FILE, mode="thread")
    await store.open()
    published = Published()
    try:
        committer = GroupCommitter(store, reactor, published)
        for turn in range(10):
            for i in range(20):
                committer.add(line(f"{turn}.{i}", room=("lobby", "dev")[i % 2]))
            await task.deferLater(reactor, 0.001, lambda: None)
        await committer.stop()
    finally:
        await store.close()
    assert all(len(batch) >= 20 for batch in published.saved)  # a turn is never split
    saved = [r for batch in published.saved for r in batch]
    assert len(saved) == 200
    again = SQLiteStore(tmp_path / DB_FILE, mode="inline")
    await again.open()
    for room in ("#lobby", "#dev"):
        lines = await again.after(room, 0, 1000)
        assert [r.seq for r in lines] == list(range(1, 101))
        # In the order accepted.
        assert [r.text for r in lines] == [f"{t}.{i}" for t in range(10) for i in range(20)
                                           if (i % 2 == 0) == (room == "#lobby")]
    await again.close()

