"""A data directory written by release 0.1.0 opens with this code, content intact.

The fixture (tests/fixtures/spchat-0.1.0.db) was written by the 0.1.0 server
itself, driven by real clients: see tests/fixtures/README.rst and
scripts/make_release_fixture.py.  The test works on a copy; the fixture is
never opened in place.
"""

import shutil
import sqlite3
from pathlib import Path

import pytest

from spchat.server.accounts import verify_password
from spchat.server.store import DB_FILE, SCHEMA_VERSION, Store

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "spchat-0.1.0.db"

# The lobby, in the order it was sent (seq 1 to 30): (sender, text).
LOBBY = [
    ("alice", "hi all"),
    ("Bob", "hey alice"),
    ("Carol", "good morning"),
    ("alice", "anyone tried the new build?"),
    ("Bob", "yes, it starts fine here"),
    ("Carol", "same here"),
    ("alice", "great"),
    ("Bob", "the reconnect is much quicker now"),
    ("Carol", "shopping list:\n- milk\n- bread\n- coffee"),
    ("alice", "ha, thanks Carol"),
    ("Bob", "Grüße ☕"),
    ("Carol", "Grüße zurück"),
    ("alice", "lunch at noon?"),
    ("Bob", "sure"),
    ("Carol", "count me in"),
    ("alice", "the usual place"),
    ("Bob", "ok"),
    ("Carol", "I'll book a table"),
    ("alice", "thanks"),
    ("Bob", "brb"),
    ("Carol", "np"),
    ("alice", "back to work then"),
    ("Bob", "back"),
    ("Carol", "welcome back"),
    ("alice", "quotes \"double\" and 'single' and a tab\there"),
    ("Bob", "emoji test 😀👍"),
    ("Carol", "see you at noon"),
    ("alice", "see you"),
    ("Bob", "bye for now"),
    ("Carol", "last message of the morning"),
]

# Then the direct messages (seq 31 to 35): (sender, to, text).
DIRECT = [
    ("alice", "Bob", "psst, Bob"),
    ("Bob", "alice", "what is it?"),
    ("alice", "Bob", "can you review my patch?"),
    ("Bob", "alice", "sure, after lunch"),
    ("Carol", "alice", "the table is booked for 12:00"),
]


@pytest.fixture
def data_dir(tmp_path):
    """A copy of the 0.1.0 data directory (its database), as a server finds it."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copyfile(FIXTURE, folder / DB_FILE)
    return folder


@pytest.fixture
def store(data_dir):
    store = Store.in_dir(data_dir)
    yield store
    store.close()


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
    finally:
        conn.close()


def test_release_0_1_0_database_opens_with_its_content(store, data_dir):
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.last_seq == len(LOBBY) + len(DIRECT) == 35
    assert store.first_seq == 1

    records = list(store.after(0))
    assert [r.seq for r in records] == list(range(1, 36))
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    assert len({r.cid for r in records}) == 35

    lobby = [r for r in records if r.room == "lobby"]
    assert len(lobby) == 30
    assert [r.seq for r in lobby] == list(range(1, 31))
    assert [(r.sender, r.text) for r in lobby] == LOBBY
    assert all(r.sender_key == r.sender.casefold() and r.to is None and r.to_key is None
               for r in lobby)
    assert lobby[0].text == "hi all"
    assert lobby[8].text == "shopping list:\n- milk\n- bread\n- coffee"
    assert lobby[10].text == "Grüße ☕"
    assert lobby[25].text == "emoji test 😀👍"
    assert lobby[-1].text == "last message of the morning"

    direct = [r for r in records if r.room is None]
    assert [r.seq for r in direct] == list(range(31, 36))
    assert [(r.sender, r.to, r.text) for r in direct] == DIRECT
    assert all(r.sender_key == r.sender.casefold() and r.to_key == r.to.casefold()
               for r in direct)

    # What each may see: the lobby, and only their own direct messages.
    bob = store.before(store.last_seq + 1, 100, "bob", {"lobby"})
    assert [r.seq for r in bob] == list(range(1, 35))
    carol = store.before(store.last_seq + 1, 100, "carol", {"lobby"})
    assert [r.seq for r in carol] == list(range(1, 31)) + [35]
    stranger = store.before(store.last_seq + 1, 100, "dave", set())
    assert stranger == []
    page = store.before(31, 3, "alice", {"lobby"})
    assert [r.text for r in page] == ["see you", "bye for now", "last message of the morning"]

    assert store.find_cid("bob", lobby[10].cid) == lobby[10]


def test_release_0_1_0_account_and_bans(store):
    name, encoded = store.account("carol")
    assert name == "Carol"
    assert encoded.startswith("$argon2id$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("wrong horse battery", encoded)
    assert store.account("alice") is None and store.account("bob") is None  # guests

    assert store.ban("mallory") == ("mallory", None, "spam")
    name, until, reason = store.ban("trudy")
    assert (name, reason) == ("trudy", "rude")
    created = store.conn.execute("SELECT created FROM bans WHERE key = 'trudy'").fetchone()[0]
    # Timed: 100 years from when it was made (until in seconds, created in ms).
    assert until == pytest.approx(created / 1000 + 100 * 365 * 24 * 3600, abs=1)
    assert [(key, name, reason) for key, name, _, reason in store.bans()] == [
        ("mallory", "mallory", "spam"), ("trudy", "trudy", "rude")]
    assert store.ban("alice") is None
