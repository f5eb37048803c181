"""Names claimed in PostgreSQL (spchat.server.pg_claims), on a real server:
the schema's step to version 2, two nodes racing for a name, a dead
node's names, a resume moving a claim and one handing it back."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from spchat.server.claims import Claim, token_hash
from spchat.server.pg_claims import PgClaimTables
from spchat.server.pg_link import Link, parse_url
from spchat.server.pg_schema import MIGRATIONS, SCHEMA_VERSION, migrate

from postgres import sql


def tables(url, node, timeout=20.0):
    return PgClaimTables(Link(parse_url(url), url), node, timeout)


def claim(key, session, node):
    return Claim(key, session, node, token_hash(f"token {session}"), key.title(), False,
                 f"guest:{session}", ("lobby",))


def migrated(url):
    link = Link(parse_url(url), url)
    try:
        migrate(link)
    finally:
        link.close()


def test_a_database_of_version_1_is_brought_to_2_and_keeps_what_it_had(pg_url):
    sql(pg_url, "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (1);" + MIGRATIONS[0])
    sql(pg_url, "INSERT INTO accounts VALUES ('alice', 'Alice', 'hash', 1)")
    link = Link(parse_url(pg_url), pg_url)
    try:
        assert migrate(link) == 1
    finally:
        link.close()
    assert sql(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert sql(pg_url, "SELECT key, name FROM accounts") == [("alice", "Alice")]
    here = tables(pg_url, "a")
    try:
        here.beat()
        assert here.claim(claim("alice", "s1", "a"), takeover=False).granted
        assert sql(pg_url, "SELECT key, node, rooms FROM claims") == [("alice", "a", ["lobby"])]
    finally:
        here.close()


def test_two_nodes_racing_for_one_name_exactly_one_gets_it(pg_url):
    migrated(pg_url)
    nodes = [tables(pg_url, "a"), tables(pg_url, "b")]
    try:
        for node in nodes:
            node.beat()
        for turn in range(20):
            key = f"name{turn}"
            together = threading.Barrier(2)
            outcomes = {}

            def race(node):
                together.wait()
                outcomes[node.node] = node.claim(claim(key, f"{node.node}{turn}", node.node),
                                                 takeover=False)

            racing = [threading.Thread(target=race, args=(node,)) for node in nodes]
            for thread in racing:
                thread.start()
            for thread in racing:
                thread.join()
            granted = [node for node, outcome in outcomes.items() if outcome.granted]
            assert len(granted) == 1, outcomes
            assert sql(pg_url, "SELECT node FROM claims WHERE key = %s", (key,)) == [
                (granted[0],)]
    finally:
        for node in nodes:
            node.close()


def test_a_node_silent_for_its_timeout_frees_its_names_and_one_starting_drops_its_own(pg_url):
    migrated(pg_url)
    a, b = tables(pg_url, "a", timeout=1.0), tables(pg_url, "b", timeout=1.0)
    try:
        a.beat()
        b.beat()
        assert a.claim(claim("alice", "s1", "a"), takeover=False).granted
        assert a.claim(claim("bob", "s2", "a"), takeover=False).granted
        assert not b.claim(claim("alice", "s3", "b"), takeover=False).granted
        time.sleep(1.2)  # a says nothing
        taken = b.claim(claim("alice", "s3", "b"), takeover=False)
        assert taken.granted and taken.replaced.session == "s1"
        a.drop_own()  # a started again
        assert sql(pg_url, "SELECT key, node FROM claims") == [("alice", "b")]
    finally:
        a.close()
        b.close()


def test_a_resume_moves_the_claim_only_with_its_token_and_release_is_conditional(pg_url):
    migrated(pg_url)
    a, b = tables(pg_url, "a"), tables(pg_url, "b")
    try:
        a.beat()
        b.beat()
        a.claim(claim("alice", "s1", "a"), takeover=False)
        assert b.resume("s1", token_hash("a guess")) is None
        moved = b.resume("s1", token_hash("token s1"))
        assert moved == claim("alice", "s1", "a")
        assert a.beat() == {} and b.beat() == {"s1": "alice"}
        a.release("alice", "s1")  # not a's any more
        b.update(Claim("alice", "s1", "b", "x", "Alice", True, "account:alice", ("dev",)))
        assert sql(pg_url, "SELECT node, registered, rooms FROM claims") == [
            ("b", True, ["dev"])]
        b.release("alice", "s1")
        assert sql(pg_url, "SELECT * FROM claims") == []
    finally:
        a.close()
        b.close()


def test_a_claim_is_not_handed_back_to_a_dead_node(pg_url):
    # There any login could take the name: it stays where the session waits.
    migrated(pg_url)
    a, b = tables(pg_url, "a", timeout=1.0), tables(pg_url, "b", timeout=1.0)
    try:
        a.claim(claim("alice", "s1", "a"), takeover=False)
        a.beat()
        time.sleep(1.2)  # a is dead
        b.beat()
        was = b.resume("s1", token_hash("token s1"))
        assert b.hand_back(was) is False
        assert sql(pg_url, "SELECT node FROM claims") == [("b",)]
    finally:
        a.close()
        b.close()


def test_a_claim_handed_back_goes_where_it_was_unless_it_moved_on(pg_url):
    migrated(pg_url)
    a, b, c = tables(pg_url, "a"), tables(pg_url, "b"), tables(pg_url, "c")
    try:
        a.claim(claim("alice", "s1", "a"), takeover=False)
        a.beat()  # alive (a dead node is not handed a claim back)
        was = b.resume("s1", token_hash("token s1"))  # b's client went meanwhile
        assert b.hand_back(was) is True
        assert sql(pg_url, "SELECT node FROM claims") == [("a",)]
        assert a.beat() == {"s1": "alice"} and b.beat() == {}
        was = b.resume("s1", token_hash("token s1"))
        assert c.resume("s1", token_hash("token s1")).node == "b"  # c's came too, later
        b.hand_back(was)  # not b's any more: it stays c's
        c.hand_back(claim("alice", "s2", "a"))  # nor another session's
        assert sql(pg_url, "SELECT node, session FROM claims") == [("c", "s1")]
    finally:
        for node in (a, b, c):
            node.close()


def test_a_name_like_one_held_on_another_live_node_is_found(pg_url):
    from spchat.server.lookalikes import looks

    migrated(pg_url)
    a, b = tables(pg_url, "a", timeout=1.0), tables(pg_url, "b", timeout=1.0)
    try:
        a.beat()
        held = replace(claim("alice", "s1", "a"), looks=tuple(sorted(looks("Alice", "alice"))))
        assert a.claim(held, takeover=False).granted
        like = sorted(looks("\u0430lice", "\u0430lice"))
        assert b.lookalike(like, "\u0430lice") == "Alice"
        assert a.lookalike(like, "\u0430lice") is None  # its own node's: its sessions say
        assert b.lookalike(like, "alice") is None  # the name itself: not a look-alike
        time.sleep(1.2)  # a is dead: its names no longer count
        assert b.lookalike(like, "\u0430lice") is None
    finally:
        a.close()
        b.close()
