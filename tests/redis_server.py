"""A real Redis server for the tests: Debian's ``redis-server``, started in a
temporary directory on a free loopback port, with nothing saved to disk
(``--save '' --appendonly no``): a restart starts it empty, as a bus
that lost everything.

Without the binary the Redis tests skip, except in CI (``SPCHAT_CI=1``),
where that is a failure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from local_servers import missing, stop_process
from postgres import _free_port as free_port

BIN = Path("/usr/bin/redis-server")
START_SECONDS = 10


class TemporaryRedis:
    """A throwaway Redis server: ``start()``, ``stop_server()`` and
    ``start()`` again (same port), ``stop()``.  Also what
    ``scripts/measure_bus.py`` measures on."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="spchat-redis-"))
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start:\n"
                                   + (self.dir / "redis.log").read_text(errors="replace"))
            time.sleep(0.02)

    def stop_server(self) -> None:
        """Stop the server (it forgets everything): ``start()`` starts it again."""
        if self.proc is not None:
            stop_process(self.proc)
            self._log.close()
            self.proc = None

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def _require_redis() -> None:
    """Skip (fail, in CI) where no Redis server or client can be had."""
    if not BIN.exists():
        missing(f"{BIN} is missing: install Debian's redis-server package")
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
