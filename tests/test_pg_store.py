"""What only the PostgreSQL store has, on a real server (tests/postgres.py):
several servers on one database, its schema's migrations, a database
that cannot be used or goes away, and a chat server on it.  What every
store does is in test_store.py, run on PostgreSQL too."""

import subprocess
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat import wire
from spchat.bench.engines import free_port
from spchat.server.commit import GroupCommitter
from spchat.server.pg_link import Link, StoreUnavailable, parse_url
from spchat.server.pg_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from spchat.server.pg_store import PostgresStore
from spchat.server.pg_tables import PgTables, append_rows
from spchat.server.store import DB_FILE, StoreError

from conftest import (connect_client, server_config, start_service, stop_services,
                      subprocess_env, twistd_command, wait_until)
from helpers import room_lines
from postgres import sql
from store_lines import dm, numbered, say


async def opened(url):
    store = PostgresStore(url)
    await store.open()
    return store


# --- several servers on one database ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_servers_on_one_database_number_each_conversation_without_gaps(pg_url):
    stores = [await opened(pg_url), await opened(pg_url)]
    try:
        # All queued at once on both writers: their transactions race.  Each
        # batch touches two rooms, half of them in the other order, so that
        # locking the numbers in the wrong order would deadlock.
        def batch(n, b):
            rooms = ("lobby", "dev") if b % 2 else ("dev", "lobby")
            return [say(f"{n}:{b}:{i}", room=rooms[i % 2], sender=f"s{n}") for i in range(10)] \
                + [dm(f"{n}:{b}:dm", "alice", "Bob")]

        sent = {n: [batch(n, b) for b in range(30)] for n in range(2)}
        results = await defer.gatherResults(
            [stores[n].append(records) for n in range(2) for records in sent[n]],
            consumeErrors=True)
        given = [r for saved, again in results for r in saved]
        assert all(again == [] for _, again in results)
        for conversation, count in (("#lobby", 300), ("#dev", 300), ("@alice bob", 60)):
            numbers = sorted(r.seq for r in given if r.conversation == conversation)
            assert numbers == list(range(1, count + 1))  # none missing, none twice
            stored = await stores[1].after(conversation, 0, 1000)
            assert [(r.seq, r.text) for r in stored] == sorted(
                (r.seq, r.text) for r in given if r.conversation == conversation)
        # Each server's lines of a room in the order that server sent them.
        for n in range(2):
            mine = [r.text for r in await stores[0].after("#lobby", 0, 1000)
                    if r.sender == f"s{n}"]
            assert mine == [r.text for records in sent[n] for r in records
                            if r.room == "lobby"]
        assert sql(pg_url, "SELECT last_seq FROM conversations WHERE conversation = '#lobby'") \
            == [(300,)]
    finally:
        for store in stores:
            await store.close()


# --- the schema ----------------------------------------------------------------------


def test_migrations_started_at_once_by_several_servers_run_once(pg_url):
    found, errors = [], []
    together = threading.Barrier(4)

    def start():
        link = Link(parse_url(pg_url), pg_url)
        try:
            together.wait()
            found.append(migrate(link))
        except Exception as e:  # reported below, with the others
            errors.append(e)
        finally:
            link.close()

    starting = [threading.Thread(target=start) for _ in range(4)]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    assert errors == []
    # One found an empty database and made the schema; the others waited.
    assert sorted(found) == [0] + [SCHEMA_VERSION] * 3
    assert sql(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    link = Link(parse_url(pg_url), pg_url)
    try:
        assert migrate(link) == SCHEMA_VERSION  # once more: nothing to do
    finally:
        link.close()


@pytest_twisted.ensureDeferred
async def test_version_2_gets_waiting_direct_messages_and_keeps_its_old_ones_had(pg_url):
    sql(pg_url, "CREATE TABLE schema_version (version INTEGER NOT NULL); "
        f"{MIGRATIONS[0]}; {MIGRATIONS[1]}; INSERT INTO schema_version VALUES (2)")
    sql(pg_url, "INSERT INTO accounts VALUES ('bob', 'Bob', 'x', 1)")
    sql(pg_url, "INSERT INTO messages VALUES ('@alice bob', 1, 5, 'alice', 'alice', 'old', 'c1', "
        "NULL, 'Bob', 'bob', 'account:alice', 'account:bob')")
    sql(pg_url, "INSERT INTO conversations VALUES ('@alice bob', 1)")
    store = await opened(pg_url)
    try:
        assert sql(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] == [(3,)]
        assert await store.waiting_for("bob", "@alice bob") == ("Bob", 0, 0)  # seen live, before
        await store.append([dm("new", "alice", "Bob")._replace(to_lineage="account:bob",
                                                             waiting=True)])
        assert [(r.seq, r.text) for r in await store.waiting_directs("bob", 9)] == [(2, "new")]
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_what_was_saved_is_there_after_opening_again(pg_url):
    store = await opened(pg_url)
    await store.append([say("kept"), dm("also kept", "alice", "Bob")])
    await store.set_account("zoe", "Zoe", "$argon2id$x", 1)
    await store.close()
    store = await opened(pg_url)
    try:
        assert [r.text for r in await store.after("#lobby", 0, 9)] == ["kept"]
        assert await store.account("zoe") == ("Zoe", "$argon2id$x")
        assert await store.lookalike_account({"zoe"}, "z0e") == "Zoe"
        saved, _ = await store.append([say("next")])
        assert saved[0].seq == 2
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_newer_schema_is_refused_in_one_line(pg_url):
    await (await opened(pg_url)).close()
    sql(pg_url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError) as info:
        await opened(pg_url)
    message = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1} is newer" in message
    assert pg_url in message and "\n" not in message


# --- a database that cannot be used ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_database_that_cannot_be_used_is_a_one_line_error(postgres_server):
    port = free_port()
    cases = [
        (f"postgresql://spchat:sekrit@127.0.0.1:{port}/chat", "cannot connect to the database"),
        (postgres_server.url("nowhere"), 'database "nowhere" does not exist'),
        ("postgresql://127.0.0.1/chat?no_such_option=1", "cannot read the database URL"),
    ]
    for url, expected in cases:
        with pytest.raises(StoreError) as info:
            await opened(url)
        message = str(info.value)
        assert expected in message and "\n" not in message, message
        assert "sekrit" not in message


def test_without_the_driver_only_a_database_url_needs_it(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if not installed
    failures = []
    PostgresStore("postgresql://db.example/chat").open().addErrback(failures.append)
    [failure] = failures
    assert failure.check(StoreError) and str(failure.value) == (
        "PostgreSQL needs the psycopg2 package: pip install 'spchat[postgresql]'")
    # The default store needs nothing of it.
    from spchat.tap import make_store

    store = make_store(server_config(tmp_path, **{"store-writer": "inline"}), reactor)
    opened_now = []
    store.open().addCallback(opened_now.append)
    assert opened_now == [None]
    store.close()


@pytest_twisted.ensureDeferred
async def test_saving_waits_while_the_database_is_away_and_resumes_by_itself(own_postgres):
    url = own_postgres.new_database()
    store = await opened(url)
    published = []
    committer = GroupCommitter(store, reactor, lambda saved, again: published.extend(saved))
    try:
        committer.add(say("before"))
        await wait_until(lambda: len(published) == 1)
        own_postgres.stop_server()
        with pytest.raises(StoreUnavailable) as info:  # a read fails, plainly
            await store.after("#lobby", 0, 9)
        assert url in str(info.value) and "\n" not in str(info.value)
        for i in range(5):
            committer.add(say(f"while away {i}"))
        await task.deferLater(reactor, 1.5, lambda: None)  # a retry or two
        assert len(published) == 1  # nothing acknowledged that is not saved
        own_postgres.start()
        await wait_until(lambda: len(published) == 6, timeout=60)
        assert [(r.seq, r.text) for r in published] == [(1, "before")] + [
            (i + 2, f"while away {i}") for i in range(5)]
        assert [r.seq for r in await store.after("#lobby", 0, 9)] == [1, 2, 3, 4, 5, 6]
    finally:
        await committer.stop()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_the_first_read_and_write_after_the_database_restarted_find_it_back(own_postgres):
    url = own_postgres.new_database()
    store = await opened(url)
    try:
        await store.append([say("kept")])
        assert len(await store.load()) == 0 and len(await store.after("#lobby", 0, 9)) == 1
        own_postgres.stop_server()
        own_postgres.start()
        # The connections died with the server: new ones, at once.
        assert [r.text for r in await store.after("#lobby", 0, 9)] == ["kept"]
        assert await store.load() == []
        saved, _ = await store.append([say("after")])
        assert [r.seq for r in saved] == [2]
    finally:
        await store.close()


@pytest.mark.parametrize("conversation", ["a room's", "a new direct one"])
def test_a_copy_saved_on_another_node_as_the_first_commits_is_known_as_a_copy(
        pg_url, conversation):
    # A client's line is being saved by the node it left when it sends the
    # line again to the node it is on now: the second transaction waits for
    # the first's numbers, and must then see its line, not save it again.
    links = [Link(parse_url(pg_url), pg_url) for _ in range(2)]
    first, copy = ((say("again", cid="c1", ts=ts) for ts in (1000, 1050))
                   if conversation == "a room's" else
                   (dm("again", "alice", "Bob", cid="c1", ts=ts) for ts in (1000, 1050)))
    results = []
    try:
        migrate(links[0])
        with links[0].transaction() as cursor:
            append_rows(cursor, [first])
            other = threading.Thread(
                target=lambda: results.append(PgTables(links[1]).append([copy])))
            other.start()
            waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
            with links[0].cursor() as watch:  # not in the transaction: a statement of its own
                for _ in range(500):
                    watch.execute(waiting)
                    if watch.fetchone()[0]:
                        break
                    other.join(0.01)
        other.join(10)
        saved, again = results[0]
        assert saved == [] and [(r.text, old.seq) for r, old in again] == [("again", 1)]
        assert [r.text for r in PgTables(links[1]).after(first.conversation, 0, 10)] == ["again"]
    finally:
        for link in links:
            link.close()


def test_lines_whose_commit_landed_unseen_are_published_once_not_as_copies(pg_url):
    # The connection broke under COMMIT, after the COMMIT had landed: the
    # committer tries the batch again, and it finds its own lines saved.
    link = Link(parse_url(pg_url), pg_url)
    try:
        migrate(link)
        batch = [say("landed"), dm("landed too", "alice", "Bob")]
        with link.transaction() as cursor:
            first, _ = append_rows(cursor, batch)
        earlier_copy = say("sent before", cid="old")
        with link.transaction() as cursor:
            append_rows(cursor, [earlier_copy])
        in_doubt = frozenset((*r.sent_as, r.ts) for r in batch)
        retried = batch + [say("sent before", cid="old", ts=2000), say("new")]
        with link.transaction() as cursor:
            saved, again = append_rows(cursor, retried, in_doubt)
        assert numbered(saved) == [("#lobby", 1, "landed"), ("@alice bob", 1, "landed too"),
                                   ("#lobby", 3, "new")]
        assert [(r.text, old.seq) for r, old in again] == [("sent before", 2)]  # a real copy
    finally:
        link.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_lost_under_commit_loses_nothing_and_saves_nothing_twice(pg_url):
    # The server ends the connection while it commits the first batch with
    # "die at commit" in it (once: a sequence is not rolled back).
    sql(pg_url, """
        CREATE SEQUENCE die_once;
        CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.text = 'die at commit' AND nextval('die_once') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
        END $$;
    """)
    store = await opened(pg_url)  # the schema is made here
    sql(pg_url, "CREATE CONSTRAINT TRIGGER die AFTER INSERT ON messages "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit()")
    published = []
    committer = GroupCommitter(store, reactor, lambda saved, again: published.extend(saved))
    try:
        committer.add(say("die at commit"))
        committer.add(say("with it"))
        await wait_until(lambda: len(published) == 2, timeout=30)
        committer.add(say("after"))
        await wait_until(lambda: len(published) == 3)
        assert numbered(published) == [("#lobby", 1, "die at commit"), ("#lobby", 2, "with it"),
                                       ("#lobby", 3, "after")]
        assert sql(pg_url, "SELECT count(*) FROM messages") == [(3,)]
        # Two COMMITs of the first batch: the one that died, the retry.
        assert sql(pg_url, "SELECT last_value FROM die_once") == [(2,)]
    finally:
        await committer.stop()
        await store.close()


# --- a chat server on PostgreSQL -------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_chat_server_on_postgresql_keeps_its_history_across_a_restart(tmp_path, pins, pg_url):
    cfg = server_config(tmp_path / "data", database=pg_url)
    server = start_service(cfg)
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        sent = [f"line {i}" for i in range(5)]
        for text in sent:
            alice.say(text)
        yield wait_until(lambda: room_lines(bob, False) == sent and not alice.outbox)
    finally:
        yield stop_services(server)
    server = start_service(cfg)
    try:
        carol = yield connect_client(server, pins, "carol")
        yield wait_until(lambda: room_lines(carol, True) == sent)
        carol.say("after the restart")
        yield wait_until(lambda: room_lines(carol, False) == ["after the restart"])
        [line] = [m for m in carol.rec.of(wire.RoomMessage) if not m.history]
        assert line.seq == 6  # numbered on from the database's count
    finally:
        yield stop_services(server)
    assert not (tmp_path / "data" / DB_FILE).exists()  # nothing went to SQLite


@pytest_twisted.inlineCallbacks
def test_lines_sent_while_the_database_is_away_stay_pending_then_arrive(tmp_path, pins,
                                                                      own_postgres):
    server = start_service(server_config(tmp_path / "data",
                                         database=own_postgres.new_database()))
    try:
        alice = yield connect_client(server, pins, "alice")
        bob = yield connect_client(server, pins, "bob")
        alice.say("before")
        yield wait_until(lambda: room_lines(bob, False) == ["before"])
        own_postgres.stop_server()
        sent = [f"while away {i}" for i in range(3)]
        for text in sent:
            alice.say(text)
        yield task.deferLater(reactor, 1.5, lambda: None)
        # Not acknowledged, not delivered: still in alice's outbox.
        assert len(alice.outbox) == 3 and room_lines(bob, False) == ["before"]
        bob.history_page("#lobby")  # a read: it fails, plainly
        yield wait_until(lambda: bob.rec.of(wire.Error))
        assert [e.code for e in bob.rec.of(wire.Error)] == ["unavailable"]
        own_postgres.start()
        yield wait_until(lambda: room_lines(bob, False) == ["before"] + sent and not alice.outbox,
                         timeout=60)
        lines = [m for m in bob.rec.of(wire.RoomMessage) if not m.history]
        assert [m.seq for m in lines] == [1, 2, 3, 4]
    finally:
        yield stop_services(server)


def test_the_settings_choose_the_store(tmp_path):
    from spchat.server.memory_store import MemoryStore
    from spchat.server.store import SQLiteStore
    from spchat.tap import make_store

    url = "postgresql://chat:sekrit@db.example/spchat?password=sekrit"
    store = make_store(server_config(tmp_path, database=url), reactor)
    assert isinstance(store, PostgresStore)
    assert store.path == "postgresql://chat:***@db.example/spchat"  # for messages
    assert isinstance(make_store(server_config(tmp_path), reactor), SQLiteStore)
    assert isinstance(make_store(server_config(tmp_path, store="memory"), reactor), MemoryStore)
    with pytest.raises(StoreError, match="two stores"):
        make_store(server_config(tmp_path, store="memory", database=url), reactor)


def test_a_server_that_cannot_reach_its_database_stops_with_one_line(tmp_path):
    url = f"postgresql://spchat:sekrit@127.0.0.1:{free_port()}/chat"
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "spchat", "--data-dir", str(tmp_path / "data"),
                            "--tcp-port", "0", "--udp-port", "0", "--relay-port", "0",
                            "--database", url],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "database" in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "sekrit" not in result.stdout + result.stderr
