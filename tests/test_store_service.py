"""The store in the running server, seen from outside (the real command
line): a database it cannot use is one line at start, old messages are
pruned by ``--history-days``, and a start that cannot load the rooms is
tried again."""

import os
import sqlite3
import subprocess
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat.server.records import Record
from spchat.server.store import DB_FILE, SQLiteStore, StoreError

from conftest import (ServerProcess, connect_client, server_config, stop_services,
                      subprocess_env, twistd_command, wait_until)


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


def test_server_prunes_by_history_days(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    now_ms = int(time.time() * 1000)
    store = SQLiteStore(data / DB_FILE, mode="inline")
    store.open()
    store.append([
        Record(0, now_ms - 2 * 86400_000, "alice", "alice", "old", "c1", room="lobby"),
        Record(0, now_ms, "alice", "alice", "new", "c2", room="lobby"),
    ])
    store.close()
    server = ServerProcess(tmp_path, "--history-days", "1")
    try:
        conn = sqlite3.connect(data / DB_FILE)  # WAL: read while the server runs
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM messages WHERE text = 'old'").fetchone()[0]:
            assert time.monotonic() < deadline, "the old message was not pruned at start"
            time.sleep(0.05)
        assert conn.execute("SELECT text FROM messages").fetchall() == [("new",)]
        conn.close()
    finally:
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_start_that_cannot_load_the_rooms_is_tried_again(tmp_path, pins, monkeypatch):
    """The database opened, then failed to give the rooms (it went away a
    moment): the start is tried again, and the login waiting meanwhile is
    answered, instead of a server that never answers anyone."""
    from spchat import tap
    from spchat.tap import ChatService

    monkeypatch.setattr(tap, "START_RETRY_SECONDS", 0.2)
    service = ChatService(server_config(tmp_path / "data"), reactor)
    load, failures = service.store.load, []

    def load_once_failing():
        if not failures:
            failures.append(1)
            return defer.fail(StoreError("the database is away"))
        return load()

    service.store.load = load_once_failing
    service.address = service.listen()
    service.startService()
    try:
        assert failures and not service.core.ready
        yield connect_client(service, pins, "alice")  # answered once it is up
        assert service.core.ready
        assert [s.name for s in service.core.table.by_id.values()] == ["alice"]
    finally:
        yield stop_services(service)


@pytest_twisted.inlineCallbacks
def test_a_node_stopped_while_its_rooms_load_does_not_join_the_bus(tmp_path, pg_url,
                                                                   redis_server):
    from spchat.tap import ChatService

    service = ChatService(server_config(tmp_path / "data", database=pg_url,
                                        bus=redis_server.url), reactor)
    loading: defer.Deferred = defer.Deferred()
    asked = []
    service.store.load = lambda: asked.append(1) or loading
    service.address = service.listen()
    service.startService()
    yield wait_until(lambda: asked)  # the claims opened; the rooms are being read
    yield stop_services(service)
    loading.callback([])  # the rooms (none) come after the stop
    try:
        yield task.deferLater(reactor, 0.5, lambda: None)
        assert not service.bus.subscribed and service.bus.publisher is None
    finally:
        yield service.bus.stop()
