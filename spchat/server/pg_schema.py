"""The PostgreSQL store's schema and its migrations.

The same tables as the SQLite store's (its version 4), in PostgreSQL's
types, (version 2) the names claimed across the nodes, and (version 3)
the direct messages that wait for a login.  The version is the one row
of ``schema_version``; ``migrate`` brings a database up to date under an advisory lock, so that two servers
starting at once on one database migrate it once, one after the other.

Keys, names and conversations are ``COLLATE "C"``: ordered by code point,
as Python (and the SQLite and memory stores) order them, whatever the
database's own locale.
"""

from __future__ import annotations

# Any number, the same in every spchat: who holds it may change the schema.
MIGRATION_LOCK = 0x5C4A7_0001

# Each entry upgrades the schema from its index to index + 1.
MIGRATIONS = [
    """
    CREATE TABLE messages (
        conversation TEXT COLLATE "C" NOT NULL,
        seq BIGINT NOT NULL,
        ts BIGINT NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT COLLATE "C" NOT NULL,
        text TEXT NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        room TEXT COLLATE "C",
        to_name TEXT,
        to_key TEXT COLLATE "C",
        lineage TEXT COLLATE "C",
        to_lineage TEXT COLLATE "C",
        PRIMARY KEY (conversation, seq)
    );
    CREATE INDEX messages_by_ts ON messages (ts);
    CREATE INDEX messages_by_lineage ON messages (lineage, cid);
    CREATE INDEX messages_by_to_lineage ON messages (to_lineage) WHERE to_lineage IS NOT NULL;
    CREATE INDEX direct_from ON messages (sender_key, ts) WHERE to_key IS NOT NULL;
    CREATE INDEX direct_to ON messages (to_key, ts) WHERE to_key IS NOT NULL;

    -- Each conversation's newest number.  Its row is what an append locks
    -- to number its messages: two servers on one database number one
    -- conversation in turn, never alike.  Pruning never makes a number
    -- come back.
    CREATE TABLE conversations (
        conversation TEXT COLLATE "C" PRIMARY KEY,
        last_seq BIGINT NOT NULL
    );

    CREATE TABLE accounts (
        key TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        password TEXT NOT NULL,
        created BIGINT NOT NULL
    );
    CREATE TABLE account_looks (
        look TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        PRIMARY KEY (look, key)
    );
    CREATE TABLE bans (
        key TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        until DOUBLE PRECISION,
        reason TEXT NOT NULL,
        created BIGINT NOT NULL
    );
    CREATE TABLE meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    CREATE TABLE rooms (
        key TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        topic TEXT NOT NULL DEFAULT '',
        private BOOLEAN NOT NULL DEFAULT FALSE,
        topic_locked BOOLEAN NOT NULL DEFAULT FALSE,
        password TEXT NOT NULL DEFAULT '',
        member_limit INTEGER NOT NULL DEFAULT 0,
        moderated BOOLEAN NOT NULL DEFAULT FALSE,
        created BIGINT NOT NULL
    );
    CREATE TABLE room_roles (
        room TEXT COLLATE "C" NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE room_bans (
        room TEXT COLLATE "C" NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        until DOUBLE PRECISION,
        reason TEXT NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE room_mutes (
        room TEXT COLLATE "C" NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE room_voices (
        room TEXT COLLATE "C" NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        key TEXT COLLATE "C" NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (room, key)
    );
    CREATE TABLE memberships (
        key TEXT COLLATE "C" NOT NULL,
        room TEXT COLLATE "C" NOT NULL REFERENCES rooms (key) ON DELETE CASCADE,
        PRIMARY KEY (key, room)
    );
    CREATE INDEX memberships_by_room ON memberships (room);
    """,
    # 2: names claimed across the nodes (spchat.server.pg_claims).
    """
    -- Each node's last beat, in the database's time: whether it is alive
    -- is judged on one clock, whatever the nodes' own say.
    CREATE TABLE nodes (
        name TEXT COLLATE "C" PRIMARY KEY,
        last_seen TIMESTAMPTZ NOT NULL
    );
    -- Who holds each name, and what another node needs to carry the
    -- session on after a resume there.
    CREATE TABLE claims (
        key TEXT COLLATE "C" PRIMARY KEY,
        session TEXT COLLATE "C" NOT NULL UNIQUE,
        node TEXT COLLATE "C" NOT NULL,
        token_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        registered BOOLEAN NOT NULL,
        lineage TEXT COLLATE "C" NOT NULL,
        rooms TEXT[] NOT NULL DEFAULT '{}',
        looks TEXT[] NOT NULL DEFAULT '{}',
        claimed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );
    CREATE INDEX claims_by_node ON claims (node);
    CREATE INDEX claims_by_looks ON claims USING GIN (looks);
    """,
    # 3: direct messages that wait for their recipient's next login.
    """
    ALTER TABLE messages ADD COLUMN waiting BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE INDEX directs_waiting ON messages (to_key, ts) WHERE waiting;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(Exception):
    """The database's schema is not one this spchat can use."""


def migrate(link) -> int:
    """Bring the schema up to date through ``link`` (a ``pg_link.Link``);
    returns the version found.  Safe to run from several processes at
    once: one migrates, the others wait for its lock and find it done."""
    with link.cursor() as cursor:
        # A session lock: held across the steps' transactions below.
        cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        with link.transaction() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cursor.execute("SELECT version FROM schema_version")
            row = cursor.fetchone()
            found = 0 if row is None else row[0]
            if row is None:
                cursor.execute("INSERT INTO schema_version (version) VALUES (0)")
        if found > SCHEMA_VERSION:
            raise SchemaError(f"schema version {found} is newer than this spchat "
                              f"({SCHEMA_VERSION})")
        for index in range(found, SCHEMA_VERSION):
            # One transaction per step: the schema and its version move together.
            with link.transaction() as cursor:
                cursor.execute(MIGRATIONS[index])
                cursor.execute("UPDATE schema_version SET version = %s", (index + 1,))
        return found
    finally:
        if link.conn is not None:  # a lost connection has let go of it already
            with link.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
