"""The embedded store: SQLite (stdlib ``sqlite3``) in the data directory.

Messages, accounts, bans and rooms in one file ``spchat.db`` (mode 0600) in
WAL mode.  ``SQLiteStore`` implements ``IStore``: in thread mode every write
runs in one writer thread on its own connection and every read in one reader
thread on another (WAL lets it read while the writer commits), so the
reactor never waits for the disk; in inline mode both run on the calling
thread.  ``Tables`` holds the statements themselves, synchronous, on one
connection.

The schema is versioned (``PRAGMA user_version``) and migrations run at
``open()``.  Every problem opening the file is a ``StoreError`` whose
message is one line naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections import ChainMap
from pathlib import Path

from twisted.internet import defer
from zope.interface import implementer

from spchat.server import lookalikes
from spchat.server.interfaces import IStore
from spchat.server.numbering import RESEND_WINDOW_MS, number
from spchat.server.records import Record, RoomRecord, account_of, read_rooms, room_conversation
from spchat.server.threaded_store import StatementThread, StoreError, ThreadedStore

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
    # Version 2: many rooms, each conversation numbered on its own.  The old
    # messages keep their order: each conversation is renumbered 1..n in the
    # order of the old global numbers (and inserted in it, so that rowids
    # keep it too).  The conversation's rule is records.py's, in SQL: BINARY
    # order of UTF-8 is Python's order of code points.
    """
    CREATE TABLE messages_v2 (
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT NOT NULL,
        text TEXT NOT NULL,
        cid TEXT NOT NULL,
        room TEXT,
        to_name TEXT,
        to_key TEXT,
        conversation TEXT NOT NULL
    );
    INSERT INTO messages_v2
        SELECT row_number() OVER (PARTITION BY conversation ORDER BY old_seq),
               ts, sender, sender_key, text, cid, room, to_name, to_key, conversation
        FROM (SELECT seq AS old_seq, *,
                     CASE WHEN room IS NOT NULL THEN '#' || room
                          ELSE '@' || min(sender_key, to_key) || ' ' || max(sender_key, to_key)
                     END AS conversation
              FROM messages)
        ORDER BY old_seq;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_number ON messages (conversation, seq);
    CREATE UNIQUE INDEX messages_by_cid ON messages (sender_key, cid);
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE INDEX direct_from ON messages (sender_key, ts) WHERE to_key IS NOT NULL;
    CREATE INDEX direct_to ON messages (to_key, ts) WHERE to_key IS NOT NULL;

    -- Each conversation's newest number: pruning its messages never makes
    -- a number come back.
    CREATE TABLE conversations (
        conversation TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    );
    INSERT INTO conversations SELECT conversation, max(seq) FROM messages GROUP BY conversation;

    CREATE TABLE rooms (
        key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        topic TEXT NOT NULL DEFAULT '',
        private INTEGER NOT NULL DEFAULT 0,
        topic_locked INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL
    );
    -- Version 1 had one room, 'lobby', named by its key.
    INSERT INTO rooms (key, name, created)
        SELECT room, room, min(ts) FROM messages WHERE room IS NOT NULL GROUP BY room;
    -- A room's standing of names goes with the room.
    CREATE TABLE room_roles (
        room TEXT NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE room_bans (
        room TEXT NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        until REAL,
        reason TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE room_mutes (
        room TEXT NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE memberships (
        key TEXT NOT NULL,
        room TEXT NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        PRIMARY KEY (key, room)
    );
    CREATE INDEX memberships_by_room ON memberships (room);
    """,
    # Version 3: what each account's name looks like (its skeletons, see
    # spchat.server.lookalikes), so that a new name that looks like it is
    # refused.  Filled at open (_refresh_looks), and made again there when
    # the confusables data changes.
    """
    CREATE TABLE account_looks (
        look TEXT NOT NULL,
        key TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        PRIMARY KEY (look, key)
    );
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # Version 4: a client message id belongs to its sender's lineage (an
    # account, or a guest's session and its resumes), for a day, not to a
    # name for ever: the next guest of a name may reuse an id.  Older lines
    # have no lineage: nothing new is taken for a copy of them.
    """
    ALTER TABLE messages ADD COLUMN lineage TEXT;
    DROP INDEX messages_by_cid;
    CREATE INDEX messages_by_lineage ON messages (lineage, cid);
    """,
    # Version 5: a direct message belongs to the lineages of its two, not
    # to their names (Record.readable_by): its recipient's is kept too.
    # Older ones have none: they are the name's account's, if any.
    """
    ALTER TABLE messages ADD COLUMN to_lineage TEXT;
    CREATE INDEX messages_by_to_lineage ON messages (to_lineage) WHERE to_lineage IS NOT NULL;
    """,
    # Version 6: a room's password to join, and its most members online.
    """
    ALTER TABLE rooms ADD COLUMN password TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN member_limit INTEGER NOT NULL DEFAULT 0;
    """,
    # Version 7: moderated rooms, and the names with a voice in them.
    """
    ALTER TABLE rooms ADD COLUMN moderated INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE room_voices (
        room TEXT NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    """,
    # Version 8: direct messages that wait for their recipient's next login.
    """
    ALTER TABLE messages ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX directs_waiting ON messages (to_key, ts) WHERE waiting;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# A record's fields, in its order; the row also holds its conversation.
_COLUMNS = ("seq, ts, sender, sender_key, text, cid, room, to_name, to_key, lineage, to_lineage, "
            "waiting")
_M_COLUMNS = ", ".join(f"m.{c}" for c in _COLUMNS.split(", "))
_INSERT = f"INSERT INTO messages ({_COLUMNS}, conversation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
# Record.readable_by in SQL, for a reader's lineage (?5) and its account's
# key (?4: NULL for a guest); every read puts its own three first.
_READABLE = ("(lineage = ?5 OR to_lineage = ?5 OR (?4 IS NOT NULL AND ("
             "(sender_key = ?4 AND lineage IS NULL) OR (to_key = ?4 AND to_lineage IS NULL))))")
# Keys per query when looking up a batch: at most 2 parameters each, within
# the 999 that SQLite before 3.32 allows.
LOOKUP_CHUNK = 400


def _readable_by(reader: str | None) -> str:
    return "1" if reader is None else _READABLE


def _reader_params(reader: str | None) -> tuple:
    """Parameters 4 and 5 of a read: the reader's account key and lineage."""
    return () if reader is None else (account_of(reader), reader)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection):
    """A write transaction; on any failure, the COMMIT's own included (a
    full disk), nothing stays half open for the next try.  IMMEDIATE: it
    reads before it writes, and a plain BEGIN would then fail at once, not
    wait, if another connection (a tool, the sqlite3 shell) wrote in between."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection):
    """Several reads that see one state, not a commit landing between them."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _chunks(items: list, size: int = LOOKUP_CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Tables:
    """The store's statements on one connection, synchronous: what the
    writer and reader threads run (and what a tool may call directly)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        # Each conversation's newest number, as committed: numbers only ever
        # grow and only this connection writes them (the data directory's
        # lock), so a batch reads a conversation's number once, not each time.
        self._committed_seqs: dict[str, int] = {}

    def close(self) -> None:
        self.conn.close()

    # Every cursor is closed as soon as it is read.  One left to the garbage
    # collector (held by a traceback, say) could be freed by another thread
    # while its connection is in use on this one, which crashed the process.

    def _query(self, sql: str, params=()) -> list:
        cursor = self.conn.execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def _one(self, sql: str, params=()):
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _execute(self, sql: str, params=()) -> int:
        cursor = self.conn.execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def _execute_many(self, sql: str, rows) -> None:
        self.conn.executemany(sql, rows).close()

    # --- messages ------------------------------------------------------------

    def append(self, records: list[Record]) -> tuple[list[Record], list[tuple[Record, Record]]]:
        """Number and save new records in one transaction; see
        ``IMessageLog.append``.  The lookups are one indexed query per
        LOOKUP_CHUNK keys for the whole batch."""
        with _transaction(self.conn):
            conversations = [r.conversation for r in records]
            saved = self._saved(records)
            known = self._committed_seqs
            looked_up = self._last_seqs([c for c in set(conversations) if c not in known])
            fresh, fresh_conversations, again, newest = number(
                records, conversations, saved, ChainMap(looked_up, known))
            # A record is a row already, but for its conversation.
            # A record is a row already, but for its conversation.
            self._execute_many(_INSERT, [r + (c,) for r, c in zip(fresh, fresh_conversations)])
            self._execute_many(
                "INSERT INTO conversations (conversation, last_seq) VALUES (?, ?) "
                "ON CONFLICT (conversation) DO UPDATE SET last_seq = excluded.last_seq",
                newest.items(),
            )
        known.update(looked_up)  # committed now
        known.update(newest)
        return fresh, again

    def _saved(self, records: list[Record]) -> dict[tuple[str, str], Record]:
        """The records saved before, within the resend window, with a cid
        of this batch in the same lineage (the newest, if several)."""
        found: dict[tuple[str, str], Record] = {}
        keys = [(*r.sent_as, r.ts - RESEND_WINDOW_MS) for r in records]
        for chunk in _chunks(keys, LOOKUP_CHUNK * 2 // 3):
            # Driven by the list of keys: one index search each (a row-value
            # IN would scan the whole index).
            rows = self._query(
                f"SELECT {_M_COLUMNS} FROM (VALUES {','.join(['(?,?,?)'] * len(chunk))}) AS k "
                "CROSS JOIN messages AS m ON m.lineage = k.column1 AND m.cid = k.column2 "
                "AND m.ts >= k.column3",
                [v for key in chunk for v in key],
            )
            for row in rows:
                record = Record._make(row)
                key = record.sent_as
                if key not in found or found[key].ts < record.ts:
                    found[key] = record
        return found

    def _last_seqs(self, conversations: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(conversations):
            found.update(self._query(
                "SELECT conversation, last_seq FROM conversations "
                f"WHERE conversation IN ({','.join('?' * len(chunk))})",
                chunk,
            ))
        return found

    def after(self, conversation: str, seq: int, limit: int,
              reader: str | None = None) -> list[Record]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM messages WHERE conversation = ?1 AND seq > ?2 "
            f"AND {_readable_by(reader)} ORDER BY seq LIMIT ?3",
            (conversation, seq, limit, *_reader_params(reader)),
        )
        return [Record._make(row) for row in rows]

    def before(self, conversation: str, seq: int, limit: int,
               reader: str | None = None) -> list[Record]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM messages WHERE conversation = ?1 AND seq < ?2 "
            f"AND {_readable_by(reader)} ORDER BY seq DESC LIMIT ?3",
            (conversation, seq, limit, *_reader_params(reader)),
        )
        return [Record._make(row) for row in reversed(rows)]

    def direct_since(self, key: str, since_ms: int, limit: int,
                     reader: str | None = None) -> list[Record]:
        # Two searches of the (partial) direct-message indexes; a message to
        # oneself is found by the first only.  Ties in time go by
        # conversation and number, as in the memory store.
        readable = _readable_by(reader)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM ("
            f"  SELECT {_COLUMNS}, conversation FROM messages"
            f"   WHERE sender_key = ?1 AND to_key IS NOT NULL AND ts >= ?2 AND {readable}"
            "  UNION ALL"
            f"  SELECT {_COLUMNS}, conversation FROM messages"
            f"   WHERE to_key = ?1 AND sender_key <> ?1 AND ts >= ?2 AND {readable}"
            ") ORDER BY ts, conversation, seq LIMIT ?3",
            (key, since_ms, limit, *_reader_params(reader)),
        )
        return [Record._make(row) for row in rows]

    def last_before_time(self, conversation: str, ts_ms: int) -> int:
        # From the newest back: the times asked for are mostly recent ones
        # (a client catching up), and numbers follow the server's clock.
        row = self._one("SELECT seq FROM messages WHERE conversation = ? AND ts < ? "
                        "ORDER BY seq DESC LIMIT 1", (conversation, ts_ms))
        return row[0] if row else 0

    def find_cid(self, lineage: str, cid: str, since_ms: int) -> Record | None:
        row = self._one(
            f"SELECT {_COLUMNS} FROM messages WHERE lineage = ? AND cid = ? AND ts >= ? "
            "ORDER BY ts DESC LIMIT 1",
            (lineage, cid, since_ms),
        )
        return Record._make(row) if row else None

    def waiting_for(self, key: str, conversation: str) -> tuple[str, int, int] | None:
        row = self._one("SELECT name, count(conversation), count(conversation = ?2 OR NULL) "
                        "FROM accounts LEFT JOIN messages ON to_key = key AND waiting "
                        "WHERE key = ?1 GROUP BY name", (key, conversation))
        return tuple(row) if row else None

    def waiting_directs(self, key: str, limit: int) -> list[Record]:
        rows = self._query(f"SELECT {_COLUMNS} FROM messages WHERE to_key = ? AND waiting "
                           "ORDER BY conversation, seq LIMIT ?", (key, limit))
        return [Record._make(row) for row in rows]

    def directs_had(self, numbers: list[tuple[str, int]]) -> None:
        with _transaction(self.conn):
            self._execute_many("UPDATE messages SET waiting = 0 WHERE conversation = ? AND seq = ?",
                               numbers)

    def adopt_lineage(self, old: str, new: str) -> None:
        with _transaction(self.conn):
            self._execute("UPDATE messages SET lineage = ? WHERE lineage = ?", (new, old))
            self._execute("UPDATE messages SET to_lineage = ? WHERE to_lineage = ?", (new, old))

    def delete_conversation(self, conversation: str) -> None:
        with _transaction(self.conn):
            self._delete_conversation(conversation)

    def _delete_conversation(self, conversation: str) -> None:
        # Its newest number stays: a room made again under the same name
        # goes on from there, so no client's old position hides new lines.
        self._execute("DELETE FROM messages WHERE conversation = ?", (conversation,))

    def prune(self, older_than_ms: int) -> int:
        # The numbers live on in ``conversations``: nothing to keep here.
        return self._write("DELETE FROM messages WHERE ts < ?", (older_than_ms,))

    def _write(self, sql: str, params: tuple) -> int:
        with _transaction(self.conn):
            return self._execute(sql, params)

    # --- accounts and server bans ----------------------------------------------

    def account(self, key: str) -> tuple[str, str] | None:
        return self._one("SELECT name, password FROM accounts WHERE key = ?", (key,))

    def set_account(self, key: str, name: str, password: str, now_ms: int) -> None:
        with _transaction(self.conn):
            self._execute(
                "INSERT INTO accounts (key, name, password, created) VALUES (?,?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET password = excluded.password",
                (key, name, password, now_ms),
            )
            # The looks of the name as it was registered (a password change keeps it).
            kept, = self._one("SELECT name FROM accounts WHERE key = ?", (key,))
            self._add_looks([(key, kept)])

    def _add_looks(self, accounts) -> None:
        self._execute_many(
            "INSERT OR IGNORE INTO account_looks (look, key) VALUES (?, ?)",
            [(look, key) for key, name in accounts for look in lookalikes.looks(name, key)],
        )

    def lookalike_account(self, looks, key: str) -> str | None:
        looks = sorted(looks)
        row = self._one(
            "SELECT a.name FROM account_looks AS l JOIN accounts AS a ON a.key = l.key "
            f"WHERE l.look IN ({','.join('?' * len(looks))}) AND l.key <> ? "
            "ORDER BY a.key LIMIT 1",
            (*looks, key),
        )
        return row[0] if row else None

    def refresh_looks(self) -> None:
        """Every account's looks, made again if the confusables data (or
        how skeletons are made) has changed since they were made."""
        with _transaction(self.conn):
            made = self._one("SELECT value FROM meta WHERE name = 'looks'")
            if made is not None and made[0] == lookalikes.VERSION:
                return
            self._execute("DELETE FROM account_looks")
            self._add_looks(self._query("SELECT key, name FROM accounts"))
            self._execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('looks', ?)",
                          (lookalikes.VERSION,))

    def ban(self, key: str) -> tuple[str, float | None, str] | None:
        return self._one("SELECT name, until, reason FROM bans WHERE key = ?", (key,))

    def set_ban(self, key: str, name: str, until: float | None, reason: str,
                now_ms: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO bans (key, name, until, reason, created) VALUES (?,?,?,?,?)",
            (key, name, until, reason, now_ms),
        )

    def delete_ban(self, key: str) -> bool:
        return self._write("DELETE FROM bans WHERE key = ?", (key,)) > 0

    def bans(self) -> list[tuple[str, str, float | None, str]]:
        return self._query("SELECT key, name, until, reason FROM bans ORDER BY key")

    # --- rooms -----------------------------------------------------------------

    def load(self) -> list[RoomRecord]:
        with _snapshot(self.conn):
            return self._rooms()

    def room(self, key: str) -> RoomRecord | None:
        with _snapshot(self.conn):
            rooms = self._rooms(key)
        return rooms[0] if rooms else None

    def _rooms(self, only: str | None = None) -> list[RoomRecord]:
        """Every room, or the one keyed ``only``."""
        def rows(sql: str, column: str):
            if only is None:
                return self._query(sql)
            return self._query(f"{sql} WHERE {column} = ?", (only,))

        return read_rooms(rows)

    def create_room(self, room: RoomRecord) -> tuple[RoomRecord | None, bool]:
        # Never over a room that is there: its settings and owner stand.
        with _transaction(self.conn):
            created = self._execute(
                "INSERT INTO rooms (key, name, topic, private, topic_locked, created, password, "
                "member_limit, moderated) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO NOTHING",
                (room.key, room.name, room.topic, room.private, room.topic_locked, room.created,
                 room.password, room.member_limit, room.moderated)) > 0
        return self.room(room.key), created

    def save_room(self, room: RoomRecord) -> None:
        # An upsert, never INSERT OR REPLACE: replacing the row would delete
        # it first, and its roles, bans and mutes with it.
        self._write(
            "INSERT INTO rooms (key, name, topic, private, topic_locked, created, password, "
            "member_limit, moderated) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO UPDATE "
            "SET name = excluded.name, topic = excluded.topic, private = excluded.private, "
            "topic_locked = excluded.topic_locked, password = excluded.password, "
            "member_limit = excluded.member_limit, moderated = excluded.moderated",
            (room.key, room.name, room.topic, room.private, room.topic_locked, room.created,
             room.password, room.member_limit, room.moderated),
        )

    def delete_room(self, key: str) -> None:
        with _transaction(self.conn):
            # Roles, bans, mutes and memberships go by ON DELETE CASCADE.
            self._execute("DELETE FROM rooms WHERE key = ?", (key,))
            self._delete_conversation(room_conversation(key))

    def set_role(self, room: str, key: str, name: str, role: str | None) -> None:
        if role is None:
            self._write("DELETE FROM room_roles WHERE room = ? AND key = ?", (room, key))
        else:
            self._write(
                "INSERT OR REPLACE INTO room_roles (room, key, name, role) VALUES (?,?,?,?)",
                (room, key, name, role),
            )

    def set_room_ban(self, room: str, key: str, name: str, until: float | None, reason: str,
                     now_ms: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO room_bans (room, key, name, until, reason, created) "
            "VALUES (?,?,?,?,?,?)",
            (room, key, name, until, reason, now_ms),
        )

    def delete_room_ban(self, room: str, key: str) -> bool:
        return self._write("DELETE FROM room_bans WHERE room = ? AND key = ?", (room, key)) > 0

    def set_voice(self, room: str, key: str, name: str, voiced: bool) -> None:
        if voiced:
            self._write("INSERT OR REPLACE INTO room_voices (room, key, name) VALUES (?,?,?)",
                        (room, key, name))
        else:
            self._write("DELETE FROM room_voices WHERE room = ? AND key = ?", (room, key))

    def set_mute(self, room: str, key: str, name: str, muted: bool) -> None:
        if muted:
            self._write("INSERT OR REPLACE INTO room_mutes (room, key, name) VALUES (?,?,?)",
                        (room, key, name))
        else:
            self._write("DELETE FROM room_mutes WHERE room = ? AND key = ?", (room, key))

    def memberships(self, key: str) -> list[str]:
        return [room for room, in self._query(
            "SELECT room FROM memberships WHERE key = ? ORDER BY room", (key,))]

    def add_membership(self, key: str, room: str) -> None:
        self._write("INSERT OR IGNORE INTO memberships (key, room) VALUES (?, ?)", (key, room))

    def remove_membership(self, key: str, room: str) -> None:
        self._write("DELETE FROM memberships WHERE key = ? AND room = ?", (key, room))


# --- opening ---------------------------------------------------------------------


def _explain(error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "locked" in text or "busy" in text:
        return f"{text} (is another spchat server using this data directory?)"
    if "not a database" in text or "malformed" in text:
        return f"{text} (the file is damaged: restore it from a backup or move it away)"
    return text


def _connect(path: Path, sync: str = "full", writer: bool = True) -> sqlite3.Connection:
    """Open (or create) the database; the writer's connection also checks
    it and brings its schema up to date."""
    try:
        if not path.exists():
            # Create it private before SQLite writes a byte into it.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, timeout=0.5, check_same_thread=False, isolation_level=None)
        try:
            if writer:
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit is on disk (WAL fsync'd) before anyone hears
                # of it, so an acknowledgement survives even a power cut.
                conn.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
                conn.execute("PRAGMA foreign_keys=ON")
                # Fail now, with the file's name, if the content is damaged.
                if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("database disk image is malformed")
                _migrate(conn)
                Tables(conn).refresh_looks()
            else:
                conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot use the database {path}: {_explain(e)}") from None
    except OSError as e:
        raise StoreError(f"cannot open the database {path}: {e.strerror}") from None


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


# --- where the statements run ----------------------------------------------------


class _Inline:
    """On the calling thread: Deferreds that have fired already."""

    def __init__(self, tables: Tables):
        self.tables = tables

    def run(self, statement, *args) -> defer.Deferred:
        return defer.maybeDeferred(statement, self.tables, *args)

    def close(self) -> defer.Deferred:
        return self.run(Tables.close)


@implementer(IStore)
class SQLiteStore(ThreadedStore):
    """``IStore`` on one SQLite file.  ``sync``: ``full`` or ``normal``
    (safe against a crash, not a power cut); ``mode``: ``thread`` (a writer
    and a reader thread) or ``inline`` (the calling thread).

    ``open()`` does its work before it returns and never raises: a problem
    is the failure of the Deferred it returns, a one-line ``StoreError``.
    In thread mode a read sees the writes whose Deferreds have fired, not
    necessarily those still queued on the writer."""

    tables = Tables

    def __init__(self, path: Path, sync: str = "full", mode: str = "thread", reactor=None):
        if sync not in ("full", "normal"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        if mode not in ("thread", "inline"):
            raise ValueError(f"mode must be 'thread' or 'inline', not {mode!r}")
        self.path = Path(path)
        self.sync = sync
        self.mode = mode
        self.reactor = reactor
        self._lock: int | None = None

    @classmethod
    def in_dir(cls, data_dir: Path, **options) -> SQLiteStore:
        return cls(Path(data_dir) / DB_FILE, **options)

    def _open(self) -> None:
        self._lock = lock = _lock_dir(self.path.parent)
        try:
            writer = Tables(_connect(self.path, self.sync))
            if self.mode == "inline":
                self._writer = self._reader = _Inline(writer)
                return
            try:
                reader = Tables(_connect(self.path, writer=False))
            except StoreError:
                writer.close()
                raise
        except StoreError:
            os.close(lock)
            self._lock = None
            raise
        if self.reactor is None:
            from twisted.internet import reactor
            self.reactor = reactor
        self._writer = StatementThread(self.reactor, writer, "spchat-store-writer")
        self._reader = StatementThread(self.reactor, reader, "spchat-store-reader")

    def close(self) -> defer.Deferred:
        """After the work queued already, close the connections and free
        the data directory."""
        if self._writer is None:
            return defer.succeed(None)
        runners = {r for r in (self._writer, self._reader) if r is not None}  # one if inline
        self._writer = self._reader = None
        d = defer.gatherResults([runner.close() for runner in runners], consumeErrors=True)
        d.addCallbacks(lambda _: None, lambda failure: failure.value.subFailure)
        return d.addBoth(self._unlock)

    def _unlock(self, result):
        if self._lock is not None:
            os.close(self._lock)
        self._lock = None
        return result
