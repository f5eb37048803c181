"""Administration: the core's operations, refusals for everyone else, and
`python -m spchat.admin` against a real server."""

import json
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.task import Clock

from spchat import wire
from spchat.server.core import ChatCore, Limits
from spchat.server.store import Store

from conftest import OPEN_CLIENTS, ServerProcess, connect_client, subprocess_env, wait_until
from test_core import Recorder, login

TOKEN = "t" * 43


@pytest.fixture
def admin_core(tmp_path):
    clock = Clock()
    clock.advance(1_700_000_000)
    lines, shutdowns = [], []
    store = Store.in_dir(tmp_path)
    core = ChatCore(clock, Limits(), registry=store, admin_token=TOKEN,
                    audit=lines.append, on_shutdown=lambda: shutdowns.append(1))
    core.lines, core.shutdowns = lines, shutdowns
    yield core
    store.close()


def admin(core):
    conn = Recorder()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.AdminLogin(TOKEN))
    return link, conn


def ask(core, link, conn, op, **fields):
    core.receive(link, wire.AdminRequest("r", op, **fields))
    return conn.of(wire.AdminReply)[-1]


def test_every_admin_operation(admin_core):
    core = admin_core
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    link, conn = admin(core)
    assert conn.of(wire.AdminReply)[0].ok
    rows = ask(core, link, conn, "list").sessions
    assert [(r[0], r[2]) for r in rows] == [("alice", "connected"), ("bob", "connected")]
    assert ask(core, link, conn, "broadcast", reason="maintenance at noon").ok
    assert a.of(wire.Notice)[-1].text == "server: maintenance at noon"
    reply = ask(core, link, conn, "kick", name="bob", reason="rude", minutes=5)
    assert reply.ok and b.closed == ("kicked", "you were kicked: rude")
    assert core.registry.ban("bob")[2] == "rude"
    assert ask(core, link, conn, "unban", name="bob").ok
    assert ask(core, link, conn, "ban", name="carol").ok
    assert not ask(core, link, conn, "kick", name="nobody").ok
    assert ask(core, link, conn, "disconnect_all", reason="upgrade").ok
    assert a.closed == ("disconnected", "the server disconnected everyone: upgrade")
    assert ask(core, link, conn, "shutdown").ok and core.shutdowns == [1]
    assert any("kick bob" in line for line in core.lines)


def test_everyone_else_is_refused_and_logged(admin_core):
    core = admin_core
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    for op in wire.ADMIN_OPS:
        core.receive(alice, wire.AdminRequest("r", op, name="bob", reason="x"))
    assert [e.code for e in a.of(wire.Error)] == ["not_admin"] * len(wire.ADMIN_OPS)
    assert b.closed is None and "bob" in core.by_key and core.shutdowns == []
    assert len([line for line in core.lines if "refused" in line]) == len(wire.ADMIN_OPS)
    mallory = core.open_link(Recorder(), "10.0.0.1:5")
    core.receive(mallory, wire.AdminLogin("wrong" * 9))
    assert mallory.conn.closed[0] == "not_admin" and not mallory.admin
    assert "10.0.0.1:5: refused: wrong admin token" in core.lines[-1]


def admin_command(server, tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "spchat.admin", "--port", str(server.port),
         "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )


@pytest_twisted.inlineCallbacks
def test_admin_command_against_a_real_server(tmp_path, pins):
    server = ServerProcess(tmp_path)

    class Address:
        address = type("A", (), {"port": server.port})

    try:
        clients = []
        for name in ("alice", "bob", "carol"):
            clients.append((yield connect_client(Address, pins, name, max_retries=0)))
        alice, bob, carol = clients
        carol.proto.transport.abortConnection()  # carol's network goes away
        yield wait_until(lambda: carol.status.state == "offline")

        listed = yield threads.deferToThread(admin_command, server, tmp_path, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        states = {row["name"]: row["state"] for row in json.loads(listed.stdout)["sessions"]}
        assert states == {"alice": "connected", "bob": "connected", "carol": "reconnecting"}
        table = yield threads.deferToThread(admin_command, server, tmp_path, "list")
        assert table.stdout.splitlines()[0].split()[:3] == ["NAME", "ADDRESS", "STATE"]

        said = yield threads.deferToThread(admin_command, server, tmp_path, "broadcast", "hello all")
        assert said.returncode == 0, said.stderr
        for client in (alice, bob):
            yield wait_until(lambda c=client: any(
                n.text == "server: hello all" for n in c.rec.of(wire.Notice)))

        kicked = yield threads.deferToThread(admin_command, server, tmp_path,
                                             "kick", "bob", "--reason", "spam")
        assert kicked.returncode == 0 and kicked.stdout.strip() == "kicked bob"
        yield wait_until(lambda: bob.status.state == "offline")
        assert bob.status.reason == "you were kicked: spam" and bob.status.recovery == "never"

        unknown = yield threads.deferToThread(admin_command, server, tmp_path, "kick", "nobody")
        assert unknown.returncode != 0 and "nobody called 'nobody'" in unknown.stderr

        refused = yield threads.deferToThread(
            admin_command, server, tmp_path, "--token-file", str(tmp_path / "none"), "list")
        assert refused.returncode != 0 and "cannot read the admin token" in refused.stderr

        down = yield threads.deferToThread(admin_command, server, tmp_path, "shutdown")
        assert down.returncode == 0, down.stderr
        assert server.proc.wait(timeout=20) == 0  # a clean exit, not a signal
        yield wait_until(lambda: alice.status.state == "offline")
        assert "shutting down" in alice.status.reason
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().logout()
        if server.proc.poll() is None:
            server.stop()


def test_admin_command_without_a_server_is_an_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin_token").write_text(TOKEN)

    class Nowhere:
        port = 1

    result = admin_command(Nowhere, tmp_path, "list")
    assert result.returncode == 2 and "cannot reach 127.0.0.1:1" in result.stderr


def test_admins_get_the_table_pushed_and_see_who_dropped(admin_core):
    core = admin_core
    link, conn = admin(core)
    alice = core.open_link(Recorder(), "127.0.0.1:2", agent="spchat-client/0.1.0")
    core.receive(alice, wire.Login("alice"))
    core.clock.advance(0)  # pushes go out at the end of the reactor turn
    (event,) = conn.of(wire.AdminEvent)
    assert [(r[0], r[2], r[3]) for r in event.sessions] == [
        ("alice", "connected", "spchat-client/0.1.0")]
    core.link_lost(alice)
    core.clock.advance(0)
    assert conn.of(wire.AdminEvent)[-1].sessions[0][2] == "reconnecting"
    core.clock.advance(30)  # grace over: offline, but still listed
    core.clock.advance(0)
    assert conn.of(wire.AdminEvent)[-1].sessions[0][2] == "offline"
    assert ask(core, link, conn, "list").sessions[0][:3] == ("alice", "127.0.0.1:2", "offline")
    core.clock.advance(600)  # CHAT_OFFLINE_RETENTION
    core.sweep()
    assert ask(core, link, conn, "list").sessions == ()


def test_a_long_session_table_comes_in_parts_and_is_put_together(admin_core):
    from spchat import noise

    core = admin_core
    names = [f"user{i:04d}-with-a-rather-long-name" for i in range(700)]
    for name in names:
        login(core, name)
    link, conn = admin(core)
    core.receive(link, wire.AdminRequest("r", "list"))
    replies = [m for m in conn.of(wire.AdminReply) if m.rid == "r"]
    assert len(replies) > 1 and [r.more for r in replies][-1] is False
    assert all(len(wire.encode(r)) <= noise.MAX_PAYLOAD_LEN for r in replies)
    collector = wire.RowCollector()
    whole = [w for w in map(collector.add, replies) if w is not None]
    assert len(whole) == 1 and [row[0] for row in whole[0].sessions] == names
    # The pushed table too.
    conn.clear()
    login(core, "one-more")
    core.clock.advance(0)
    events = conn.of(wire.AdminEvent)
    assert len(events) > 1
    assert all(len(wire.encode(e)) <= noise.MAX_PAYLOAD_LEN for e in events)
    whole = [w for w in map(collector.add, events) if w is not None]
    assert len(whole[-1].sessions) == len(names) + 1
