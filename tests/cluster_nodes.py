"""The nodes of one server, for the tests: data directories that share one
server key (as an operator copies ``server_key`` to every node), chat
services on them in this process, and ``three_nodes``: a fixture of three
on one PostgreSQL and one Redis (real servers, see tests/postgres.py and
tests/redis_server.py)."""

from __future__ import annotations

import shutil

import pytest

from spchat.server.identity import KEY_FILE, load_or_create_server_key

from conftest import server_config, start_service, stop_services


def share_key(dirs):
    """The first data directory's server key (made if it has none) copied
    to the others; returns ``dirs``."""
    load_or_create_server_key(dirs[0])
    for data_dir in dirs[1:]:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(dirs[0] / KEY_FILE, data_dir / KEY_FILE)
    return dirs


def start_nodes(tmp_path, count, **options):
    """``count`` chat services on free loopback ports with one server key.
    Without ``database`` and ``bus`` each has a store of its own: one key,
    but not one chat."""
    return [start_service(server_config(data_dir, **options))
            for data_dir in share_key([tmp_path / f"node{i}" for i in range(count)])]


def addresses(nodes) -> str:
    """The nodes as a client is given them: ``127.0.0.1:P1,127.0.0.1:P2,…``."""
    return ",".join(f"127.0.0.1:{node.address.port}" for node in nodes)


@pytest.fixture
def three_nodes(tmp_path, pg_url, redis_server):
    """Three nodes of one server: one key, one PostgreSQL, one Redis bus."""
    nodes = start_nodes(tmp_path, 3, database=pg_url, bus=redis_server.url)
    yield nodes
    stop_services(*nodes)
