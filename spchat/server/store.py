"""The embedded store: SQLite (stdlib ``sqlite3``) in the data directory.

Messages, accounts and bans, in one file ``spchat.db`` (mode 0600) in WAL
mode, so the reactor thread can read history while the writer commits.  The
schema is versioned (``PRAGMA user_version``) and migrations run at start.
Every problem opening it is a ``StoreError`` whose message is one line naming
the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Iterable

from spchat.server.history import Record

DB_FILE = "spchat.db"
LOCK_FILE = "spchat.lock"

# Each entry upgrades the schema from its index to index + 1.
MIGRATIONS = [
    """
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        text TEXT NOT NULL,
        cid TEXT NOT NULL,
        room TEXT,
        to_name TEXT,
        to_key TEXT
    );
    CREATE UNIQUE INDEX messages_by_cid ON messages (sender_key, cid);
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE TABLE accounts (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE bans (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        until REAL,
        reason TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "seq, ts, sender, sender_key, text, cid, room, to_name, to_key"
_M_COLUMNS = ", ".join(f"m.{c}" for c in _COLUMNS.split(", "))
# Keys per query when looking for messages already saved: 2 parameters
# each, within the 999 that SQLite before 3.32 allows.
LOOKUP_CHUNK = 400


class StoreError(Exception):
    """The database cannot be used; the message names the file."""


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection):
    """A write transaction; on any failure, the COMMIT's own included (a
    full disk), nothing stays half open for the next try.  IMMEDIATE: it
    reads before it writes, and a plain BEGIN would then fail at once, not
    wait, if the reactor's connection wrote in between (an account, a ban)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _record(row) -> Record:
    return Record._make(row)


def connect(path: Path, sync: str = "full") -> sqlite3.Connection:
    """Open (or create) the database and bring its schema up to date."""
    try:
        if not path.exists():
            # Create it private before SQLite writes a byte into it.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, timeout=0.5, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk (WAL fsync'd) before anyone hears of it,
        # so an acknowledgement survives even a power cut, not just kill -9.
        conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        _migrate(conn)
        return conn
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot use the database {path}: {_explain(e)}") from None
    except OSError as e:
        raise StoreError(f"cannot open the database {path}: {e.strerror}") from None


def _explain(error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "locked" in text or "busy" in text:
        return f"{text} (is another spchat server using this data directory?)"
    if "not a database" in text or "malformed" in text:
        return f"{text} (the file is damaged: restore it from a backup or move it away)"
    return text


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this spchat ({SCHEMA_VERSION})"
        )
    for index in range(version, SCHEMA_VERSION):
        # One transaction per step: the schema and its version move together.
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _lock_dir(data_dir: Path) -> int:
    """One server per data directory: two would hand out the same numbers."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StoreError(f"cannot open the lock file {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(
            f"the data directory {data_dir} is in use by another spchat server "
            f"(it holds {path})"
        ) from None
    return fd


class Store:
    """History, accounts and bans on one SQLite file.

    Reads run on the calling (reactor) thread; message inserts come from the
    group committer, on its own connection (see ``spchat.server.commit``).
    """

    def __init__(self, path: Path, sync: str = "full"):
        self.path = path
        self.sync = sync
        self._lock = _lock_dir(path.parent)
        try:
            self.conn = connect(path, sync)
        except StoreError:
            os.close(self._lock)
            raise
        # Fail now, with the file's name, if the content is damaged.
        try:
            if self.conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed")
            row = self.conn.execute("SELECT max(seq), min(seq) FROM messages").fetchone()
        except sqlite3.DatabaseError as e:
            self.conn.close()
            os.close(self._lock)
            raise StoreError(f"cannot use the database {path}: {_explain(e)}") from None
        self.last_seq = row[0] or 0
        self._first_seq = row[1] or 1
        # The newest number given by ``save``: its writer's own count, ahead
        # of ``last_seq`` (the readers' view) while a batch is in flight.
        self._numbered = self.last_seq

    @classmethod
    def in_dir(cls, data_dir: Path, sync: str = "full") -> Store:
        return cls(Path(data_dir) / DB_FILE, sync)

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # --- messages (the History interface) ------------------------------------

    def save(self, conn: sqlite3.Connection,
             records: list[Record]) -> tuple[list[Record], list[tuple[Record, Record]]]:
        """Number and save new messages in one transaction, on ``conn`` (one
        writer at a time).  A message whose (sender, cid) is already saved
        (re-sent after a reconnect) is not saved again: it comes back paired
        with the saved one, whose acknowledgement its sender is owed.  The
        check is one indexed query for the whole batch, here, instead of one
        query per message on the reactor thread."""
        with _transaction(conn):
            saved_before = self._saved(conn, records)
            fresh, again, seq = [], [], self._numbered
            for r in records:
                old = saved_before.get((r.sender_key, r.cid))
                if old is not None:
                    again.append((r, old))
                else:
                    seq += 1
                    fresh.append(Record(seq, *r[1:]))
            self._insert(conn, fresh)
        self._numbered = seq
        return fresh, again

    @staticmethod
    def _saved(conn: sqlite3.Connection, records: list[Record]) -> dict[tuple[str, str], Record]:
        found = {}
        keys = [(r.sender_key, r.cid) for r in records]
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start:start + LOOKUP_CHUNK]
            # Driven by the list of keys: one index search each (a row-value
            # IN would scan the whole index).
            rows = conn.execute(
                f"SELECT {_M_COLUMNS} FROM (VALUES {','.join(['(?,?)'] * len(chunk))}) AS k "
                "CROSS JOIN messages AS m ON m.sender_key = k.column1 AND m.cid = k.column2",
                [v for key in chunk for v in key],
            )
            for row in rows:
                record = _record(row)
                found[(record.sender_key, record.cid)] = record
        return found

    def insert(self, conn: sqlite3.Connection, records: Iterable[Record]) -> None:
        """Insert and commit records numbered already, in one transaction."""
        records = list(records)
        with _transaction(conn):
            self._insert(conn, records)
        if records:
            self._numbered = max(self._numbered, records[-1].seq)

    @staticmethod
    def _insert(conn: sqlite3.Connection, records: Iterable[Record]) -> None:
        # A record is a row already: its fields are in the columns' order.
        conn.executemany(f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                         records)

    def committed(self, records: list[Record]) -> None:
        """A batch is on disk (called on the reactor thread)."""
        if records:
            self.last_seq = records[-1].seq

    @property
    def first_seq(self) -> int:
        row = self.conn.execute("SELECT min(seq) FROM messages").fetchone()
        return row[0] or self.last_seq + 1

    def after(self, seq: int) -> Iterable[Record]:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE seq > ? AND seq <= ? ORDER BY seq",
            (seq, self.last_seq),
        )
        return (_record(row) for row in rows)

    def before(self, seq: int, limit: int, key: str, rooms: set[str]) -> list[Record]:
        """Up to ``limit`` messages ``key`` may see, older than ``seq``, oldest first."""
        room_list = sorted(rooms) or [""]
        marks = ",".join("?" * len(room_list))
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE seq < ? AND seq <= ? AND "
            f"(room IN ({marks}) OR sender_key = ? OR to_key = ?) "
            f"ORDER BY seq DESC LIMIT ?",
            (seq, self.last_seq, *room_list, key, key, limit),
        ).fetchall()
        return [_record(row) for row in reversed(rows)]

    def find_cid(self, sender_key: str, cid: str) -> Record | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE sender_key = ? AND cid = ?",
            (sender_key, cid),
        ).fetchone()
        return _record(row) if row else None

    def prune(self, older_than_ms: int) -> int:
        # The newest message always stays: it carries the sequence on across
        # a restart, so no number is ever handed out twice.
        cursor = self.conn.execute(
            "DELETE FROM messages WHERE ts < ? AND seq < (SELECT max(seq) FROM messages)",
            (older_than_ms,),
        )
        return cursor.rowcount

    # --- accounts ------------------------------------------------------------

    def account(self, key: str) -> tuple[str, str] | None:
        """(display name, encoded password hash) of a registered name."""
        return self.conn.execute(
            "SELECT name, password FROM accounts WHERE key = ?", (key,)
        ).fetchone()

    def set_account(self, key: str, name: str, password: str, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO accounts (key, name, password, created) VALUES (?,?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET password = excluded.password",
            (key, name, password, now_ms),
        )

    # --- bans ----------------------------------------------------------------

    def ban(self, key: str) -> tuple[str, float | None, str] | None:
        """(name, until or None for ever, reason) of a ban on a name."""
        return self.conn.execute(
            "SELECT name, until, reason FROM bans WHERE key = ?", (key,)
        ).fetchone()

    def set_ban(self, key: str, name: str, until: float | None, reason: str, now_ms: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO bans (key, name, until, reason, created) VALUES (?,?,?,?,?)",
            (key, name, until, reason, now_ms),
        )

    def delete_ban(self, key: str) -> bool:
        return self.conn.execute("DELETE FROM bans WHERE key = ?", (key,)).rowcount > 0

    def bans(self) -> list[tuple[str, str, float | None, str]]:
        return self.conn.execute("SELECT key, name, until, reason FROM bans ORDER BY key").fetchall()
