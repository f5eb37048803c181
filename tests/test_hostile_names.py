"""Attacks on names and sign-ups, on a real server over loopback, from
several 127.x.y.z source addresses, while other users chat.

* Look-alike names: while alice and bob are online (and Carol is registered
  and offline), "аlice", "alicе", "bоb" (Cyrillic letters) and the like are
  refused, naming the name they look like, and so are mixed-script names
  and a look-alike of a room.
* A registration flood: 8 addresses x 19 connections registering random
  names while a registered user logs in again and again; every login of
  hers gets in, the flood is cut at the limits, and a new user from another
  address still gets in.

In both, the chatting users get every line exactly once.
"""

import secrets
import sqlite3
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat import wire
from spchat.server.store import DB_FILE

from conftest import connect_client, wait_until
from hostile import Chatters, HostileServer, hostile_client


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(**options):
        servers.append(HostileServer(tmp_path, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def answer(client, body):
    """Send ``body``; the welcome or error that answers it (None: the
    connection went)."""
    start = len(client.received)
    client.send(body)
    yield wait_until(lambda: client.closed or any(
        m.get("t") in ("welcome", "error") for m in client.received[start:]))
    replies = [m for m in client.received[start:] if m.get("t") in ("welcome", "error")]
    return replies[0] if replies else None


def login_body(name, password=None, register=False):
    body = {"t": "login", "name": name}
    if password is not None:
        body["password"] = password
    if register:
        body["register"] = True
    return body


@defer.inlineCallbacks
def log_in(server, source, name, password=None, register=False):
    """(connection, the server's answer) for a login from ``source``."""
    client = yield hostile_client(server.port, source)
    reply = yield answer(client, login_body(name, password, register))
    return client, reply


@defer.inlineCallbacks
def registered_then_chatting(server, pins, name, password):
    """``name`` registered (and gone again), then alice and bob chatting."""
    user = yield connect_client(server.service, pins, name, password=password, register=True)
    yield wait_until(lambda: user.rec.of(wire.Notice))
    yield user.logout()
    chat = yield Chatters(server, pins).start()
    return chat


def registered_count(server):
    conn = sqlite3.connect(server.service.cfg.data_dir / DB_FILE)
    try:
        return conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
    finally:
        conn.close()


# --- look-alike names --------------------------------------------------------------

LOOKALIKES = [
    # (name, the name it looks like): Cyrillic а, е, о, І, С and Greek ο.
    ("аlice", "alice"), ("alicе", "alice"), ("bоb", "bob"), ("ALІCE", "alice"),
    ("Сarol", "Carol"), ("bοb", "bob"), ("boB", None),  # boB: the same name as bob
]


@pytest_twisted.inlineCallbacks
def test_look_alike_names_are_refused_while_others_chat(make_server, pins):
    server = make_server()
    chat = yield registered_then_chatting(server, pins, "Carol", "carol's password")

    @defer.inlineCallbacks
    def as_guest_then_registering(source, name):
        guest = yield log_in(server, source, name)
        registering = yield log_in(server, source, name, "a long password", register=True)
        return [guest, registering]

    # From an address each, all at once.
    pairs = yield defer.gatherResults([as_guest_then_registering(f"127.0.{n + 2}.1", name)
                                       for n, (name, _) in enumerate(LOOKALIKES)])
    # Mixed scripts that look like no one (Latin with Cyrillic, with Greek).
    mixed = yield defer.gatherResults([log_in(server, "127.0.20.1", "mаllory"),
                                       log_in(server, "127.0.20.2", "εve")])
    for (name, like), pair in zip(LOOKALIKES, pairs):
        for _, reply in pair:
            assert reply["t"] == "error", (name, reply)
            if like is None:
                assert reply["code"] == "name_taken"
            else:
                assert reply["code"] == "name_lookalike", (name, reply)
                assert f"looks like {like!r}" in reply["text"]
    for _, reply in mixed:
        assert reply["code"] == "name_invalid" and "must not mix letters" in reply["text"]
    assert "Cyrillic and Latin" in mixed[0][1]["text"]

    # A room that looks like the lobby is refused too.
    mallory, welcome = yield log_in(server, "127.0.21.1", "mallory")
    assert welcome["t"] == "welcome"
    refused = yield answer(mallory, {"t": "join", "room": "lоbby", "cid": "1"})  # Cyrillic о
    assert refused["code"] == "room_lookalike" and "looks like #lobby" in refused["text"]
    # Names in one script (or Japanese's usual mix) are welcome.
    for n, name in enumerate(["Борис", "田中さん"]):
        client, welcome = yield log_in(server, f"127.0.22.{n + 1}", name)
        assert welcome["t"] == "welcome" and welcome["name"] == name
        client.abort()

    yield chat.check()
    online = set(server.service.core.table.by_key)
    assert {"alice", "bob", "mallory"} <= online
    assert not online & {name.casefold() for name, like in LOOKALIKES if like is not None}
    assert registered_count(server) == 1  # Carol only
    for client, _ in [r for pair in pairs for r in pair] + mixed:
        client.abort()
    mallory.abort()


# --- a registration flood -------------------------------------------------------------

ATTACK_ADDRESSES = 8
CONNECTIONS_PER_ADDRESS = 19
ATTACK_SECONDS = 3.0


class Registrar:
    """One attacking connection: registers random names, one after another,
    for ``until`` (monotonic time), connecting again after each success."""

    def __init__(self, server, source, until, tally):
        self.server, self.source, self.until, self.tally = server, source, until, tally

    def count(self, what):
        self.tally[what] = self.tally.get(what, 0) + 1

    @defer.inlineCallbacks
    def run(self):
        client = None
        while time.monotonic() < self.until:
            if client is None or client.closed:
                try:
                    client = yield hostile_client(self.server.port, self.source)
                except Exception as e:  # the server's accept queue overflowed, say
                    self.count(type(e).__name__)
                    yield sleep(0.05)
                    continue
            reply = yield answer(client, login_body("r" + secrets.token_hex(6),
                                                    "a long password", register=True))
            if reply is None:
                client = None
            elif reply["t"] == "welcome":
                self.count("accepted")
                client.abort()
                client = None
            else:
                self.count(reply["code"])
                self.tally.setdefault("texts", set()).add(reply["text"])
                if reply["code"] == "throttled":
                    yield sleep(0.05)  # as a flood goes on: again and again
        if client is not None:
            client.abort()


@pytest.mark.parametrize("limits", ["defaults", "no limits"])
@pytest_twisted.inlineCallbacks
def test_a_registration_flood_cannot_keep_a_registered_user_out(make_server, pins, limits):
    options = {} if limits == "defaults" else {
        "registrations-per-hour": "0", "registrations-per-hour-total": "0"}
    server = make_server(**options)
    chat = yield registered_then_chatting(server, pins, "owner", "owner's password")

    until = time.monotonic() + ATTACK_SECONDS
    tally = {"accepted": 0}
    attackers = [Registrar(server, f"127.1.{a + 1}.1", until, tally).run()
                 for a in range(ATTACK_ADDRESSES) for _ in range(CONNECTIONS_PER_ADDRESS)]
    yield sleep(0.5)  # the flood is on
    logins = []
    while time.monotonic() < until - 0.3:
        started = time.monotonic()
        client, reply = yield log_in(server, "127.0.0.1", "owner", "owner's password")
        logins.append((reply, time.monotonic() - started))
        client.abort()
        yield sleep(0.1)
    yield defer.gatherResults(attackers)

    refused = [reply for reply, _ in logins if reply["t"] != "welcome"]
    assert not refused, f"{len(refused)} of {len(logins)} logins refused: {refused[0]}"
    slowest = max(seconds for _, seconds in logins)
    assert slowest < 2.0, f"a login took {slowest:.2f} s"
    print(f"\n{limits}: {len(logins)} logins of the owner, slowest {slowest * 1000:.0f} ms; "
          f"flood: {tally}")
    if limits == "defaults":
        # 5 an hour per address: the flood made 40 accounts at most, and the
        # rest of it was told why.
        assert tally["accepted"] <= ATTACK_ADDRESSES * 5
        assert registered_count(server) == 1 + tally["accepted"]
        assert any("too many new accounts from your address" in t for t in tally["texts"])
        # The server logged it, once per address (not once per refusal).
        logged = [line for line in server.log.lines if "refused a new account" in line]
        assert 1 <= len(logged) <= ATTACK_ADDRESSES
        assert "the address limit is reached" in logged[0]
    # New accounts still work from an address of their own; chat.check()
    # tries a new guest.
    client, welcome = yield log_in(server, "127.2.0.1", "newcomer1", "a new password",
                                   register=True)
    assert welcome["t"] == "welcome", welcome
    client.abort()
    yield chat.check()
