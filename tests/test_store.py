"""The SQLite store: file, schema, damage, and what it keeps across restarts."""

import os
import sqlite3
import subprocess
import threading
import time

import pytest

from twisted.internet.task import Clock

from spchat.server.commit import GroupCommitter
from spchat.server.history import Record
from spchat.server.store import (DB_FILE, LOOKUP_CHUNK, SCHEMA_VERSION, Store, StoreError,
                                 connect)

from conftest import subprocess_env, twistd_command


def record(seq, text="hi", cid=None, room="lobby", sender="alice", to=None):
    return Record(seq, 1000 * seq, sender, sender.lower(), text, cid or f"c{seq}", room=room,
                  to=to, to_key=to.lower() if to else None)


def test_new_database_is_private_and_versioned(tmp_path):
    store = Store.in_dir(tmp_path)
    path = tmp_path / DB_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_messages_round_trip_and_survive_reopening(tmp_path):
    store = Store.in_dir(tmp_path)
    batch = [record(1), record(2, to="Bob", room=None), record(3, "third")]
    store.insert(store.conn, batch)
    store.committed(batch)
    store.close()
    again = Store.in_dir(tmp_path)
    assert again.last_seq == 3
    assert list(again.after(1)) == batch[1:]
    assert again.find_cid("alice", "c2") == batch[1]
    # Alice sees all three; Carol only the room messages.
    assert again.before(4, 10, "alice", {"lobby"}) == batch
    assert again.before(4, 10, "carol", {"lobby"}) == [batch[0], batch[2]]
    assert again.before(3, 1, "alice", {"lobby"}) == [batch[1]]
    again.close()


def test_the_same_message_cannot_be_stored_twice(tmp_path):
    store = Store.in_dir(tmp_path)
    store.insert(store.conn, [record(1, cid="x")])
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(store.conn, [record(2, cid="x")])
    assert store.conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    store.close()


def test_under_load_one_transaction_per_interval_and_at_once_when_idle(tmp_path):
    store = Store.in_dir(tmp_path)
    clock = Clock()
    published = []
    committer = GroupCommitter(store, clock, lambda saved, again: published.append(saved),
                               "inline", interval=0.005)
    committer.add(record(1))
    clock.advance(0)  # the writer was idle: saved at the end of the turn
    assert [[r.seq for r in batch] for batch in published] == [[1]]
    clock.advance(0.001)
    committer.add(record(2))
    clock.advance(0.001)
    committer.add(record(3))
    clock.advance(0.002)  # 4 ms after the last transaction began: still waiting
    assert len(published) == 1 and store.last_seq == 1
    clock.advance(0.001)  # 5 ms: both in one transaction
    assert [[r.seq for r in batch] for batch in published] == [[1], [2, 3]]
    clock.advance(1.0)
    committer.add(record(4))
    clock.advance(0)  # idle for longer than the interval: at once
    assert [r.seq for r in published[-1]] == [4] and store.last_seq == 4
    assert [r.seq for r in store.after(0)] == [1, 2, 3, 4]
    committer.stop()
    store.close()


def test_saving_numbers_new_messages_and_finds_those_saved_before(tmp_path):
    store = Store.in_dir(tmp_path)
    fresh = [record(0, "a", cid="x1"), record(0, "b", cid="x2", room=None, to="Bob")]
    first, again = store.save(store.conn, fresh)
    assert [(r.seq, r.text) for r in first] == [(1, "a"), (2, "b")] and again == []
    store.committed(first)
    store.close()
    store = Store.in_dir(tmp_path)  # as after a restart: the client sends x2 again
    resent = [record(0, "b", cid="x2", room=None, to="Bob"), record(0, "c", cid="x3"),
              record(0, "a", cid="x1", sender="carol")]  # another sender's x1 is new
    saved, again = store.save(store.conn, resent)
    assert [(r.seq, r.text, r.sender) for r in saved] == [(3, "c", "alice"), (4, "a", "carol")]
    assert again == [(resent[0], first[1])]  # what its sender is acknowledged with
    store.committed(saved)
    assert [r.seq for r in store.after(0)] == [1, 2, 3, 4]  # no gap, nothing twice
    store.close()


def test_a_commit_that_fails_leaves_nothing_open_and_the_retry_numbers_alike(tmp_path):
    store = Store.in_dir(tmp_path)
    conn = store.conn
    # Something that fails only at COMMIT (as a full disk can): a deferred
    # foreign key broken by every new message.
    conn.executescript("""
        PRAGMA foreign_keys = ON;
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (p REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER breaks AFTER INSERT ON messages BEGIN INSERT INTO child VALUES (1); END;
    """)
    batch = [record(0, "a", cid="x1"), record(0, "b", cid="x2")]
    with pytest.raises(sqlite3.IntegrityError):
        store.save(conn, batch)
    assert not conn.in_transaction
    conn.execute("DROP TRIGGER breaks")
    saved, _ = store.save(conn, batch)  # what the writer does a second later
    assert [r.seq for r in saved] == [1, 2]
    assert [r.text for r in store.after(0)] == []  # not committed() yet: not visible
    store.committed(saved)
    assert [r.text for r in store.after(0)] == ["a", "b"]
    store.close()


def test_a_registration_while_the_writer_saves_waits_instead_of_failing_the_batch(tmp_path):
    store = Store.in_dir(tmp_path)
    writer = connect(store.path)  # the writer thread's own connection
    looked_up = threading.Event()
    lookup = Store._saved

    def slow_lookup(conn, records):  # a big batch: the lookup takes a while
        found = lookup(conn, records)
        looked_up.set()
        time.sleep(0.2)
        return found

    results = []
    Store._saved = staticmethod(slow_lookup)
    try:
        thread = threading.Thread(target=lambda: results.append(
            store.save(writer, [record(0, "a", cid="x1")])))
        thread.start()
        looked_up.wait(5)
        store.set_account("bob", "Bob", "hash", 1)  # the reactor's connection
        thread.join(5)
    finally:
        Store._saved = staticmethod(lookup)
    assert [r.seq for r in results[0][0]] == [1]  # saved, not "database is locked"
    assert store.account("bob") == ("Bob", "hash")
    writer.close()
    store.close()


def test_a_batch_bigger_than_one_lookup_finds_every_resent_message(tmp_path):
    store = Store.in_dir(tmp_path)
    n = 2 * LOOKUP_CHUNK + 1
    first, _ = store.save(store.conn, [record(0, cid=f"m{i}") for i in range(0, n, 2)])
    store.committed(first)
    # SQLite before 3.32 allows 999 parameters a query: stay within them.
    store.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    saved, again = store.save(store.conn, [record(0, cid=f"m{i}") for i in range(n)])
    assert len(again) == len(first) and len(saved) == n - len(first)
    assert [r.seq for r in saved] == list(range(len(first) + 1, n + 1))
    store.close()


def test_accounts_and_bans_are_kept(tmp_path):
    store = Store.in_dir(tmp_path)
    store.set_account("zoe", "Zoe", "$argon2id$...", 1)
    store.set_ban("mal", "Mal", 1234.5, "spam", 1)
    store.close()
    again = Store.in_dir(tmp_path)
    assert again.account("zoe") == ("Zoe", "$argon2id$...")
    assert again.ban("mal") == ("Mal", 1234.5, "spam")
    assert again.delete_ban("mal") and again.ban("mal") is None
    again.close()


def test_one_server_per_data_directory(tmp_path):
    first = Store.in_dir(tmp_path)
    with pytest.raises(StoreError, match="in use by another spchat server"):
        Store.in_dir(tmp_path)
    first.close()
    Store.in_dir(tmp_path).close()  # free again


def test_damaged_database_is_a_one_line_error(tmp_path):
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as caught:
        Store.in_dir(tmp_path)
    assert str(tmp_path / DB_FILE) in str(caught.value)
    assert "damaged" in str(caught.value)


def test_newer_schema_is_refused(tmp_path):
    Store.in_dir(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILE)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this spchat"):
        Store.in_dir(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "unreadable"])
def test_server_start_with_a_bad_database_is_one_line(tmp_path, damage):
    data = tmp_path / "data"
    data.mkdir()
    db = data / DB_FILE
    db.write_bytes(b"\x00garbage" * 500)
    if damage == "unreadable":
        db.write_bytes(b"")
        os.chmod(data, 0o500)  # cannot create the WAL next to it
        if os.geteuid() == 0:
            os.chmod(data, 0o700)
            db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # root reads anything
    try:
        result = subprocess.run(
            twistd_command() + ["-n", "--pidfile=", "spchat", "--data-dir", str(data),
                                "--tcp-port", "0", "--udp-port", "0"],
            cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True,
            timeout=60,
        )
    finally:
        os.chmod(data, 0o700)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(db) in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_old_messages_are_pruned_and_the_rest_kept(tmp_path):
    store = Store.in_dir(tmp_path)
    batch = [record(seq) for seq in range(1, 11)]  # ts = 1000 * seq
    store.insert(store.conn, batch)
    store.committed(batch)
    assert store.prune(older_than_ms=5000) == 4
    assert [r.seq for r in store.after(0)] == list(range(5, 11))
    assert store.first_seq == 5 and store.last_seq == 10
    store.close()


def test_server_prunes_by_history_days(tmp_path):
    from conftest import server_config, start_service, stop_services

    service = start_service(server_config(tmp_path / "data", **{"history-days": "1"}))
    try:
        now_ms = service.core.now_ms()
        old = Record(1, now_ms - 2 * 86400_000, "alice", "alice", "old", "c1", room="lobby")
        new = Record(2, now_ms, "alice", "alice", "new", "c2", room="lobby")
        service.store.insert(service.store.conn, [old, new])
        service.store.committed([old, new])
        service.prune()
        assert [r.text for r in service.store.after(0)] == ["new"]
        assert service.pruner.running  # and it runs hourly
    finally:
        stop_services(service)


def test_pruning_everything_keeps_the_sequence_going(tmp_path):
    store = Store.in_dir(tmp_path)
    batch = [record(seq) for seq in range(1, 101)]
    store.insert(store.conn, batch)
    store.committed(batch)
    store.prune(older_than_ms=10**12)  # everything is old
    store.close()
    again = Store.in_dir(tmp_path)
    assert again.last_seq == 100  # the next message is 101, never 1 again
    again.close()
