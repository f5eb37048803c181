"""Moving a single node up: its SQLite store copied into a PostgreSQL one.

``snapshot`` takes the data directory's lock (no server may write while it
is read), copies the database with SQLite's backup API (one consistent
state; the source is opened read-only and never changed) and opens the copy
with the SQLite store's own code, which upgrades an old schema (0.1.0's,
say) on the copy only.  ``open_target`` makes or migrates the PostgreSQL
schema with the PostgreSQL store's own code.  ``copy_store`` then copies
table by table, in batches, one transaction each.

Run again, it finishes what an interrupted run left: every row goes in
with ``ON CONFLICT DO NOTHING`` on its key, and a row found there already
must be equal to the source's, or the copy stops (``Conflict``): the
target has content of its own (someone chatted on it), and merging two
histories that give the same numbers is not something to guess at.  Each
conversation's newest number is copied first and only ever raised, so at
every point of a copy it is at least the highest number copied, and a
number pruned away on the node is never given again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from spchat.server.pg_link import Link, StoreUnavailable, one_line, parse_url
from spchat.server.pg_schema import SchemaError, migrate
from spchat.server.pg_store import _driver, _shown
from spchat.server.pg_tables import PgTables, _add_looks
from spchat.server.store import DB_FILE, SCHEMA_VERSION, _connect, _lock_dir
from spchat.server.threaded_store import StoreError

BATCH_ROWS = 5000


class MigrationError(StoreError):
    """The copy cannot be made or go on; one line."""


class Conflict(MigrationError):
    """The target holds other content under a key the source has."""


@dataclass(frozen=True)
class Table:
    """One table as copied: its columns (the key's first) in both stores."""

    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # PostgreSQL's, for the arrays a batch is sent in
    key_size: int
    what: str  # a row, in an error message

    @property
    def key(self) -> tuple[str, ...]:
        return self.columns[:self.key_size]


def _table(name, what, key_size, *columns):
    return Table(name, tuple(c for c, _ in columns), tuple(t for _, t in columns), key_size,
                 what)


# In the order they are copied: a room before what hangs on it (foreign
# keys), messages last (the bulk; their numbers are copied first).
TABLES = [
    _table("accounts", "account", 1, ("key", "text"), ("name", "text"), ("password", "text"),
           ("created", "bigint")),
    _table("bans", "server ban", 1, ("key", "text"), ("name", "text"),
           ("until", "double precision"), ("reason", "text"), ("created", "bigint")),
    _table("rooms", "room", 1, ("key", "text"), ("name", "text"), ("topic", "text"),
           ("private", "boolean"), ("topic_locked", "boolean"), ("password", "text"),
           ("member_limit", "integer"), ("moderated", "boolean"), ("created", "bigint")),
    _table("room_roles", "room role", 2, ("room", "text"), ("key", "text"), ("name", "text"),
           ("role", "text")),
    _table("room_bans", "room ban", 2, ("room", "text"), ("key", "text"), ("name", "text"),
           ("until", "double precision"), ("reason", "text"), ("created", "bigint")),
    _table("room_mutes", "room mute", 2, ("room", "text"), ("key", "text"), ("name", "text")),
    _table("room_voices", "room voice", 2, ("room", "text"), ("key", "text"), ("name", "text")),
    _table("memberships", "membership", 2, ("key", "text"), ("room", "text")),
    _table("messages", "message", 2, ("conversation", "text"), ("seq", "bigint"),
           ("ts", "bigint"), ("sender", "text"), ("sender_key", "text"), ("text", "text"),
           ("cid", "text"), ("room", "text"), ("to_name", "text"), ("to_key", "text"),
           ("lineage", "text"), ("to_lineage", "text"), ("waiting", "boolean")),
]
# SQLite keeps flags as 0 and 1.
_BOOLEANS = {"private", "topic_locked", "moderated", "waiting"}

# Each conversation's newest number: the larger of its row and its
# messages' (a row is written with every append; the max is only a guard).
_SOURCE_NUMBERS = (
    "SELECT conversation, max(last_seq) FROM ("
    " SELECT conversation, last_seq FROM conversations UNION ALL"
    " SELECT conversation, max(seq) FROM messages GROUP BY conversation"
    ") GROUP BY conversation ORDER BY conversation")
# Raised, never lowered: returns the conversations it changed.
_RAISE_NUMBERS = (
    "INSERT INTO conversations AS c (conversation, last_seq) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
    "ON CONFLICT (conversation) DO UPDATE SET last_seq = excluded.last_seq "
    "WHERE c.last_seq < excluded.last_seq RETURNING conversation")


@dataclass
class Counts:
    copied: int = 0
    already_there: int = 0


@dataclass
class Source:
    """The private copy being read, and what it was."""

    conn: sqlite3.Connection
    path: Path  # the database copied
    schema: int  # its version before any upgrade


# --- the source --------------------------------------------------------------------


def database_file(path: Path) -> Path:
    """``spchat.db`` in a data directory, or the file itself."""
    db = path / DB_FILE if path.is_dir() else path
    if not db.is_file():
        raise MigrationError(f"no spchat database at {db}")
    return db


@contextlib.contextmanager
def snapshot(path: Path):
    """A ``Source``: a private copy of the database at ``path`` (a data
    directory or its ``spchat.db``) at the current schema, while the data
    directory is locked against a server."""
    db = database_file(Path(path))
    lock = _lock_dir(db.parent)  # StoreError, "in use by another spchat server"
    try:
        # The copy holds password hashes: the directory is the user's alone (0700).
        with tempfile.TemporaryDirectory(prefix="spchat-migrate-") as work:
            copy = Path(work) / DB_FILE
            schema = _backup(db, copy)
            try:
                conn = _connect(copy, sync="normal")  # the store's checks and migrations
            except StoreError as e:
                raise MigrationError(str(e).replace(str(copy), str(db))) from None
            try:
                yield Source(conn, db, schema)
            finally:
                conn.close()
    finally:
        os.close(lock)


def _backup(db: Path, copy: Path) -> int:
    """Copy ``db`` (read-only, in one consistent state) to ``copy``; its
    schema version, if it is a spchat database this spchat can read."""
    uri = "file:" + urllib.parse.quote(str(db.resolve())) + "?mode=ro"
    try:
        source = sqlite3.connect(uri, uri=True)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
                version, = target.execute("PRAGMA user_version").fetchone()
                tables = {name for name, in target.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.DatabaseError as e:
        hint = " (is it a spchat database?)" if "not a database" in str(e) else ""
        raise MigrationError(f"cannot copy {db}: {e}{hint}") from None
    if version == 0 or "messages" not in tables:
        raise MigrationError(f"{db} is not a spchat database")
    if version > SCHEMA_VERSION:
        raise MigrationError(f"{db} has schema version {version}, newer than this spchat "
                             f"({SCHEMA_VERSION}): use the spchat that wrote it")
    return version


# --- the target --------------------------------------------------------------------


def shown(url: str) -> str:
    """The database as messages name it: without its password."""
    return _shown(url)


def open_target(url: str) -> Link:
    """A connection to the database at ``url``, its schema made or
    migrated as a server's start would.  StoreUnavailable if it cannot be
    reached, StoreError (one line) if it cannot be used."""
    driver = _driver()
    link = Link(parse_url(url), shown(url))
    try:
        migrate(link)
        PgTables(link).refresh_looks()
    except StoreUnavailable:
        link.close()
        raise
    except (driver.Error, SchemaError) as e:
        link.close()
        raise StoreError(f"cannot use the database {shown(url)}: {one_line(e)}") from None
    return link


# --- the copy ----------------------------------------------------------------------


def copy_store(source: Source, link: Link, batch_rows: int = BATCH_ROWS,
               progress=None) -> dict[str, Counts]:
    """Copy everything; the counts per table.  ``progress(table, counts,
    finished)`` is called after each batch's COMMIT and at each table's end."""
    report = progress or (lambda table, counts, finished: None)
    counts = {"conversations": Counts()}
    rows = source.conn.execute(_SOURCE_NUMBERS)
    _copy_batches(rows, batch_rows, link, lambda cursor, batch: _raise_numbers(cursor, batch),
                  "conversations", counts["conversations"], report)
    for table in TABLES:
        counts[table.name] = Counts()
        rows = source.conn.execute(f"SELECT {', '.join(table.columns)} "
                                   f"FROM {table.name} ORDER BY {', '.join(table.key)}")
        _copy_batches(rows, batch_rows, link,
                      lambda cursor, batch, table=table: _insert_new(cursor, table, batch),
                      table.name, counts[table.name], report)
    return counts


def _copy_batches(rows, batch_rows, link, insert, name, counts, report) -> None:
    try:
        while batch := rows.fetchmany(batch_rows):
            with link.transaction() as cursor:
                copied = insert(cursor, batch)
            counts.copied += copied
            counts.already_there += len(batch) - copied
            report(name, counts, False)
    finally:
        rows.close()
    report(name, counts, True)


def _raise_numbers(cursor, batch) -> int:
    cursor.execute(_RAISE_NUMBERS, [list(column) for column in zip(*batch)])
    return len(cursor.fetchall())


def _insert_new(cursor, table: Table, batch: list[tuple]) -> int:
    """Insert the rows not there yet; check those there are the same.
    Returns how many were inserted."""
    batch = [tuple(bool(v) if c in _BOOLEANS else v for c, v in zip(table.columns, row))
             for row in batch]
    arrays = ", ".join(f"%s::{t}[]" for t in table.types)
    key = ", ".join(table.key)
    cursor.execute(
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}",
        [list(column) for column in zip(*batch)])
    inserted = set(cursor.fetchall())
    there = [row for row in batch if row[:table.key_size] not in inserted]
    if table.name == "accounts":
        # What their names look like, as set_account adds them.
        _add_looks(cursor, [(key, name) for key, name, *_ in batch if (key,) in inserted])
    if there:
        _check_same(cursor, table, there)
    return len(inserted)


def _check_same(cursor, table: Table, rows: list[tuple]) -> None:
    size = table.key_size
    keys = ", ".join(f"%s::{t}[]" for t in table.types[:size])
    cursor.execute(
        f"SELECT {', '.join('t.' + c for c in table.columns)} FROM unnest({keys}) "
        f"AS k ({', '.join(table.key)}) JOIN {table.name} AS t ON "
        + " AND ".join(f"t.{c} = k.{c}" for c in table.key),
        [[row[i] for row in rows] for i in range(size)])
    found = {row[:size]: row for row in cursor.fetchall()}
    for row in rows:
        if found.get(row[:size]) != row:
            raise Conflict(
                f"the target already has a different {table.what} "
                f"{_key_text(table, row[:size])}: it has content of its own (has a server "
                "used it?); copy into an empty database")


def _key_text(table: Table, key: tuple) -> str:
    if table.name == "messages":
        return f"{key[1]} of {key[0]}"
    return ", ".join(map(str, key))
