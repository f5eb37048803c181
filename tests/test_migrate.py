"""``python -m spchat.admin migrate``: a single node's SQLite data directory
copied into a real PostgreSQL (tests/postgres.py), compared through the
store interface; run again, interrupted, on release 0.1.0's database, and
a server on the result."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.python.failure import Failure

from spchat import wire
from spchat.server import lookalikes
from spchat.server.passwords import verify_password
from spchat.server.migration import copy_store, open_target, snapshot
from spchat.server.pg_store import PostgresStore
from spchat.server.records import RoomRecord
from spchat.server.store import DB_FILE, SCHEMA_VERSION, SQLiteStore

from conftest import connect_client, server_config, start_service, stop_services, subprocess_env
from conftest import wait_until
from helpers import room_lines
from postgres import sql
from release_fixture import FIXTURE, LOBBY
from store_lines import dm, say

CONVERSATIONS = ["#lobby", "#dev", "#old", "@alice bob", "@alice carol"]
KEYS = ["alice", "bob", "carol", "dave", "nobody"]
LINEAGES = ["account:carol", "account:dave", "guest:alice-1", "guest:bob-1"]


async def make_node(data_dir, lobby_lines=25):
    """A node's data directory as its server leaves it: history in three
    rooms and two direct conversations (some of it pruned), accounts,
    bans, room settings and standing, memberships."""
    store = SQLiteStore.in_dir(data_dir, mode="inline")
    await store.open()
    try:
        for room in (RoomRecord("lobby", "Lobby", topic="welcome", created=100),
                     RoomRecord("dev", "Dev", topic="code ☕", private=True, topic_locked=True,
                                created=200, password="sesame", member_limit=7,
                                moderated=True),
                     RoomRecord("old", "old", created=300)):
            await store.save_room(room)
        await store.append([say("gone", room="old", ts=500) for _ in range(5)])
        await store.append([say(f"lobby {i}", sender=("alice", "Bob", "Carol")[i % 3],
                                ts=550 + i * 10) for i in range(lobby_lines)])
        await store.append([say(f"dev {i}\nsecond line", room="dev", sender="Carol",
                                ts=2000 + i)._replace(lineage="account:carol")
                            for i in range(15)])
        await store.append([
            dm("psst", "alice", "Bob", ts=3000)._replace(lineage="guest:alice-1",
                                                        to_lineage="guest:bob-1"),
            dm("what?", "Bob", "alice", ts=3001)._replace(lineage="guest:bob-1",
                                                         to_lineage="guest:alice-1"),
            dm("from before lineages", "alice", "Bob", ts=3002),
            dm("table booked", "Carol", "alice", ts=3003)._replace(lineage="account:carol"),
            dm("thanks", "alice", "Carol", ts=3004)._replace(lineage="guest:alice-1",
                                                            to_lineage="account:carol",
                                                            waiting=True),
            dm("Grüße 😀", "Carol", "alice", ts=3005)._replace(lineage="account:carol"),
        ])
        # The old room's lines all, and the lobby's first three: their
        # numbers stay taken.
        assert await store.prune(580) == 8
        await store.set_account("carol", "Carol", "$argon2id$carol", 10)
        await store.set_account("dave", "Dave", "$argon2id$dave", 11)
        await store.set_ban("mallory", "mallory", None, "spam", 20)
        await store.set_ban("trudy", "Trudy", 4_102_444_800.5, "rude", 21)
        await store.set_role("dev", "carol", "Carol", "owner")
        await store.set_role("lobby", "dave", "Dave", "op")
        await store.set_room_ban("lobby", "eve", "Eve", 1e10, "flood", 30)
        await store.set_room_ban("dev", "bob", "Bob", None, "off topic", 31)
        await store.set_mute("lobby", "bob", "Bob", True)
        await store.set_voice("dev", "dave", "Dave", True)
        for key, room in (("carol", "dev"), ("carol", "lobby"), ("dave", "lobby")):
            await store.add_membership(key, room)
    finally:
        await store.close()


async def contents(store):
    """Everything a store holds, as read through IStore."""
    found = {}
    for conversation in CONVERSATIONS:
        found[conversation] = await store.after(conversation, 0, 10_000)
        found[conversation, "before"] = await store.before(conversation, 10**9, 10_000)
        for reader in LINEAGES:
            found[conversation, reader] = await store.after(conversation, 0, 10_000, reader)
    found["rooms"] = sorted(await store.load(), key=lambda room: room.key)
    found["accounts"] = [await store.account(key) for key in KEYS]
    found["bans"] = await store.bans()
    found["memberships"] = [await store.memberships(key) for key in KEYS]
    found["waiting"] = [await store.waiting_directs(key, 100) for key in KEYS]
    found["lookalike"] = await store.lookalike_account(lookalikes.looks("CaroI", "caroi"),
                                                       "caroi")
    return found


async def sqlite_contents(data_dir):
    store = SQLiteStore.in_dir(data_dir, mode="inline")
    await store.open()
    try:
        return await contents(store)
    finally:
        await store.close()


async def pg_contents(url):
    store = PostgresStore(url)
    await store.open()
    try:
        return await contents(store)
    finally:
        await store.close()


def dump(url):
    """Every row of every table the copy writes, in order."""
    tables = ["conversations", "accounts", "account_looks", "bans", "rooms", "room_roles",
              "room_bans", "room_mutes", "room_voices", "memberships", "messages"]
    return {table: sql(url, f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}


def migrate_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "spchat.admin", "migrate", *args],
                          cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True,
                          text=True, timeout=120)


def one_line_error(result):
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    return line


def at_once(coroutine):
    """Run a coroutine on inline stores: their Deferreds have fired already."""
    results = []
    defer.ensureDeferred(coroutine).addBoth(results.append)
    [result] = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


@pytest.fixture
def node(tmp_path):
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    at_once(make_node(data_dir))
    return data_dir


# --- everything there, and once ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_everything_a_node_has_is_there_and_a_second_run_changes_nothing(
        tmp_path, node, pg_url):
    before = await sqlite_contents(node)
    assert len(before["#lobby"]) == 22 and before["#old"] == []  # some of it pruned
    assert {room.key: room.last_seq for room in before["rooms"]} == {
        "dev": 15, "lobby": 25, "old": 5}

    first = migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"copying {node / DB_FILE} (schema {SCHEMA_VERSION}) into "
                               "postgresql://")
    assert "messages: 43 copied, 0 already there" in lines
    assert "conversations: 5 copied, 0 already there" in lines
    assert "room_bans: 2 copied, 0 already there" in lines
    assert "room_voices: 1 copied, 0 already there" in lines
    assert lines[-1] == "done: 64 rows copied, 0 already there"

    after = await pg_contents(pg_url)
    assert after == before
    assert [[r.text for r in waiting] for waiting in after["waiting"]] == [
        [], [], ["thanks"], [], []]  # still waiting for Carol's next login
    assert after["#dev"][0].text == "dev 0\nsecond line"
    # Numbers pruned away are not given again: each conversation's newest, not its max.
    assert sorted(sql(pg_url, "SELECT conversation, last_seq FROM conversations")) == [
        ("#dev", 15), ("#lobby", 25), ("#old", 5), ("@alice bob", 3), ("@alice carol", 3)]

    rows = dump(pg_url)
    again = migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["ok"] and report["copied"] == 0 and report["already_there"] == 64
    assert report["tables"]["messages"] == {"copied": 0, "already_there": 43}
    assert report["schema"] == SCHEMA_VERSION
    assert dump(pg_url) == rows


def test_the_source_is_only_read(tmp_path, node, pg_url):
    digest = hashlib.sha256((node / DB_FILE).read_bytes()).hexdigest()
    assert migrate_cli(tmp_path, "--from-sqlite", str(node / DB_FILE), "--to",
                       pg_url).returncode == 0
    assert hashlib.sha256((node / DB_FILE).read_bytes()).hexdigest() == digest


@pytest_twisted.ensureDeferred
async def test_lines_a_killed_node_left_in_its_write_ahead_log_are_copied(tmp_path, node,
                                                                          pg_url):
    store = SQLiteStore.in_dir(node, mode="inline")
    await store.open()
    try:
        await store.append([say("only in the log", ts=9000)])
        # The files as kill -9 leaves them: the last commit not yet in spchat.db.
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for name in (DB_FILE, DB_FILE + "-wal"):
            shutil.copyfile(node / name, crashed / name)
    finally:
        await store.close()
    assert (crashed / (DB_FILE + "-wal")).stat().st_size > 0
    result = migrate_cli(tmp_path, "--from-sqlite", str(crashed), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    assert sql(pg_url, "SELECT seq FROM messages WHERE text = 'only in the log'") == [(26,)]


# --- interrupted -------------------------------------------------------------------------


class Interrupted(Exception):
    pass


@pytest_twisted.ensureDeferred
async def test_a_copy_that_failed_midway_is_finished_by_the_next_run(node, pg_url):
    def fail_after_two_batches_of_messages(table, counts, finished):
        if table == "messages" and counts.copied == 20:
            raise Interrupted

    with snapshot(node) as source:
        link = open_target(pg_url)
        try:
            with pytest.raises(Interrupted):
                copy_store(source, link, 10, fail_after_two_batches_of_messages)
            # What committed stayed; the numbers were there before the lines.
            assert sql(pg_url, "SELECT count(*) FROM messages") == [(20,)]
            assert len(sql(pg_url, "SELECT * FROM conversations")) == 5
            counts = copy_store(source, link, 10)
        finally:
            link.close()
    assert (counts["messages"].copied, counts["messages"].already_there) == (23, 20)
    assert counts["accounts"].copied == 0
    assert await pg_contents(pg_url) == await sqlite_contents(node)


def test_a_copy_killed_midway_is_finished_by_the_next_run(tmp_path, pg_url):
    node = tmp_path / "node"
    node.mkdir()
    at_once(make_node(node, lobby_lines=3000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "spchat.admin", "migrate", "--from-sqlite", str(node), "--to",
         pg_url, "--batch-size", "10"], cwd=tmp_path, env=subprocess_env(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if sql(pg_url, "SELECT count(*) FROM messages")[0][0] >= 50:
                    break
            except psycopg2.Error:  # no tables yet
                pass
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    [(copied,)] = sql(pg_url, "SELECT count(*) FROM messages")
    total = 3000 - 3 + 15 + 6
    assert 50 <= copied < total  # killed in the middle
    finished = migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url, "--json")
    assert finished.returncode == 0, finished.stderr
    assert '"messages": {"copied": %d, "already_there": %d}' % (total - copied, copied) \
        in finished.stdout
    assert sql(pg_url, "SELECT count(*), count(DISTINCT (conversation, seq)) FROM messages") \
        == [(total, total)]
    assert sql(pg_url, "SELECT last_seq FROM conversations WHERE conversation = '#lobby'") \
        == [(3000,)]


# --- refused ---------------------------------------------------------------------------


def test_a_target_with_other_content_is_refused_in_one_line(tmp_path, node, pg_url):
    assert migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url).returncode == 0
    sql(pg_url, "UPDATE messages SET text = 'someone else' WHERE conversation = '#dev' "
                "AND seq = 4")
    line = one_line_error(migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url))
    assert line.startswith("spchat.admin migrate: the target already has a different "
                           "message 4 of #dev")
    refused = migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url, "--json")
    assert refused.returncode == 1 and refused.stderr == ""
    report = json.loads(refused.stdout)
    assert not report["ok"] and report["text"].startswith("the target already has")
    sql(pg_url, "UPDATE messages SET text = 'dev 3\nsecond line' WHERE conversation = '#dev' "
                "AND seq = 4")
    sql(pg_url, "UPDATE rooms SET topic = 'changed on the new node' WHERE key = 'lobby'")
    line = one_line_error(migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url))
    assert "a different room lobby" in line


@pytest_twisted.ensureDeferred
async def test_a_directory_a_server_uses_is_refused_in_one_line(tmp_path, node, pg_url):
    store = SQLiteStore.in_dir(node, mode="inline")
    await store.open()
    try:
        line = one_line_error(migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url))
    finally:
        await store.close()
    assert line == (f"spchat.admin migrate: the data directory {node} is in use by another "
                    f"spchat server (it holds {node / 'spchat.lock'})")
    assert sql(pg_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_what_cannot_be_copied_is_a_one_line_error(tmp_path, node, pg_url, postgres_server):
    (tmp_path / "text.db").write_text("not a database at all\n" * 100)
    import sqlite3

    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE notes (text TEXT)")
    other.commit()
    other.close()
    unreachable = "postgresql://spchat:sekrit@127.0.0.1:1/chat"
    cases = [
        (tmp_path / "nowhere", pg_url, f"no spchat database at {tmp_path / 'nowhere'}"),
        (tmp_path, pg_url, f"no spchat database at {tmp_path / DB_FILE}"),
        (tmp_path / "text.db", pg_url, "file is not a database"),
        (tmp_path / "other.db", pg_url, "is not a spchat database"),
        (node, "mysql://db/chat", "must be a postgresql://user@host:port/database URL"),
        (node, "postgresql://127.0.0.1/chat?no_such_option=1", "cannot read the database URL"),
        (node, unreachable, "cannot connect to the database postgresql://spchat:***@"),
        (node, postgres_server.url("nowhere"), 'database "nowhere" does not exist'),
    ]
    for source, url, expected in cases:
        line = one_line_error(migrate_cli(tmp_path, "--from-sqlite", str(source), "--to", url))
        assert expected in line and "sekrit" not in line, line


# --- release 0.1.0, and a server on the result ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_release_0_1_0_data_is_upgraded_on_a_copy_and_copied(tmp_path, pg_url):
    node = tmp_path / "node"
    node.mkdir()
    shutil.copyfile(FIXTURE, node / DB_FILE)
    result = migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url)
    assert result.returncode == 0, result.stderr
    assert f"(schema 1, upgraded on a copy to {SCHEMA_VERSION})" in result.stdout.splitlines()[0]
    assert (node / DB_FILE).read_bytes() == FIXTURE.read_bytes()  # still 0.1.0's

    store = PostgresStore(pg_url)
    await store.open()
    try:
        lobby = await store.after("#lobby", 0, 100)
        assert [(r.seq, r.sender, r.text) for r in lobby] == [
            (seq, sender, text) for seq, (sender, text) in enumerate(LOBBY, 1)]
        assert [r.seq for r in await store.after("@alice bob", 0, 100)] == [1, 2, 3, 4]
        name, hashed = await store.account("carol")
        assert name == "Carol" and verify_password("correct horse battery", hashed)
        assert [key for key, *_ in await store.bans()] == ["mallory", "trudy"]
        [room] = await store.load()
        assert (room.key, room.last_seq) == ("lobby", 30)
    finally:
        await store.close()
    # And all of it as the SQLite store reads it, upgraded.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(FIXTURE, copy / DB_FILE)
    assert await pg_contents(pg_url) == await sqlite_contents(copy)


@pytest_twisted.inlineCallbacks
def test_a_server_on_the_copy_serves_the_history_and_numbers_on(tmp_path, node, pins, pg_url):
    assert migrate_cli(tmp_path, "--from-sqlite", str(node), "--to", pg_url).returncode == 0
    server = start_service(server_config(tmp_path / "pg-node", database=pg_url))
    try:
        erin = yield connect_client(server, pins, "erin")
        expected = [f"lobby {i}" for i in range(3, 25)]
        yield wait_until(lambda: room_lines(erin, True) == expected)
        erin.say("first on PostgreSQL")
        yield wait_until(lambda: room_lines(erin, False) == ["first on PostgreSQL"])
        [line] = [m for m in erin.rec.of(wire.RoomMessage) if not m.history]
        assert line.seq == 26
    finally:
        yield stop_services(server)
