"""Group commit: a message is published (fanned out, acknowledged) only once
it is on disk, and all messages of a reactor turn share one transaction.

Two ways to run the transaction, chosen by ``CHAT_STORE_WRITER``:

* ``thread``: a single writer thread with its own SQLite connection; the
  reactor goes on serving while the disk syncs, and whatever arrives
  meanwhile becomes the next group.
* ``inline``: a short transaction on the reactor thread at the end of the turn.

Under load, a transaction starts at most once per ``interval``
(``CHAT_COMMIT_INTERVAL``): each one costs a disk sync, a hand-over between
threads and then one write to every member of the room, whatever the number of
messages in it: a few milliseconds of waiting save much of the server's CPU
time per message.  A message that finds the writer idle for longer than that
is saved at once.

``scripts/measure_store.py`` compares them.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from spchat.server.history import Record
from spchat.server.store import Store, connect

RETRY_SECONDS = 1.0


class GroupCommitter:
    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor,
        on_committed: Callable[[list[Record], list[tuple[Record, Record]]], None],
        mode: str = "thread",
        interval: float = 0.0,
    ):
        self.store = store
        self.reactor = reactor
        self.on_committed = on_committed
        self.mode = mode
        self.interval = interval
        self._started = float("-inf")  # when the last transaction began
        self.pending: list[Record] = []
        self.writing = False
        self._flush_call = None
        self.conn = store.conn
        self.pool = None

    def start(self) -> None:
        """Start the writer thread (thread mode); until then, commits run inline."""
        if self.mode == "thread" and self.pool is None:
            self.conn = connect(self.store.path, self.store.sync)
            self.pool = ThreadPool(1, 1, name="spchat-store-writer")
            self.pool.start()

    def add(self, record: Record) -> None:
        self.pending.append(record)
        if not self.writing and self._flush_call is None:
            # The end of this reactor turn at the earliest: everything
            # accepted meanwhile goes too.
            self._flush_soon()

    def _flush_soon(self) -> None:
        wait = max(0.0, self._started + self.interval - self.reactor.seconds())
        self._flush_call = self.reactor.callLater(wait, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self.writing or not self.pending:
            return
        batch, self.pending = self.pending, []
        self.writing = True
        self._started = self.reactor.seconds()
        if self.pool is None:
            try:
                result = self.store.save(self.conn, batch)
            except Exception as e:
                self._failed(batch, e)
                return
            self._done(result)
            return
        d = threads.deferToThreadPool(self.reactor, self.pool, self.store.save, self.conn, batch)
        d.addCallbacks(self._done, lambda f: self._failed(batch, f.value))

    def _done(self, result: tuple[list[Record], list[tuple[Record, Record]]]) -> None:
        """Saved (numbered now), and re-sent ones found saved before."""
        saved, again = result
        self.writing = False
        self.store.committed(saved)
        self.on_committed(saved, again)
        if self.pending and self._flush_call is None:
            self._flush_soon()

    def _failed(self, batch: list[Record], error: Exception) -> None:
        # Disk full, I/O error: nothing is acknowledged, nothing is lost from
        # memory; try again a little later.
        self.writing = False
        self.log.error(
            "cannot save {count} message(s) to {path}: {error}; retrying",
            count=len(batch), path=self.store.path, error=error,
        )
        self.pending[:0] = batch
        self._flush_call = self.reactor.callLater(RETRY_SECONDS, self._flush)

    def stop(self) -> None:
        """Write what is waiting, then stop the writer (at shutdown)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self.pool is not None:
            self.pool.stop()  # waits for the batch being written
            self.pool = None
        if self.pending:
            batch, self.pending = self.pending, []
            saved, _ = self.store.save(self.store.conn, batch)
            self.store.committed(saved)
        if self.conn is not self.store.conn:
            self.conn.close()
