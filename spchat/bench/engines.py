"""Throwaway PostgreSQL and Redis servers: Debian's PostgreSQL 15 and
``redis-server``, each in a temporary directory on a free loopback port.
What the tests, ``scripts/measure_pg.py``, ``scripts/measure_bus.py`` and
the bench's scenario (f) run on.

``initdb`` and ``postgres`` refuse to run as root: as root, both run as
the ``postgres`` user that Debian's package creates.  Redis saves nothing
to disk (``--save '' --appendonly no``): a restart starts it empty, as a
bus that lost everything.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any
from pathlib import Path


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop a program a test started: ``sig``, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "spchat"  # the cluster's superuser: trust on loopback, no password
PG_START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryPostgres:
    """A throwaway PostgreSQL cluster: ``start()``, ``new_database()`` as
    often as needed, ``stop()``."""

    def __init__(self, fsync: bool = False):
        """``fsync``: on for measurements, where commits should cost what
        they cost in production."""
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix="spchat-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._numbers = itertools.count(1)
        # As root, the cluster belongs to (and runs as) the postgres user.
        self._run_as: dict[str, Any] = {}  # Popen's user, group and extra_groups
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    @staticmethod
    def missing() -> str | None:
        """Why no server can be started here, or None."""
        if not (PG_BIN / "postgres").exists():
            return f"{PG_BIN / 'postgres'} is missing: install Debian's postgresql package"
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
                [PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", USER, "-E", "UTF8",
                 "--locale=C.UTF-8"],
                check=True, capture_output=True, **self._run_as)
        self._log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [PG_BIN / "postgres", "-D", data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", f"fsync={'on' if self.fsync else 'off'}",
             "-c", "synchronous_commit=on", "-c", "max_connections=200"],
            stdout=self._log, stderr=subprocess.STDOUT, **self._run_as)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        import psycopg2

        assert self.proc is not None, "started by start()"
        deadline = time.monotonic() + PG_START_SECONDS
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


REDIS_BIN = Path("/usr/bin/redis-server")
REDIS_START_SECONDS = 10


class TemporaryRedis:
    """A throwaway Redis server: ``start()``, ``stop_server()`` and
    ``start()`` again (same port), ``stop()``."""

    def __init__(self, password: str | None = None, tls: tuple[Path, Path] | None = None):
        """``password``: one that clients must give (``requirepass``);
        ``tls``: (certificate, key) PEM files: TLS only, on its port."""
        self.dir = Path(tempfile.mkdtemp(prefix="spchat-redis-"))
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        signed = "" if self.password is None else f":{urllib.parse.quote(self.password, safe='')}@"
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{signed}127.0.0.1:{self.port}/0"

    def _listening(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        cert, key = map(str, self.tls)
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]

    def _ping(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
            s = raw
            if self.tls is not None:  # up is all this asks: no check of who
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                s = context.wrap_socket(raw)
            s.sendall(b"PING\r\n")
            return s.recv(16)

    def start(self) -> None:
        self._log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [REDIS_BIN, *self._listening(), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir,
             *(() if self.password is None else ("--requirepass", self.password))],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_SECONDS
        while True:
            try:
                if self._ping().startswith((b"+PONG", b"-NOAUTH")):  # up
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
