"""Administration: the core's operations, refusals for everyone else, and
`python -m spchat.admin` against a real server."""

import json
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.internet.task import Clock

from spchat import wire
from spchat.server.core import ChatCore, Limits

from conftest import OPEN_CLIENTS, ServerProcess, connect_client, subprocess_env, wait_until
from helpers import MemoryClient, fired, login
from irc_peer import irc_peer

TOKEN = "t" * 43


@pytest.fixture
def admin_core():
    clock = Clock()
    clock.advance(1_700_000_000)
    lines, shutdowns = [], []
    core = ChatCore(clock, Limits(), admin_token=TOKEN,
                    audit=lines.append, on_shutdown=lambda: shutdowns.append(1))
    core.lines, core.shutdowns = lines, shutdowns
    return core


def admin(core):
    conn = MemoryClient()
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
    listed = ask(core, link, conn, "list")
    assert listed.text == "2 sessions"
    assert [(r[0], r[2]) for r in listed.sessions] == [("alice", "connected"),
                                                        ("bob", "connected")]
    assert ask(core, link, conn, "broadcast", reason="maintenance at noon").ok
    assert a.of(wire.Notice)[-1].text == "server: maintenance at noon"
    reply = ask(core, link, conn, "kick", name="bob", reason="rude", minutes=5)
    # The one kicked learns of the ban and its length, not only of the kick.
    assert reply.text == "kicked bob and banned for 5 minutes"
    assert b.closed == ("kicked", "you were kicked and banned for 5 minutes: rude")
    assert fired(core.store.ban("bob"))[2] == "rude"
    assert ask(core, link, conn, "unban", name="bob").ok
    assert ask(core, link, conn, "ban", name="carol").text == "banned carol for ever"
    assert ask(core, link, conn, "ban", name="dave", minutes=1).text == (
        "banned dave for 1 minute")
    assert not ask(core, link, conn, "kick", name="nobody").ok
    assert ask(core, link, conn, "broadcast", reason="last one").text == (
        "broadcast to 1 session")
    assert ask(core, link, conn, "disconnect_all", reason="upgrade").text == (
        "disconnected 1 session")
    assert a.closed == ("disconnected", "the server disconnected everyone: upgrade")
    assert ask(core, link, conn, "shutdown").ok and core.shutdowns == [1]
    assert any("kick bob" in line for line in core.lines)


def test_the_bans_still_running_are_listed(admin_core):
    from spchat import admin as admin_command

    core = admin_core
    link, conn = admin(core)
    assert ask(core, link, conn, "bans").text == "0 bans"
    ask(core, link, conn, "ban", name="Carol", reason="spam")
    ask(core, link, conn, "ban", name="dave", reason="flood", minutes=1)
    listed = ask(core, link, conn, "bans")
    assert listed.text == "2 bans"
    ends = int((core.clock.seconds() + 60) * 1000)
    assert listed.bans == (("Carol", None, "spam"), ("dave", ends, "flood"))
    shown = admin_command.render(listed, "bans", as_json=False).splitlines()
    assert shown[0].split() == ["NAME", "LEFT", "REASON"]
    assert shown[1].split() == ["Carol", "for", "ever", "spam"]
    assert json.loads(admin_command.render(listed, "bans", as_json=True))["bans"][0] == {
        "name": "Carol", "until": None, "reason": "spam"}
    core.clock.advance(61)  # dave's has run out
    assert ask(core, link, conn, "bans").bans == (("Carol", None, "spam"),)
    assert not any("bans" in line for line in core.lines)  # read-only: no audit line


def test_everyone_else_is_refused_and_closed(admin_core):
    core = admin_core
    alice, a = login(core, "alice")
    _, b = login(core, "bob")
    core.receive(alice, wire.AdminRequest("r", "kick", name="bob", reason="x"))
    assert a.closed == ("not_admin", "kick is an admin operation; it needs the admin token")
    assert "alice" not in core.by_key  # the session went with its connection
    assert b.closed is None and "bob" in core.by_key
    for op in wire.ADMIN_OPS:
        guest = core.open_link(MemoryClient(), "10.0.0.2:7")
        core.receive(guest, wire.AdminRequest("r", op, name="bob", reason="x"))
        assert guest.conn.closed[0] == "not_admin" and not guest.admin
    assert "bob" in core.by_key and core.shutdowns == []
    mallory = core.open_link(MemoryClient(), "10.0.0.1:5")
    core.receive(mallory, wire.AdminLogin("wrong" * 9))
    assert mallory.conn.closed == ("not_admin", "that is not the admin token")
    assert not mallory.admin
    assert "10.0.0.1:5: refused: wrong admin token" in core.lines[-1]


def test_admin_refusals_are_counted_and_logged_once_a_minute_per_address(admin_core):
    core = admin_core

    def refusals():
        return [line for line in core.lines if "refused" in line]

    for _ in range(50):
        link = core.open_link(MemoryClient(), "10.0.0.3:9")
        core.receive(link, wire.AdminRequest("r", "list"))
    (line,) = refusals()
    assert "10.0.0.3:9: refused: list without the admin token" in line
    link = core.open_link(MemoryClient(), "10.0.0.4:9")  # another address: its own line
    core.receive(link, wire.AdminLogin("wrong"))
    assert len(refusals()) == 2
    core.clock.advance(60)
    link = core.open_link(MemoryClient(), "10.0.0.3:10")
    core.receive(link, wire.AdminLogin("wrong"))
    assert "(51 admin refusals from 10.0.0.3 so far)" in refusals()[-1]
    assert core.admin.refused["10.0.0.3"] == 51


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

        yield threads.deferToThread(admin_command, server, tmp_path, "ban", "mallory",
                                    "--minutes", "30", "--reason", "spam")
        bans = yield threads.deferToThread(admin_command, server, tmp_path, "bans")
        assert bans.returncode == 0, bans.stderr
        name, minutes, _, reason = bans.stdout.splitlines()[1].split()
        assert (name, minutes, reason) == ("mallory", "29m", "spam"), bans.stdout

        unknown = yield threads.deferToThread(admin_command, server, tmp_path, "kick", "nobody")
        assert unknown.returncode != 0 and "nobody called 'nobody'" in unknown.stderr

        refused = yield threads.deferToThread(
            admin_command, server, tmp_path, "--token-file", str(tmp_path / "none"), "list")
        assert refused.returncode != 0 and "cannot read the admin token" in refused.stderr
        # The common options go after the command too, as --json does.
        after = yield threads.deferToThread(
            admin_command, server, tmp_path, "list", "--token-file", str(tmp_path / "none"))
        assert after.returncode != 0 and "cannot read the admin token" in after.stderr
        token = tmp_path / "data" / "admin_token"
        listed = yield threads.deferToThread(
            admin_command, server, tmp_path, "list", "--token-file", str(token), "--json")
        assert listed.returncode == 0, listed.stderr

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


@pytest_twisted.inlineCallbacks
def test_admin_stats_shows_the_figures_of_the_traffic_sent(tmp_path, pins):
    server = ServerProcess(tmp_path)

    class Address:
        address = type("A", (), {"port": server.port})

    try:
        clients = []
        for name in ("alice", "bob"):
            clients.append((yield connect_client(Address, pins, name, max_retries=0)))
        for i in range(4):
            clients[i % 2].say(f"line {i}")
        yield wait_until(lambda: all(len(c.rec.of(wire.RoomMessage)) == 4 for c in clients))

        shown = yield threads.deferToThread(admin_command, server, tmp_path, "stats", "--json")
        assert shown.returncode == 0, shown.stderr
        figures = {(row["metric"], tuple(row["labels"].items())): row["value"]
                   for row in json.loads(shown.stdout)["stats"]}
        assert figures[("spchat_messages_received_total", ())] == 4
        assert figures[("spchat_messages_delivered_total", ())] == 4 * 2  # each to both
        assert figures[("spchat_connections", (("kind", "chat"),))] == 2
        assert figures[("spchat_connections", (("kind", "admin"),))] == 1  # this request's
        assert figures[("spchat_sessions", (("state", "connected"),))] == 2
        assert figures[("spchat_commit_batch_messages_sum", ())] == 4
        assert figures[("spchat_connections_refused_total", (("reason", "full"),))] == 0

        table = yield threads.deferToThread(admin_command, server, tmp_path, "stats")
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["METRIC", "LABELS", "VALUE"]
        rows = [line.split() for line in lines]
        assert ["spchat_messages_received_total", "-", "4"] in rows
        assert ["spchat_connections", "kind=chat", "2"] in rows
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().logout()
        server.stop()


@pytest_twisted.inlineCallbacks
def test_the_administrators_actions_reach_irc_users(tmp_path):
    server = ServerProcess(tmp_path, "--irc", "tcp:0:interface=127.0.0.1")
    peers = []
    try:
        for nick in ("ann", "ben", "cal", "dee"):
            peers.append((yield irc_peer(server.irc_port, nick=nick)))
        ann, ben, cal, dee = peers
        assert all(peer.welcomed for peer in peers)
        listed = yield threads.deferToThread(admin_command, server, tmp_path, "list", "--json")
        rows = {row["name"]: row for row in json.loads(listed.stdout)["sessions"]}
        assert set(rows) == {"ann", "ben", "cal", "dee"} and rows["ann"]["client"] == "irc"
        said = yield threads.deferToThread(admin_command, server, tmp_path, "broadcast",
                                           "maintenance at noon")
        assert said.returncode == 0, said.stderr
        for peer in peers:
            yield wait_until(lambda p=peer: b"NOTICE" in p.data and b"maintenance at noon" in p.data)
        kicked = yield threads.deferToThread(admin_command, server, tmp_path, "kick", "ben",
                                             "--reason", "spam")
        assert kicked.returncode == 0, kicked.stderr
        yield wait_until(lambda: not ben.open)
        assert b"ERROR :Closing link: you were kicked: spam" in ben.data
        yield wait_until(lambda: b"ben!" in ann.data and b" QUIT " in ann.data)
        banned = yield threads.deferToThread(admin_command, server, tmp_path, "ban", "cal",
                                             "--reason", "abuse")
        assert banned.returncode == 0, banned.stderr
        yield wait_until(lambda: not cal.open)
        assert b"ERROR :Closing link:" in cal.data and b"abuse" in cal.data
        again = yield irc_peer(server.irc_port, nick="cal")  # the ban holds for IRC too
        peers.append(again)
        yield wait_until(lambda: not again.open)
        assert not again.welcomed and b"abuse" in again.data
        everyone = yield threads.deferToThread(admin_command, server, tmp_path, "disconnect-all")
        assert everyone.returncode == 0, everyone.stderr
        yield wait_until(lambda: not dee.open and not ann.open)
        assert b"ERROR :Closing link:" in dee.data
        ann = yield irc_peer(server.irc_port, nick="ann")  # back, for the shutdown
        peers.append(ann)
        assert ann.welcomed
        down = yield threads.deferToThread(admin_command, server, tmp_path, "shutdown")
        assert down.returncode == 0, down.stderr
        yield wait_until(lambda: not ann.open, timeout=20)
        assert b"ERROR :Closing link:" in ann.data and b"shutting down" in ann.data
        assert server.proc.wait(timeout=20) == 0
    finally:
        for peer in peers:
            if peer.open:
                peer.transport.abortConnection()
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
    alice = core.open_link(MemoryClient(), "127.0.0.1:2", agent="spchat-client/0.1.0")
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


def test_a_long_rooms_table_comes_in_parts_too(admin_core):
    from spchat import noise

    core = admin_core
    names = [f"room{i:03d}" for i in range(400)]
    for name in names:  # 400 rooms with 300-byte topics: 120 kB of rows
        owner, _ = login(core, "owner-of-" + name)
        core.receive(owner, wire.Join(name))
        core.receive(owner, wire.Topic(name, "t" * 300))
    core.clock.advance(1)
    link, conn = admin(core)
    core.receive(link, wire.AdminRequest("r", "rooms"))
    replies = [m for m in conn.of(wire.AdminReply) if m.rid == "r"]
    assert len(replies) > 1 and all(r.ok for r in replies)
    assert all(len(wire.encode(r)) <= noise.MAX_PAYLOAD_LEN for r in replies)
    collector = wire.RowCollector()
    whole = [w for w in map(collector.add, replies) if w is not None]
    assert [row[0] for row in whole[0].rooms] == ["lobby"] + names
    conn.clear()
    login(core, "bob")
    core.clock.advance(0)
    events = conn.of(wire.AdminEvent)
    assert len(events) > 1
    assert all(len(wire.encode(e)) <= noise.MAX_PAYLOAD_LEN for e in events)
    whole = [w for w in map(collector.add, events) if w is not None]
    assert len(whole[-1].rooms) == 401 and len(whole[-1].sessions) == 401


def test_the_administrator_runs_every_room(admin_core):
    core = admin_core
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.receive(alice, wire.Join("dev"))
    core.receive(bob, wire.Join("dev"))
    core.clock.advance(1)
    link, conn = admin(core)

    def room_op(op, **fields):
        core.receive(link, wire.AdminRequest("r", op, **fields))
        core.clock.advance(1)
        return conn.of(wire.AdminReply)[-1]

    rooms = room_op("rooms")
    assert rooms.ok and [r[:2] for r in rooms.rooms] == [("dev", 2), ("lobby", 2)]
    info = room_op("room_info", room="#dev")
    assert info.members == (("alice", "online", "owner"), ("bob", "online", "member"))
    assert room_op("room_moderate", room="dev", action="mute", name="bob").ok
    assert a.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("dev", "bob", "online", "muted")
    refused = room_op("room_moderate", room="dev", action="mute", name="alice")
    assert not refused.ok and "/deop them first" in refused.text  # an owner is never muted
    # The administrator outranks an owner.
    assert room_op("room_moderate", room="dev", action="deop", name="alice").ok
    assert a.of(wire.MemberUpdate)[-1].role == "member"
    assert room_op("room_moderate", room="dev", action="kick", name="bob", reason="spam").ok
    assert b.of(wire.RoomLeft)[-1].code == "kicked"
    assert room_op("room_topic", room="dev", reason="read the rules").ok
    assert a.of(wire.RoomState)[-1].topic == "read the rules"
    assert room_op("room_mode", room="dev", action="private", on=True).ok
    assert not room_op("room_mode", room="dev", action="kick", on=True).ok
    assert not room_op("room_info", room="nowhere").ok
    assert room_op("room_delete", room="dev").ok
    assert a.of(wire.RoomLeft)[-1].code == "deleted"
    assert [r[0] for r in room_op("rooms").rooms] == ["lobby"]
    assert any("room_delete #dev" in line for line in core.lines)


@pytest_twisted.inlineCallbacks
def test_room_commands_against_a_real_server(tmp_path, pins):
    server = ServerProcess(tmp_path)

    class Address:
        address = type("A", (), {"port": server.port})

    def run(*args):
        return threads.deferToThread(admin_command, server, tmp_path, *args)

    @pytest_twisted.inlineCallbacks
    def ok(*args):
        done = yield run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else done.stdout

    @pytest_twisted.inlineCallbacks
    def roles():
        info = yield ok("room-info", "dev", "--json")
        return {m["name"]: m["role"] for m in info["members"]}

    try:
        alice = yield connect_client(Address, pins, "alice", max_retries=0)
        bob = yield connect_client(Address, pins, "bob", max_retries=0)
        alice.join("dev")
        yield wait_until(lambda: alice.room("dev") is not None)
        bob.join("#dev")
        yield wait_until(lambda: len(alice.room_members("dev")) == 2)
        alice.say("hello dev", room="dev")

        listed = yield ok("rooms", "--json")
        assert listed["ok"] and listed["text"] == "2 rooms"
        assert listed["rooms"] == [
            {"room": "dev", "members": 2, "topic": "", "private": False, "topic_locked": False,
             "last_seq": 1},
            {"room": "lobby", "members": 2, "topic": "", "private": False,
             "topic_locked": False, "last_seq": 0}]
        table = (yield ok("rooms")).splitlines()
        assert table[0].split() == ["ROOM", "MEMBERS", "FLAGS", "LAST_SEQ", "TOPIC"]
        assert table[1].split() == ["#dev", "2", "-", "1"]

        info = yield ok("room-info", "#dev", "--json")
        assert info["room"]["room"] == "dev" and info["text"] == "#dev: 2 members online"
        assert info["members"] == [{"name": "alice", "state": "online", "role": "owner"},
                                   {"name": "bob", "state": "online", "role": "member"}]
        shown = (yield ok("room-info", "dev")).split("\n\n")
        assert shown[0].splitlines()[1].split() == ["#dev", "2", "-", "1"]
        assert [line.split() for line in shown[1].splitlines()] == [
            ["NAME", "STATE", "ROLE"], ["alice", "online", "owner"], ["bob", "online", "member"]]

        said = yield ok("room-topic", "dev", "read the rules", "--json")
        assert said == {"ok": True, "text": "set the topic of #dev"}
        yield wait_until(lambda: alice.room("dev").topic == "read the rules")
        assert (yield ok("room-mode", "dev", "topic-locked", "on")).strip() == \
            "#dev is topic-locked"
        assert (yield ok("room-mode", "#dev", "private", "on", "--json"))["ok"]
        flags = (yield ok("rooms", "--json"))["rooms"][0]
        assert (flags["topic"], flags["private"], flags["topic_locked"]) == (
            "read the rules", True, True)
        table = (yield ok("rooms")).splitlines()
        assert table[1].split() == ["#dev", "2", "private,topic-locked", "1", "read", "the",
                                    "rules"]

        yield ok("room-op", "dev", "bob")
        assert (yield roles())["bob"] == "operator"
        yield ok("room-deop", "dev", "bob")
        yield ok("room-mute", "dev", "bob", "--reason", "shouting")
        assert (yield roles())["bob"] == "muted"
        yield ok("room-unmute", "dev", "bob")
        yield ok("room-owner", "dev", "bob")
        assert (yield roles()) == {"alice": "owner", "bob": "owner"}
        yield ok("room-deop", "dev", "bob")

        kicked = yield ok("room-kick", "dev", "bob", "--reason", "spam")
        assert kicked.strip() == "kicked bob from #dev"
        yield wait_until(lambda: any(m.code == "kicked" for m in bob.rec.of(wire.RoomLeft)))
        assert bob.status.state == "connected" and bob.room("lobby") is not None
        banned = yield ok("room-ban", "dev", "bob", "--minutes", "5", "--reason", "spam",
                          "--json")
        assert banned["text"] == "banned bob from #dev for 5 minutes"
        yield ok("room-unban", "dev", "bob")
        yield ok("room-invite", "dev", "bob")  # the room is private now
        bob.join("dev")
        yield wait_until(lambda: bob.room("dev") is not None)

        # Refusals: the server's words on stderr (JSON on stdout), exit status 1.
        again = yield run("room-unban", "dev", "bob")
        assert again.returncode == 1 and again.stderr.strip() == "bob is not banned from #dev"
        nowhere = yield run("room-info", "nowhere", "--json")
        assert nowhere.returncode == 1
        assert json.loads(nowhere.stdout) == {"ok": False, "text": "there is no room 'nowhere'",
                                              "room": None, "members": []}

        deleted = yield ok("room-delete", "#dev")
        assert deleted.strip() == "deleted #dev"
        yield wait_until(lambda: any(m.code == "deleted" for m in alice.rec.of(wire.RoomLeft)))
        assert [r["room"] for r in (yield ok("rooms", "--json"))["rooms"]] == ["lobby"]
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().logout()
        server.stop()


def test_room_tables_print_what_peers_wrote_without_terminal_controls():
    from spchat import admin

    topic = "rules\x1b]0;owned\x07 \x9b2J \u202eevil\u2066"
    rooms = wire.AdminReply("1", True, "1 rooms", rooms=(("dev", 1, topic, False, False, 0),))
    shown = admin.render(rooms, "rooms", as_json=False)
    assert "rules\\x1b]0;owned\\x07 \\x9b2J \\u202eevil\\u2066" in shown
    assert not any(ch in shown for ch in "\x1b\x07\x9b\u202e\u2066")
    sessions = wire.AdminReply("1", True, "1 sessions", sessions=(
        ("bob", "127.0.0.1:1", "connected", "x\x1b[2Jy", 1, 0, 0, 0, 0, 0),))
    assert "x\\x1b[2Jy" in admin.render(sessions, "list", as_json=False)
    printed = admin.render(rooms, "rooms", as_json=True)
    assert printed.isascii() and json.loads(printed)["rooms"][0]["topic"] == topic


def test_the_session_table_says_durations_as_the_monitor_does():
    from spchat import admin

    now_ms = time.time() * 1000
    sessions = wire.AdminReply("1", True, "1 session", sessions=(
        ("bob", "127.0.0.1:1", "connected", "spchat", 107, now_ms - 3_723_000, now_ms - 5_000,
         0, 0, 0),))
    (row,) = admin.render(sessions, "list", as_json=False).splitlines()[1:]
    assert row.split()[4:6] == ["1m", "47s"] and row.split()[7] == "5s", row


def test_a_room_change_made_in_chat_reaches_the_administrators(admin_core):
    core = admin_core
    alice, a = login(core, "alice")
    core.receive(alice, wire.Join("dev"))
    core.clock.advance(1)
    link, conn = admin(core)
    core.clock.advance(1)
    before = len(conn.of(wire.AdminEvent))
    core.receive(alice, wire.Topic("dev", "new plans"))
    core.clock.advance(0)
    events = conn.of(wire.AdminEvent)
    assert len(events) > before
    assert [r[2] for r in events[-1].rooms if r[0] == "dev"] == ["new plans"]
