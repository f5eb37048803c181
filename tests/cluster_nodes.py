"""The nodes of one server, for the tests: chat services in this process
on data directories that share one server key (helpers.node_dirs, as an
operator copies ``server_key`` to every node), and ``three_nodes``: a
fixture of three on one PostgreSQL and one Redis (real servers, see
tests/postgres.py and tests/redis_server.py)."""

from __future__ import annotations

import pytest

from conftest import ServerProcess, server_config, start_service, stop_services
from helpers import node_dirs, share_key


def start_nodes(tmp_path, count, **options):
    """``count`` chat services on free loopback ports with one server key.
    Without ``database`` and ``bus`` each has a store of its own: one key,
    but not one chat."""
    return [start_service(server_config(data_dir, **options))
            for data_dir in node_dirs(tmp_path, count)]


def addresses(nodes) -> str:
    """The nodes as a client is given them: ``127.0.0.1:P1,127.0.0.1:P2,…``."""
    return ",".join(f"127.0.0.1:{node.address.port}" for node in nodes)


def twistd_nodes(tmp_path, count, pg_url, redis_server, *args):
    """``count`` ``twistd -n spchat`` nodes of one server (one copied key),
    each given ``args`` too."""
    dirs = share_key([tmp_path / f"node{i}" / "data" for i in range(count)])
    # Flood control off the table: the test is about the nodes.
    return [ServerProcess(data_dir.parent, "--relay-port", "0", "--database", pg_url,
                          "--bus", redis_server.url, "--flood-burst", "10000",
                          "--flood-rate", "100000", "--flood-queue", "10000", *args)
            for data_dir in dirs]


@pytest.fixture
def three_nodes(tmp_path, pg_url, redis_server):
    """Three nodes of one server: one key, one PostgreSQL, one Redis bus."""
    nodes = start_nodes(tmp_path, 3, database=pg_url, bus=redis_server.url)
    yield nodes
    stop_services(*nodes)


def bus_state(servers):
    """Each node's start and bus, for a test that timed out waiting on them."""
    return "; ".join(
        f"{s.core.node}: ready {s.core.ready}, subscribed {s.bus.subscribed}, publisher "
        f"{s.bus.publisher is not None}, joined {s.bus.joined}, dropped {s.bus.dropped}"
        for s in servers)
