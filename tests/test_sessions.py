"""Sessions across dropped connections, in the core, with task.Clock for time:
lifecycle, resume and replay, de-duplication, idle sweeps, flood control, kick."""

import pytest

from spchat import wire
from spchat.server.core import ROOM_EVENT_SECONDS, ChatCore, Limits, State

from helpers import MemoryClient, login

T0 = 1_700_000_000


def settle(core):
    core.clock.advance(ROOM_EVENT_SECONDS)


def make_core(clock, **limits):
    return ChatCore(clock, Limits(**limits))


@pytest.fixture
def core(clock):
    return make_core(clock)


def resume(core, welcome, seen=None):
    """Resume as a client that has seen #lobby up to ``seen`` (None: knows
    no conversation yet)."""
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:2")
    positions = () if seen is None else (("#lobby", seen),)
    core.receive(link, wire.Resume(welcome.session, welcome.token, positions,
                                   welcome.server_time))
    return link, conn


def vars_of(msg):
    return {name: getattr(msg, name) for name in msg.SCHEMA}


def texts(conn):
    return [m.text for m in conn.sent if isinstance(m, (wire.RoomMessage, wire.DirectMessage))]


def test_lifecycle_states_and_times(core, clock):
    alice, a = login(core, "alice")
    session = alice.session
    assert (session.state, session.first_connected_at, session.state_since) == (
        State.CONNECTED, T0, T0)
    clock.advance(5)
    core.link_lost(alice)
    assert (session.state, session.state_since) == (State.RECONNECTING, T0 + 5)
    clock.advance(7)
    again, _ = resume(core, a.of(wire.Welcome)[0], 0)
    assert (session.state, session.state_since) == (State.CONNECTED, T0 + 12)
    assert session.first_connected_at == T0
    clock.advance(1)
    core.link_lost(again)
    clock.advance(29.9)
    assert session.state is State.RECONNECTING
    clock.advance(0.1)  # the grace (30 s) is over
    assert (session.state, session.state_since) == (State.OFFLINE, T0 + 43)
    assert session.offline_reason == "did not reconnect"
    assert "alice" not in core.by_key and not core.directory.get("lobby").members


def test_reconnecting_member_stays_in_the_room_until_the_grace_ends(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.link_lost(bob)
    assert core.presence_snapshot() == (("alice", "online"), ("bob", "reconnecting"))
    assert not [n for n in a.of(wire.Notice) if n.kind in ("leave", "quit")]
    clock.advance(30)
    settle(core)  # comings and goings go out together, a moment later
    assert a.of(wire.Notice)[-1].text == "bob left (connection lost)"
    assert core.presence_snapshot() == (("alice", "idle"),)  # 30 s without a word


def test_resume_replays_what_was_missed_in_order(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.receive(alice, wire.Say("one", "a1"))
    welcome = b.of(wire.Welcome)[0]
    seen = b.of(wire.RoomMessage)[-1].seq
    core.link_lost(bob)
    core.receive(alice, wire.Say("two", "a2"))
    core.receive(alice, wire.Direct("bob", "three", "a3"))
    core.receive(alice, wire.Say("four", "a4"))
    bob2, b2 = resume(core, welcome, seen)
    (again,) = b2.of(wire.Welcome)
    assert again.resumed and again.session == welcome.session
    assert again.token == welcome.token  # may be needed again if this link drops too
    # Each conversation in its own order: the room's, then the direct one
    # (which bob's client did not know yet: replayed from its first welcome).
    assert texts(b2) == ["two", "four", "three"]
    assert [m.seq for m in b2.of(wire.RoomMessage)] == [2, 3]
    assert [m.seq for m in b2.of(wire.DirectMessage)] == [1]
    settle(core)  # the whole list comes with the room's next events
    assert b2.of(wire.Members)[-1].members == (("alice", "online", "member"),
                                              ("bob", "online", "member"))
    # A wrong token resumes nothing.
    forged = wire.Welcome(**{**vars_of(welcome), "token": "x" * len(welcome.token)})
    _, thief = resume(core, forged, 0)
    assert thief.of(wire.Error)[0].code == "resume_failed"
    assert bob2.session.link is bob2  # and takes nothing over


def test_replay_includes_the_senders_own_acknowledgements(core):
    alice, a = login(core, "alice")
    welcome = a.of(wire.Welcome)[0]
    core.receive(alice, wire.Say("sent just before the drop", "c1"))
    core.link_lost(alice)
    _, a2 = resume(core, welcome, 0)
    (replayed,) = a2.of(wire.RoomMessage)
    assert replayed.cid == "c1"  # the ack that was lost with the connection


def test_resent_message_is_stored_once_and_acknowledged_again(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    welcome = a.of(wire.Welcome)[0]
    core.receive(alice, wire.Say("hello", "c1"))
    core.link_lost(alice)
    alice2, a2 = resume(core, welcome, 0)
    core.receive(alice2, wire.Say("hello", "c1"))  # the outbox, sent again
    core.receive(alice2, wire.Direct("bob", "psst", "c2"))
    core.receive(alice2, wire.Direct("bob", "psst", "c2"))
    assert texts(b) == ["hello", "psst"]
    acks = [(m.seq, m.cid) for m in a2.sent if getattr(m, "cid", None)]
    assert acks == [(1, "c1"), (1, "c1"), (1, "c2"), (1, "c2")]
    assert core.directory.get("lobby").last_seq == 1


def test_takeover_when_the_client_notices_the_drop_first(core):
    alice, a = login(core, "alice")
    welcome = a.of(wire.Welcome)[0]
    # No link_lost: the server still thinks the old connection is up.
    alice2, a2 = resume(core, welcome, 0)
    assert a.closed[0] == "replaced"
    assert alice2.session.state is State.CONNECTED
    core.link_lost(alice)  # the old connection finally goes: nothing changes
    assert alice2.session.state is State.CONNECTED


BOBS_OUTBOX = "bob's outbox secret"


def test_expired_session_logs_in_again_and_catches_up(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob", outbox=BOBS_OUTBOX)
    core.receive(alice, wire.Say("before", "a1"))
    seen = b.of(wire.RoomMessage)[-1].seq
    welcome = b.of(wire.Welcome)[0]
    core.link_lost(bob)
    core.receive(alice, wire.Say("during", "a2"))
    core.receive(alice, wire.Direct("bob", "for bob", "a3"))
    clock.advance(31)
    core.receive(alice, wire.Say("after", "a4"))
    _, refused = resume(core, welcome, seen)
    assert refused.of(wire.Error)[0].code == "resume_failed"
    conn = MemoryClient()
    bob2 = core.open_link(conn, "127.0.0.1:3")
    # "I have seen #lobby up to here, and was here since my first welcome"
    core.receive(bob2, wire.Login("bob", positions=(("#lobby", seen),),
                                  since=welcome.server_time, outbox=BOBS_OUTBOX))
    assert texts(conn) == ["during", "after", "for bob"]  # the direct line is his
    assert not any(m.history for m in conn.of(wire.RoomMessage))


def test_a_replay_beyond_its_limit_is_reported_as_a_gap(clock, monkeypatch):
    from spchat.server import messaging

    monkeypatch.setattr(messaging, "MAX_REPLAY", 3)
    core = make_core(clock, flood_burst=100)
    alice, a = login(core, "alice")
    for i in range(6):
        core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    _, a = resume(core, a.of(wire.Welcome)[0], 0)  # replay from the very start
    gap = [n for n in a.of(wire.Notice) if n.kind == "gap"]
    assert gap and "3 older messages" in gap[0].text
    assert texts(a)[-3:] == ["m3", "m4", "m5"]


def test_zero_grace_goes_offline_at_once(clock):
    core = make_core(clock, resume_grace=0)
    alice, a = login(core, "alice")
    session = alice.session
    core.link_lost(alice)
    assert session.state is State.OFFLINE


def test_a_reader_stays_past_many_timeouts_shown_idle_while_it_keeps_alive(clock):
    core = make_core(clock, idle_timeout=60, idle_after=30)
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    assert a.of(wire.Welcome)[0].keepalive_ms == 20_000  # three chances per timeout
    for minute in range(10):  # alice only reads: her client keeps alive
        core.receive(bob, wire.Say(f"minute {minute}", f"b{minute}"))
        for _ in range(3):
            clock.advance(20)
            core.receive(alice, wire.Keepalive())
            core.receive(bob, wire.Keepalive())
            core.sweep()
    assert a.closed is None and alice.session.state is State.CONNECTED
    assert texts(a)[-1] == "minute 9"  # every line, live
    core.receive(bob, wire.Who())
    assert core.presence_snapshot() == (("alice", "idle"), ("bob", "online"))
    assert not [e for e in a.sent if isinstance(e, wire.Error)]  # keepalives unanswered
    settle(core)
    assert not [n for n in b.of(wire.Notice) if n.kind in ("leave", "quit")]


def test_a_silent_connection_is_freed_and_its_session_waits_to_be_resumed(clock):
    core = make_core(clock, idle_timeout=60, idle_after=30, resume_grace=30)
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    session = alice.session
    clock.advance(59)
    core.receive(bob, wire.Keepalive())
    core.sweep()
    assert a.closed is None
    clock.advance(1)
    core.sweep()  # 60 s without a word from alice's connection: dead
    assert a.closed == ("timeout", "nothing heard from this connection for 60 s")
    assert b.closed is None and alice not in core.links
    assert core.presence_snapshot() == (("alice", "reconnecting"), ("bob", "idle"))
    again, a2 = resume(core, a.of(wire.Welcome)[0], 0)  # it was only asleep
    assert a2.of(wire.Welcome)[0].resumed and session.state is State.CONNECTED
    core.link_lost(again)
    clock.advance(30)
    settle(core)
    assert b.of(wire.Notice)[-1].text == "alice left (connection lost)"


def test_front_ends_that_watch_their_own_connections_are_left_alone(clock):
    class Watched(MemoryClient):
        watches_liveness = True  # as IRC's PING watch does

    core = make_core(clock, idle_timeout=60)
    conn = Watched()
    link = core.open_link(conn, "127.0.0.1:1")
    core.receive(link, wire.Login("alice"))
    clock.advance(600)
    core.sweep()
    assert conn.closed is None and link.session is not None


def test_idle_timeout_zero_never_disconnects(clock):
    core = make_core(clock, idle_timeout=0)
    alice, a = login(core, "alice")
    clock.advance(10_000)
    core.sweep()
    assert a.closed is None


def test_presence_listeners_hear_every_change(clock):
    # The core calls its listeners whenever presence may have changed; the
    # beacon compares snapshots (cheaply, once per turn), so here: dedupe.
    core = make_core(clock, idle_after=1000)
    changes = []

    def heard():
        snapshot = core.presence_snapshot()
        if not changes or changes[-1] != snapshot:
            changes.append(snapshot)

    core.presence_listeners.append(heard)
    alice, _ = login(core, "alice")
    bob, _ = login(core, "bob")
    core.sweep()  # nothing changed: nothing new heard
    core.link_lost(bob)
    clock.advance(31)
    assert changes == [
        (("alice", "online"),),
        (("alice", "online"), ("bob", "online")),
        (("alice", "online"), ("bob", "reconnecting")),
        (("alice", "online"),),
    ]


def test_flood_is_delayed_then_cut(clock):
    core = make_core(clock, flood_burst=3, flood_rate=2, flood_queue=4)
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    for i in range(7):
        core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    assert texts(b) == ["m0", "m1", "m2"]  # the burst; four wait
    clock.advance(0.5)
    assert texts(b) == ["m0", "m1", "m2", "m3"]  # one token per 0.5 s
    clock.advance(1.5)
    assert texts(b) == [f"m{i}" for i in range(7)]  # nothing lost, only late
    assert a.closed is None
    for i in range(7, 15):  # keeps flooding: over the queue
        core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    assert "flood" in [e.code for e in a.of(wire.Error)]
    assert a.closed[0] == "flood"
    settle(core)  # comings and goings go out together, a moment later
    assert b.of(wire.Notice)[-1].text == "alice left (flooding)"
    # Bob was never held up.
    core.receive(bob, wire.Say("fine", "b1"))
    assert texts(b)[-1] == "fine"


def test_a_stopping_server_runs_no_more_timers(clock):
    # After stopService the store is closed: a flood drain or grace timer
    # firing then would crash on it.
    core = make_core(clock, flood_burst=1, flood_rate=1, flood_queue=10, resume_grace=5)
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    for i in range(3):
        core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    core.link_lost(bob)  # bob's grace period starts
    assert clock.getDelayedCalls()
    core.stop()
    assert [c for c in clock.getDelayedCalls() if c.active()] == []
    clock.advance(10)
    assert texts(a) == ["m0"]  # the waiting two were not sent after the stop
    # Connections closing after the stop, or a last message, start nothing.
    core.receive(alice, wire.Say("late", "c9"))
    core.link_lost(alice)
    assert [c for c in clock.getDelayedCalls() if c.active()] == []
    assert texts(a) == ["m0"]


def test_welcome_window_fits_the_flood_queue(clock):
    core = make_core(clock, flood_queue=20)
    _, a = login(core, "alice")
    assert a.of(wire.Welcome)[0].max_in_flight == 10


def test_kick_takes_the_session_offline_at_once(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    session = alice.session
    assert core.kick("ALICE", "spamming")
    assert a.closed == ("kicked", "you were kicked: spamming")
    assert session.state is State.OFFLINE and session.offline_reason == "kicked: spamming"
    settle(core)  # comings and goings go out together, a moment later
    assert b.of(wire.Notice)[-1].text == "alice was kicked (spamming)"
    # No way back by auto-reconnect: the resume is told about the kick again.
    link, again = resume(core, a.of(wire.Welcome)[0], 0)
    assert again.closed == ("kicked", "you were kicked: spamming")
    assert link.session is None and "alice" not in core.by_key
    assert not core.kick("nobody", "x")


def test_counters(core):
    alice, a = login(core, "alice")
    core.traffic(alice, received=100, sent=250)
    core.receive(alice, wire.Say("x", "1"))
    core.receive(alice, wire.Direct("alice", "y", "2"))
    s = alice.session
    assert (s.messages_sent, s.bytes_in, s.bytes_out) == (2, 100, 250)


def test_kick_while_reconnecting_is_not_undone_by_the_resume(core):
    bob, b = login(core, "bob")
    welcome = b.of(wire.Welcome)[0]
    core.link_lost(bob)
    assert core.kick("bob", "rude")
    link, again = resume(core, welcome, 0)
    assert again.closed == ("kicked", "you were kicked: rude")
    assert "bob" not in core.by_key


def test_resent_messages_do_not_count_twice_against_flood_control(clock):
    core = make_core(clock, flood_burst=10, flood_rate=5, flood_queue=15)
    alice, a = login(core, "alice")
    welcome = a.of(wire.Welcome)[0]
    for i in range(20):  # 10 go now, 10 wait
        core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    for _ in range(2):  # two quick drops; each time the client sends the 10 again
        core.link_lost(alice)
        alice, a = resume(core, welcome, 0)
        for i in range(10, 20):
            core.receive(alice, wire.Say(f"m{i}", f"c{i}"))
    assert a.closed is None
    clock.advance(5)
    assert [m.text for m in a.of(wire.RoomMessage)][-10:] == [f"m{i}" for i in range(10, 20)]
    assert core.directory.get("lobby").last_seq == 20


def test_a_strange_token_is_refused_not_crashed_on(core):
    alice, a = login(core, "alice")
    welcome = a.of(wire.Welcome)[0]
    link, conn = resume(core, wire.Welcome(**{**vars_of(welcome), "token": "é" * 10}), 0)
    assert conn.of(wire.Error)[0].code == "resume_failed"


def test_a_direct_message_resent_after_its_recipient_left_is_acknowledged(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    welcome = a.of(wire.Welcome)[0]
    core.receive(alice, wire.Direct("bob", "psst", "d1"))
    core.link_lost(alice)
    core.receive(bob, wire.Logout())
    alice2, a2 = resume(core, welcome, 0)
    core.receive(alice2, wire.Direct("bob", "psst", "d1"))  # the outbox again
    assert not a2.of(wire.Error)
    assert [m.cid for m in a2.of(wire.DirectMessage)] == ["d1", "d1"]  # replay, then re-ack


def test_a_stopping_server_still_sends_the_last_comings_and_goings(clock):
    core = make_core(clock)
    alice, a = login(core, "alice")
    bob, _ = login(core, "bob")
    core.receive(bob, wire.Logout())
    core.stop()  # before the 0.1 s were up
    assert a.of(wire.Notice)[-1].text == "bob left"
