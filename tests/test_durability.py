"""Acknowledged means saved: kill -9 the server mid-stream, restart it, and
count what survived."""

import random
import sqlite3

import pytest_twisted
from twisted.internet import reactor

from spchat import wire
from spchat.client.session import ChatClient
from spchat.server.store import DB_FILE

from conftest import OPEN_CLIENTS, ServerProcess, wait_until

FAST = ["--flood-burst", "100000", "--flood-rate", "100000", "--flood-queue", "100000"]


@pytest_twisted.inlineCallbacks
def test_every_acknowledged_message_survives_kill_9(tmp_path, pins):
    server = ServerProcess(tmp_path, *FAST)
    received, acked = [], set()
    kill_after = random.Random(1124).randint(50, 900)
    acked_before_kill = set()

    def event(msg):
        if isinstance(msg, wire.RoomMessage) and not msg.history:
            received.append(msg)
            if msg.cid is not None:
                acked.add(msg.cid)
                if len(acked) == kill_after:
                    # SIGKILL right at this acknowledgement: no flush, no goodbye.
                    server.proc.kill()
                    acked_before_kill.update(acked)

    states = []
    client = ChatClient(
        reactor, "127.0.0.1", server.port, "alice", pins, on_event=event,
        on_status=lambda status: states.append(status.state),
        reconnect_delay=0.05, max_retries=400, presence=False,
    )
    OPEN_CLIENTS.append(client)
    restarted = None
    try:
        yield client.connect()
        for i in range(1000):
            client.say(f"m{i}")
        yield wait_until(lambda: acked_before_kill, timeout=60)
        server.proc.wait()
        restarted = ServerProcess(tmp_path, "--tcp-port", str(server.port), *FAST)
        yield wait_until(
            lambda: "reconnecting" in states and client.status.state == "connected"
            and not client.outbox and len(acked) == 1000,
            timeout=60,
        )
    finally:
        yield client.logout()
        if restarted is not None:
            restarted.stop()

    rows = sqlite3.connect(tmp_path / "data" / DB_FILE).execute(
        "SELECT seq, cid, text FROM messages WHERE conversation = '#lobby' ORDER BY seq"
    ).fetchall()
    seqs = [seq for seq, _, _ in rows]
    assert seqs == list(range(1, 1001))  # the lobby's: no gap, no number used twice
    assert sorted(text for _, _, text in rows) == sorted(f"m{i}" for i in range(1000))
    stored = {cid for _, cid, _ in rows}
    assert acked_before_kill <= stored  # nothing acknowledged was lost
    # The client holds the whole sequence, each message once, in order.
    assert [m.seq for m in received] == list(range(1, 1001))
    assert len(acked_before_kill) == kill_after < 1000  # killed mid-stream
    assert "reconnecting" in states  # it did go through the crash
