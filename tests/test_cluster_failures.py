"""Several nodes when a part they share fails: PostgreSQL restarted under
two nodes loses nothing acknowledged, holds what it could not save, and
both nodes take up saving and delivering again by themselves.  Real
servers all (tests/postgres.py, tests/redis_server.py)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor, task


from conftest import connect_client, server_config, start_service, stop_services, wait_until
from helpers import lines_in, node_dirs


@pytest_twisted.inlineCallbacks
def test_postgresql_restarted_under_two_nodes_holds_lines_then_saves_them_once(
        tmp_path, pins, own_postgres, redis_server):
    url = own_postgres.new_database()
    servers = [start_service(server_config(data_dir, database=url, bus=redis_server.url))
               for data_dir in node_dirs(tmp_path, 2)]
    try:
        alice = yield connect_client(servers[0], pins, "alice")
        bob = yield connect_client(servers[1], pins, "bob")
        yield wait_until(lambda: all(s.bus.joined for s in servers))
        sent = []

        def say(client, count, what):
            for i in range(count):
                sent.append(f"{client.name} {what} {i}")
                client.say(sent[-1])

        say(alice, 3, "before")
        say(bob, 3, "before")
        yield wait_until(lambda: len(lines_in(alice)) == len(lines_in(bob)) == 6)
        own_postgres.stop_server()
        say(alice, 3, "while away")
        say(bob, 3, "while away")
        yield task.deferLater(reactor, 2.0, lambda: None)  # retries meanwhile
        # Pending on both sides: not acknowledged, not delivered, not lost.
        assert len(alice.outbox) == len(bob.outbox) == 3
        assert len(lines_in(alice)) == len(lines_in(bob)) == 6
        own_postgres.start()
        yield wait_until(lambda: not alice.outbox and not bob.outbox, timeout=60)
        yield wait_until(lambda: len(lines_in(alice)) == len(lines_in(bob)) == 12,
                         timeout=30)
        say(alice, 1, "after")  # and the room goes on as before
        yield wait_until(lambda: len(lines_in(bob)) == 13)
        yield task.deferLater(reactor, 0.5, lambda: None)  # a copy would come by now
        log = lines_in(alice)
        assert lines_in(bob) == log
        assert [seq for seq, _ in log] == list(range(1, 14))
        assert sorted(text for _, text in log) == sorted(sent)
    finally:
        yield stop_services(*servers)
