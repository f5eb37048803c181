"""Group commit: a message is published (fanned out, acknowledged) only once
it is saved, and all messages of a reactor turn share one transaction.

The committer hands batches to an ``IMessageLog``; where the transaction
runs (the SQLite store's writer thread, the calling thread, memory) is the
log's business.  One transaction is in flight at a time, and whatever
arrives meanwhile becomes the next batch.

Under load, a transaction starts at most once per ``interval``
(``CHAT_COMMIT_INTERVAL``): each one costs a disk sync, a hand-over between
threads and then one write to every member of the room, whatever the number
of messages in it: a few milliseconds of waiting save much of the server's
CPU time per message.  A message that finds the writer idle for longer than
that is saved at once (at the end of the reactor turn).

``scripts/measure_store.py`` measures it.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer

from spchat.server.interfaces import IMessageLog
from spchat.server.metrics import BATCH_MESSAGES_BUCKETS, COMMIT_SECONDS_BUCKETS, Histogram
from spchat.server.records import Record
from spchat.terminal import SafeLogger

RETRY_SECONDS = 1.0


class GroupCommitter:
    logger = SafeLogger()

    def __init__(
        self,
        log: IMessageLog,
        clock,
        on_committed: Callable[[list[Record], list[tuple[Record, Record]]], None],
        interval: float = 0.0,
    ):
        """``on_committed(saved, again)`` gets each batch's result as
        ``IMessageLog.append`` gives it."""
        self.message_log = log
        self.clock = clock
        self.on_committed = on_committed
        self.interval = interval
        path = getattr(log, "path", None)
        self._where = f" to {path}" if path else ""
        self._started = float("-inf")  # when the last transaction began
        self.pending: list[Record] = []
        self.writing = False
        self._flush_call = None
        self._stopping = False
        self._waiting: list[defer.Deferred] = []  # stop()'s callers
        # For the metrics: how long each transaction took, and how many it saved.
        self.durations = Histogram(COMMIT_SECONDS_BUCKETS)
        self.batch_sizes = Histogram(BATCH_MESSAGES_BUCKETS)

    def add(self, record: Record) -> None:
        self.pending.append(record)
        if not self.writing and self._flush_call is None and not self._stopping:
            # The end of this reactor turn at the earliest: everything
            # accepted meanwhile goes too.
            self._flush_soon()

    def _flush_soon(self) -> None:
        wait = max(0.0, self._started + self.interval - self.clock.seconds())
        self._flush_call = self.clock.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self.writing:
            return
        if not self.pending:
            if self._stopping:
                self._release()
            return
        batch, self.pending = self.pending, []
        self.writing = True
        self._started = self.clock.seconds()
        d = defer.maybeDeferred(self.message_log.append, batch)
        d.addCallbacks(self._done, self._failed, errbackArgs=(batch,))
        # A bug in publishing: say so now, not when the Deferred is collected.
        d.addErrback(lambda failure: self.logger.failure("cannot publish saved messages",
                                                         failure))

    def _done(self, result: tuple[list[Record], list[tuple[Record, Record]]]) -> None:
        """Saved (numbered now), and re-sent ones found saved before."""
        self.writing = False
        self.durations.observe(self.clock.seconds() - self._started)
        self.batch_sizes.observe(len(result[0]) + len(result[1]))
        try:
            self.on_committed(*result)
        finally:
            # Even if publishing failed: what is pending still goes.
            if self._stopping:
                self._flush()
            elif self.pending and self._flush_call is None:
                self._flush_soon()

    def _failed(self, failure, batch: list[Record]) -> None:
        # Disk full, I/O error: nothing is acknowledged, nothing is lost from
        # memory; try again a little later.
        self.writing = False
        self.pending[:0] = batch
        if self._stopping:
            # Not acknowledged, so their senders still hold them: do not
            # keep a shutdown waiting on a disk that may stay full.
            self.logger.error(
                "cannot save {count} message(s){where}: {error}; not saved",
                count=len(self.pending), where=self._where, error=failure.value,
            )
            self._release(failure)
            return
        self.logger.error(
            "cannot save {count} message(s){where}: {error}; retrying",
            count=len(batch), where=self._where, error=failure.value,
        )
        self._flush_call = self.clock.callLater(RETRY_SECONDS, self._flush)

    def stop(self) -> defer.Deferred:
        """Save what is pending now, without waiting for the interval or a
        retry; fires once it is saved (fails if saving it failed).  What is
        added after that is not saved: stop the core first."""
        self._stopping = True
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        self._flush()  # in flight already: its end goes on with the rest
        return d

    def _release(self, failure=None) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)
