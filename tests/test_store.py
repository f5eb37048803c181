"""The stores behind ``IStore``: one set of behaviours, run against the memory
store, the SQLite store in both of its modes and the PostgreSQL store (on a
real server, tests/postgres.py); then what only SQLite has
(the file, its schema, damage, threads, what it keeps across reopening)."""

import sqlite3
import threading

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from spchat.server.interfaces import IStore
from spchat.server.memory_store import MemoryStore
from spchat.server.records import Record, RoomRecord, direct_conversation
from spchat.server.store import (DB_FILE, LOOKUP_CHUNK, MIGRATIONS, SCHEMA_VERSION, SQLiteStore,
                                 StoreError, Tables)

from store_lines import dm, numbered, say

@pytest_twisted.async_yield_fixture(params=["memory", "inline", "thread", "postgres"])
async def store(request, tmp_path):
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "postgres":
        from spchat.server.pg_store import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_url"))
    else:
        store = SQLiteStore(tmp_path / DB_FILE, mode=request.param)
    await store.open()
    yield store
    await store.close()


class Restarts:
    """A SQLite store that a test closes and opens again, as a restart does."""

    def __init__(self, path, mode):
        self.path, self.mode = path, mode
        self.store = None

    async def open(self):
        self.store = SQLiteStore(self.path, mode=self.mode)
        await self.store.open()
        return self.store

    async def reopen(self):
        await self.store.close()
        return await self.open()


@pytest_twisted.async_yield_fixture(params=["inline", "thread"])
async def db(request, tmp_path):
    restarts = Restarts(tmp_path / DB_FILE, request.param)
    await restarts.open()
    yield restarts
    await restarts.store.close()


def fired(d):
    """The result of a Deferred that has fired already (raised, if a failure)."""
    results = []
    d.addBoth(results.append)
    [result] = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def integrity_error():
    """PostgreSQL's refusal of a broken reference, if its driver is here."""
    try:
        import psycopg2
    except ImportError:
        return KeyError
    return psycopg2.IntegrityError


# --- every store ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_every_store_provides_the_interface(store):
    assert verifyObject(IStore, store)


@pytest_twisted.ensureDeferred
async def test_a_cid_is_its_lineages_and_only_for_a_day(store):
    from spchat.server.numbering import RESEND_WINDOW_MS

    def line(text, lineage, ts=1000):
        return say(text, ts=ts, cid="same")._replace(lineage=lineage)

    saved, _ = await store.append([line("a guest's", "guest:s1")])
    later, again = await store.append([
        line("a guest's, re-sent", "guest:s1", ts=5000),  # the same session: a copy
        line("the next holder of the name", "guest:s2", ts=6000),  # someone else: new
    ])
    assert [old.text for _, old in again] == ["a guest's"]
    assert [r.text for r in later] == ["the next holder of the name"]
    day_later = 1000 + RESEND_WINDOW_MS + 1
    fresh, again = await store.append([line("a day on, a new line", "guest:s1", ts=day_later)])
    assert again == [] and [r.text for r in fresh] == ["a day on, a new line"]
    assert (await store.find_cid("guest:s1", "same", day_later - RESEND_WINDOW_MS)).text \
        == "a day on, a new line"
    assert await store.find_cid("guest:s3", "same", 0) is None


@pytest_twisted.ensureDeferred
async def test_a_time_falls_between_a_conversations_numbers(store):
    await store.append([say("a", ts=1000), say("b", ts=2000), say("elsewhere", room="dev",
                                                                  ts=2500), say("c", ts=3000)])
    assert [await store.last_before_time("#lobby", t) for t in (1000, 1001, 2999, 3001)] == [
        0, 1, 2, 3]
    assert await store.last_before_time("#nowhere", 5000) == 0


@pytest_twisted.ensureDeferred
async def test_each_conversation_numbers_its_own_messages_in_the_given_order(store):
    saved, again = await store.append([
        say("one"), say("dev one", room="dev"), dm("psst", "alice", "Bob"),
        dm("what?", "Bob", "alice"), say("two"), dm("hey carol", "alice", "Carol"),
    ])
    assert again == []
    assert numbered(saved) == [
        ("#lobby", 1, "one"), ("#dev", 1, "dev one"), ("@alice bob", 1, "psst"),
        ("@alice bob", 2, "what?"), ("#lobby", 2, "two"), ("@alice carol", 1, "hey carol"),
    ]
    saved, _ = await store.append([say("dev two", room="dev"), say("three")])
    assert numbered(saved) == [("#dev", 2, "dev two"), ("#lobby", 3, "three")]
    assert [r.text for r in await store.after("#lobby", 0, 100)] == ["one", "two", "three"]
    assert [r.text for r in await store.after(direct_conversation("bob", "alice"), 0, 100)] \
        == ["psst", "what?"]


@pytest_twisted.ensureDeferred
async def test_after_and_before_page_through_one_conversation(store):
    await store.append([say(f"m{i}") for i in range(1, 11)] + [say("elsewhere", room="dev")])
    assert [r.seq for r in await store.after("#lobby", 3, 4)] == [4, 5, 6, 7]
    assert [r.seq for r in await store.after("#lobby", 8, 100)] == [9, 10]
    assert await store.after("#lobby", 10, 5) == []
    assert [r.seq for r in await store.before("#lobby", 8, 3)] == [5, 6, 7]  # the newest
    assert [r.seq for r in await store.before("#lobby", 2, 5)] == [1]
    assert [r.seq for r in await store.before("#lobby", 11, 100)] == list(range(1, 11))
    assert await store.before("#lobby", 1, 5) == []
    assert await store.after("#nowhere", 0, 5) == [] and await store.before("#nowhere", 9, 5) == []
    [line] = await store.after("#lobby", 0, 1)
    assert line == Record(1, 1000, "alice", "alice", "m1", line.cid, room="lobby",
                          lineage="name:alice")  # the lineage it was compared by


@pytest_twisted.ensureDeferred
async def test_a_resent_message_is_found_in_the_same_and_in_a_later_batch(store):
    first, again = await store.append([
        say("a", cid="x1"), dm("b", "alice", "Bob", cid="x2"),
        say("a", cid="x1"),  # sent twice before the first was saved
    ])
    assert numbered(first) == [("#lobby", 1, "a"), ("@alice bob", 1, "b")]
    assert [(resent.cid, old) for resent, old in again] == [("x1", first[0])]
    resent = [dm("b", "alice", "Bob", cid="x2"), say("c", cid="x3"),
              say("a", sender="carol", cid="x1")]  # another sender's x1 is new
    saved, again = await store.append(resent)
    assert numbered(saved) == [("#lobby", 2, "c"), ("#lobby", 3, "a")]
    assert saved[1].sender == "carol"
    assert again == [(resent[0], first[1])]  # what its sender is acknowledged with
    assert [r.seq for r in await store.after("#lobby", 0, 9)] == [1, 2, 3]  # nothing twice
    assert await store.find_cid("name:alice", "x2", 0) == first[1]
    assert await store.find_cid("name:carol", "x1", 0) == saved[1]
    assert await store.find_cid("name:bob", "x2", 0) is None


@pytest_twisted.ensureDeferred
async def test_a_copy_within_a_batch_is_acknowledged_with_the_first_ones_number(store):
    await store.append([say("earlier"), say("earlier too")])
    saved, again = await store.append([say("once", cid="twice"), say("once", cid="twice")])
    assert numbered(saved) == [("#lobby", 3, "once")]
    assert [(resent.cid, old) for resent, old in again] == [("twice", saved[0])]


@pytest_twisted.ensureDeferred
async def test_direct_messages_since_a_time_oldest_first(store):
    await store.append([
        dm("early", "alice", "Bob", ts=1000),
        dm("reply", "Bob", "alice", ts=2000),
        say("a room line", sender="alice", ts=2500),
        dm("to carol", "alice", "Carol", ts=3000),
        dm("to bob", "alice", "Bob", ts=3000),  # same time: by conversation
        dm("a note to self", "alice", "alice", ts=3500),
        dm("not hers", "Dave", "Bob", ts=4000),
        dm("from carol", "Carol", "alice", ts=5000),
    ])
    texts = [r.text for r in await store.direct_since("alice", 2000, 100)]
    assert texts == ["reply", "to bob", "to carol", "a note to self", "from carol"]
    assert [r.text for r in await store.direct_since("alice", 0, 2)] == ["early", "reply"]
    assert [r.text for r in await store.direct_since("bob", 0, 100)] == [
        "early", "reply", "to bob", "not hers"]
    assert await store.direct_since("alice", 5001, 100) == []
    assert await store.direct_since("erin", 0, 100) == []


def lined(record, lineage, to_lineage):
    return record._replace(lineage=lineage, to_lineage=to_lineage)


@pytest_twisted.ensureDeferred
async def test_a_direct_conversation_is_read_by_its_two_lineages_only(store):
    first_bob, next_bob, alice = "guest:s1", "guest:s2", "account:alice"
    await store.append([
        lined(dm("from before lineages", "alice", "bob", ts=500), alice, None),
        lined(dm("hi bob", "alice", "bob", ts=1000), alice, first_bob),
        lined(dm("hi alice", "bob", "alice", ts=1100), first_bob, alice),
        # The name's next guest, someone else, in the same conversation:
        lined(dm("who are you", "alice", "bob", ts=2000), alice, next_bob),
    ])
    conversation = "@alice bob"
    everything = ["from before lineages", "hi bob", "hi alice", "who are you"]
    assert [r.text for r in await store.after(conversation, 0, 9)] == everything
    assert [r.text for r in await store.after(conversation, 0, 9, alice)] == everything
    for read in (lambda: store.after(conversation, 0, 9, next_bob),
                 lambda: store.before(conversation, 99, 9, next_bob),
                 lambda: store.direct_since("bob", 0, 9, next_bob)):
        assert [r.text for r in await read()] == ["who are you"]
    assert [r.text for r in await store.before(conversation, 99, 2, first_bob)] == [
        "hi bob", "hi alice"]  # the newest two it may read, not the newest two
    assert [r.text for r in await store.after(conversation, 0, 1, first_bob)] == ["hi bob"]
    # The name's account (if it has one) has what came before lineages.
    assert [r.text for r in await store.direct_since("bob", 0, 9, "account:bob")] == [
        "from before lineages"]
    assert await store.direct_since("bob", 0, 9, "outbox:stranger") == []


@pytest_twisted.ensureDeferred
async def test_an_adopted_lineage_reads_and_resends_as_the_old_one(store):
    guest, account = "guest:s9", "account:lou"
    said = lined(dm("as a guest", "lou", "ann", ts=1000, cid="g1"), guest, "account:ann")
    told = lined(dm("to the guest", "ann", "lou", ts=1100), "account:ann", guest)
    await store.append([said, told])
    await store.adopt_lineage(guest, account)
    assert [r.text for r in await store.after("@ann lou", 0, 9, account)] == [
        "as a guest", "to the guest"]
    assert await store.after("@ann lou", 0, 9, guest) == []
    saved, again = await store.append([lined(said, account, "account:ann")])
    assert saved == [] and [old.text for _, old in again] == ["as a guest"]  # a copy


@pytest_twisted.ensureDeferred
async def test_pruning_deletes_old_messages_and_never_gives_a_number_twice(store):
    await store.append([say(f"m{i}", ts=1000 * i) for i in range(1, 11)]
                       + [dm("old", "alice", "Bob", ts=1)])
    assert await store.prune(5000) == 5  # lines 1-4 and the direct message
    assert [r.seq for r in await store.after("#lobby", 0, 100)] == list(range(5, 11))
    assert await store.direct_since("alice", 0, 100) == []
    assert await store.prune(10**12) == 6  # everything
    saved, _ = await store.append([say("new"), dm("new", "alice", "Bob")])
    assert numbered(saved) == [("#lobby", 11, "new"), ("@alice bob", 2, "new")]


@pytest_twisted.ensureDeferred
async def test_a_deleted_conversation_is_forgotten(store):
    first, _ = await store.append([say("a", room="dev"), say("b"), dm("c", "alice", "Bob")])
    await store.delete_conversation("#dev")
    await store.delete_conversation("@alice bob")
    assert await store.after("#dev", 0, 9) == []
    assert await store.find_cid("name:alice", first[0].cid, 0) is None
    assert await store.direct_since("alice", 0, 9) == []
    assert [r.text for r in await store.after("#lobby", 0, 9)] == ["b"]


@pytest_twisted.ensureDeferred
async def test_direct_messages_wait_for_an_account_until_had(store):
    assert await store.waiting_for("bob", "@bob zoe") is None  # no account: nothing can wait
    await store.set_account("bob", "Bob", "$argon2id$x", 1)
    assert await store.waiting_for("bob", "@bob zoe") == ("Bob", 0, 0)
    waiting = [dm(f"w{i}", sender, "Bob", ts=ts)._replace(to_lineage="account:bob", waiting=True)
               for i, (sender, ts) in enumerate([("zoe", 10), ("alice", 20), ("zoe", 30)])]
    await store.append([waiting[0], dm("live", "zoe", "Bob", ts=15), *waiting[1:]])
    # All that waits for bob, and how much of it is zoe's.
    assert await store.waiting_for("bob", "@bob zoe") == ("Bob", 3, 2)
    assert await store.waiting_for("bob", "@alice bob") == ("Bob", 3, 1)
    assert await store.waiting_for("bob", "@bob carol") == ("Bob", 3, 0)
    # By conversation, each in its order; as saved, with their own times.
    got = await store.waiting_directs("bob", 9)
    assert [(r.conversation, r.seq, r.text, r.ts) for r in got] == [
        ("@alice bob", 1, "w1", 20), ("@bob zoe", 1, "w0", 10), ("@bob zoe", 3, "w2", 30)]
    assert all(r.waiting for r in got)
    assert [r.text for r in await store.waiting_directs("bob", 1)] == ["w1"]
    await store.directs_had([("@alice bob", 1), ("@bob zoe", 1)])
    assert [r.text for r in await store.waiting_directs("bob", 9)] == ["w2"]
    assert await store.waiting_for("bob", "@bob zoe") == ("Bob", 1, 1)
    # Had or not, they are the conversation's lines.
    assert [r.text for r in await store.after("@bob zoe", 0, 9)] == ["w0", "live", "w2"]
    assert not (await store.after("@bob zoe", 0, 9))[0].waiting


@pytest_twisted.ensureDeferred
async def test_accounts(store):
    assert await store.account("zoe") is None
    await store.set_account("zoe", "Zoe", "$argon2id$one", 1)
    assert await store.account("zoe") == ("Zoe", "$argon2id$one")
    await store.set_account("zoe", "ZOE", "$argon2id$two", 2)  # a new password
    assert await store.account("zoe") == ("Zoe", "$argon2id$two")


@pytest_twisted.ensureDeferred
async def test_server_bans(store):
    await store.set_ban("mal", "Mal", 1234.5, "spam", 1)
    await store.set_ban("eve", "Eve", None, "rude", 1)
    assert await store.ban("mal") == ("Mal", 1234.5, "spam")
    assert await store.bans() == [("eve", "Eve", None, "rude"), ("mal", "Mal", 1234.5, "spam")]
    await store.set_ban("mal", "Mal", None, "spam again", 2)  # new terms replace the old
    assert await store.ban("mal") == ("Mal", None, "spam again")
    assert await store.delete_ban("mal") is True
    assert await store.delete_ban("mal") is False
    assert await store.ban("mal") is None


@pytest_twisted.ensureDeferred
async def test_rooms_with_roles_bans_mutes_and_memberships_round_trip(store):
    await store.save_room(RoomRecord("dev", "Dev", "builds", private=True, topic_locked=True,
                                     created=5, password="beer", member_limit=12,
                                     moderated=True))
    await store.save_room(RoomRecord("lobby", "lobby"))
    await store.set_role("dev", "zoe", "Zoe", "owner")
    await store.set_role("dev", "bob", "Bob", "operator")
    await store.set_room_ban("dev", "mal", "Mal", None, "spam", 7)
    await store.set_room_ban("dev", "eve", "Eve", 99.5, "rude", 7)
    await store.set_mute("dev", "carol", "Carol", True)
    await store.set_voice("dev", "dan", "Dan", True)
    await store.set_voice("dev", "eve", "Eve", True)
    await store.set_voice("dev", "eve", "Eve", False)
    await store.add_membership("zoe", "dev")
    await store.add_membership("zoe", "lobby")
    await store.add_membership("zoe", "dev")  # twice is once
    await store.append([say("x", room="dev"), say("y", room="dev")])
    dev, lobby = await store.load()
    assert dev == RoomRecord(
        "dev", "Dev", "builds", private=True, topic_locked=True, created=5,
        roles={"zoe": ("Zoe", "owner"), "bob": ("Bob", "operator")},
        bans={"mal": ("Mal", None, "spam"), "eve": ("Eve", 99.5, "rude")},
        mutes={"carol": "Carol"}, last_seq=2, password="beer", member_limit=12,
        moderated=True, voices={"dan": "Dan"},
    )
    assert lobby == RoomRecord("lobby", "lobby")
    assert await store.memberships("zoe") == ["dev", "lobby"]
    assert await store.memberships("bob") == []

    # New settings keep the room's standing and when it was made.
    await store.save_room(RoomRecord("dev", "Dev", "releases", created=999))
    await store.set_role("dev", "bob", "Bob", None)
    await store.set_mute("dev", "carol", "Carol", False)
    assert await store.delete_room_ban("dev", "mal") is True
    assert await store.delete_room_ban("dev", "mal") is False
    await store.remove_membership("zoe", "lobby")
    dev, _ = await store.load()
    assert (dev.topic, dev.private, dev.topic_locked, dev.created) == ("releases", False, False, 5)
    assert (dev.password, dev.member_limit, dev.moderated) == ("", 0, False)
    assert dev.voices == {"dan": "Dan"}  # a voice is standing, as a mute is
    assert dev.roles == {"zoe": ("Zoe", "owner")}
    assert dev.bans == {"eve": ("Eve", 99.5, "rude")} and dev.mutes == {}
    assert await store.memberships("zoe") == ["dev"]


@pytest_twisted.ensureDeferred
async def test_making_a_room_that_is_there_keeps_it_and_reads_back_what_is_kept(store):
    # Two nodes making one room at once: the second finds the first's.
    made, created = await store.create_room(RoomRecord("dev", "Dev", "first", private=True,
                                                       created=5))
    assert created and made == RoomRecord("dev", "Dev", "first", private=True, created=5)
    await store.set_role("dev", "zoe", "Zoe", "owner")
    await store.set_voice("dev", "dan", "Dan", True)
    await store.append([say("x", room="dev")])
    kept, created = await store.create_room(RoomRecord("dev", "DEV", "second", created=9))
    assert not created
    assert kept == RoomRecord("dev", "Dev", "first", private=True, created=5,
                              roles={"zoe": ("Zoe", "owner")}, voices={"dan": "Dan"},
                              last_seq=1)
    assert await store.room("dev") == kept
    assert await store.room("nope") is None


@pytest_twisted.ensureDeferred
async def test_what_load_gives_is_a_copy(store):
    await store.save_room(RoomRecord("dev", "Dev"))
    [dev] = await store.load()
    dev.roles["zoe"] = ("Zoe", "owner")
    dev.topic = "changed here only"
    assert await store.load() == [RoomRecord("dev", "Dev")]


@pytest_twisted.ensureDeferred
async def test_deleting_a_room_forgets_all_of_it_and_nothing_else(store):
    for key in ("dev", "ops"):
        await store.save_room(RoomRecord(key, key.title()))
        await store.set_role(key, "zoe", "Zoe", "owner")
        await store.set_room_ban(key, "mal", "Mal", None, "spam", 1)
        await store.set_mute(key, "carol", "Carol", True)
        await store.add_membership("zoe", key)
    first, _ = await store.append([say("x", room="dev"), say("y", room="ops"),
                                   dm("z", "zoe", "Bob")])
    await store.delete_room("dev")
    [ops] = await store.load()
    assert ops.key == "ops" and ops.roles and ops.bans and ops.mutes and ops.last_seq == 1
    assert await store.memberships("zoe") == ["ops"]
    assert await store.after("#dev", 0, 9) == []
    assert await store.find_cid("name:zoe", first[0].cid, 0) is None
    assert len(await store.direct_since("zoe", 0, 9)) == 1
    # Made again, it is a new room: nothing of the old one comes back but
    # its count, so a client's old position in it hides no new line.
    await store.save_room(RoomRecord("dev", "Dev"))
    dev = [room for room in await store.load() if room.key == "dev"][0]
    assert dev == RoomRecord("dev", "Dev", last_seq=1)
    saved, _ = await store.append([say("again", room="dev")])
    assert numbered(saved) == [("#dev", 2, "again")]


@pytest_twisted.ensureDeferred
async def test_standing_in_a_room_that_does_not_exist_is_refused(store):
    for write in (lambda: store.set_role("nowhere", "zoe", "Zoe", "owner"),
                  lambda: store.set_room_ban("nowhere", "mal", "Mal", None, "spam", 1),
                  lambda: store.set_mute("nowhere", "carol", "Carol", True),
                  lambda: store.add_membership("zoe", "nowhere")):
        with pytest.raises((KeyError, sqlite3.IntegrityError, integrity_error())):
            await write()
    # Taking away what is not there is no error.
    await store.set_role("nowhere", "zoe", "Zoe", None)
    await store.set_mute("nowhere", "carol", "Carol", False)
    assert await store.delete_room_ban("nowhere", "mal") is False
    await store.remove_membership("zoe", "nowhere")
    assert await store.load() == [] and await store.memberships("zoe") == []


def test_the_memory_store_keeps_the_newest_messages_of_each_conversation():
    store = MemoryStore(limit=3)
    fired(store.append([say(f"m{i}", cid=f"x{i}") for i in range(1, 6)]
                       + [say("dev", room="dev")]))
    assert [r.seq for r in fired(store.after("#lobby", 0, 9))] == [3, 4, 5]
    assert [r.text for r in fired(store.after("#dev", 0, 9))] == ["dev"]
    assert fired(store.find_cid("name:alice", "x1", 0)) is None
    saved, _ = fired(store.append([say("m6")]))
    assert [r.seq for r in saved] == [6]  # numbers go on


# --- SQLite: the file --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_new_database_is_private_versioned_and_in_wal_mode(db, tmp_path):
    path = tmp_path / DB_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_version_7_gets_waiting_direct_messages_and_keeps_its_old_ones_had(tmp_path):
    path = tmp_path / DB_FILE
    conn = sqlite3.connect(path, isolation_level=None)
    for step, migration in enumerate(MIGRATIONS[:7], 1):
        conn.executescript(f"BEGIN; {migration}; PRAGMA user_version = {step}; COMMIT;")
    conn.execute("INSERT INTO accounts VALUES ('bob', 'Bob', 'x', 1)")
    conn.execute("INSERT INTO messages (seq, ts, sender, sender_key, text, cid, to_name, to_key, "
                 "conversation, lineage, to_lineage) VALUES (1, 5, 'alice', 'alice', 'old', "
                 "'c1', 'Bob', 'bob', '@alice bob', 'account:alice', 'account:bob')")
    conn.execute("INSERT INTO conversations VALUES ('@alice bob', 1)")
    conn.close()
    store = SQLiteStore(path, mode="inline")
    fired(store.open())
    try:
        assert fired(store.waiting_for("bob", "@alice bob")) == ("Bob", 0, 0)  # seen live, before
        fired(store.append([dm("new", "alice", "Bob")._replace(to_lineage="account:bob",
                                                             waiting=True)]))
        assert [(r.seq, r.text) for r in fired(store.waiting_directs("bob", 9))] == [(2, "new")]
    finally:
        fired(store.close())
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
    conn.close()


def test_the_constructor_touches_nothing(tmp_path):
    SQLiteStore(tmp_path / DB_FILE)
    SQLiteStore.in_dir(tmp_path, sync="normal", mode="inline")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / DB_FILE, mode="threads")


@pytest_twisted.ensureDeferred
async def test_messages_and_their_numbers_survive_reopening(db):
    first, _ = await db.store.append([say("a"), dm("b", "alice", "Bob"), say("c", room="dev")])
    store = await db.reopen()
    resent = dm("b", "alice", "Bob", cid=first[1].cid)  # as after a restart
    saved, again = await store.append([resent, say("d")])
    assert again == [(resent, first[1])] and numbered(saved) == [("#lobby", 2, "d")]
    await store.prune(10**12)  # all of them: the numbers still go on
    store = await db.reopen()
    saved, _ = await store.append([say("e"), dm("f", "Bob", "alice"), say("g", room="dev")])
    assert numbered(saved) == [("#lobby", 3, "e"), ("@alice bob", 2, "f"), ("#dev", 2, "g")]
    store = await db.reopen()
    assert [r.seq for r in await store.after("#lobby", 0, 9)] == [3]
    assert await store.find_cid("name:bob", saved[1].cid, 0) == saved[1]


@pytest_twisted.ensureDeferred
async def test_accounts_bans_and_rooms_survive_reopening(db):
    store = db.store
    await store.set_account("zoe", "Zoe", "$argon2id$...", 1)
    await store.set_ban("mal", "Mal", 1234.5, "spam", 1)
    await store.save_room(RoomRecord("dev", "Dev", "builds", created=5))
    await store.set_role("dev", "zoe", "Zoe", "owner")
    await store.add_membership("zoe", "dev")
    await store.append([say("x", room="dev")])
    store = await db.reopen()
    assert await store.account("zoe") == ("Zoe", "$argon2id$...")
    assert await store.ban("mal") == ("Mal", 1234.5, "spam")
    assert await store.load() == [RoomRecord("dev", "Dev", "builds", created=5,
                                             roles={"zoe": ("Zoe", "owner")}, last_seq=1)]
    assert await store.memberships("zoe") == ["dev"]


@pytest_twisted.ensureDeferred
async def test_the_schema_refuses_a_number_twice_but_not_a_cid(db, tmp_path):
    await db.store.append([say("a", cid="x")])  # #lobby 1
    conn = sqlite3.connect(tmp_path / DB_FILE)

    def insert(seq, cid):
        conn.execute("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (seq, 1000, "alice", "alice", "b", cid, "lobby", None, None, "#lobby",
                      "name:alice", None, 0))

    with pytest.raises(sqlite3.IntegrityError):
        insert(1, "y")  # the same number in its conversation
    insert(2, "x")  # a cid is unique within a window (the store's rule), not for ever
    conn.rollback()
    conn.close()


@pytest_twisted.ensureDeferred
async def test_a_commit_that_fails_leaves_nothing_open_and_the_retry_numbers_alike(db, tmp_path):
    store = db.store
    await store.append([say("before")])
    # Something that fails only at COMMIT (as a full disk can): a deferred
    # foreign key broken by every new message (the store turns foreign keys on).
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    conn.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (p REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER breaks AFTER INSERT ON messages BEGIN INSERT INTO child VALUES (1); END;
    """)
    batch = [say("a", cid="x1"), say("b", cid="x2", room="dev")]
    with pytest.raises(sqlite3.IntegrityError):
        await store.append(batch)
    conn.execute("DROP TRIGGER breaks")
    conn.close()
    saved, _ = await store.append(batch)  # what the committer does a second later
    assert numbered(saved) == [("#lobby", 2, "a"), ("#dev", 1, "b")]
    assert [r.text for r in await store.after("#lobby", 0, 9)] == ["before", "a"]


def test_a_batch_bigger_than_one_lookup_finds_every_resent_message(tmp_path):
    store = SQLiteStore(tmp_path / DB_FILE, mode="inline")
    fired(store.open())  # the schema
    fired(store.close())
    # The statements on a connection of our own, as a tool would use them:
    # SQLite before 3.32 allows 999 parameters a query; stay within them.
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    tables = Tables(conn)
    n = 2 * LOOKUP_CHUNK + 1
    # Each in a conversation of its own, so the numbers' lookup is chunked too.
    lines = [dm(f"m{i}", "alice", f"u{i}", cid=f"m{i}") for i in range(n)]
    first, _ = tables.append(lines[::2])
    saved, again = tables.append(lines)
    assert len(again) == len(first) and len(saved) == n - len(first)
    assert {r.seq for r in first + saved} == {1}
    more, _ = tables.append([dm("again", "alice", f"u{i}") for i in range(n)])
    assert {r.seq for r in more} == {2}
    conn.close()


def test_one_server_per_data_directory(tmp_path):
    first = SQLiteStore.in_dir(tmp_path, mode="inline")
    fired(first.open())
    with pytest.raises(StoreError, match="in use by another spchat server"):
        fired(SQLiteStore.in_dir(tmp_path, mode="inline").open())
    fired(first.close())
    again = SQLiteStore.in_dir(tmp_path, mode="inline")
    fired(again.open())  # free again
    fired(again.close())


def open_error(path) -> str:
    """What opening ``path`` fails with: never raised, the Deferred's failure."""
    opening = SQLiteStore(path, mode="inline").open()
    with pytest.raises(StoreError) as caught:
        fired(opening)
    return str(caught.value)


def test_damaged_database_is_a_one_line_error(tmp_path):
    path = tmp_path / DB_FILE
    path.write_bytes(b"this is not a database" * 100)
    error = open_error(path)
    assert str(path) in error and "damaged" in error and "\n" not in error


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / DB_FILE
    store = SQLiteStore(path, mode="inline")
    fired(store.open())
    fired(store.close())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    assert "newer than this spchat" in open_error(path)


def test_a_failed_open_leaves_the_directory_free(tmp_path):
    path = tmp_path / DB_FILE
    path.write_bytes(b"garbage" * 100)
    open_error(path)
    path.unlink()
    store = SQLiteStore(path, mode="inline")
    fired(store.open())
    fired(store.close())


def test_lookups_use_the_indexes(tmp_path):
    store = SQLiteStore(tmp_path / DB_FILE, mode="inline")
    fired(store.open())
    fired(store.close())
    conn = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    tables = Tables(conn)

    def plan(method, *args):
        """The query plan of what ``Tables.method`` runs."""
        ran = []
        conn.set_trace_callback(ran.append)  # with the parameters filled in
        getattr(tables, method)(*args)
        conn.set_trace_callback(None)
        return " | ".join(row[3] for sql in ran
                          for row in conn.execute("EXPLAIN QUERY PLAN " + sql))

    assert "USING INDEX messages_by_number" in plan("after", "#lobby", 0, 5)
    assert "messages_by_number" in plan("before", "#lobby", 9, 5)
    direct = plan("direct_since", "alice", 0, 5)
    assert "USING INDEX direct_from" in direct and "USING INDEX direct_to" in direct
    assert "SCAN messages" not in direct
    assert "USING INDEX messages_by_ts" in plan("prune", 5)
    assert "USING INDEX directs_waiting" in plan("waiting_directs", "bob", 5)
    assert "USING INDEX directs_waiting" in plan("waiting_for", "bob", "@bob zoe")
    conn.close()


# --- SQLite: the threads -------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def threaded(tmp_path):
    store = SQLiteStore(tmp_path / DB_FILE, mode="thread")
    await store.open()
    yield store
    await store.close()


@pytest_twisted.ensureDeferred
async def test_reads_go_on_while_the_writer_is_busy_and_writes_wait_their_turn(threaded,
                                                                               monkeypatch):
    store = threaded
    await store.append([say("old")])
    inside, go_on, threads_seen = threading.Event(), threading.Event(), set()
    lookup = Tables._saved

    def slow_lookup(tables, records):  # a big batch: the lookup takes a while
        threads_seen.add(threading.current_thread().name)
        inside.set()
        go_on.wait(10)
        return lookup(tables, records)

    monkeypatch.setattr(Tables, "_saved", slow_lookup)
    try:
        appending = store.append([say("new")])
        registering = store.set_account("bob", "Bob", "hash", 1)  # queued behind it
        await threads.deferToThread(inside.wait, 10)
        # The writer holds its transaction open; the reader still answers.
        assert [r.text for r in await store.after("#lobby", 0, 9)] == ["old"]
        assert await store.account("bob") is None
        assert not appending.called and not registering.called
    finally:
        go_on.set()
    saved, _ = await appending
    await registering
    assert numbered(saved) == [("#lobby", 2, "new")]
    assert await store.account("bob") == ("Bob", "hash")
    [writer] = threads_seen  # one writer thread, not the reactor's
    assert "spchat-store-writer" in writer and threading.current_thread().name != writer


@pytest_twisted.ensureDeferred
async def test_close_waits_for_what_is_queued(tmp_path):
    store = SQLiteStore(tmp_path / DB_FILE, mode="thread")
    await store.open()
    writes = [store.append([say(f"m{i}")]) for i in range(20)]
    await store.close()
    assert all(d.called for d in writes)
    again = SQLiteStore(tmp_path / DB_FILE, mode="inline")
    fired(again.open())
    assert [r.seq for r in fired(again.after("#lobby", 0, 99))] == list(range(1, 21))
    fired(again.close())
    assert not [t for t in threading.enumerate() if t.name.startswith("spchat-store")]


@pytest.mark.parametrize("mode", ["inline", "thread"])
@pytest_twisted.ensureDeferred
async def test_a_closed_store_refuses_work_with_a_store_error(tmp_path, mode):
    """Late work (a line saved as the server stops) fails as the store's
    other problems do, not with an AttributeError raised at the caller."""
    store = SQLiteStore(tmp_path / DB_FILE, mode=mode)
    await store.open()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.append([say("late")])
    with pytest.raises(StoreError, match="not open"):
        await store.after("#lobby", 0, 9)


@pytest_twisted.ensureDeferred
async def test_a_thread_store_fails_to_open_like_an_inline_one(tmp_path):
    (tmp_path / DB_FILE).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="damaged"):
        await SQLiteStore(tmp_path / DB_FILE, mode="thread").open()
    assert not [t for t in threading.enumerate() if t.name.startswith("spchat-store")]
