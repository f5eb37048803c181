"""The administrator's acts and the rooms' state across nodes, sans-IO: two
chat cores on one store (in memory) and an in-memory bus, on a
``task.Clock``."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from spchat import wire
from spchat.cluster.acts import ACT
from spchat.cluster.room_news import CHECK_SECONDS, READ_RETRY_SECONDS, ROOM
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import MemoryClient, SharedBus, fired, login, settle

KEY = b"k" * 32
TOKEN = "t" * 43


class Cluster:
    def __init__(self, names=("a", "b"), store=None, **limits):
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.store = store or MemoryStore()
        self.hub = SharedBus()
        self.audit = {name: [] for name in names}
        self.shutdowns = {name: [] for name in names}
        self.nodes = {}
        for name in names:
            core = ChatCore(self.clock, Limits(**limits), store=self.store,
                            admin_token=TOKEN, audit=self.audit[name].append,
                            on_shutdown=lambda name=name: self.shutdowns[name].append(1),
                            bus=self.hub.port(), bus_key=KEY, node=name)
            core.start()
            self.nodes[name] = core

    def __getitem__(self, name) -> ChatCore:
        return self.nodes[name]

    def admin(self, at, op, **fields) -> wire.AdminReply:
        core = self.nodes[at]
        conn = MemoryClient()
        link = core.open_link(conn, "127.0.0.1:9")
        core.receive(link, wire.AdminLogin(TOKEN))
        core.receive(link, wire.AdminRequest("r", op, **fields))
        self.clock.advance(0)
        return conn.of(wire.AdminReply)[-1]


@pytest.fixture
def cluster():
    return Cluster()


def test_a_kick_asked_of_one_node_ends_the_session_on_another(cluster):
    _, bob = login(cluster["b"], "bob")
    reply = cluster.admin("a", "kick", name="bob", reason="rude")
    assert reply.ok and reply.text == "the kick of bob was sent to every node"
    assert bob.closed == ("kicked", "you were kicked: rude")
    assert "bob" not in cluster["b"].by_key
    assert cluster.audit["b"] == ["admin act from node a: kick bob: kicked here"]
    # Where the user is, the reply says it was done there.
    _, carol = login(cluster["a"], "carol")
    assert cluster.admin("a", "kick", name="carol").text == "kicked carol (on node a)"
    assert cluster.audit["b"][-1] == "admin act from node a: kick carol: not on this node"


def test_a_kick_with_a_ban_tells_the_one_kicked_of_the_ban_on_any_node(cluster):
    _, bob = login(cluster["b"], "bob")
    _, carol = login(cluster["a"], "carol")
    for name in ("bob", "carol"):
        reply = cluster.admin("a", "kick", name=name, reason="rude", minutes=10)
        assert reply.ok, reply
    for conn in (bob, carol):  # told alike, on its node or on another
        assert conn.closed == ("kicked", "you were kicked and banned for 10 minutes: rude")


def test_a_ban_on_one_node_ends_the_session_on_another_and_refuses_its_next_login(cluster):
    _, bob = login(cluster["b"], "bob")
    reply = cluster.admin("a", "ban", name="bob", reason="spam", minutes=10)
    assert reply.ok and reply.text == "banned bob for 10 minutes; sent to every node"
    assert bob.closed[0] == "banned" and "spam" in bob.closed[1]
    _, again = login(cluster["b"], "bob")
    assert again.of(wire.Error)[-1].code == "banned"
    assert fired(cluster.store.ban("bob"))[2] == "spam"


def test_a_broadcast_and_a_disconnect_all_reach_every_node(cluster):
    _, alice = login(cluster["a"], "alice")
    _, bob = login(cluster["b"], "bob")
    settle(cluster["b"])
    reply = cluster.admin("a", "broadcast", reason="maintenance at noon")
    assert reply.text == "broadcast to 1 session on node a; sent to every node"
    assert [n.text for n in bob.of(wire.Notice) if n.kind == "broadcast"] == [
        "server: maintenance at noon"]
    assert cluster.admin("a", "disconnect_all", reason="moving").ok
    assert alice.closed[0] == bob.closed[0] == "disconnected"
    assert cluster.audit["b"][-1] == "admin act from node a: disconnect_all: " \
                                     "disconnected 1 session here"


def test_a_shutdown_with_a_node_stops_that_node_only_and_without_one_every_node(cluster):
    _, alice = login(cluster["a"], "alice")
    _, bob = login(cluster["b"], "bob")
    reply = cluster.admin("a", "shutdown", node="b", reason="upgrade")
    assert reply.text == "shutdown sent to node b; this node (a) stays up"
    assert bob.closed == ("shutdown", "the server is shutting down: upgrade")
    assert cluster.shutdowns == {"a": [], "b": [1]} and alice.closed is None
    assert cluster.admin("a", "shutdown", node="a").ok
    assert cluster.shutdowns == {"a": [1], "b": [1]}
    cluster.admin("b", "shutdown")
    assert cluster.shutdowns == {"a": [1, 1], "b": [1, 1]}


def test_an_act_heard_twice_is_done_once_and_a_bad_one_is_dropped(cluster):
    cluster.admin("a", "broadcast", reason="once")
    _, bob = login(cluster["b"], "bob")
    settle(cluster["b"])
    replay = cluster.hub.kept[-1]
    cluster["b"].cluster.heard(replay)
    assert bob.of(wire.Notice) == [n for n in bob.of(wire.Notice) if n.text != "server: once"]
    before = cluster["b"].cluster.ignored
    for body in ({"op": "explode"}, {"op": "kick", "name": 3, "reason": "", "node": ""},
                 {"op": "ban", "name": "bob", "reason": "", "node": "", "until": "soon"}):
        cluster["a"].cluster.send(ACT, body)
    assert cluster["b"].cluster.ignored == before + 3 and bob.closed is None


def test_alone_a_shutdown_of_another_node_is_refused_and_a_kick_of_nobody_too():
    clock = task.Clock()
    shutdowns = []
    core = ChatCore(clock, Limits(), admin_token=TOKEN, node="solo",
                    on_shutdown=lambda: shutdowns.append(1))
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.AdminLogin(TOKEN))
    core.receive(link, wire.AdminRequest("r", "shutdown", node="other"))
    core.receive(link, wire.AdminRequest("r", "kick", name="nobody"))
    assert [(r.ok, r.text) for r in conn.of(wire.AdminReply)[1:]] == [
        (False, "this server is node 'solo', not 'other'"),
        (False, "nobody called 'nobody' is here")]
    assert shutdowns == []


# --- the rooms' state ------------------------------------------------------------


def say(core, link, msg):
    core.receive(link, msg)
    settle(core)


def topics(conn, room="lobby"):
    return [m.topic for m in conn.of(wire.RoomState) if m.room == room]


def test_a_topic_and_a_mode_set_on_one_node_reach_members_on_another_and_newcomers(cluster):
    alice_link, alice = login(cluster["a"], "alice")
    _, bob = login(cluster["b"], "bob")
    settle(cluster["b"])
    say(cluster["a"], alice_link, wire.Topic("lobby", "read the rules"))
    settle(cluster["b"])
    assert topics(bob)[-1] == "read the rules"
    assert [n.text for n in bob.of(wire.Notice) if n.kind == "topic"] == [
        "alice set the topic: read the rules"]
    assert cluster.admin("a", "room_mode", room="lobby", action="topic_locked", on=True).ok
    settle(cluster["b"])
    assert bob.of(wire.RoomState)[-1].topic_locked
    _, carol = login(cluster["b"], "carol")  # a newcomer on b
    assert carol.of(wire.RoomState)[-1] == cluster["a"].directory.get("lobby").state()
    assert cluster.audit["b"] == []  # room changes are the nodes' own, not the admin's acts


def test_an_operator_on_one_node_kicks_bans_and_mutes_members_on_another(cluster):
    cluster.admin("a", "room_mode", room="lobby", action="moderated", on=False)
    _, bob = login(cluster["b"], "bob")
    _, carol = login(cluster["b"], "carol")
    dave_link, dave = login(cluster["b"], "dave")
    reply = cluster.admin("a", "room_moderate", room="lobby", action="kick", name="bob",
                          reason="rude")
    assert reply.text == "the kick of bob from #lobby was sent to every node"
    settle(cluster["b"])
    assert bob.of(wire.RoomLeft)[-1] == wire.RoomLeft(
        "lobby", "kicked", "you were kicked from #lobby by the administrator: rude",
        "the administrator", "rude")
    assert "bob" not in cluster["b"].directory.get("lobby").members
    assert [n.text for n in dave.of(wire.Notice) if n.kind == "kick"] == [
        "bob was kicked by the administrator (rude)"]

    assert cluster.admin("a", "room_moderate", room="lobby", action="ban", name="carol",
                         reason="spam").ok
    settle(cluster["b"])
    assert carol.of(wire.RoomLeft)[-1].code == "banned"
    assert [n.kind for n in dave.of(wire.Notice)].count("ban") == 1
    carol_link = next(link for link in cluster["b"].links if link.conn is carol)
    cluster["b"].receive(carol_link, wire.Join("lobby"))
    assert carol.of(wire.Error)[-1].code == "banned"

    assert cluster.admin("a", "room_moderate", room="lobby", action="mute", name="dave").ok
    settle(cluster["b"])
    assert dave.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("lobby", "dave", "online",
                                                               "muted")
    cluster["b"].receive(dave_link, wire.Say("c1", "hello", "lobby"))
    assert dave.of(wire.Error)[-1].code == "muted"


def test_a_room_made_and_deleted_on_one_node_is_made_and_deleted_on_the_others(cluster):
    alice_link, alice = login(cluster["a"], "alice")
    say(cluster["a"], alice_link, wire.Join("dev"))
    assert cluster["b"].directory.get("dev") is not None
    bob_link, bob = login(cluster["b"], "bob")
    say(cluster["b"], bob_link, wire.Join("dev"))
    assert cluster.admin("a", "room_delete", room="dev").ok
    assert cluster["b"].directory.get("dev") is None
    assert bob.of(wire.RoomLeft)[-1] == wire.RoomLeft(
        "dev", "deleted", "#dev was deleted by the administrator")


def test_a_room_made_on_a_node_that_did_not_hear_of_it_keeps_the_first_makers_settings(
        cluster):
    cluster.hub.up = False  # b hears nothing of #dev
    alice_link, alice = login(cluster["a"], "alice")
    say(cluster["a"], alice_link, wire.Join("dev", private=True))
    say(cluster["a"], alice_link, wire.Topic("dev", "alice's"))
    assert cluster["b"].directory.get("dev") is None
    bob_link, bob = login(cluster["b"], "bob")
    say(cluster["b"], bob_link, wire.Join("dev"))
    room = cluster["b"].directory.get("dev")
    assert (room.topic, room.private) == ("alice's", True)
    assert room.role_of("bob") == "member" and "bob" not in room.members
    assert bob.of(wire.RoomLeft)[-1] == wire.RoomLeft(
        "dev", "invite_only", "#dev was made a moment before, elsewhere, and is private")
    assert fired(cluster.store.room("dev")).topic == "alice's"


def test_a_room_notice_lost_is_caught_up_on_reconnecting_and_by_the_periodic_check(cluster):
    alice_link, alice = login(cluster["a"], "alice")
    _, bob = login(cluster["b"], "bob")
    cluster.hub.up = False
    say(cluster["a"], alice_link, wire.Topic("lobby", "said while b was away"))
    settle(cluster["b"])
    assert topics(bob) == [""]
    cluster.hub.back()
    settle(cluster["b"])
    assert topics(bob)[-1] == "said while b was away"

    cluster.hub.up = False
    say(cluster["a"], alice_link, wire.Topic("lobby", "lost without a reconnect"))
    cluster.hub.up = True
    cluster.clock.advance(CHECK_SECONDS)
    settle(cluster["b"])
    assert topics(bob)[-1] == "lost without a reconnect"
    assert topics(bob).count("lost without a reconnect") == 1


def test_a_room_notice_that_does_not_parse_is_dropped_and_counted(cluster):
    _, bob = login(cluster["b"], "bob")
    before = cluster["b"].cluster.ignored
    for body in ({"room": 5}, {"room": "lobby", "notice": ["topic"]},
                 {"room": "lobby", "notice": None, "leave": ["bob", "kicked", 3]}):
        cluster["a"].cluster.send(ROOM, body)
    assert cluster["b"].cluster.ignored == before + 3
    assert bob.of(wire.RoomLeft) == []


class SlowRooms(MemoryStore):
    """A room read sees the room as it is when asked, and comes back when
    ``answer()`` says (or fails, while ``failing``)."""

    def __init__(self):
        super().__init__()
        self.asked = []
        self.failing = False

    def room(self, key):
        seen, later = super().room(key), defer.Deferred()
        self.asked.append((seen, later))
        return later

    def answer(self):
        while self.asked:
            seen, later = self.asked.pop(0)
            if self.failing:
                later.errback(RuntimeError("the database is away"))
            else:
                seen.chainDeferred(later)


def test_a_room_read_begun_before_a_change_here_is_read_again_not_applied():
    store = SlowRooms()
    cluster = Cluster(store=store)
    alice_link, alice = login(cluster["a"], "alice")
    bob_link, bob = login(cluster["b"], "bob")
    say(cluster["a"], alice_link, wire.Topic("lobby", "alice's"))  # b begins to read it
    say(cluster["b"], bob_link, wire.Topic("lobby", "bob's"))  # and changes it meanwhile
    store.answer()  # b's read saw alice's topic: stale now
    store.answer()  # read again, behind bob's change
    settle(cluster["b"])
    assert cluster["b"].directory.get("lobby").topic == "bob's"
    assert topics(bob) == ["", "bob's"]  # never back to alice's
    assert cluster["a"].directory.get("lobby").topic == "bob's"


def test_a_room_read_that_fails_is_tried_again_and_what_it_told_still_comes():
    store = SlowRooms()
    cluster = Cluster(store=store)
    _, bob = login(cluster["b"], "bob")
    store.failing = True
    cluster.admin("a", "room_moderate", room="lobby", action="kick", name="bob")
    cluster.admin("a", "room_topic", room="lobby", reason="after the kick")
    store.answer()
    assert cluster["b"].directory.get("lobby").members  # not yet
    store.failing = False
    cluster.clock.advance(READ_RETRY_SECONDS)
    store.answer()
    settle(cluster["b"])
    assert bob.of(wire.RoomLeft)[-1].code == "kicked"
    assert cluster["b"].directory.get("lobby").topic == "after the kick"


def test_an_invitation_on_one_node_lets_in_someone_on_another(cluster):
    alice_link, alice = login(cluster["a"], "alice")
    bob_link, bob = login(cluster["b"], "bob")
    say(cluster["a"], alice_link, wire.Join("club", private=True))
    cluster["b"].receive(bob_link, wire.Join("club"))
    assert bob.of(wire.Error)[-1].code == "invite_only"
    say(cluster["a"], alice_link, wire.Moderate("club", "invite", "bob"))
    assert bob.of(wire.Notice)[-1] == wire.Notice(
        "club", bob.of(wire.Notice)[-1].ts, "invite",
        "alice invited you to #club; /join #club to accept", "bob", "alice")
    say(cluster["b"], bob_link, wire.Join("club"))
    assert "bob" in cluster["b"].directory.get("club").members


@pytest.mark.parametrize("action", ["kick", "ban"])
def test_a_member_put_out_on_another_node_is_told_once_to_every_node(action):
    cluster = Cluster(names=("a", "b", "c"))
    cluster.admin("a", "room_mode", room="lobby", action="moderated", on=False)
    _, bob = login(cluster["b"], "bob")
    watchers = {name: login(cluster[name], f"eve{name}")[1] for name in ("a", "b", "c")}
    for name in ("a", "b", "c"):
        settle(cluster[name])
    assert cluster.admin("a", "room_moderate", room="lobby", action=action, name="bob",
                         reason="rude").ok
    for _ in range(5):  # the room notice, the reads, bob's node's roster news
        for name in ("a", "b", "c"):
            settle(cluster[name])
    assert bob.of(wire.RoomLeft)[-1].code == ("kicked" if action == "kick" else "banned")
    for name, watcher in watchers.items():
        told = [n.text for n in watcher.of(wire.Notice) if n.kind == action]
        assert len(told) == 1, (name, told)
        assert watcher.of(wire.MemberUpdate)[-1].state == "gone"


def test_what_the_nodes_count_of_each_room_is_let_go_once_it_is_read():
    cluster = Cluster()
    alone = ChatCore(cluster.clock, Limits(), store=MemoryStore(), admin_token=TOKEN)
    alone.start()
    for core in (cluster["a"], alone):
        link, _ = login(core, "alice")
        for n in range(20):  # rooms made and their topics set
            say(core, link, wire.Join(f"room{n}"))
            say(core, link, wire.Topic(f"room{n}", "a topic"))
    cluster.clock.advance(0)
    assert cluster["b"].directory.get("room19").topic == "a topic"  # read there
    assert cluster["b"].room_news._read_rooms == {}
    assert alone.room_commands.writes == {}
    # Where they were made, until the next read of rooms (once a minute at most).
    cluster.clock.advance(CHECK_SECONDS)
    assert cluster["a"].room_commands.writes == {}
