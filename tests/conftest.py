"""Shared helpers: a real server on 127.0.0.1 and real clients."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task

from spchat import config
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient
from spchat.tap import ChatService

REPO = Path(__file__).resolve().parents[1]


def server_config(data_dir, **options):
    """A configuration for a test server on a free loopback port."""
    given = {"host": "127.0.0.1", "tcp-port": "0", "data-dir": str(data_dir)}
    given.update(options)
    cfg, _ = config.load_config(options=given, environ={}, dotenv_path=data_dir / "no.env")
    return cfg


@pytest.fixture
def chat_server(tmp_path):
    """A ChatService listening in this process, on the test reactor."""
    service = ChatService(server_config(tmp_path / "data"), reactor)
    service.address = service.listen()
    yield service
    service.port.stopListening()
    for proto in list(service.core.sessions):
        proto.conn.transport.abortConnection()


@pytest.fixture
def pins(tmp_path):
    return PinStore(tmp_path / "client-config")


def wait_until(predicate, timeout=10.0, interval=0.01):
    """Poll ``predicate`` on the reactor; fail the test after ``timeout``."""

    @defer.inlineCallbacks
    def poll():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
            yield task.deferLater(reactor, interval, lambda: None)

    return poll()


class Recorder:
    """Event sink for a ChatClient."""

    def __init__(self):
        self.events = []
        self.disconnects = []

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


@defer.inlineCallbacks
def connect_client(server, pins, name):
    rec = Recorder()
    client = ChatClient(
        reactor,
        "127.0.0.1",
        server.address.port,
        name,
        pins,
        on_event=rec.events.append,
        on_disconnect=rec.disconnects.append,
    )
    yield client.connect()
    client.rec = rec
    return client


# --- subprocesses: the real command lines --------------------------------


def subprocess_env(tmp_path, **extra):
    """Environment for spawned commands: this checkout first, a private config dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SPCHAT_CONFIG_DIR"] = str(tmp_path / "client-config")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def twistd_command():
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class ServerProcess:
    """``twistd -n spchat`` in a subprocess, on a free loopback port."""

    def __init__(self, tmp_path, *args, env=None):
        self.proc = subprocess.Popen(
            twistd_command() + ["-n", "--pidfile=", "spchat", "--host", "127.0.0.1",
                                "--tcp-port", "0", "--data-dir", str(tmp_path / "data"), *args],
            cwd=tmp_path,
            env=env or subprocess_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            found = re.search(r"listening on TCP [\d.]+:(\d+); server key fingerprint (\S+)", line)
            if found:
                self.port, self.fingerprint = int(found.group(1)), found.group(2)
                return
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def stop(self):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=20)
        self.log.append(out)
        return self.proc.returncode
