"""Failed logins and new accounts counted across nodes, sans-IO: chat cores
on one store (in memory) and an in-memory bus, on a fake clock; and the
windows' own handling of events heard late."""

from __future__ import annotations

import contextlib
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from spchat import wire
from spchat.cluster.limit_log import ANSWER_PER_EVENT
from spchat.cluster.limit_notices import (
    EVENTS_PER_NOTICE, LIMIT, LIMIT_ASK, LIMIT_EVENTS, read_answer, read_event,
)
from spchat.cluster.limits import ClusterLimits
from spchat.cluster.seal import Seal
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore
from spchat.server.throttles import LoginThrottle, SignupLimit

from conftest import connect_client, server_config, start_service, stop_services, wait_until
from hostile import ATTACKERS, HostileClient, hostile_client
from irc_peer import irc_peer
from helpers import InstantPasswords, SharedBus, fired, login, node_dirs, run_for
from cluster_nodes import bus_state

KEY = b"k" * 32
FAILURES = 5  # per name and per address, in a minute


def make_cores(clock, names=("a", "b"), bus=True, per_address=2, total=3):
    store = MemoryStore()
    fired(store.set_account("alice", "alice", "hash:right", 0))
    hub = SharedBus() if bus else None
    cores = {name: add_core(clock, store, hub, name, per_address, total) for name in names}
    return cores, hub


def add_core(clock, store, hub, name, per_address=2, total=3):
    """A node on ``store`` and ``hub`` (None: alone), started."""
    core = ChatCore(clock, Limits(), store=store, passwords=InstantPasswords(),
                    throttle=LoginThrottle(clock, limit=FAILURES, window=60.0),
                    signups=SignupLimit(clock, per_address, total),
                    bus=None if hub is None else hub.port(),
                    bus_key=None if hub is None else KEY, node=name)
    fired(core.start())
    return core


def attempt(core, name="alice", password="wrong", address="192.0.2.1:5", **options):
    """A login; the error it got, or None if it got in."""
    link, conn = login(core, name, address, password=password, **options)
    core.clock.advance(0)
    errors = conn.of(wire.Error)
    if not errors:
        core.link_lost(link, resumable=False)
    return errors[-1] if errors else None


def guesses_until_throttled(cores, order, address_of=lambda i: f"198.51.100.{i}:5"):
    """Wrong passwords for alice on the cores in turn (each from its own
    address), one a second, until one is throttled; how many failed first."""
    for i in range(100):
        error = attempt(cores[order[i % len(order)]], address=address_of(i))
        if error.code == "throttled":
            return i, error
        assert error.code == "login_failed"
        cores[order[0]].clock.advance(1)
    raise AssertionError("never throttled")


def test_wrong_passwords_spread_over_nodes_hit_the_limit_of_one_node(clock):
    alone, _ = make_cores(clock, names=("a",), bus=False)
    on_one, _ = guesses_until_throttled(alone, "a")
    cores, _ = make_cores(clock)
    spread, error = guesses_until_throttled(cores, "ab")
    assert on_one == spread == FAILURES
    # Locked out on both nodes, with the same wait.
    waits = {attempt(core, address="203.0.113.9:5").text for core in cores.values()}
    assert waits == {error.text} and "try again in 55 s" in error.text


def test_failures_from_one_address_count_on_every_node(clock):
    cores, _ = make_cores(clock)
    for i in range(FAILURES):
        assert attempt(cores["ab"[i % 2]], name=f"user{i}", password=None, register=False,
                       address="192.0.2.7:5") is None  # guests: no failure
    for i in range(FAILURES):
        assert attempt(cores["ab"[i % 2]], address="192.0.2.7:5").code == "login_failed"
    for core in cores.values():
        error = attempt(core, name="bob", password=None, address="192.0.2.7:6")
        assert error.code == "throttled"


def test_a_good_login_on_one_node_clears_the_name_on_the_others(clock):
    cores, _ = make_cores(clock)
    for _ in range(FAILURES - 1):
        assert attempt(cores["a"], address="192.0.2.1:5").code == "login_failed"
    assert attempt(cores["b"], password="right", address="192.0.2.2:5") is None
    # The name starts afresh on a too: four more failures pass there.
    for i in range(FAILURES - 1):
        assert attempt(cores["a"], address=f"198.51.100.{i}:5").code == "login_failed"


def test_new_accounts_spread_over_nodes_count_once_per_address_and_in_all(clock):
    cores, _ = make_cores(clock, per_address=2, total=3)
    for i, node in enumerate("ab"):
        assert attempt(cores[node], name=f"new{i}", password="secret words",
                       register=True, address="192.0.2.1:5") is None
    error = attempt(cores["a"], name="new2", password="secret words", register=True,
                    address="192.0.2.1:5")
    assert error.code == "throttled" and "from your address" in error.text
    assert attempt(cores["b"], name="new3", password="secret words", register=True,
                   address="192.0.2.2:5") is None
    for core in cores.values():  # three in all: the server's limit, on each node
        error = attempt(core, name="new4", password="secret words", register=True,
                        address="192.0.2.3:5")
        assert error.code == "throttled" and "no more new accounts" in error.text


def joined(clock, cores, hub, name):
    """A node started after the others, on the bus now (which tells it so)."""
    some = next(iter(cores.values()))
    core = cores[name] = add_core(clock, some.store, hub, name)
    core.cluster.connected()
    return core


@contextlib.contextmanager
def cut_off(hub, core):
    """``core`` neither hears nor is heard on the bus meanwhile; then it is
    back, and told so (as Redis's subscription, made again, tells it)."""
    listener = next(pair for pair in hub.listeners
                    if getattr(pair[0], "__self__", None) is core.cluster)
    hub.listeners.remove(listener)
    publish = core.cluster.bus.publish
    core.cluster.bus.publish = lambda data: None
    yield
    core.cluster.bus.publish = publish
    hub.listeners.append(listener)
    listener[1]()


def test_a_node_started_late_refuses_at_the_clusters_count_not_its_own(clock):
    cores, hub = make_cores(clock)
    for i in range(FAILURES - 1):
        assert attempt(cores["ab"[i % 2]], address=f"198.51.100.{i}:5").code == "login_failed"
        clock.advance(1)
    for i in range(2):  # new accounts from one address: its allowance
        assert attempt(cores["ab"[i]], name=f"new{i}", password="secret words", register=True,
                       address="192.0.2.1:5") is None
    late = joined(clock, cores, hub, "c")
    assert late.cluster_limits.replayed == FAILURES - 1 + 2  # once each, from two answers
    assert attempt(late, address="203.0.113.1:5").code == "login_failed"  # the fifth
    error = attempt(late, address="203.0.113.2:5")
    assert error.code == "throttled" and "try again in 56 s" in error.text
    assert {attempt(core, address="203.0.113.3:5").text for core in cores.values()} == {
        error.text}
    error = attempt(late, name="new2", password="secret words", register=True,
                    address="192.0.2.1:5")
    assert error.code == "throttled" and "from your address" in error.text


def test_a_node_back_after_a_gap_counts_what_it_missed_once(clock):
    cores, hub = make_cores(clock, names=("a", "b", "c"))
    gapped = cores["c"]
    for i in range(2):  # heard live on c
        assert attempt(cores["a"], address=f"198.51.100.{i}:5").code == "login_failed"
    with cut_off(hub, gapped):
        for i in range(2, FAILURES - 1):  # missed by c
            assert attempt(cores["ab"[i % 2]], address=f"198.51.100.{i}:5").code == \
                "login_failed"
            clock.advance(1)
        assert gapped.cluster_limits.replayed == 0
    # The answers of a and b hold all four: the two heard live count once.
    assert gapped.cluster_limits.replayed == FAILURES - 3
    assert attempt(gapped, address="203.0.113.1:5").code == "login_failed"
    assert attempt(gapped, address="203.0.113.2:5").code == "throttled"
    with cut_off(hub, gapped):  # again: nothing new, nothing counted again
        pass
    assert gapped.cluster_limits.replayed == FAILURES - 3


def test_failures_replayed_after_a_good_login_do_not_lock_its_name_out(clock):
    cores, hub = make_cores(clock)
    for i in range(FAILURES - 1):
        assert attempt(cores["a"], address=f"198.51.100.{i}:5").code == "login_failed"
        clock.advance(1)
    assert attempt(cores["b"], password="right", address="192.0.2.2:5") is None
    clock.advance(1)
    for i in range(FAILURES - 1):
        assert attempt(cores["a"], address=f"198.51.100.{10 + i}:5").code == "login_failed"
    late = joined(clock, cores, hub, "c")  # hears the good login among the failures
    assert attempt(late, address="203.0.113.1:5").code == "login_failed"  # the fifth since
    assert attempt(late, address="203.0.113.2:5").code == "throttled"


def test_an_answer_is_capped_and_says_what_it_left_out(clock):
    node, throttle = Node(), LoginThrottle(clock, limit=FAILURES)
    shared = ClusterLimits(clock, node, throttle, None)
    many = ANSWER_PER_EVENT + 7
    for i in range(many):  # an attacker with many addresses
        shared.throttle.failed(f"user{i}", f"2001:db8::{i:x}")
    node.sent.clear()
    node.handlers[LIMIT_ASK]("there", {})
    answers = [read_answer(body) for kind, body in node.sent]
    assert {kind for kind, _ in node.sent} == {LIMIT_EVENTS}
    assert all(a.to == "there" and len(a.events) <= EVENTS_PER_NOTICE for a in answers)
    told = [e for a in answers for e in a.events]
    assert len(told) == ANSWER_PER_EVENT and told[0].name == f"user{many - 1}"  # the newest
    assert sum(a.left_out for a in answers) == 7 and answers[-1].left_out == 7
    assert max(len(json.dumps(body)) for _, body in node.sent) < 20_000
    # Heard there: the events counted, what was left out said and counted.
    other, other_throttle = Node(), LoginThrottle(clock, limit=1)
    other.name = "there"
    heard = ClusterLimits(clock, other, other_throttle, None)
    for _, body in node.sent:
        other.handlers[LIMIT_EVENTS]("here", body)
        other.handlers[LIMIT_EVENTS]("here", {**body, "to": "elsewhere"})  # not for it
    assert heard.replayed == ANSWER_PER_EVENT and heard.left_out == 7
    assert other_throttle.retry_after(f"user{many - 1}", "192.0.2.1") is not None
    other.handlers[LIMIT_EVENTS]("here", {"to": "there", "events": "all"})
    other.handlers[LIMIT_EVENTS]("here", {"to": "there", "events": [{"event": "failed"}]})
    assert len(other.dropped) == 2 and heard.replayed == ANSWER_PER_EVENT


def test_a_node_alone_keeps_its_own_limits_unchanged(clock):
    cores, _ = make_cores(clock, names=("a",), bus=False)
    logins = cores["a"].logins
    assert type(logins.throttle) is LoginThrottle and type(logins.signups) is SignupLimit


class Node:
    """Just what ``ClusterLimits`` uses of a ``ClusterNode``."""

    name, run = "here", "r1"

    def __init__(self):
        self.sent, self.dropped, self.handlers, self.on_connected = [], [], {}, []

    def on(self, kind, handler):
        self.handlers[kind] = handler

    def send(self, kind, body):
        self.sent.append((kind, body))

    def drop(self, what):
        self.dropped.append(what)


def test_notices_that_do_not_parse_are_dropped_and_our_own_not_counted_twice(clock):
    node, throttle = Node(), LoginThrottle(clock, limit=2)
    shared = ClusterLimits(clock, node, throttle, None)
    heard = node.handlers[LIMIT]
    shared.throttle.failed("alice", "192.0.2.1")
    kind, body = node.sent[-1]
    assert kind == LIMIT and read_event(body).at == clock.seconds()
    heard("here", body)  # our own, back from the bus
    assert throttle.retry_after("alice", "192.0.2.9") is None
    for bad in ({}, {**body, "event": "guess"}, {**body, "name": 5}, {**body, "ip": "x" * 201},
                {**body, "at": "now"}, {**body, "at": True}, {**body, "at": float("nan")},
                {**body, "id": 5}, {**body, "id": "x" * 65}):
        heard("there", bad)
    assert len(node.dropped) == 9 and shared.heard == 0
    heard("there", body)  # ours again, by its identity (an answer passed on): counted once
    assert throttle.retry_after("alice", "192.0.2.9") is None
    theirs = {**body, "id": "r2.1"}
    heard("there", {**theirs, "event": "signup"})  # no sign-up limit here: nothing to count
    heard("there", theirs)
    assert throttle.retry_after("alice", "192.0.2.9") == pytest.approx(60.0)


def test_events_heard_late_count_at_their_own_time(clock):
    throttle = LoginThrottle(clock, limit=3, window=60.0)
    now = clock.seconds()
    throttle.failed("alice", "192.0.2.1")
    throttle.failed("alice", "192.0.2.2", at=now - 30)  # another node's, heard after ours
    throttle.failed("alice", "192.0.2.3", at=now - 61)  # too old to count
    assert throttle.retry_after("alice", "192.0.2.9") is None
    throttle.failed("alice", "192.0.2.4", at=now + 5)  # a clock ahead: counts as now
    assert throttle.retry_after("alice", "192.0.2.9") == pytest.approx(30.0)
    throttle.failed("alice", "192.0.2.5", at=now - 40)  # older than the three kept
    assert throttle.retry_after("alice", "192.0.2.9") == pytest.approx(30.0)
    throttle.failed("alice", "192.0.2.5", at=now - 10)  # newer than the oldest kept
    assert throttle.retry_after("alice", "192.0.2.9") == pytest.approx(50.0)
    throttle.succeeded("alice", "192.0.2.9", at=now - 5)  # another node's, just now
    assert throttle.retry_after("alice", "192.0.2.9") is None  # the two since it are left
    throttle.failed("alice", "192.0.2.6", at=now - 25)  # heard after: its address's only
    throttle.failed("alice", "192.0.2.6", at=now - 24)
    assert throttle.retry_after("alice", "192.0.2.9") is None
    assert throttle.retry_after("bob", "192.0.2.6") is None
    throttle.failed("alice", "192.0.2.6", at=now - 23)
    assert throttle.retry_after("bob", "192.0.2.6") == pytest.approx(35.0)
    signups = SignupLimit(clock, per_address=1, total=0)
    signups.counted("192.0.2.1", at=now - 3000)
    assert signups.retry_after("192.0.2.1") == (pytest.approx(600.0), "address")


def test_limit_notices_are_sealed_like_every_other(clock):
    cores, hub = make_cores(clock)
    attempt(cores["a"])
    opened = Seal(KEY, "reader", clock).open(hub.kept[-1])
    assert opened.kind == LIMIT and opened.node == "a"
    assert read_event(opened.body).name == "alice"


# --- real servers: PostgreSQL, Redis and two nodes ------------------------------


@pytest_twisted.inlineCallbacks
def failures_until_throttled(servers, pins):
    """Wrong passwords for alice on ``servers`` in turn until one is
    throttled: (how many failed first, the refusal)."""
    for i in range(50):
        server = servers[i % len(servers)]
        others = [s.core.cluster_limits for s in servers if s is not server]
        before = [limits.heard for limits in others]
        try:
            yield connect_client(server, pins, "alice", password="wrong words")
        except Exception as e:
            refusal = str(e)
        else:
            raise AssertionError("a wrong password let alice in")
        if "too many failed logins" in refusal:
            return i, refusal
        assert refusal == "login refused: wrong name or password", refusal
        # The others hear of it before the next try (the bus takes a moment).
        yield wait_until(lambda: all(limits.heard > count
                                     for limits, count in zip(others, before)))
    raise AssertionError("never throttled")


@pytest_twisted.inlineCallbacks
def registered_alice(server, pins):
    alice = yield connect_client(server, pins, "alice", password="right words", register=True)
    yield alice.logout()


@pytest_twisted.inlineCallbacks
def test_wrong_passwords_over_two_real_nodes_are_refused_at_one_nodes_total(
        tmp_path, pins, pg_url, redis_server):
    alone = start_service(server_config(tmp_path / "alone", store="memory"))
    try:
        yield registered_alice(alone, pins)
        on_one, _ = yield failures_until_throttled([alone], pins)
    finally:
        yield stop_services(alone)
    servers = [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                           node=f"node{i}"))
               for i, data_dir in enumerate(node_dirs(tmp_path, 2))]
    try:
        yield wait_until(lambda: all(server.bus.subscribed for server in servers))
        yield registered_alice(servers[0], pins)
        spread, refusal = yield failures_until_throttled(servers, pins)
        assert on_one == spread == servers[0].cfg.login_failures
        # Locked out on the other node too, for as long (to the second).
        waits = []
        for server in servers:
            try:
                yield connect_client(server, pins, "alice", password="right words")
            except Exception as e:
                waits.append(int(str(e).split("try again in ")[1].split()[0]))
        assert len(waits) == 2 and max(waits) - min(waits) <= 1, waits
    finally:
        yield stop_services(*servers)


@pytest_twisted.inlineCallbacks
def test_a_real_node_started_late_is_told_the_failures_before_it(
        tmp_path, pins, pg_url, redis_server):
    first, second = (server_config(data_dir, database=pg_url, bus=redis_server.url,
                                   node=f"node{i}")
                     for i, data_dir in enumerate(node_dirs(tmp_path, 2)))
    servers = [start_service(first)]
    try:
        yield wait_until(lambda: servers[0].bus.joined)  # it can answer
        yield registered_alice(servers[0], pins)
        allowed = servers[0].cfg.login_failures
        for _ in range(allowed - 1):
            with pytest.raises(Exception, match="wrong name or password"):
                yield connect_client(servers[0], pins, "alice", password="wrong words")
        servers.append(start_service(second))
        late = servers[1].core.cluster_limits
        yield wait_until(lambda: late.replayed >= allowed,  # the failures, alice's sign-up
                         describe=lambda: bus_state(servers) + f"; replayed {late.replayed}")
        with pytest.raises(Exception, match="wrong name or password"):
            yield connect_client(servers[1], pins, "alice", password="wrong words")
        with pytest.raises(Exception, match="too many failed logins"):
            yield connect_client(servers[1], pins, "alice", password="right words")
        assert late.replayed == allowed
    finally:
        yield stop_services(*servers)


# --- a room's member limit (+l), sans-IO ------------------------------------------


def session_on(core, name):
    """``name`` logged in on ``core`` as a guest: its link and client."""
    link, conn = login(core, name, f"192.0.2.{len(core.sessions) + 10}:5")
    core.clock.advance(0)
    return core.by_key[name], conn


def test_a_rooms_member_limit_counts_its_members_on_every_node(clock):
    cores, _ = make_cores(clock)
    alice, alice_conn = session_on(cores["a"], "ann")
    bob, bob_conn = session_on(cores["b"], "bob")
    cores["a"].receive(alice.link, wire.Join("dev"))
    cores["a"].receive(alice.link, wire.Mode("dev", "member_limit", True, limit=2))
    run_for(clock, 5)  # the room and its limit reach b
    assert cores["b"].directory.get("dev").member_limit == 2
    cores["b"].receive(bob.link, wire.Join("dev"))
    run_for(clock, 5)  # b's member reaches a's roster
    for core in cores.values():
        _, conn = session_on(core, f"late{core.node}")
        core.receive(core.by_key[f"late{core.node}"].link, wire.Join("dev"))
        assert conn.of(wire.Error)[-1].code == "room_full"
        assert core.directory.count(core.directory.get("dev")) == 2


# --- roles of members on another node, sans-IO ------------------------------------


def roles_told(conn, name):
    """The roles a client was told ``name`` has in #dev, in turn."""
    return [u.role for u in conn.of(wire.MemberUpdate) if u.name == name and u.room == "dev"]


def test_an_operator_gives_and_takes_the_role_of_a_registered_member_on_another_node(clock):
    cores, _ = make_cores(clock)
    fired(cores["a"].store.set_account("bob", "bob", "hash:bobs", 0))
    _, alice_conn = login(cores["a"], "alice", "192.0.2.1:6", password="right")
    _, bob_conn = login(cores["b"], "bob", "192.0.2.2:6", password="bobs")
    guest, guest_conn = session_on(cores["b"], "gus")
    alice, bob = cores["a"].by_key["alice"], cores["b"].by_key["bob"]
    cores["a"].receive(alice.link, wire.Join("dev"))
    run_for(clock, 5)
    for session, core in ((bob, cores["b"]), (guest, cores["b"])):
        core.receive(session.link, wire.Join("dev"))
    run_for(clock, 5)  # b's members reach a's roster
    alice_conn.clear()
    cores["a"].receive(alice.link, wire.Moderate("dev", "op", "bob"))
    run_for(clock, 5)
    assert not alice_conn.of(wire.Error)
    assert cores["b"].directory.get("dev").role_of("bob") == "operator"
    assert roles_told(alice_conn, "bob") == ["operator"]  # its node's members are told too
    cores["b"].receive(bob.link, wire.Mode("dev", "topic_locked", True))  # an operator's act
    run_for(clock, 5)
    assert not bob_conn.of(wire.Error) and cores["a"].directory.get("dev").topic_locked
    cores["b"].receive(bob.link, wire.Moderate("dev", "deop", "bob"))  # steps down, on b
    run_for(clock, 5)
    assert cores["a"].directory.get("dev").role_of("bob") == "member"
    assert roles_told(alice_conn, "bob") == ["operator", "member"]  # heard from b, told on a
    # A guest's role is its node's: refused plainly from another node.
    cores["a"].receive(alice.link, wire.Moderate("dev", "op", "gus"))
    error = alice_conn.of(wire.Error)[-1]
    assert error.code == "guest_elsewhere" and "connected to another node" in error.text
    assert cores["b"].directory.get("dev").role_of("gus") == "member"
    cores["a"].receive(alice.link, wire.Moderate("dev", "voice", "gus"))  # a guest's too
    error = alice_conn.of(wire.Error)[-1]
    assert error.code == "guest_elsewhere" and "guest's voice" in error.text
    cores["a"].receive(alice.link, wire.Moderate("dev", "voice", "bob"))  # a name's: kept
    run_for(clock, 5)
    assert cores["b"].directory.get("dev").has_voice("bob")
    assert not cores["b"].directory.get("dev").has_voice("gus")
    cores["a"].receive(alice.link, wire.Moderate("dev", "op", "nobody"))
    assert alice_conn.of(wire.Error)[-1].code == "unknown_user"


# --- connections: per node, but a client coming back from another node is known -------


@pytest_twisted.inlineCallbacks
def test_the_places_kept_for_returning_clients_take_one_whose_session_is_on_another_node(
        tmp_path, pg_url, redis_server):
    small = {"max-connections": "4", "login-reserve": "2"}  # two places open to anyone
    servers = [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                           node=f"node{i}", **(small if i == 0 else {})))
               for i, data_dir in enumerate(node_dirs(tmp_path, 2))]
    full, other = (server.address.port for server in servers)
    clients = []
    try:
        yield wait_until(lambda: all(server.bus.subscribed for server in servers))
        clients.append((yield hostile_client(other, ATTACKERS[0], name="wanderer")))
        yield wait_until(lambda: "wanderer" in servers[0].core.everyone)
        for source in ATTACKERS[1:3]:
            clients.append((yield hostile_client(full, source, name=f"g{len(clients)}")))
        late = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", full, timeout=10,
                               bindAddress=(ATTACKERS[3], 0)), HostileClient())
        late.opened.addErrback(lambda _: None)
        yield late.lost  # a stranger finds the node full
        assert not hasattr(late, "server_hello")
        # From where a session of another node is: a place kept for it.
        clients.append((yield hostile_client(full, ATTACKERS[0])))
        assert len(servers[0].factory.slots) == 3
    finally:
        for client in clients:
            client.abort()
        yield stop_services(*servers)


# --- IRC's MODE +o/-o of members on another node, real servers ----------------------


@pytest_twisted.inlineCallbacks
def test_irc_mode_o_of_a_member_on_another_node(tmp_path, pins, pg_url, redis_server):
    servers = [start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                           node=f"node{i}", irc="tcp:0:interface=127.0.0.1"))
               for i, data_dir in enumerate(node_dirs(tmp_path, 2))]
    here, there = (server.core for server in servers)
    try:
        yield wait_until(lambda: all(server.bus.subscribed for server in servers))
        carol = yield irc_peer(servers[0].irc_port.getHost().port, nick="carol")
        carol.send("JOIN #ops")  # made here: carol is its owner
        yield wait_until(lambda: b" 366 carol #ops" in carol.data)
        yield wait_until(lambda: there.directory.get("ops") is not None)
        bob = yield connect_client(servers[1], pins, "bob", password="bob's words",
                                   register=True)
        gus = yield connect_client(servers[1], pins, "gus")
        for client in (bob, gus):
            client.join("ops")
        yield wait_until(lambda: set(here.directory.remote("ops")) == {"bob", "gus"})
        carol.send("MODE #ops +o bob")
        yield wait_until(lambda: there.directory.get("ops").role_of("bob") == "operator")
        yield wait_until(lambda: b"MODE #ops +o bob" in carol.data)
        carol.send("MODE #ops +o gus")  # a guest there: refused, in words
        yield wait_until(lambda: b"connected to another node" in carol.data)
        assert there.directory.get("ops").role_of("gus") == "member"
        carol.send("MODE #ops -o bob")
        yield wait_until(lambda: there.directory.get("ops").role_of("bob") == "member")
    finally:
        yield stop_services(*servers)
