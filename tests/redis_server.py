"""A real Redis server for the tests: Debian's ``redis-server``, started in a
temporary directory on a free loopback port, with nothing saved to disk
(``--save '' --appendonly no``): a restart starts it empty, as a bus
that lost everything.

Without the binary the Redis tests skip, except in CI (``SPCHAT_CI=1``),
where that is a failure.
"""

from __future__ import annotations

import pytest

from local_servers import missing
from spchat.bench.engines import REDIS_BIN, TemporaryRedis


def _require_redis() -> None:
    """Skip (fail, in CI) where no Redis server or client can be had."""
    if not REDIS_BIN.exists():
        missing(f"{REDIS_BIN} is missing: install Debian's redis-server package")
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        missing("txredisapi is missing: pip install '.[test]'")


@pytest.fixture
def redis_server():
    """A Redis server of this test's own, which it may stop and start again."""
    _require_redis()
    server = TemporaryRedis()
    try:
        server.start()
        yield server
    finally:
        server.stop()
