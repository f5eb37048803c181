"""A real PostgreSQL server for the tests: Debian's PostgreSQL 15, started
in a temporary directory on a free loopback port, one fresh database per
test.

``initdb`` and ``postgres`` refuse to run as root, and the tests run as
root: then both run as the ``postgres`` user that Debian's package creates.
``fsync=off`` here only: a test's database need not survive a power cut,
and the tests run much faster without it.  The server's own code paths
(commits, locks, WAL) are the same.

Without the binaries the PostgreSQL tests skip, except in CI
(``SPCHAT_CI=1``), where that is a failure.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from local_servers import missing, stop_process

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "spchat"  # the cluster's superuser: trust on loopback, no password
START_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryPostgres:
    """A throwaway PostgreSQL cluster: ``start()``, ``new_database()`` as
    often as needed, ``stop()``.  Also what ``scripts/measure_pg.py`` runs
    its measurements on."""

    def __init__(self, fsync: bool = False):
        """``fsync``: on for measurements, where commits should cost what
        they cost in production."""
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix="spchat-pg-"))
        self.port = _free_port()
        self.proc = None
        self._numbers = itertools.count(1)
        # As root, the cluster belongs to (and runs as) the postgres user.
        self._run_as = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    @staticmethod
    def missing() -> str | None:
        """Why no server can be started here, or None."""
        if not (BIN / "postgres").exists():
            return f"{BIN / 'postgres'} is missing: install Debian's postgresql package"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "no postgres user to run PostgreSQL as (root may not)"
        return None

    def start(self) -> None:
        """Make the cluster (the first time) and start its server."""
        data = self.dir / "data"
        if not data.exists():
            subprocess.run(
                [BIN / "initdb", "-D", data, "-A", "trust", "-U", USER, "-E", "UTF8",
                 "--locale=C.UTF-8"],
                check=True, capture_output=True, **self._run_as)
        self._log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [BIN / "postgres", "-D", data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", f"fsync={'on' if self.fsync else 'off'}",
             "-c", "synchronous_commit=on", "-c", "max_connections=200"],
            stdout=self._log, stderr=subprocess.STDOUT, **self._run_as)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                psycopg2.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log_text()) from None
                time.sleep(0.05)

    def log_text(self) -> str:
        return (self.dir / "postgres.log").read_text(errors="replace")

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database of its own; its URL."""
        import psycopg2

        name = f"t_{next(self._numbers)}"
        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return self.url(name)

    def stop_server(self) -> None:
        """Stop the server, keeping the cluster: ``start()`` starts it again."""
        if self.proc is not None:
            # SIGINT: "fast" shutdown, without waiting for clients to leave.
            stop_process(self.proc, signal.SIGINT)
            self._log.close()
            self.proc = None

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def _require_postgres() -> None:
    """Skip (fail, in CI) where no PostgreSQL server can be started."""
    reason = TemporaryPostgres.missing()
    if reason is not None:
        missing(reason)
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing("psycopg2 is missing: pip install '.[test]'")


def _running():
    _require_postgres()
    server = TemporaryPostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One server for the session; each test takes a database of its own."""
    yield from _running()


@pytest.fixture
def own_postgres():
    """A server of this test's own, which it may stop and start again."""
    yield from _running()


@pytest.fixture
def pg_url(postgres_server):
    """The URL of a fresh database, this test's alone."""
    return postgres_server.new_database()
