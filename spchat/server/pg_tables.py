"""The PostgreSQL store's statements, synchronous, on one connection.

``PgTables`` is what the store's writer and reader threads run, as
``spchat.server.store.Tables`` is for SQLite.  ``append_rows`` is the
append transaction's body on any DB-API cursor (the measurement script
runs it on other drivers too).

How numbers are given: first one ``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`` locks the ``last_seq`` row of each conversation of the batch
until COMMIT (made if it is new) and reads its number.  Another server
appending to the same conversation waits on that lock, and only then looks
for copies of its lines saved before and numbers after this batch: no gap,
no number twice, and a line this server saved as the other one got it
again from its client (the client moved between them) is found as a copy,
not saved twice.  The rows are locked in the order of their conversations,
so two batches touching the same ones cannot deadlock.
"""

from __future__ import annotations

from spchat.server import lookalikes
from spchat.server.pg_link import CommitInDoubt
from spchat.server.numbering import RESEND_WINDOW_MS, number
from spchat.server.records import (Record, RoomRecord, account_of, read_rooms,
                                    room_conversation)

# A record's fields, in its order.
_COLUMNS = ("seq, ts, sender, sender_key, text, cid, room, to_name, to_key, lineage, to_lineage, "
            "waiting")
_M_COLUMNS = ", ".join(f"m.{c}" for c in _COLUMNS.split(", "))
_TYPES = ("bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "text",
          "text", "boolean")
# Record.readable_by in SQL, for a reader's lineage and its account's key
# (NULL for a guest).
_READABLE = ("(lineage = %(lineage)s OR to_lineage = %(lineage)s OR "
             "(%(owner)s::text IS NOT NULL AND ((sender_key = %(owner)s AND lineage IS NULL) "
             "OR (to_key = %(owner)s AND to_lineage IS NULL))))")


def _reading(reader: str | None, **params) -> tuple[str, dict]:
    """The condition a read adds for ``reader`` (IMessageLog), and its parameters."""
    if reader is None:
        return "TRUE", params
    return _READABLE, {**params, "lineage": reader, "owner": account_of(reader)}

# Every statement takes whole columns as arrays: one round trip per batch.
SAVED_BEFORE = (
    f"SELECT {_M_COLUMNS} FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
    "AS k (lineage, cid, since) "
    "JOIN messages AS m ON m.lineage = k.lineage AND m.cid = k.cid AND m.ts >= k.since"
)
# Read committed: each statement sees what was committed when it began, so
# the copies are looked for once the locks are held.
LOCK_NUMBERS = (
    "INSERT INTO conversations AS c (conversation, last_seq) "
    "SELECT n, 0 FROM unnest(%s::text[]) AS n ORDER BY 1 "
    "ON CONFLICT (conversation) DO UPDATE SET last_seq = c.last_seq "
    "RETURNING conversation, last_seq"
)
SET_NUMBERS = (
    "UPDATE conversations AS c SET last_seq = n.last_seq "
    "FROM unnest(%s::text[], %s::bigint[]) AS n (conversation, last_seq) "
    "WHERE c.conversation = n.conversation"
)
INSERT_MESSAGES = (
    f"INSERT INTO messages (conversation, {_COLUMNS}) SELECT * FROM unnest(%s::text[], "
    + ", ".join(f"%s::{t}[]" for t in _TYPES) + ")"
)


def append_rows(cursor, records: list[Record], in_doubt: frozenset = frozenset()):
    """Number and save new records, in the caller's transaction; see
    ``IMessageLog.append``.  ``in_doubt``: ``(lineage, cid, ts)`` of records
    whose COMMIT may have landed before the connection broke: found saved,
    with their own time, they are returned as saved (to be published, the
    first time), not as copies."""
    conversations = [r.conversation for r in records]
    cursor.execute(LOCK_NUMBERS, (sorted(set(conversations)),))
    last_seq = dict(cursor.fetchall())
    saved = _saved_before(cursor, records)
    fresh, fresh_conversations, again, newest = number(records, conversations, saved, last_seq)
    landed = []
    if in_doubt:
        from_before = {id(old) for old in saved.values()}
        mine = [(r, old) for r, old in again if id(old) in from_before and old.ts == r.ts
                and (*r.sent_as, r.ts) in in_doubt]
        landed = [old for _, old in mine]
        again = [pair for pair in again if pair not in mine]
    if not fresh:
        return landed, again
    names = sorted(newest)
    cursor.execute(SET_NUMBERS, (names, [newest[c] for c in names]))
    cursor.execute(INSERT_MESSAGES, [fresh_conversations, *map(list, zip(*fresh))])
    # The landed ones were the front of the batch (the committer puts a
    # failed batch back first): they come first.
    return landed + fresh, again


def _saved_before(cursor, records: list[Record]) -> dict[tuple[str, str], Record]:
    """The records saved before, within the resend window, with a cid of
    this batch in the same lineage (the newest, if several)."""
    keys = [r.sent_as for r in records]
    cursor.execute(SAVED_BEFORE, ([k[0] for k in keys], [k[1] for k in keys],
                                  [r.ts - RESEND_WINDOW_MS for r in records]))
    found: dict[tuple[str, str], Record] = {}
    for row in cursor.fetchall():
        record = Record._make(row)
        key = record.sent_as
        if key not in found or found[key].ts < record.ts:
            found[key] = record
    return found


class PgTables:
    """The store's statements on one ``spchat.server.pg_link.Link``."""

    def __init__(self, link):
        self.link = link
        # Records of a batch whose COMMIT may have landed (the connection
        # broke under it), until an append succeeds: see append_rows.
        self._in_doubt: frozenset = frozenset()

    def close(self) -> None:
        self.link.close()

    def _query(self, sql: str, params=()) -> list:
        def rows(cursor):
            cursor.execute(sql, params)
            return cursor.fetchall()

        return self.link.read(rows)

    def _one(self, sql: str, params=()):
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _write(self, sql: str, params=()) -> int:
        with self.link.transaction() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    # --- messages ------------------------------------------------------------

    def append(self, records: list[Record]):
        try:
            with self.link.transaction() as cursor:
                result = append_rows(cursor, records, self._in_doubt)
        except CommitInDoubt:
            self._in_doubt |= {(*r.sent_as, r.ts) for r in records}
            raise
        self._in_doubt = frozenset()
        return result

    def after(self, conversation: str, seq: int, limit: int,
              reader: str | None = None) -> list[Record]:
        readable, params = _reading(reader, conversation=conversation, seq=seq, limit=limit)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM messages WHERE conversation = %(conversation)s "
            f"AND seq > %(seq)s AND {readable} ORDER BY seq LIMIT %(limit)s", params)
        return [Record._make(row) for row in rows]

    def before(self, conversation: str, seq: int, limit: int,
               reader: str | None = None) -> list[Record]:
        readable, params = _reading(reader, conversation=conversation, seq=seq, limit=limit)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM messages WHERE conversation = %(conversation)s "
            f"AND seq < %(seq)s AND {readable} ORDER BY seq DESC LIMIT %(limit)s", params)
        return [Record._make(row) for row in reversed(rows)]

    def direct_since(self, key: str, since_ms: int, limit: int,
                     reader: str | None = None) -> list[Record]:
        # As in SQLite: both direct-message indexes; a message to oneself is
        # found by the first only; ties in time by conversation and number.
        readable, params = _reading(reader, key=key, since=since_ms, limit=limit)
        rows = self._query(
            f"SELECT {_COLUMNS} FROM ("
            f"  SELECT {_COLUMNS}, conversation FROM messages"
            "   WHERE sender_key = %(key)s AND to_key IS NOT NULL AND ts >= %(since)s"
            f"   AND {readable}"
            "  UNION ALL"
            f"  SELECT {_COLUMNS}, conversation FROM messages"
            "   WHERE to_key = %(key)s AND sender_key <> %(key)s AND ts >= %(since)s"
            f"   AND {readable}"
            ") AS d ORDER BY ts, conversation, seq LIMIT %(limit)s", params)
        return [Record._make(row) for row in rows]

    def last_before_time(self, conversation: str, ts_ms: int) -> int:
        row = self._one("SELECT seq FROM messages WHERE conversation = %s AND ts < %s "
                        "ORDER BY seq DESC LIMIT 1", (conversation, ts_ms))
        return row[0] if row else 0

    def find_cid(self, lineage: str, cid: str, since_ms: int) -> Record | None:
        row = self._one(
            f"SELECT {_COLUMNS} FROM messages WHERE lineage = %s AND cid = %s AND ts >= %s "
            "ORDER BY ts DESC LIMIT 1", (lineage, cid, since_ms))
        return Record._make(row) if row else None

    def waiting_for(self, key: str, conversation: str) -> tuple[str, int, int] | None:
        row = self._one("SELECT name, count(conversation), "
                        "count(conversation) FILTER (WHERE conversation = %(conversation)s) "
                        "FROM accounts LEFT JOIN messages ON to_key = key AND waiting "
                        "WHERE key = %(key)s GROUP BY name",
                        {"key": key, "conversation": conversation})
        return tuple(row) if row else None

    def waiting_directs(self, key: str, limit: int) -> list[Record]:
        rows = self._query(f"SELECT {_COLUMNS} FROM messages WHERE to_key = %s AND waiting "
                           "ORDER BY conversation, seq LIMIT %s", (key, limit))
        return [Record._make(row) for row in rows]

    def directs_had(self, numbers: list[tuple[str, int]]) -> None:
        self._write("UPDATE messages SET waiting = FALSE FROM unnest(%s::text[], %s::bigint[]) "
                    "AS h (conversation, seq) "
                    "WHERE messages.conversation = h.conversation AND messages.seq = h.seq",
                    ([c for c, _ in numbers], [n for _, n in numbers]))

    def adopt_lineage(self, old: str, new: str) -> None:
        with self.link.transaction() as cursor:
            cursor.execute("UPDATE messages SET lineage = %s WHERE lineage = %s", (new, old))
            cursor.execute("UPDATE messages SET to_lineage = %s WHERE to_lineage = %s",
                           (new, old))

    def delete_conversation(self, conversation: str) -> None:
        # Its newest number stays in ``conversations``: a room made again
        # under the same name goes on from there.
        self._write("DELETE FROM messages WHERE conversation = %s", (conversation,))

    def prune(self, older_than_ms: int) -> int:
        return self._write("DELETE FROM messages WHERE ts < %s", (older_than_ms,))

    # --- accounts and server bans ----------------------------------------------

    def account(self, key: str) -> tuple[str, str] | None:
        return self._one("SELECT name, password FROM accounts WHERE key = %s", (key,))

    def set_account(self, key: str, name: str, password: str, now_ms: int) -> None:
        with self.link.transaction() as cursor:
            # A new password keeps the name the account was registered with.
            cursor.execute(
                "INSERT INTO accounts AS a (key, name, password, created) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (key) DO UPDATE SET password = excluded.password RETURNING a.name",
                (key, name, password, now_ms))
            kept, = cursor.fetchone()
            _add_looks(cursor, [(key, kept)])

    def lookalike_account(self, looks, key: str) -> str | None:
        row = self._one(
            "SELECT a.name FROM account_looks AS l JOIN accounts AS a ON a.key = l.key "
            "WHERE l.look = ANY(%s::text[]) AND l.key <> %s ORDER BY a.key LIMIT 1",
            (sorted(looks), key))
        return row[0] if row else None

    def refresh_looks(self) -> None:
        """Every account's looks, made again if the confusables data (or
        how skeletons are made) has changed since they were made."""
        with self.link.transaction() as cursor:
            # Locked: two servers starting at once make them once.
            cursor.execute("LOCK TABLE account_looks IN EXCLUSIVE MODE")
            cursor.execute("SELECT value FROM meta WHERE name = 'looks'")
            made = cursor.fetchone()
            if made is not None and made[0] == lookalikes.VERSION:
                return
            cursor.execute("DELETE FROM account_looks")
            cursor.execute("SELECT key, name FROM accounts")
            _add_looks(cursor, cursor.fetchall())
            cursor.execute(
                "INSERT INTO meta (name, value) VALUES ('looks', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (lookalikes.VERSION,))

    def ban(self, key: str) -> tuple[str, float | None, str] | None:
        return self._one("SELECT name, until, reason FROM bans WHERE key = %s", (key,))

    def set_ban(self, key: str, name: str, until: float | None, reason: str,
                now_ms: int) -> None:
        self._write(
            "INSERT INTO bans (key, name, until, reason, created) VALUES (%s,%s,%s,%s,%s) "
            "ON CONFLICT (key) DO UPDATE SET name = excluded.name, until = excluded.until, "
            "reason = excluded.reason, created = excluded.created",
            (key, name, until, reason, now_ms))

    def delete_ban(self, key: str) -> bool:
        return self._write("DELETE FROM bans WHERE key = %s", (key,)) > 0

    def bans(self) -> list[tuple[str, str, float | None, str]]:
        return self._query("SELECT key, name, until, reason FROM bans ORDER BY key")

    # --- rooms -----------------------------------------------------------------

    def load(self) -> list[RoomRecord]:
        # One snapshot: no commit lands between the reads.
        return self.link.read(_load, snapshot=True)

    def room(self, key: str) -> RoomRecord | None:
        rooms = self.link.read(lambda cursor: _load(cursor, key), snapshot=True)
        return rooms[0] if rooms else None

    def create_room(self, room: RoomRecord) -> tuple[RoomRecord | None, bool]:
        # Never over a room that is there (another node's, made first):
        # its settings and owner stand, and are read back.
        created = self._write(
            "INSERT INTO rooms (key, name, topic, private, topic_locked, created, password, "
            "member_limit, moderated) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (key) DO NOTHING",
            (room.key, room.name, room.topic, room.private, room.topic_locked, room.created,
             room.password, room.member_limit, room.moderated)) > 0
        return self.room(room.key), created

    def save_room(self, room: RoomRecord) -> None:
        self._write(
            "INSERT INTO rooms (key, name, topic, private, topic_locked, created, password, "
            "member_limit, moderated) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (key) "
            "DO UPDATE SET name = excluded.name, topic = excluded.topic, "
            "private = excluded.private, topic_locked = excluded.topic_locked, "
            "password = excluded.password, member_limit = excluded.member_limit, "
            "moderated = excluded.moderated",
            (room.key, room.name, room.topic, room.private, room.topic_locked, room.created,
             room.password, room.member_limit, room.moderated))

    def delete_room(self, key: str) -> None:
        with self.link.transaction() as cursor:
            # Roles, bans, mutes and memberships go by ON DELETE CASCADE.
            cursor.execute("DELETE FROM rooms WHERE key = %s", (key,))
            cursor.execute("DELETE FROM messages WHERE conversation = %s",
                           (room_conversation(key),))

    def set_role(self, room: str, key: str, name: str, role: str | None) -> None:
        if role is None:
            self._write("DELETE FROM room_roles WHERE room = %s AND key = %s", (room, key))
        else:
            self._write(
                "INSERT INTO room_roles (room, key, name, role) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (room, key) DO UPDATE SET name = excluded.name, role = excluded.role",
                (room, key, name, role))

    def set_room_ban(self, room: str, key: str, name: str, until: float | None, reason: str,
                     now_ms: int) -> None:
        self._write(
            "INSERT INTO room_bans (room, key, name, until, reason, created) "
            "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (room, key) DO UPDATE SET "
            "name = excluded.name, until = excluded.until, reason = excluded.reason, "
            "created = excluded.created",
            (room, key, name, until, reason, now_ms))

    def delete_room_ban(self, room: str, key: str) -> bool:
        return self._write("DELETE FROM room_bans WHERE room = %s AND key = %s",
                           (room, key)) > 0

    def set_voice(self, room: str, key: str, name: str, voiced: bool) -> None:
        if voiced:
            self._write("INSERT INTO room_voices (room, key, name) VALUES (%s,%s,%s) "
                        "ON CONFLICT (room, key) DO UPDATE SET name = excluded.name",
                        (room, key, name))
        else:
            self._write("DELETE FROM room_voices WHERE room = %s AND key = %s", (room, key))

    def set_mute(self, room: str, key: str, name: str, muted: bool) -> None:
        if muted:
            self._write("INSERT INTO room_mutes (room, key, name) VALUES (%s,%s,%s) "
                        "ON CONFLICT (room, key) DO UPDATE SET name = excluded.name",
                        (room, key, name))
        else:
            self._write("DELETE FROM room_mutes WHERE room = %s AND key = %s", (room, key))

    def memberships(self, key: str) -> list[str]:
        return [room for room, in self._query(
            "SELECT room FROM memberships WHERE key = %s ORDER BY room", (key,))]

    def add_membership(self, key: str, room: str) -> None:
        self._write("INSERT INTO memberships (key, room) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (key, room))

    def remove_membership(self, key: str, room: str) -> None:
        self._write("DELETE FROM memberships WHERE key = %s AND room = %s", (key, room))


def _load(cursor, only: str | None = None) -> list[RoomRecord]:
    """Every room, or the one keyed ``only``."""
    def rows(sql: str, column: str):
        if only is None:
            cursor.execute(sql)
        else:
            cursor.execute(f"{sql} WHERE {column} = %s", (only,))
        return cursor.fetchall()

    return read_rooms(rows)


def _add_looks(cursor, accounts) -> None:
    looks = [(look, key) for key, name in accounts for look in lookalikes.looks(name, key)]
    if looks:
        cursor.execute(
            "INSERT INTO account_looks (look, key) SELECT * FROM unnest(%s::text[], %s::text[]) "
            "ON CONFLICT DO NOTHING", ([look for look, _ in looks], [key for _, key in looks]))
