"""Make tests/fixtures/spchat-0.1.0.db: a database written by release 0.1.0.

This was run against spchat 0.1.0, git commit
e5f424c96f4345a5f54aaabdee56df9acb5a8774, to make the fixture that
tests/test_upgrade.py opens with the current code (an in-place upgrade of a
real 0.1.0 data directory).  It is kept as the record of how the fixture was
made; the tests do not run it, and running it with a later spchat would make
a different file, not a 0.1.0 one.

It starts the real server in this process as tests/conftest.py does, on
127.0.0.1 with free ports and a temporary data directory, and drives it over
loopback with real clients:

* "Carol" registers an account (password "correct horse battery"); "alice"
  and "Bob" are guests;
* ``LOBBY`` (tests/release_fixture.py, which the tests check the file
  against): room messages in the lobby, each sent once the one before is
  acknowledged, so their sequence numbers follow the list;
* ``DIRECT`` (likewise): direct messages (alice->Bob, Bob->alice, Carol->alice);
* two bans through the core, on names not online: "mallory" for ever and
  "trudy" for 100 years (so that it has an ``until`` but never runs out).

Then it logs the clients out, stops the server, folds the write-ahead log
into the file and turns WAL mode off (``journal_mode=DELETE``) so that the
fixture is one self-contained file, and copies it.

    python scripts/make_release_fixture.py [OUTPUT]   # default: tests/fixtures/spchat-0.1.0.db
"""

import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's spchat, not an installed one
sys.path.insert(0, str(REPO / "tests"))  # what the fixture holds, as its test reads it

from twisted.internet import defer, task  # noqa: E402

import spchat  # noqa: E402
from spchat import config  # noqa: E402
from spchat.client.pins import PinStore  # noqa: E402
from spchat.client.session import ChatClient  # noqa: E402
from spchat.tap import ChatService  # noqa: E402

from release_fixture import DIRECT, LOBBY  # noqa: E402

DEFAULT_OUTPUT = REPO / "tests" / "fixtures" / "spchat-0.1.0.db"
CAROL_PASSWORD = "correct horse battery"
TRUDY_MINUTES = 100 * 365 * 24 * 60  # 100 years: timed, but it does not expire
ACK_TIMEOUT = 20.0

# (name, minutes or None for ever, reason)
BANS = [
    ("mallory", None, "spam"),
    ("trudy", TRUDY_MINUTES, "rude"),
]


def server_config(data_dir, **options):
    """A configuration for a server on free loopback ports (as tests/conftest.py)."""
    given = {"host": "127.0.0.1", "tcp-port": "0", "udp-port": "0", "relay-port": "0",
             "data-dir": str(data_dir)}
    given.update(options)
    cfg, _ = config.load_config(options=given, environ={}, dotenv_path=data_dir / "no.env")
    return cfg


@defer.inlineCallbacks
def connect_client(reactor, server, pins, name, **options):
    client = ChatClient(reactor, "127.0.0.1", server.address.port, name, pins,
                        reconnect_delay=0.05, **options)
    yield client.connect()
    return client


@defer.inlineCallbacks
def acked(client):
    if not (yield client.wait_acked(ACK_TIMEOUT)):
        raise SystemExit(f"{client.name}: not acknowledged within {ACK_TIMEOUT:g} s")


@defer.inlineCallbacks
def write_history(reactor, data_dir):
    """Run the server on ``data_dir`` and leave the history in its database."""
    data_dir.mkdir()
    service = ChatService(server_config(data_dir), reactor)
    service.address = service.listen()
    service.startService()
    clients = {}
    try:
        pins = PinStore(data_dir.parent / "client-config")
        clients["Carol"] = yield connect_client(
            reactor, service, pins, "Carol", register=True, password=CAROL_PASSWORD)
        clients["alice"] = yield connect_client(reactor, service, pins, "alice")
        clients["Bob"] = yield connect_client(reactor, service, pins, "Bob")
        for sender, text in LOBBY:
            clients[sender].say(text)
            yield acked(clients[sender])
        for sender, to, text in DIRECT:
            clients[sender].direct(to, text)
            yield acked(clients[sender])
        for name, minutes, reason in BANS:
            if not service.core.ban(name, minutes, reason):
                raise SystemExit(f"could not ban {name}")
        for client in clients.values():
            yield acked(client)
    finally:
        for client in clients.values():
            yield client.logout()
        yield service.stopService()
        for link in list(service.core.links):
            link.conn.transport.abortConnection()


def self_contained(db):
    """Fold the WAL into the file and leave WAL mode: one file, no -wal/-shm."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise SystemExit(f"{db}: the checkpoint could not finish")
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise SystemExit(f"{db}: journal mode is still {mode}")
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise SystemExit(f"{db}: quick_check failed")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm", "-journal"):
        if Path(f"{db}{suffix}").exists():
            raise SystemExit(f"{db}{suffix} is still there")


def summary(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        rooms = conn.execute("SELECT count(*) FROM messages WHERE room IS NOT NULL").fetchone()[0]
        direct = conn.execute("SELECT count(*) FROM messages WHERE room IS NULL").fetchone()[0]
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
        bans = conn.execute("SELECT count(*) FROM bans").fetchone()[0]
    finally:
        conn.close()
    return (f"schema version {version}: {rooms} room messages, {direct} direct messages, "
            f"{accounts} account(s), {bans} bans")


@defer.inlineCallbacks
def main(reactor, output=DEFAULT_OUTPUT):
    output = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        yield write_history(reactor, data_dir)
        db = data_dir / "spchat.db"
        self_contained(db)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db, output)
    print(f"spchat {spchat.__version__}: wrote {output} ({output.stat().st_size} bytes); "
          f"{summary(output)}")


if __name__ == "__main__":
    task.react(main, sys.argv[1:2])
