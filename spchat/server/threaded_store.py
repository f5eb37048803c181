"""What the SQLite and the PostgreSQL stores share: their statements run on
threads of their own, one at a time, so the reactor never waits.

Each store gives a ``StatementThread`` one object holding its connection
(its "tables"), and every statement is a function called with that object,
on that thread, in the order asked.  ``ThreadedStore`` sends each
``IStore`` call to the writer's or the reader's thread."""

from __future__ import annotations

from typing import Protocol

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool


class StoreError(Exception):
    """The database cannot be used; the message (one line) names it."""


class StatementThread:
    """One thread of its own with its own connection: what is run here runs
    in the order it was asked for, one at a time.  ``tables`` has a
    ``close()``, called on the thread last of all."""

    def __init__(self, reactor, tables, name: str):
        self.reactor = reactor
        self.tables = tables
        self.pool = ThreadPool(1, 1, name=name)
        self.pool.start()
        # As the reactor's own pool does: a thread left running would keep
        # the process from exiting if close() was never called.
        self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def run(self, statement, *args) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, statement, self.tables, *args)

    def close(self) -> defer.Deferred:
        def stop(result):
            self.reactor.removeSystemEventTrigger(self._trigger)
            self.pool.stop()  # idle now: the join is immediate
            return result

        # Queued behind everything asked for before.
        return self.run(lambda tables: tables.close()).addBoth(stop)


class Runner(Protocol):
    """Runs statements on the tables it holds: a StatementThread, or (the
    SQLite store's inline mode) the calling thread."""

    def run(self, statement, *args) -> defer.Deferred: ...

    def close(self) -> defer.Deferred: ...


class ThreadedStore:
    """What a store on two ``StatementThread``s does with each ``IStore``
    call: a write on ``_writer``, a read on ``_reader``, each the
    statement of that name of ``tables`` (the class whose instances the
    threads hold)."""

    tables: type
    _writer: Runner | None = None
    _reader: Runner | None = None

    def open(self) -> defer.Deferred:
        """Open, migrate and check before returning (blocking: it runs at
        start, before the reactor); never raises: a problem is the failure
        of the Deferred, a one-line ``StoreError``."""
        try:
            self._open()
        except StoreError as e:
            return defer.fail(e)
        return defer.succeed(None)

    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, statement, *args) -> defer.Deferred:
        if self._writer is None:
            return defer.fail(StoreError("the store is not open"))
        return self._writer.run(statement, *args)

    def _read(self, statement, *args) -> defer.Deferred:
        if self._reader is None:
            return defer.fail(StoreError("the store is not open"))
        return self._reader.run(statement, *args)

    # --- IMessageLog -----------------------------------------------------------

    def append(self, records):
        return self._write(self.tables.append, records)

    def after(self, conversation, seq, limit, reader=None):
        return self._read(self.tables.after, conversation, seq, limit, reader)

    def before(self, conversation, seq, limit, reader=None):
        return self._read(self.tables.before, conversation, seq, limit, reader)

    def direct_since(self, key, since_ms, limit, reader=None):
        return self._read(self.tables.direct_since, key, since_ms, limit, reader)

    def last_before_time(self, conversation, ts_ms):
        return self._read(self.tables.last_before_time, conversation, ts_ms)

    def find_cid(self, lineage, cid, since_ms):
        return self._read(self.tables.find_cid, lineage, cid, since_ms)

    def adopt_lineage(self, old, new):
        return self._write(self.tables.adopt_lineage, old, new)

    def waiting_for(self, key, conversation):
        return self._read(self.tables.waiting_for, key, conversation)

    def waiting_directs(self, key, limit):
        return self._read(self.tables.waiting_directs, key, limit)

    def directs_had(self, numbers):
        return self._write(self.tables.directs_had, numbers)

    def delete_conversation(self, conversation):
        return self._write(self.tables.delete_conversation, conversation)

    def prune(self, older_than_ms):
        return self._write(self.tables.prune, older_than_ms)

    # --- IAccounts, IBans --------------------------------------------------------

    def account(self, key):
        return self._read(self.tables.account, key)

    def set_account(self, key, name, password, now_ms):
        return self._write(self.tables.set_account, key, name, password, now_ms)

    def lookalike_account(self, looks, key):
        return self._read(self.tables.lookalike_account, looks, key)

    def ban(self, key):
        return self._read(self.tables.ban, key)

    def set_ban(self, key, name, until, reason, now_ms):
        return self._write(self.tables.set_ban, key, name, until, reason, now_ms)

    def delete_ban(self, key):
        return self._write(self.tables.delete_ban, key)

    def bans(self):
        return self._read(self.tables.bans)

    # --- IRoomStore ----------------------------------------------------------------

    def load(self):
        return self._read(self.tables.load)

    def room(self, key):
        # On the writer: it sees every change this node asked for before.
        return self._write(self.tables.room, key)

    def create_room(self, room):
        return self._write(self.tables.create_room, room)

    def save_room(self, room):
        return self._write(self.tables.save_room, room)

    def delete_room(self, key):
        return self._write(self.tables.delete_room, key)

    def set_role(self, room, key, name, role):
        return self._write(self.tables.set_role, room, key, name, role)

    def set_room_ban(self, room, key, name, until, reason, now_ms):
        return self._write(self.tables.set_room_ban, room, key, name, until, reason, now_ms)

    def delete_room_ban(self, room, key):
        return self._write(self.tables.delete_room_ban, room, key)

    def set_mute(self, room, key, name, muted):
        return self._write(self.tables.set_mute, room, key, name, muted)

    def set_voice(self, room, key, name, voiced):
        return self._write(self.tables.set_voice, room, key, name, voiced)

    def memberships(self, key):
        return self._read(self.tables.memberships, key)

    def add_membership(self, key, room):
        return self._write(self.tables.add_membership, key, room)

    def remove_membership(self, key, room):
        return self._write(self.tables.remove_membership, key, room)
