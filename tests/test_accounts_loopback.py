"""Accounts, bans and history over real sockets, across server restarts
(the same data directory, a new server process state)."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat import wire
from spchat.client.session import ClientError

from conftest import connect_client, server_config, start_service, stop_services, wait_until


@pytest.fixture
def restartable(tmp_path):
    """Start, stop and start again a server on one data directory."""
    running = []

    @defer.inlineCallbacks
    def start(clock=None):
        while running:
            yield stop_services(running.pop())
        running.append(start_service(server_config(tmp_path / "data"), clock))
        return running[-1]

    yield start
    while running:
        stop_services(running.pop())


def notices(client, kind):
    return [n.text for n in client.rec.of(wire.Notice) if n.kind == kind]


@pytest_twisted.inlineCallbacks
def test_registered_name_survives_a_restart_and_needs_its_password(restartable, pins):
    server = yield restartable()
    zoe = yield connect_client(server, pins, "Zoe", password="correct horse", register=True)
    yield wait_until(lambda: notices(zoe, "account"))
    assert "registered to you" in notices(zoe, "account")[0]
    yield zoe.logout()

    server = yield restartable()
    with pytest.raises(ClientError, match="is registered; log in with its password"):
        yield connect_client(server, pins, "zoe")  # a guest may not take it
    with pytest.raises(ClientError, match="wrong name or password"):
        yield connect_client(server, pins, "zoe", password="wrong horse")
    zoe = yield connect_client(server, pins, "ZOE", password="correct horse")
    assert zoe.name == "Zoe"
    # A password for a name nobody registered: the same generic words.
    with pytest.raises(ClientError, match="wrong name or password"):
        yield connect_client(server, pins, "nobody", password="whatever123")


@pytest_twisted.inlineCallbacks
def test_failed_logins_are_throttled(restartable, pins):
    server = yield restartable()
    owner = yield connect_client(server, pins, "owner", password="owner password", register=True)
    yield wait_until(lambda: notices(owner, "account"))
    yield owner.logout()
    for _ in range(5):
        with pytest.raises(ClientError, match="wrong name or password"):
            yield connect_client(server, pins, "owner", password="guess guess")
    with pytest.raises(ClientError, match=r"try again in \d+ s"):
        yield connect_client(server, pins, "owner", password="owner password")


@pytest_twisted.inlineCallbacks
def test_register_while_logged_in_and_change_password(restartable, pins):
    server = yield restartable()
    ann = yield connect_client(server, pins, "ann")
    ann.register("first password")
    yield wait_until(lambda: notices(ann, "account"))
    ann.change_password("first password", "second password")
    yield wait_until(lambda: len(notices(ann, "account")) == 2)
    assert notices(ann, "account")[1] == "your password is changed"
    yield ann.logout()
    with pytest.raises(ClientError, match="wrong name or password"):
        yield connect_client(server, pins, "ann", password="first password")
    again = yield connect_client(server, pins, "ann", password="second password")
    assert again.status.state == "connected"


@pytest_twisted.inlineCallbacks
def test_bans_last_across_restarts_and_expire(restartable, pins):
    server = yield restartable()
    mal = yield connect_client(server, pins, "mal")
    assert server.core.ban("mal", None, "spam")
    yield wait_until(lambda: mal.status.state == "offline")
    assert mal.status.reason == "you are banned: spam" and mal.status.recovery == "never"
    assert server.core.ban("tim", 10, "rude")

    server = yield restartable()
    with pytest.raises(ClientError, match="you are banned: spam"):
        yield connect_client(server, pins, "MAL")
    with pytest.raises(ClientError, match="banned for another 10 minutes: rude"):
        yield connect_client(server, pins, "tim")
    later = task.Clock()  # the ban rules' time, ten minutes on
    later.advance(reactor.seconds() + 601)
    server = yield restartable(later)
    tim = yield connect_client(server, pins, "tim")
    assert tim.status.state == "connected"
    assert (yield server.store.ban("tim")) is None  # the served ban is gone
    assert (yield server.core.unban("mal"))
    mal = yield connect_client(server, pins, "mal")
    assert mal.status.state == "connected"


@pytest_twisted.inlineCallbacks
def test_history_on_join_and_paging_back_to_the_first_message(tmp_path, pins):
    server = start_service(server_config(tmp_path / "data", **{
        "history-on-join": "20", "flood-burst": "1000", "flood-queue": "1000"}))
    try:
        alice = yield connect_client(server, pins, "alice")
        for i in range(1, 121):
            alice.say(f"m{i}")
        yield wait_until(lambda: not alice.outbox)
        bob = yield connect_client(server, pins, "bob")
        yield wait_until(lambda: bob.rec.of(wire.HistoryEnd))

        def history():
            return [m.text for m in bob.rec.of(wire.RoomMessage) if m.history]

        assert history() == [f"m{i}" for i in range(101, 121)]  # the last 20
        pages = 1
        while bob.rec.of(wire.HistoryEnd)[-1].more:
            count = len(bob.rec.of(wire.HistoryEnd))
            bob.history_page("#lobby", limit=50)
            yield wait_until(lambda: len(bob.rec.of(wire.HistoryEnd)) > count)
            pages += 1
        # Pages arrive newest first, each page oldest first.
        got = sorted(history(), key=lambda t: int(t[1:]))
        assert got == [f"m{i}" for i in range(1, 121)] and len(history()) == 120
        assert pages == 3  # 20 on join, then 50 and the last 50
        alice.say("live")
        yield wait_until(lambda: any(m.text == "live" and not m.history
                                     for m in bob.rec.of(wire.RoomMessage)))
    finally:
        stop_services(server)


@pytest_twisted.inlineCallbacks
def test_a_password_login_is_not_cut_by_the_login_deadline(tmp_path, pins):
    server = start_service(server_config(tmp_path / "data", **{"handshake-timeout": "0.5"}))
    try:
        ann = yield connect_client(server, pins, "ann", password="long password", register=True)
        yield ann.logout()
        ann = yield connect_client(server, pins, "ann", password="long password")
        yield task.deferLater(reactor, 1.0, lambda: None)  # silent past the deadline
        assert ann.status.state == "connected" and "ann" in server.core.by_key
    finally:
        stop_services(server)


class LoginSpammer:
    def __init__(self):
        self.received = []

    def channel_open(self, proto):
        for i in range(5):  # five logins on one connection, before any answer
            proto.send_message(wire.Login(f"spam{i}", "password123", True))

    def message_received(self, msg):
        self.received.append(msg)

    def connection_lost(self, reason, proto=None):
        pass


@pytest_twisted.inlineCallbacks
def test_one_connection_runs_one_login_at_a_time(restartable, pins):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from spchat.client.protocol import ChatClientProtocol

    server = yield restartable()
    spammer = LoginSpammer()
    proto = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port),
        ChatClientProtocol(reactor, lambda fp: None, spammer),
    )
    yield wait_until(lambda: any(isinstance(m, wire.Welcome) for m in spammer.received))
    welcomes = [m for m in spammer.received if isinstance(m, wire.Welcome)]
    busy = [m for m in spammer.received if isinstance(m, wire.Error) and m.code == "busy"]
    assert [w.name for w in welcomes] == ["spam0"] and len(busy) == 4
    for i in range(5):
        assert ((yield server.store.account(f"spam{i}")) is not None) == (i == 0)
    proto.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_a_refused_registration_does_not_change_the_password_used_later(restartable, pins):
    server = yield restartable()
    guest = yield connect_client(server, pins, "guest")
    guest.register("short")
    yield wait_until(lambda: guest.rec.of(wire.Error))
    assert guest.rec.of(wire.Error)[0].code == "bad_password"
    assert guest.password is None
    guest.register("long enough now")
    yield wait_until(lambda: notices(guest, "account"))
    assert guest.password == "long enough now"


@pytest_twisted.inlineCallbacks
def test_a_memory_store_keeps_nothing_on_disk_and_forgets_at_a_restart(tmp_path, pins):
    cfg = server_config(tmp_path / "data", store="memory")
    server = start_service(cfg)
    try:
        zoe = yield connect_client(server, pins, "Zoe", password="correct horse", register=True)
        yield wait_until(lambda: notices(zoe, "account"))
        zoe.say("kept in memory only")
        assert (yield zoe.wait_acked(10))
        yield zoe.logout()
    finally:
        yield stop_services(server)
    assert not (tmp_path / "data" / "spchat.db").exists()
    server = start_service(cfg)
    try:
        zoe = yield connect_client(server, pins, "zoe")  # the account is gone too
        yield wait_until(lambda: zoe.rec.of(wire.HistoryEnd))
        assert not zoe.rec.of(wire.RoomMessage)
    finally:
        yield stop_services(server)
