"""Chat rules of the sans-IO core, with a recording connection and a fake clock."""

import pytest
from hypothesis import given, strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from spchat import wire
from spchat.server.core import MAX_EARLY_MESSAGES, ChatCore, Limits, Refused, normalise_name
from spchat.server.memory_store import MemoryStore

from helpers import Batching, Deaf, MemoryClient, login, settle


@pytest.fixture
def core(clock):
    return ChatCore(clock, Limits(max_message_bytes=100))


def test_login_welcomes_and_announces(core):
    alice, a = login(core, "Alice")
    (welcome,) = a.of(wire.Welcome)
    assert welcome.name == "Alice" and welcome.server_time == 1_700_000_000_000
    assert [r.room for r in a.of(wire.RoomState)] == ["lobby"]  # the default room
    settle(core)  # comings and goings (and a newcomer's list) go out a moment later
    bob, b = login(core, "bob")
    settle(core)
    assert [n.text for n in a.of(wire.Notice)] == ["Alice joined", "bob joined"]
    # The newcomer gets the whole list; the others only the change.
    assert [m.names for m in b.of(wire.Members)] == [("Alice", "bob")]
    assert [m.names for m in a.of(wire.Members)] == [("Alice",)]
    assert a.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("lobby", "bob", "online", "member")


def test_a_storm_of_joins_gives_each_newcomer_one_whole_list(core):
    conns = [login(core, f"user{i:03}")[1] for i in range(300)]
    early = conns[0].of(wire.Members)
    assert early == []  # not yet: the list goes with the room's next events
    gone, g = login(core, "gone")
    core.receive(gone, wire.Logout())
    settle(core)
    names = tuple(f"user{i:03}" for i in range(300))
    for conn in conns:
        assert [m.names for m in conn.of(wire.Members)] == [names]
        # The list comes before the events it already shows.
        kinds = [type(m) for m in conn.sent if isinstance(m, (wire.Members, wire.Notice))]
        assert kinds[0] is wire.Members
    assert g.of(wire.Members) == []  # left before the list was due
    # Asked for, it comes at once.
    who, w = login(core, "who")
    core.receive(who, wire.Who())
    assert [m.names for m in w.of(wire.Members)] == [tuple(sorted(names + ("who",)))]


def test_one_commit_of_many_lines_reaches_everyone_in_order_with_each_sender_acked(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    _, c = login(core, "carol")  # sends nothing: gets the frames made once
    settle(core)
    committer = Batching(core)
    for conn in (a, b, c):
        conn.clear()
    core.receive(alice, wire.Say("one", "a1"))
    core.receive(bob, wire.Say("two", "b1"))
    core.receive(alice, wire.Direct("bob", "psst", "a2"))
    core.receive(alice, wire.Say("three", "a3"))
    assert a.sent == b.sent == c.sent == []  # nothing before it is saved
    committer.commit()
    seen = {name: [(m.seq, m.text, m.cid) for m in conn.sent]
            for name, conn in (("alice", a), ("bob", b), ("carol", c))}
    # The room numbers its lines; the direct conversation its own.
    assert seen["alice"] == [(1, "one", "a1"), (2, "two", None), (1, "psst", "a2"),
                             (3, "three", "a3")]
    assert seen["bob"] == [(1, "one", None), (2, "two", "b1"), (1, "psst", None),
                           (3, "three", None)]
    assert seen["carol"] == [(1, "one", None), (2, "two", None), (3, "three", None)]


def test_say_stamps_and_delivers_to_everyone_with_ack_for_sender(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.clock.advance(1.5)
    core.receive(alice, wire.Say("hello", "c1"))
    core.receive(bob, wire.Say("hi", "c9"))
    a_msgs, b_msgs = a.of(wire.RoomMessage), b.of(wire.RoomMessage)
    assert [(m.seq, m.sender, m.text) for m in a_msgs] == [(1, "alice", "hello"), (2, "bob", "hi")]
    assert [(m.seq, m.text) for m in b_msgs] == [(1, "hello"), (2, "hi")]
    assert a_msgs[0].ts == 1_700_000_001_500
    # Only the sender's own copy carries its cid: that is the acknowledgement.
    assert a_msgs[0].cid == "c1" and b_msgs[0].cid is None
    assert b_msgs[1].cid == "c9" and a_msgs[1].cid is None


def test_taken_name_is_refused_case_and_width_insensitively(core):
    login(core, "Alice")
    for other in ["alice", "ALICE", "Ａｌｉｃｅ"]:  # the last is fullwidth
        session, conn = login(core, other)
        (error,) = conn.of(wire.Error)
        assert error.code == "name_taken" and "taken" in error.text
        assert session.session is None


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "1 to 32"),
        ("x" * 33, "1 to 32"),
        ("two words", "' '"),
        ("semi;colon", "';'"),
        ("tab\t", "'\\t'"),
        ("esc\x1b[31m", "'\\x1b'"),
        ("zero\u200bwidth", "'\\u200b'"),
    ],
)
def test_invalid_names_are_refused_with_the_rule(core, name, why):
    session, conn = login(core, name)
    (error,) = conn.of(wire.Error)
    assert error.code == "name_invalid" and why in error.text
    assert session.session is None and not core.directory.get("lobby").members


def test_name_rules_keep_display_form():
    assert normalise_name("Zoë.B-2_") == ("Zoë.B-2_", "zoë.b-2_")
    assert normalise_name("ﬁne") == ("fine", "fine")  # ligature folded by NFKC
    with pytest.raises(Refused):
        normalise_name("a/b")


def test_message_limits(core):
    alice, a = login(core, "alice")
    core.receive(alice, wire.Say("é" * 50, "ok"))  # exactly 100 bytes
    core.receive(alice, wire.Say("é" * 50 + "x", "long"))
    core.receive(alice, wire.Say("   ", "blank"))
    core.receive(alice, wire.Say("bell\x07", "ctl"))
    assert [m.cid for m in a.of(wire.RoomMessage)] == ["ok"]
    errors = {e.cid: e for e in a.of(wire.Error)}
    assert errors["long"].code == "too_long"
    assert "101 bytes" in errors["long"].text and "100 bytes" in errors["long"].text
    assert errors["blank"].code == "empty"
    assert errors["ctl"].code == "bad_text"


def test_messages_before_login_are_refused(core):
    conn = MemoryClient()
    link = core.open_link(conn, "x")
    core.receive(link, wire.Say("hi", "c"))
    assert conn.of(wire.Error)[0].code == "not_logged_in"
    assert not conn.of(wire.RoomMessage)


def test_second_login_is_refused(core):
    alice, a = login(core, "alice")
    core.receive(alice, wire.Login("other"))
    assert a.of(wire.Error)[0].code == "already_logged_in"
    assert "other" not in core.by_key


def test_server_only_messages_from_a_client_are_refused(core):
    alice, a = login(core, "alice")
    core.receive(alice, wire.Notice("lobby", 1, "join", "fake"))
    assert a.of(wire.Error)[0].code == "unexpected"


def test_direct_message_reaches_only_the_target(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    core.receive(alice, wire.Direct("BOB", "psst", "d1"))
    (to_bob,) = b.of(wire.DirectMessage)
    (ack,) = a.of(wire.DirectMessage)
    assert (to_bob.sender, to_bob.to, to_bob.text, to_bob.cid) == ("alice", "bob", "psst", None)
    assert ack.cid == "d1" and ack.seq == to_bob.seq
    assert not c.of(wire.DirectMessage)
    core.receive(alice, wire.Direct("nobody", "?", "d2"))
    refused = a.of(wire.Error)[-1]
    assert (refused.code, refused.cid) == ("unknown_user", "d2")
    # Nobody is led to think it waits for them.
    assert refused.text == ("nobody called 'nobody' is online, and direct messages are kept "
                            "only for registered names: send it again when they are back")
    core.receive(alice, wire.Direct("alice", "note to self", "d3"))
    assert [m.cid for m in a.of(wire.DirectMessage)] == ["d1", "d3"]


def test_each_conversation_numbers_its_own_messages(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    core.receive(alice, wire.Say("one", "1"))
    core.receive(alice, wire.Direct("bob", "two", "2"))
    core.receive(bob, wire.Say("three", "3"))
    core.receive(bob, wire.Direct("alice", "four", "4"))
    core.receive(carol, wire.Direct("alice", "five", "5"))
    seqs = [(type(m).__name__, m.seq) for m in a.sent
            if isinstance(m, (wire.RoomMessage, wire.DirectMessage))]
    assert seqs == [("RoomMessage", 1), ("DirectMessage", 1), ("RoomMessage", 2),
                    ("DirectMessage", 2), ("DirectMessage", 1)]


def test_who_and_leave(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    a.clear()
    core.receive(alice, wire.Who())
    assert a.of(wire.Members) == [
        wire.Members("lobby", (("alice", "online", "member"), ("bob", "online", "member")))
    ]
    core.link_lost(bob)
    core.clock.advance(30)  # the resume grace
    settle(core)  # comings and goings go out together, a moment later
    assert a.of(wire.Notice)[-1].text == "bob left (connection lost)"
    assert a.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("lobby", "bob", "gone")
    # The name is free again.
    again, conn = login(core, "bob")
    assert again.session is not None


def test_logout_closes_and_announces(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.receive(bob, wire.Logout())
    assert b.closed == ("logout", "logged out")
    settle(core)  # comings and goings go out together, a moment later
    assert a.of(wire.Notice)[-1].kind == "quit"
    core.link_lost(bob)  # the connection then goes: nothing happens twice
    assert [n.kind for n in a.of(wire.Notice)].count("quit") == 1
    assert "bob" not in core.by_key


def test_invisible_formatting_characters_are_refused(core):
    alice, a = login(core, "alice")
    for i, text in enumerate(["abc\u202edcba", "line\u2028break", "iso\u2066late"]):
        core.receive(alice, wire.Say(text, f"c{i}"))
    assert [e.code for e in a.of(wire.Error)] == ["bad_text"] * 3
    core.receive(alice, wire.Say("emoji 👩\u200d💻 and accents é", "ok"))  # ZWJ is fine
    assert a.of(wire.RoomMessage)[-1].cid == "ok"


@given(st.text(max_size=64))
def test_refusals_quoting_user_input_are_always_valid_wire(to):
    core = ChatCore(Clock(), Limits())
    alice, a = login(core, "alice")
    core.receive(alice, wire.Direct(to, "hi", "c1"))
    core.receive(alice, wire.Say("hi", "c2", room=to or "x"))
    core.receive(alice, wire.Login(to))
    assert len(a.of(wire.Error)) >= 2  # and every one survived the codec


def test_the_text_check_knows_every_control_character():
    import sys
    import unicodedata

    from spchat.server.rules import _CONTROLS

    assert set(_CONTROLS) == {chr(c) for c in range(sys.maxunicode + 1)
                              if unicodedata.category(chr(c)) == "Cc"}


def test_comings_and_goings_go_out_together_and_before_the_next_line(core):
    alice, a = login(core, "alice")
    settle(core)
    a.clear()
    for name in ("b1", "b2", "b3"):
        login(core, name)
    assert a.of(wire.Notice) == []  # held for a moment...
    settle(core)
    assert [n.text for n in a.of(wire.Notice)] == ["b1 joined", "b2 joined", "b3 joined"]
    a.clear()
    dave, _ = login(core, "dave")
    core.receive(dave, wire.Say("hi all", "d1"))  # ...but never after what follows them
    kinds = [type(m).__name__ for m in a.sent]
    assert kinds.index("Notice") < kinds.index("RoomMessage")


def test_a_long_member_list_comes_in_parts_that_each_fit_a_frame(core):
    from spchat import noise
    from spchat.client.session import ChatClient
    from spchat.client.pins import PinStore

    names = [f"member{i:05d}-with-a-long-name" for i in range(1500)]
    for name in names:
        core.receive(core.open_link(Deaf(), "127.0.0.1:1"), wire.Login(name))
    newcomer, conn = login(core, "zz-last")
    settle(core)
    parts = conn.of(wire.Members)
    assert len(parts) > 1 and [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(len(wire.encode(p)) <= noise.MAX_PAYLOAD_LEN for p in parts)
    # A client puts the parts together and shows the whole list once.
    shown = []
    client = ChatClient(None, "127.0.0.1", 1, "zz-last", PinStore("/nonexistent"),
                        on_event=shown.append)
    for part in parts:
        client.message_received(part)
    assert len(shown) == 1 and len(shown[0].members) == len(names) + 1


def test_a_direct_message_does_not_overtake_its_senders_join(core):
    alice, a = login(core, "alice")
    settle(core)
    a.clear()
    bob, _ = login(core, "bob")
    core.receive(bob, wire.Direct("alice", "hi, just got here", "c1"))
    settle(core)
    kinds = [type(m).__name__ for m in a.sent]
    assert kinds == ["Notice", "MemberUpdate", "DirectMessage"]


def test_a_front_end_without_resume_ends_the_session_when_its_link_goes(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    core.link_lost(bob, resumable=False, reason="Quit: see you")
    assert "bob" not in core.by_key  # the name is free at once, no grace
    settle(core)
    quit_notice = a.of(wire.Notice)[-1]
    assert (quit_notice.kind, quit_notice.name, quit_notice.reason) == (
        "quit", "bob", "Quit: see you")
    assert quit_notice.text == "bob left (Quit: see you)"


class LoadingStore(MemoryStore):
    """A store whose rooms come when the test says (the database is slow,
    or away, and the start is tried again meanwhile)."""

    def __init__(self):
        super().__init__()
        self.loading = defer.Deferred()

    def load(self):
        loaded = super().load()
        return self.loading.addCallback(lambda _: loaded)


def test_what_waits_for_the_rooms_is_bounded(clock):
    """Until the rooms are loaded (a start tried again every few seconds
    while the database is away) what arrives waits: not without end.  A
    connection gone meanwhile leaves nothing behind, a sign of life is
    heard and not kept, and one that says too much before the server is
    ready is cut."""
    store = LoadingStore()
    core = ChatCore(clock, Limits(), store=store)
    core.start()
    for i in range(50):  # clients trying again, each cut before an answer
        gone, _ = login(core, f"user{i}")
        core.link_lost(gone)
    chatty = MemoryClient()
    link = core.open_link(chatty, "192.0.2.9:1")
    for _ in range(100):
        core.receive(link, wire.Keepalive())
    for _ in range(MAX_EARLY_MESSAGES + 1):
        core.receive(link, wire.Who())
    assert chatty.closed is not None and chatty.closed[0] == "starting"
    core.link_lost(link)
    _, waiting = login(core, "alice")
    assert sum(map(len, core._early.values())) == 1  # alice's login, only
    store.loading.callback(None)
    assert waiting.of(wire.Welcome) and not chatty.of(wire.Welcome)
