"""A data directory written by release 0.1.0 opens with this code, content intact:
its schema (version 1) becomes version 3, its lobby "#lobby", its direct
messages conversations of their own, each numbered from 1 in the old order,
and its accounts get their looks (the names that would look like them).

The fixture (tests/fixtures/spchat-0.1.0.db) was written by the 0.1.0 server
itself, driven by real clients: see tests/fixtures/README.rst and
scripts/make_release_fixture.py.  The test works on a copy; the fixture is
never opened in place.
"""

import shutil
import sqlite3

import pytest
import pytest_twisted

from spchat.server import lookalikes
from spchat.server.passwords import verify_password
from spchat.server.records import RoomRecord
from spchat.server.store import DB_FILE, SCHEMA_VERSION, SQLiteStore

from release_fixture import DIRECT, FIXTURE, LOBBY



@pytest.fixture
def data_dir(tmp_path):
    """A copy of the 0.1.0 data directory (its database), as a server finds it."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copyfile(FIXTURE, folder / DB_FILE)
    return folder


@pytest_twisted.async_yield_fixture(params=["inline", "thread"])
async def store(request, data_dir):
    store = SQLiteStore.in_dir(data_dir, mode=request.param)
    await store.open()
    yield store
    await store.close()


def test_fixture_is_a_self_contained_version_1_file(tmp_path):
    header = FIXTURE.read_bytes()[:100]
    assert header.startswith(b"SQLite format 3\x00")
    assert header[18:20] == b"\x01\x01"  # rollback journal, not WAL: no -wal file needed
    copy = tmp_path / "copy.db"
    shutil.copyfile(FIXTURE, copy)
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT min(seq), max(seq), count(*) FROM messages").fetchone() \
            == (1, 35, 35)
    finally:
        conn.close()


def version(data_dir):
    conn = sqlite3.connect(data_dir / DB_FILE)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_lobby_becomes_the_lobby_room_in_its_order(store, data_dir):
    assert version(data_dir) == SCHEMA_VERSION == 8
    lobby = await store.after("#lobby", 0, 100)
    assert [r.seq for r in lobby] == list(range(1, 31))
    assert [(r.sender, r.text) for r in lobby] == LOBBY
    assert [r.ts for r in lobby] == sorted(r.ts for r in lobby)
    assert all(r.room == "lobby" and r.sender_key == r.sender.casefold()
               and r.to is None and r.to_key is None for r in lobby)
    assert lobby[8].text == "shopping list:\n- milk\n- bread\n- coffee"
    assert lobby[10].text == "Grüße ☕"
    assert lobby[24].text == "quotes \"double\" and 'single' and a tab\there"
    assert lobby[25].text == "emoji test 😀👍"
    # Older lines have no lineage: no new line is ever taken for a copy of one.
    assert lobby[10].lineage is None
    assert await store.find_cid("name:bob", lobby[10].cid, 0) is None
    page = await store.before("#lobby", 31, 3)
    assert [r.text for r in page] == ["see you", "bye for now", "last message of the morning"]


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_direct_messages_are_two_conversations(store):
    alice_bob = await store.after("@alice bob", 0, 100)
    assert [r.seq for r in alice_bob] == [1, 2, 3, 4]
    assert [(r.sender, r.to, r.text) for r in alice_bob] == DIRECT[:4]
    alice_carol = await store.after("@alice carol", 0, 100)
    assert [(r.seq, r.sender, r.to, r.text) for r in alice_carol] == [(1, *DIRECT[4])]
    everything = alice_bob + alice_carol
    assert all(r.room is None and r.sender_key == r.sender.casefold()
               and r.to_key == r.to.casefold() for r in everything)
    assert len({r.cid for r in everything}) == 5
    # What each may see of them.
    assert [r.text for r in await store.direct_since("alice", 0, 100)] == [t for *_, t in DIRECT]
    assert [r.text for r in await store.direct_since("bob", 0, 100)] == \
        [t for *_, t in DIRECT[:4]]
    assert [r.text for r in await store.direct_since("carol", 0, 100)] == [DIRECT[4][2]]
    assert await store.direct_since("dave", 0, 100) == []
    # They are the names' accounts', not a guest's who takes one of the names.
    assert [r.text for r in await store.after("@alice bob", 0, 100, "account:bob")] == \
        [t for *_, t in DIRECT[:4]]
    assert await store.after("@alice bob", 0, 100, "guest:someone") == []
    assert await store.direct_since("bob", 0, 100, "outbox:someone") == []


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_account_and_bans(store, data_dir):
    name, encoded = await store.account("carol")
    assert name == "Carol"
    assert encoded.startswith("$argon2id$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("wrong horse battery", encoded)
    assert await store.account("alice") is None and await store.account("bob") is None  # guests

    assert await store.ban("mallory") == ("mallory", None, "spam")
    name, until, reason = await store.ban("trudy")
    assert (name, reason) == ("trudy", "rude")
    conn = sqlite3.connect(data_dir / DB_FILE)
    created = conn.execute("SELECT created FROM bans WHERE key = 'trudy'").fetchone()[0]
    conn.close()
    # Timed: 100 years from when it was made (until in seconds, created in ms).
    assert until == pytest.approx(created / 1000 + 100 * 365 * 24 * 3600, abs=1)
    assert [(key, name, reason) for key, name, _, reason in await store.bans()] == [
        ("mallory", "mallory", "spam"), ("trudy", "trudy", "rude")]
    assert await store.ban("alice") is None


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_accounts_are_known_by_their_looks(store):
    # "Сarol" with a Cyrillic "С" looks like the registered Carol; the
    # account itself, and names that only resemble it, do not.
    assert await store.lookalike_account(lookalikes.looks("Сarol", "сarol"), "сarol") == "Carol"
    assert await store.lookalike_account(lookalikes.looks("CAROL", "carol"), "carol") is None
    assert await store.lookalike_account(lookalikes.looks("Carla", "carla"), "carla") is None


def test_looks_are_made_again_when_the_confusables_data_changes(data_dir, monkeypatch):
    def open_and_look():
        store = SQLiteStore.in_dir(data_dir, mode="inline")
        store.open()
        try:
            found = []
            store.lookalike_account({"something new"}, "x").addBoth(found.append)
            return found[0]
        finally:
            store.close()

    assert open_and_look() is None
    # A new data release in which Carol's name looks like "something new".
    monkeypatch.setattr(lookalikes, "VERSION", "next")
    monkeypatch.setattr(lookalikes, "looks", lambda name, key: {"something new"})
    assert open_and_look() == "Carol"


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_lobby_is_a_public_room_and_numbers_go_on(store):
    first = (await store.after("#lobby", 0, 1))[0]
    assert await store.load() == [RoomRecord("lobby", "lobby", created=first.ts, last_seq=30)]
    assert await store.memberships("carol") == []
    line = first._replace(seq=0, ts=first.ts + 10**6, cid="new-after-upgrade")
    saved, again = await store.append([line, line._replace(text="again")])  # re-sent at once
    assert [r.seq for r in saved] == [31] and [old.seq for _, old in again] == [31]
    # 0.1.0's lines have no lineage: a copy of one is a new line (its cid was
    # the name's for ever then; now a lineage's for a day).
    saved, again = await store.append([first._replace(seq=0)])
    assert [r.seq for r in saved] == [32] and again == []


def test_a_second_open_changes_nothing(data_dir):
    def open_and_close():
        store = SQLiteStore.in_dir(data_dir, mode="inline")
        results = []
        store.open().addBoth(results.append)
        store.close().addBoth(results.append)
        assert results == [None, None]  # inline: done, and done well

    def snapshot():
        conn = sqlite3.connect(data_dir / DB_FILE)
        try:
            return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                    for table in ("messages", "conversations", "rooms", "accounts", "bans",
                                  "account_looks", "meta")]
        finally:
            conn.close()

    open_and_close()
    migrated = snapshot()
    open_and_close()
    assert version(data_dir) == SCHEMA_VERSION
    assert snapshot() == migrated


def test_a_migration_that_fails_leaves_version_1_as_it_was(data_dir):
    """One step, one transaction: a v1 file the step cannot take stays v1."""
    conn = sqlite3.connect(data_dir / DB_FILE)
    conn.execute("UPDATE messages SET to_key = NULL WHERE seq = 31")  # no conversation
    conn.commit()
    rows = conn.execute("SELECT * FROM messages ORDER BY seq").fetchall()
    conn.close()
    failures = []
    SQLiteStore.in_dir(data_dir, mode="inline").open().addErrback(failures.append)
    [failure] = failures
    assert str(data_dir / DB_FILE) in str(failure.value)
    assert version(data_dir) == 1
    conn = sqlite3.connect(data_dir / DB_FILE)
    assert conn.execute("SELECT * FROM messages ORDER BY seq").fetchall() == rows
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'rooms'").fetchall() == []
    conn.close()
