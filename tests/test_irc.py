"""The IRC gateway over real sockets on 127.0.0.1, beside spchat users of
the same server."""

import base64
import hashlib
import socket
import ssl
import stat
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from spchat import wire
from spchat.irc import tls
from spchat.irc.lines import parse
from spchat.irc.outbound import irc_time

from conftest import server_config, start_service, stop_services, wait_until
from helpers import MemoryClient


class IrcClient(Protocol):
    """A bare IRC client: writes lines, keeps every line it gets, parsed."""

    def __init__(self):
        self.lines = []
        self._buffer = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\r\n")
        self.lines.extend(parse(raw) for raw in complete)

    def connectionLost(self, reason):
        self.lost.callback(None)

    def send(self, *lines):
        self.transport.write(b"".join(line.encode() + b"\r\n" for line in lines))

    def of(self, command):
        return [line for line in self.lines if line.command == command]

    def wait_for(self, command, count=1, timeout=5.0):
        return wait_until(lambda: len(self.of(command)) >= count, timeout=timeout)

    @property
    def closed(self):
        return self.lost.called


@pytest.fixture
def service(tmp_path):
    service = start_service(server_config(tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
                                          **{"handshake-timeout": "2"}))
    yield service
    stop_services(service)


@defer.inlineCallbacks
def irc_client(service, nick=None, caps=(), source="127.0.0.1"):
    """Connected (from ``source``) and, with a ``nick``, registered."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", service.irc_port.getHost().port,
                                  bindAddress=(source, 0))
    client = yield connectProtocol(endpoint, IrcClient())
    if nick is not None:
        if caps:
            client.send("CAP LS 302", f"CAP REQ :{' '.join(caps)}", "CAP END")
        client.send(f"NICK {nick}", f"USER {nick}u 0 * :{nick} the tester")
        yield client.wait_for("001")
    return client


def spchat_user(service, name, **options):
    """A spchat user of the same server (the core's in-memory client)."""
    conn = MemoryClient()
    link = service.core.open_link(conn, "127.0.0.1:1")
    service.core.receive(link, wire.Login(name, **options))
    return link, conn


@defer.inlineCallbacks
def registered(service, name, password):
    """An account registered by a spchat client, which then logs out."""
    _, conn = spchat_user(service, name, password=password, register=True)
    yield wait_until(lambda: conn.of(wire.Welcome))
    service.core.receive(conn.session.link, wire.Logout())
    yield wait_until(lambda: name not in service.core.by_key)


@pytest_twisted.inlineCallbacks
def test_registration_welcomes_with_an_honest_isupport(service):
    client = yield irc_client(service, "ircuser")
    yield client.wait_for("422")
    welcome = client.of("001")[0]
    assert welcome.params[0] == "ircuser" and "ircuser!ircuseru@spchat" in welcome.params[1]
    tokens = {t for line in client.of("005") for t in line.params[1:-1]}
    assert {"CHANTYPES=#", "PREFIX=(ov)@+", "CHANMODES=b,k,l,imnt", "NICKLEN=32"} <= tokens
    # Everyone starts in the default room, as spchat users do.
    assert [line.params for line in client.of("JOIN")] == [["#lobby"]]
    assert "ircuser" in service.core.by_key


@pytest_twisted.inlineCallbacks
def test_lines_go_both_ways_between_irc_and_spchat(service):
    client = yield irc_client(service, "ircuser", caps=("server-time", "message-tags"))
    alice, a = spchat_user(service, "alice")
    yield wait_until(lambda: a.of(wire.Welcome))
    yield client.wait_for("JOIN", 2)  # its own, then alice's
    assert client.of("JOIN")[1].source == "alice!alice@spchat"
    service.core.receive(alice, wire.Say("hello from spchat\nsecond line", "c1"))
    yield client.wait_for("PRIVMSG", 2)
    first, second = client.of("PRIVMSG")
    assert first.source == "alice!alice@spchat"
    assert first.params == ["#lobby", "hello from spchat"]
    assert second.params == ["#lobby", "| second line"]  # marked as a continuation
    assert first.tags["msgid"] == "#lobby/1" and first.tags["time"].endswith("Z")
    client.send("PRIVMSG #lobby :hello from \x02IRC\x02")
    yield wait_until(lambda: any(m.sender == "ircuser" for m in a.of(wire.RoomMessage)))
    line = [m for m in a.of(wire.RoomMessage) if m.sender == "ircuser"][0]
    assert (line.room, line.text, line.seq) == ("lobby", "hello from IRC", 2)  # saved, numbered
    client.send("PRIVMSG alice :just you")
    yield wait_until(lambda: a.of(wire.DirectMessage))
    assert a.of(wire.DirectMessage)[0].text == "just you"


@pytest_twisted.inlineCallbacks
def test_own_lines_are_echoed_only_with_echo_message_and_before_the_pong(service):
    plain = yield irc_client(service, "plain")
    echoed = yield irc_client(service, "echoed", caps=("echo-message",))
    for client in (plain, echoed):
        client.send("PRIVMSG #lobby :mine", "PING :after")
        yield client.wait_for("PONG")
    own = [i for i, line in enumerate(echoed.lines)
           if line.command == "PRIVMSG" and line.source.startswith("echoed!")]
    assert len(own) == 1 and own[0] < echoed.lines.index(echoed.of("PONG")[0])
    yield plain.wait_for("PRIVMSG")
    assert [line.source.split("!")[0] for line in plain.of("PRIVMSG")] == ["echoed"]


@pytest_twisted.inlineCallbacks
def test_refusals_are_the_numerics_irc_prescribes(service):
    owner, o = spchat_user(service, "owner")
    yield wait_until(lambda: o.of(wire.Welcome))
    service.core.receive(owner, wire.Join("secret", private=True))
    client = yield irc_client(service, "ircuser")
    client.send("JOIN #secret", "PRIVMSG #elsewhere :hi", "PRIVMSG nobody :hi",
                "KICK #lobby owner :go", "JOIN nochannel", "FOO", "PING :done")
    yield client.wait_for("PONG")
    numerics = [(line.command, line.params[1]) for line in client.lines
                if line.command in ("473", "403", "401", "482", "421")]
    assert numerics == [("473", "#secret"), ("403", "#elsewhere"), ("401", "nobody"),
                        ("482", "#lobby"), ("403", "nochannel"), ("421", "FOO")]


@pytest_twisted.inlineCallbacks
def test_a_name_is_one_person_whichever_protocol_holds_it(service):
    spchat_user(service, "alice")
    client = yield irc_client(service)
    client.send("NICK alice", "USER a 0 * :A")
    yield client.wait_for("433")
    client.send("NICK alice2")
    yield client.wait_for("001")
    assert client.of("001")[0].params[0] == "alice2"
    other = MemoryClient()
    link = service.core.open_link(other, "127.0.0.1:2")
    service.core.receive(link, wire.Login("Alice2"))
    yield wait_until(lambda: other.of(wire.Error))
    assert other.of(wire.Error)[0].code == "name_taken"


@pytest_twisted.inlineCallbacks
def test_a_nick_that_looks_like_someone_online_is_in_use(service):
    _, alice = spchat_user(service, "alice")
    yield wait_until(lambda: alice.of(wire.Welcome))
    client = yield irc_client(service)
    client.send("NICK аlice", "USER a 0 * :A")  # Cyrillic а
    yield client.wait_for("433")
    assert "looks like 'alice'" in client.of("433")[0].params[-1]
    client.send("NICK alice3")
    yield client.wait_for("001")


@pytest_twisted.inlineCallbacks
def test_quit_ends_the_session_at_once_and_frees_the_name(service):
    alice, a = spchat_user(service, "alice")
    client = yield irc_client(service, "leaving")
    client.send("QUIT :see you")
    yield client.lost
    yield wait_until(lambda: "leaving" not in service.core.by_key)
    yield wait_until(lambda: any(n.kind == "quit" for n in a.of(wire.Notice)))
    quit_notice = [n for n in a.of(wire.Notice) if n.kind == "quit"][0]
    assert (quit_notice.name, quit_notice.reason) == ("leaving", "Quit: see you")
    again = yield irc_client(service, "leaving")  # no resume grace holds the name
    assert again.of("001")[0].params[0] == "leaving"


@pytest_twisted.inlineCallbacks
def test_an_irc_reader_is_left_to_the_gateways_ping_watch(tmp_path):
    service = start_service(server_config(tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
                                          **{"idle-timeout": "0.5"}))
    try:
        client = yield irc_client(service, "reader")
        alice, a = spchat_user(service, "alice")
        for _ in range(6):  # three seconds, sweeps once a second; alice keeps alive
            yield task.deferLater(reactor, 0.5, lambda: None)
            service.core.receive(alice, wire.Keepalive())
        service.core.receive(alice, wire.Say("still reading?", "a1"))
        yield wait_until(lambda: any(line.params[-1] == "still reading?"
                                     for line in client.of("PRIVMSG")))
        assert not client.closed and "reader" in service.core.by_key
    finally:
        yield stop_services(service)


@defer.inlineCallbacks
def sasl_client(service, name: bytes, password: bytes, *caps):
    """Connected, authenticated by SASL PLAIN (and ``caps`` asked for), not
    registered yet: CAP END is the caller's."""
    client = yield irc_client(service)
    client.send("CAP LS 302", f"CAP REQ :{' '.join(('sasl',) + caps)}", "NICK someone",
                "USER c 0 * :C", "AUTHENTICATE PLAIN")
    yield client.wait_for("AUTHENTICATE")
    client.send("AUTHENTICATE " + base64.b64encode(b"\0" + name + b"\0" + password).decode())
    yield client.wait_for("903")
    return client


@pytest_twisted.inlineCallbacks
def test_sasl_plain_logs_in_to_a_registered_account(service):
    yield registered(service, "carol", "correct horse battery")
    wrong = yield irc_client(service)
    wrong.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    yield wrong.wait_for("AUTHENTICATE")
    wrong.send("AUTHENTICATE " + base64.b64encode(b"\0carol\0wrong password").decode())
    yield wrong.wait_for("904")
    client = yield sasl_client(service, b"carol", b"correct horse battery")
    assert client.of("900")[0].params[2] == "carol"
    client.send("CAP END")
    yield client.wait_for("001")
    assert client.of("001")[0].params[0] == "carol"  # the account's name, not the NICK
    assert service.core.by_key["carol"].registered


@pytest_twisted.inlineCallbacks
def test_what_waited_for_an_account_comes_as_privmsg_at_its_sasl_login(service):
    yield registered(service, "carol", "correct horse battery")
    alice, a = spchat_user(service, "alice")
    yield wait_until(lambda: a.of(wire.Welcome))
    for i in range(2):
        service.core.receive(alice, wire.Direct("carol", f"while you were out {i}", f"d{i}"))
    yield wait_until(lambda: len(a.of(wire.DirectMessage)) == 2)
    client = yield sasl_client(service, b"carol", b"correct horse battery", "server-time")
    client.send("CAP END")
    yield client.wait_for("PRIVMSG", 2)
    got = client.of("PRIVMSG")
    assert [(m.source.split("!")[0], m.params) for m in got] == [
        ("alice", ["carol", f"while you were out {i}"]) for i in range(2)]
    # At the times they were sent.
    assert [m.tags["time"] for m in got] == [irc_time(m.ts) for m in a.of(wire.DirectMessage)]


@pytest_twisted.inlineCallbacks
def test_account_tag_marks_lines_of_registered_senders_only(service):
    yield registered(service, "erin", "correct horse battery")
    tagged = yield irc_client(service, "tagged", caps=("account-tag", "message-tags"))
    plain = yield irc_client(service, "plain", caps=("message-tags",))
    erin, e = spchat_user(service, "erin", password="correct horse battery")
    guest, g = spchat_user(service, "guest")
    yield wait_until(lambda: e.of(wire.Welcome) and g.of(wire.Welcome))
    service.core.receive(erin, wire.Say("signed", "e1"))
    service.core.receive(guest, wire.Say("unsigned", "g1"))
    service.core.receive(erin, wire.Direct("tagged", "just you", "e2"))
    yield tagged.wait_for("PRIVMSG", 3)
    yield plain.wait_for("PRIVMSG", 2)
    assert [(line.params[1], line.tags.get("account")) for line in tagged.of("PRIVMSG")] == [
        ("signed", "erin"), ("unsigned", None), ("just you", "erin")]
    assert not any("account" in line.tags for line in plain.of("PRIVMSG"))


@pytest_twisted.inlineCallbacks
def test_away_notify_tells_the_room_of_an_irc_users_away(service):
    watcher = yield irc_client(service, "watcher", caps=("away-notify",))
    other = yield irc_client(service, "other")
    other.send("AWAY :lunch", "AWAY :lunch", "AWAY", "PING :done")
    yield other.wait_for("PONG")
    watcher.send("PING :done")
    yield watcher.wait_for("PONG")
    assert [line.params for line in watcher.of("AWAY")] == [["lunch"], []]  # once each
    assert all(line.source.startswith("other!") for line in watcher.of("AWAY"))


@pytest_twisted.inlineCallbacks
def test_a_registered_name_needs_its_password(service):
    yield registered(service, "dave", "correct horse battery")
    client = yield irc_client(service)
    client.send("NICK dave", "USER d 0 * :D")
    yield client.wait_for("433")
    assert "registered" in client.of("433")[0].params[-1]
    with_pass = yield irc_client(service)
    with_pass.send("PASS :correct horse battery", "NICK dave", "USER d 0 * :D")
    yield with_pass.wait_for("001")


@pytest_twisted.inlineCallbacks
def test_a_long_line_is_refused_and_the_connection_stays(service):
    client = yield irc_client(service, "talker")
    client.send("PRIVMSG #lobby :" + "x" * 600, "PING :still here")
    yield client.wait_for("PONG")
    assert client.of("417") and not client.closed


@pytest_twisted.inlineCallbacks
def test_a_flood_of_commands_is_handled_at_a_steady_pace(tmp_path):
    # The defaults: flood rate 5, burst 10, so 20 commands a second, 40 at once.
    service = start_service(server_config(tmp_path / "data", irc="tcp:0:interface=127.0.0.1"))
    try:
        flooder = yield irc_client(service, "flooder")
        talker = yield irc_client(service, "talker")
        flooder.send(*(["WHO #lobby"] * 100), "PING :flood over")
        start = time.monotonic()
        talker.send("PING :me first")  # another connection is not held back
        yield talker.wait_for("PONG")
        assert time.monotonic() - start < 1.0
        yield flooder.wait_for("PONG", timeout=15)
        took = time.monotonic() - start
        # 101 lines, 40 at once and the rest at 20 a second (the lines of
        # registration had used some of the burst): about 3 s, not at once.
        assert 2.0 < took < 8.0, took
        assert len(flooder.of("315")) == 100 and not flooder.closed  # all answered, in order
        # More at once than 10 s of that pace would handle: cut, as IRC servers do.
        flooder.send(*(["WHO #lobby"] * 300))
        yield wait_until(lambda: flooder.closed)
        assert flooder.of("ERROR")[-1].params[0] == "Closing link: Excess Flood"
        assert len(flooder.of("315")) < 100 + 300
        talker.send("PING :still fine")
        yield talker.wait_for("PONG", 2)
    finally:
        stop_services(service)


@pytest_twisted.inlineCallbacks
def test_what_waits_for_saving_is_bounded(tmp_path):
    # PONGs wait for one's own lines to be saved; with the store stuck (held
    # here as OPER's check holds them) a client that keeps pinging must not
    # make the server keep an answer for each.
    from spchat.irc.connection import MAX_PENDING

    service = start_service(server_config(
        tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
        **{"flood-burst": "100000", "flood-rate": "100000"}))
    try:
        client = yield irc_client(service, "pinger")
        [conn] = [p.conn for p in service.irc.protocols if p.conn.nick == "pinger"]
        conn.hold_pongs("stuck store")
        client.send(*[f"PING :p{i}" for i in range(MAX_PENDING + 100)])
        yield client.wait_for("PONG", 100)  # past the bound, answered at once
        assert len(conn._after_saved) <= MAX_PENDING
        conn.release_pongs("stuck store")
        yield client.wait_for("PONG", MAX_PENDING + 100)
        assert [line.params[-1] for line in client.of("PONG")][-MAX_PENDING:] == [
            f"p{i}" for i in range(MAX_PENDING)]  # the held ones, in order
    finally:
        stop_services(service)


@pytest_twisted.inlineCallbacks
def test_a_line_then_part_still_gets_its_answer(service):
    # The line is saved after its sender left the room: its acknowledgement
    # must still come, or every later PONG would wait for it for ever.
    client = yield irc_client(service, "pat", caps=("echo-message",))
    client.send("JOIN #room1")
    yield client.wait_for("366", 2)
    client.send("PRIVMSG #room1 :bye", "PART #room1", "PING :after")
    yield client.wait_for("PONG")
    assert [line.params[-1] for line in client.of("PRIVMSG")] == ["bye"]  # its echo


@pytest_twisted.inlineCallbacks
def test_tagmsg_keeps_to_a_moderated_rooms_rules(service):
    chanop = yield irc_client(service, "chanop", caps=("message-tags",))
    other = yield irc_client(service, "other", caps=("message-tags",))
    chanop.send("JOIN #quiet")
    yield chanop.wait_for("366", 2)
    other.send("JOIN #quiet")
    yield other.wait_for("366", 2)
    chanop.send("MODE #quiet +m", "PING :x")
    yield chanop.wait_for("PONG")
    other.send("@+draft/react=x TAGMSG #quiet", "PING :y")
    yield other.wait_for("PONG")
    assert other.of("404") and not chanop.of("TAGMSG")


@pytest_twisted.inlineCallbacks
def test_a_connection_that_never_registers_is_closed(service):
    client = yield irc_client(service)
    client.send("NICK halfway")
    yield client.lost  # CHAT_HANDSHAKE_TIMEOUT is 2 s here
    assert client.of("ERROR")[0].params[0].endswith("Registration timed out")
    assert "halfway" not in service.core.by_key


@pytest_twisted.inlineCallbacks
def test_moderation_from_irc_reaches_spchat_and_back(service):
    client = yield irc_client(service, "chanop")
    bob, b = spchat_user(service, "bob")
    client.send("JOIN #ops")
    yield client.wait_for("366", 2)
    service.core.receive(bob, wire.Join("ops"))
    yield client.wait_for("JOIN", 4)  # lobby and ops, each its own and bob's
    client.send("TOPIC #ops :the plan", "MODE #ops +o bob", "MODE #ops +t", "KICK #ops bob :out",
                "PING :done")
    yield client.wait_for("PONG")
    shown = [(line.command, line.params) for line in client.lines
             if line.command in ("TOPIC", "MODE", "KICK")]
    assert shown == [("TOPIC", ["#ops", "the plan"]), ("MODE", ["#ops", "+o", "bob"]),
                     ("MODE", ["#ops", "+t"]), ("KICK", ["#ops", "bob", "out"])]
    left = b.of(wire.RoomLeft)[-1]
    assert (left.room, left.code, left.by, left.reason) == ("ops", "kicked", "chanop", "out")


@pytest_twisted.inlineCallbacks
def test_a_moderated_channel_and_voices(service):
    chanop = yield irc_client(service, "chanop", caps=("multi-prefix",))
    plain = yield irc_client(service, "plain")
    chanop.send("JOIN #stage")
    yield chanop.wait_for("366", 2)
    plain.send("JOIN #stage")
    yield plain.wait_for("366", 2)
    chanop.send("MODE #stage +m", "MODE #stage +v plain", "MODE #stage +v chanop",
                "NAMES #stage", "PING :done")
    yield chanop.wait_for("PONG")
    assert [line.params for line in chanop.of("MODE")] == [
        ["#stage", "+m"], ["#stage", "+v", "plain"], ["#stage", "+v", "chanop"]]
    assert chanop.of("353")[-1].params[-1].split() == ["@+chanop", "+plain"]  # all prefixes
    plain.send("NAMES #stage", "PRIVMSG #stage :with a voice", "PING :x")
    yield plain.wait_for("PONG")
    assert sorted(plain.of("353")[-1].params[-1].split()) == ["+plain", "@chanop"]  # highest
    chanop.send("MODE #stage -v plain", "PING :again")
    yield chanop.wait_for("PONG", 2)
    plain.send("PRIVMSG #stage :without", "PING :y")
    yield plain.wait_for("PONG", 2)
    assert plain.of("404")[0].params[1] == "#stage"  # moderated: ERR_CANNOTSENDTOCHAN
    yield wait_until(lambda: any(line.params[-1] == "with a voice" for line in chanop.of("PRIVMSG")))
    assert not any(line.params[-1] == "without" for line in chanop.of("PRIVMSG"))
    room = service.core.directory.get("stage")
    assert room.moderated and room.guest_voices == {"chanop"}  # guests: while in the room


@pytest_twisted.inlineCallbacks
def test_a_channel_key_and_limit_are_the_rooms_password_and_member_limit(service):
    chanop = yield irc_client(service, "chanop")
    chanop.send("JOIN #club")
    yield chanop.wait_for("366", 2)
    chanop.send("MODE #club +k beer", "MODE #club +l 2", "MODE #club +k :two words",
                "MODE #club +l abc", "MODE #club", "PING :done")
    yield chanop.wait_for("PONG")
    assert [line.params for line in chanop.of("MODE")] == [["#club", "+k", "beer"],
                                                           ["#club", "+l", "2"]]
    assert [line.params[1:4] for line in chanop.of("696")] == [["#club", "k", "*"],
                                                               ["#club", "l", "abc"]]
    assert chanop.of("324")[-1].params[1:] == ["#club", "+nkl", "beer", "2"]
    room = service.core.directory.get("club")
    assert (room.password, room.member_limit) == ("beer", 2)
    # A spchat user without it is refused; with it, in (and the room is full).
    bob, b = spchat_user(service, "bob")
    yield wait_until(lambda: b.of(wire.Welcome))
    service.core.receive(bob, wire.Join("club"))
    assert b.of(wire.Error)[-1].code == "room_password"
    service.core.receive(bob, wire.Join("club", password="beer"))
    assert "club" in bob.session.rooms
    late = yield irc_client(service, "late")
    late.send("JOIN #club beer", "PING :done")
    yield late.wait_for("PONG")
    assert late.of("471")[0].params[1] == "#club"
    chanop.send("MODE #club -l", "MODE #club -k", "PING :again")
    yield chanop.wait_for("PONG", 2)
    late.send("JOIN #club", "PING :done")
    yield late.wait_for("366", 2)
    assert [line.params for line in chanop.of("MODE")][2:] == [["#club", "-l"],
                                                               ["#club", "-k", "*"]]
    # A wrong key is IRC's 475; the spchat window sees the settings as they are.
    chanop.send("MODE #club +k s3cret", "PING :x")
    yield chanop.wait_for("PONG", 3)
    other = yield irc_client(service, "other")
    other.send("JOIN #club nope", "PING :done")
    yield other.wait_for("PONG")
    assert other.of("475")[0].params[1] == "#club"
    assert b.of(wire.RoomState)[-1].password == "s3cret"


# --- TLS ------------------------------------------------------------------------


def tls_welcome(port):
    """A TLS client's view (blocking, for a thread): the server's
    certificate and what it says up to 001."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: checked by its fingerprint instead
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="spchat") as s:
            seen = s.getpeercert(binary_form=True)
            s.sendall(b"NICK secure\r\nUSER s 0 * :S\r\n")
            data = b""
            while b" 001 " not in data:
                data += s.recv(4096)
            return seen, data


@pytest_twisted.inlineCallbacks
def test_tls_with_a_self_signed_certificate_made_on_first_start(tmp_path):
    cfg = server_config(tmp_path / "data", ircs="ssl:0:interface=127.0.0.1")
    service = start_service(cfg)
    try:
        assert stat.S_IMODE((tmp_path / "data" / tls.KEY_FILE).stat().st_mode) == 0o600
        expected = tls.fingerprint(tmp_path / "data" / tls.CERT_FILE)
        seen, data = yield threads.deferToThread(tls_welcome, service.ircs_port.getHost().port)
        assert hashlib.sha256(seen).digest().hex(":").upper() == expected
        assert b":spchat 001 secure " in data
    finally:
        yield stop_services(service)
    again = start_service(cfg)  # the same certificate on the next start
    try:
        assert tls.fingerprint(tmp_path / "data" / tls.CERT_FILE) == expected
    finally:
        yield stop_services(again)


def test_a_configured_pair_is_checked_at_start_in_one_line(tmp_path):
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    cert, key = tls.certificate_paths(mine, None, None, "chat.example.org")
    assert tls.certificate_paths(tmp_path, cert, key, "x") == (cert, key)
    _, other_key = tls.certificate_paths(other, None, None, "chat.example.org")
    with pytest.raises(tls.CertificateError, match="is not the certificate"):
        tls.certificate_paths(tmp_path, cert, other_key, "x")
    with pytest.raises(tls.CertificateError, match="cannot read the certificate"):
        tls.certificate_paths(tmp_path, tmp_path / "missing.pem", key, "x")
    with pytest.raises(tls.CertificateError, match="go together"):
        tls.certificate_paths(tmp_path, cert, None, "x")


# --- CHATHISTORY -------------------------------------------------------------------

HISTORY_CAPS = ("batch", "draft/chathistory", "server-time", "message-tags")


@defer.inlineCallbacks
def history(client, *request):
    """The PRIVMSG texts of one CHATHISTORY answer, checked to be one batch."""
    before = len(client.lines)
    client.send("CHATHISTORY " + " ".join(request))
    yield wait_until(lambda: any(line.command in ("FAIL",) or (
        line.command == "BATCH" and line.params[0].startswith("-"))
        for line in client.lines[before:]))
    answer = client.lines[before:]
    if answer[0].command == "FAIL":
        return answer[0].params
    start, *inner, end = answer
    assert start.params[0].startswith("+") and start.params[1] == "chathistory"
    assert end.params == ["-" + start.params[0][1:]]
    assert all(line.tags["batch"] == start.params[0][1:] for line in inner)
    return [(line.tags["msgid"], line.params[1]) for line in inner]


@pytest_twisted.inlineCallbacks
def test_chathistory_fetches_exactly_what_was_missed(service):
    alice, a = spchat_user(service, "alice")
    yield wait_until(lambda: a.of(wire.Welcome))
    client = yield irc_client(service, "reader", caps=HISTORY_CAPS)
    assert {"CHATHISTORY=100", "MSGREFTYPES=msgid,timestamp"} <= {
        t for line in client.of("005") for t in line.params[1:-1]}
    for n in (1, 2):
        service.core.receive(alice, wire.Say(f"line {n}", f"c{n}"))
    yield client.wait_for("PRIVMSG", 2)
    seen = client.of("PRIVMSG")[-1].tags["msgid"]
    client.transport.loseConnection()  # away for a while
    yield client.lost
    for n in (3, 4, 5):
        service.core.receive(alice, wire.Say(f"line {n}", f"c{n}"))
    yield wait_until(lambda: len(a.of(wire.RoomMessage)) == 5)
    client = yield irc_client(service, "reader", caps=HISTORY_CAPS)
    assert (yield history(client, "AFTER", "#lobby", f"msgid={seen}", "50")) == [
        ("#lobby/3", "line 3"), ("#lobby/4", "line 4"), ("#lobby/5", "line 5")]
    assert (yield history(client, "LATEST", "#lobby", "*", "2")) == [
        ("#lobby/4", "line 4"), ("#lobby/5", "line 5")]
    assert (yield history(client, "BEFORE", "#lobby", "msgid=#lobby/3", "10")) == [
        ("#lobby/1", "line 1"), ("#lobby/2", "line 2")]
    assert [m for m, _ in (yield history(client, "BETWEEN", "#lobby", "msgid=#lobby/1",
                                         "msgid=#lobby/5", "10"))] == [
        "#lobby/2", "#lobby/3", "#lobby/4"]
    assert [m for m, _ in (yield history(client, "AROUND", "#lobby", "msgid=#lobby/3", "2"))] \
        == ["#lobby/2", "#lobby/3"]
    stamp = [m for m in a.of(wire.RoomMessage) if m.seq == 3][0].ts
    after_time = yield history(client, "AFTER", "#lobby", f"timestamp={irc_time(stamp - 1)}", "50")
    assert [m for m, _ in after_time][0] == "#lobby/3"
    assert (yield history(client, "LATEST", "#elsewhere", "*", "5"))[:2] == [
        "CHATHISTORY", "INVALID_TARGET"]
    assert (yield history(client, "AFTER", "#lobby", "msgid=#other/1", "5"))[1] == \
        "INVALID_MSGREFTYPE"


@pytest_twisted.inlineCallbacks
def test_chathistory_of_a_direct_conversation(service):
    bob, b = spchat_user(service, "bob")
    yield wait_until(lambda: b.of(wire.Welcome))
    client = yield irc_client(service, "carol", caps=HISTORY_CAPS + ("echo-message",))
    client.send("PRIVMSG bob :hello bob")
    yield wait_until(lambda: b.of(wire.DirectMessage))
    service.core.receive(bob, wire.Direct("carol", "hello carol", "d1"))
    yield client.wait_for("PRIVMSG", 2)
    lines = yield history(client, "LATEST", "bob", "*", "10")
    assert lines == [("@bob~carol/1", "hello bob"), ("@bob~carol/2", "hello carol")]


@pytest_twisted.inlineCallbacks
def test_labeled_commands_get_their_answers_labeled(service):
    caps = ("labeled-response", "batch", "echo-message", "draft/chathistory", "server-time")
    client = yield irc_client(service, "lab", caps=caps)
    other = yield irc_client(service, "other")
    other.send("PRIVMSG #lobby :before")
    yield client.wait_for("PRIVMSG")
    client.send("@label=a1 PRIVMSG #lobby :saved first", "@label=a2 WHOIS nobody",
                "@label=a3 AWAY", "@label=a4 CHATHISTORY LATEST #lobby * 10",
                "@label=a5 PING :done")
    yield client.wait_for("PONG")
    labeled = [line for line in client.lines if "label" in line.tags]
    by_label = {line.tags["label"]: line for line in labeled}
    # The echo, once saved, answers the line; WHOIS answers with a batch.
    assert by_label["a1"].command == "PRIVMSG" and by_label["a1"].params[1] == "saved first"
    assert by_label["a2"].command == "BATCH" and by_label["a2"].params[1] == "labeled-response"
    ref = by_label["a2"].params[0][1:]
    inside = [line.command for line in client.lines if line.tags.get("batch") == ref]
    assert inside == ["401", "318"]
    assert by_label["a3"].command == "305"  # one line: the label on it
    # CHATHISTORY's batch comes later, from the store, inside the labeled one.
    assert by_label["a4"].command == "BATCH"
    outer = by_label["a4"].params[0][1:]
    [history] = [line for line in client.lines if line.command == "BATCH"
                 and line.tags.get("batch") == outer and line.params[0].startswith("+")]
    assert history.params[1] == "chathistory"
    texts = [line.params[1] for line in client.lines
             if line.tags.get("batch") == history.params[0][1:]]
    assert texts == ["before", "saved first"]
    assert by_label["a5"].command == "PONG"
    # What others said meanwhile is not part of an answer.
    other.send("PRIVMSG #lobby :unrelated")
    client.send("@label=a6 MODE #lobby +x")  # an unknown mode: one numeric
    yield client.wait_for("472")
    yield wait_until(lambda: any(line.params[-1] == "unrelated" for line in client.of("PRIVMSG")))
    assert not any("label" in line.tags for line in client.of("PRIVMSG")
                   if line.params[-1] == "unrelated")


@pytest_twisted.inlineCallbacks
def test_whowas_remembers_who_held_a_nick(service):
    asker = yield irc_client(service, "asker")
    for ident in ("first", "second"):
        gone = yield irc_client(service)
        gone.send("NICK leaver", f"USER {ident} 0 * :Leaver {ident}")
        yield gone.wait_for("001")
        gone.send("QUIT")
        yield gone.lost
        yield wait_until(lambda: "leaver" not in service.core.by_key)
    asker.send("WHOWAS leaver", "WHOWAS leaver 1", "WHOWAS nobody", "PING :done")
    yield asker.wait_for("PONG")
    shown = [(line.command, line.params[1:3]) for line in asker.lines
             if line.command in ("314", "369", "406")]
    assert shown == [("314", ["leaver", "second"]), ("314", ["leaver", "first"]),
                     ("369", ["leaver", "End of WHOWAS"]), ("314", ["leaver", "second"]),
                     ("369", ["leaver", "End of WHOWAS"]),
                     ("406", ["nobody", "There was no such nickname"]),
                     ("369", ["nobody", "End of WHOWAS"])]


@pytest_twisted.inlineCallbacks
def test_client_tags_notices_and_tagmsg_reach_irc_members_who_take_them(service):
    tagged = ("message-tags", "echo-message")
    alice = yield irc_client(service, "alice", caps=tagged)
    bob = yield irc_client(service, "bob", caps=("message-tags",))
    plain = yield irc_client(service, "plain")
    carol, c = spchat_user(service, "carol")
    yield wait_until(lambda: c.of(wire.Welcome))
    alice.send("@+draft/reply=#lobby/1;server-only=x NOTICE #lobby :heads up",
               "@+typing=active TAGMSG #lobby", "@+draft/react=ok PRIVMSG bob :direct")
    yield bob.wait_for("PRIVMSG")
    yield plain.wait_for("NOTICE")
    notice = [line for line in bob.of("NOTICE") if line.params[0] == "#lobby"][0]
    assert notice.tags["+draft/reply"] == "#lobby/1" and "server-only" not in notice.tags
    assert bob.of("TAGMSG")[0].tags["+typing"] == "active"
    assert bob.of("PRIVMSG")[0].tags["+draft/react"] == "ok"
    echo = [line for line in alice.of("NOTICE") if line.params[0] == "#lobby"][0]
    assert echo.tags["msgid"] == notice.tags["msgid"]  # the same line, echoed
    shown = [line for line in plain.of("NOTICE") if line.params[0] == "#lobby"][0]
    assert shown.tags == {} and not plain.of("TAGMSG")  # no tags for who did not ask
    yield wait_until(lambda: c.of(wire.RoomMessage))
    assert c.of(wire.RoomMessage)[0].text == "heads up"  # for spchat: a line like any


@pytest_twisted.inlineCallbacks
def test_invite_tells_the_invited_and_the_inviter_only(service):
    owner = yield irc_client(service, "owner")
    guest = yield irc_client(service, "guest")
    other = yield irc_client(service, "other")
    owner.send("JOIN #club", "MODE #club +i")
    other.send("PING :x")
    yield other.wait_for("PONG")
    owner.send("INVITE guest #club", "NOTICE #nowhere :quiet", "PING :done")
    yield owner.wait_for("PONG")
    yield guest.wait_for("INVITE")
    assert guest.of("INVITE")[0].source.startswith("owner!")
    assert guest.of("INVITE")[0].params == ["guest", "#club"]
    assert [line.params[1:] for line in owner.of("341")] == [["guest", "#club"]]
    assert not [line for line in owner.lines if line.command in ("403", "NOTICE")
                and "#nowhere" in line.params]  # a NOTICE gets no error back
    guest.send("JOIN #club")
    yield guest.wait_for("366", 2)


@pytest_twisted.inlineCallbacks
def test_registration_needs_a_real_name(service):
    client = yield irc_client(service)
    client.send("NICK nameless", "USER u 0 * :")
    yield client.wait_for("461")
    assert not client.of("001")


@pytest_twisted.inlineCallbacks
def test_an_account_back_on_irc_is_not_taken_for_re_sending(service):
    yield registered(service, "erin", "correct horse battery")
    listener, seen = spchat_user(service, "listener")
    yield wait_until(lambda: seen.of(wire.Welcome))
    for text in ("first time", "second time"):
        client = yield irc_client(service)
        client.send("PASS :correct horse battery", "NICK erin", "USER e 0 * :E")
        yield client.wait_for("001")
        client.send(f"PRIVMSG #lobby :{text}", "QUIT")
        yield client.lost
        yield wait_until(lambda: "erin" not in service.core.by_key)
    yield wait_until(lambda: len([m for m in seen.of(wire.RoomMessage) if m.sender == "erin"]) == 2)
    assert [m.text for m in seen.of(wire.RoomMessage) if m.sender == "erin"] == [
        "first time", "second time"]


@pytest_twisted.inlineCallbacks
def test_a_big_room_costs_an_irc_connection_nothing_per_member(service):
    client = yield irc_client(service, "watcher")
    for n in range(50):
        spchat_user(service, f"member{n}")
    yield client.wait_for("JOIN", 51)  # its own, then each of theirs, once
    assert sorted(line.source.split("!")[0] for line in client.of("JOIN")[1:]) == sorted(
        f"member{n}" for n in range(50))
    [conn] = [p.conn for p in service.irc.protocols]
    # What it keeps of the room: topic, modes and the members with a role.
    assert len(conn.channels.get("#lobby").ranked) == 0
    client.send("NAMES #lobby", "PING :done")  # read from the room, whole
    yield client.wait_for("PONG")
    names = " ".join(line.params[-1] for line in client.of("353")[1:])
    assert len(names.split()) == 51


@pytest_twisted.inlineCallbacks
def test_an_irc_client_that_does_not_read_is_cut_not_buffered_for(tmp_path):
    service = start_service(server_config(
        tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
        **{"send-buffer-bytes": "65536", "flood-burst": "10000", "flood-rate": "10000"}))
    try:
        deaf = yield irc_client(service, "deaf")
        reader = yield irc_client(service, "reader")
        deaf.transport.pauseProducing()  # it stops reading
        alice, a = spchat_user(service, "alice")
        yield wait_until(lambda: a.of(wire.Welcome))
        text = "x" * 7000
        sent = 0
        # Lines until the kernel's buffers are full and the server's own
        # holds more than its 64 KiB for the deaf one.
        while "deaf" in service.core.by_key and sent < 5000:
            for _ in range(50):
                service.core.receive(alice, wire.Say(f"{sent} {text}", f"c{sent}"))
                sent += 1
            yield task.deferLater(reactor, 0.2, lambda: None)
        assert "deaf" not in service.core.by_key, sent
        yield reader.wait_for("PRIVMSG", sent * 15, timeout=30)  # 7000 bytes: 15 lines each
        assert not reader.closed
        quits = [line for line in reader.of("QUIT") if line.source.startswith("deaf!")]
        assert quits and "does not read" in quits[0].params[0]
    finally:
        yield stop_services(service)


@pytest_twisted.inlineCallbacks
def test_an_irc_operator_kills_and_sends_wallops(tmp_path):
    from spchat.server.passwords import hash_password

    service = start_service(server_config(
        tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
        **{"irc-operator": "boss:" + hash_password("the operator password")}))
    try:
        boss = yield irc_client(service, "boss")
        victim = yield irc_client(service, "victim")
        victim.send("MODE victim +w")
        boss.send("KILL victim :too early", "OPER boss wrong-password", "OPER nobody x",
                  "PING :tried")
        yield boss.wait_for("PONG")
        # Not an operator yet; a wrong password (checked off the reactor, so
        # it may come after the next answer); a name that is no operator's.
        assert sorted(line.command for line in boss.lines
                      if line.command in ("481", "464", "491")) == ["464", "481", "491"]
        boss.send("OPER boss :the operator password", "PING :checked")
        yield boss.wait_for("PONG", 2)  # the PONG waits for the password's check
        boss.send("WALLOPS :maintenance at noon", "WHOIS boss")
        yield boss.wait_for("318")
        assert boss.of("381") and boss.of("313")
        yield victim.wait_for("WALLOPS")
        assert victim.of("WALLOPS")[0].params == ["maintenance at noon"]
        boss.send("KILL victim :spamming")
        yield victim.lost
        assert "spamming" in victim.of("ERROR")[0].params[0]
        yield wait_until(lambda: "victim" not in service.core.by_key)
    finally:
        yield stop_services(service)


def test_the_relay_and_the_gateway_log_refusals_at_the_configured_rate(tmp_path):
    service = start_service(server_config(tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
                                          **{"refusal-log-seconds": "5"}))
    try:
        assert service.irc.refusals.refusals.interval == 5
        assert service.relay.refusals.refusals.interval == 5
    finally:
        stop_services(service)


@pytest_twisted.inlineCallbacks
def test_odd_requests_get_one_clear_answer_each(service):
    client = yield irc_client(service, "odd")
    client.send("MODE #lobby +bbbb", "AUTHENTICATE PLAIN", "PING :done")
    yield client.wait_for("PONG")
    assert len(client.of("368")) == 1  # one ban list, however many b's
    assert client.of("907")[0].params[-1] == "You are logged in already"  # not "by SASL"
