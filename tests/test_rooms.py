"""Rooms in the core, on task.Clock with the in-memory store: creating,
joining, parting, listing, topics, private rooms and invitations, each
role's powers and each refusal, room kicks and bans that stick, mutes,
membership kept across logins and resumes, and each room's own numbers."""

import pytest
from twisted.internet import defer

from spchat import wire
from spchat.server.core import ChatCore, Limits

from helpers import InstantPasswords, MemoryClient, fired, login, settle


@pytest.fixture
def core(clock):
    return ChatCore(clock, Limits(flood_burst=1000, flood_rate=1000, flood_queue=1000),
                    passwords=InstantPasswords())


class HeldSaving:
    """The store's appends held back, to be saved later (a slow disk)."""

    def __init__(self, log):
        self.log, self.real, self.held = log, log.append, []
        log.append = self._append

    def _append(self, records):
        d = defer.Deferred()
        self.held.append((d, records))
        return d

    def stop_holding(self):
        self.log.append = self.real

    def release(self):
        self.stop_holding()
        for d, records in self.held:
            self.real(records).chainDeferred(d)
        self.held = []


def hold_saving(core):
    return HeldSaving(core.messaging.committer.log)


def errors(conn):
    return [(e.code, e.text) for e in conn.of(wire.Error)]


def lines(conn, room=None):
    return [m.text for m in conn.of(wire.RoomMessage) if room is None or m.room == room]


def join(core, link, room, private=False):
    core.receive(link, wire.Join(room, private))
    settle(core)


def mod(core, link, op, room, name, **options):
    core.receive(link, wire.Moderate(room, op, name, **options))
    settle(core)


def test_join_creates_a_room_owned_by_its_creator_and_others_join_it(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "#Dev")
    (state,) = [s for s in a.of(wire.RoomState) if s.room == "Dev"]
    assert (state.topic, state.private, state.last_seq) == ("", False, 0)
    join(core, bob, "dev")  # with or without '#', any case
    members = [m for m in b.of(wire.Members) if m.room == "Dev"][-1].members
    assert members == (("alice", "online", "owner"), ("bob", "online", "member"))
    assert a.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("Dev", "bob", "online", "member")
    core.receive(alice, wire.ListRooms())
    assert a.of(wire.RoomList)[-1].rooms == (("Dev", 2, ""), ("lobby", 2, ""))


def test_lines_reach_exactly_the_members_of_their_room_each_room_numbered_alone(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "dev")
    join(core, bob, "dev")
    for conn in (a, b, c):
        conn.clear()
    core.receive(alice, wire.Say("in dev", "1", room="dev"))
    core.receive(carol, wire.Say("in lobby", "2", room="lobby"))
    core.receive(bob, wire.Say("dev again", "3", room="dev"))
    assert [(m.room, m.seq, m.text) for m in b.of(wire.RoomMessage)] == [
        ("dev", 1, "in dev"), ("lobby", 1, "in lobby"), ("dev", 2, "dev again")]
    assert lines(c) == ["in lobby"]  # carol is not in dev
    core.receive(carol, wire.Say("sneaking in", "4", room="dev"))
    assert errors(c)[-1][0] == "not_in_room"


def test_part_leaves_one_room_and_the_others_are_told(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    core.receive(bob, wire.Part("dev", "lunch"))
    settle(core)
    assert b.of(wire.RoomLeft)[-1] == wire.RoomLeft("dev", "part", "you left #dev", reason="lunch")
    assert a.of(wire.Notice)[-1].text == "bob left: lunch"
    assert a.of(wire.MemberUpdate)[-1].state == "gone"
    assert bob.session.rooms == {"lobby"}
    core.receive(bob, wire.Part("dev"))
    assert errors(b)[-1][0] == "not_in_room"


def test_a_newcomer_never_hears_of_someone_leaving_whom_it_never_saw(core):
    alice, _ = login(core, "alice")
    settle(core)
    gone, _ = login(core, "gone")
    settle(core)
    core.receive(gone, wire.Logout())  # "gone left" waits for the timer...
    bob, b = login(core, "bob")  # ...and bob comes meanwhile
    settle(core)
    assert [m.names for m in b.of(wire.Members)] == [("alice", "bob")]
    assert "gone left" not in [n.text for n in b.of(wire.Notice)]
    assert all(u.name != "gone" for u in b.of(wire.MemberUpdate))


def test_topic_and_the_topic_lock(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    core.receive(bob, wire.Topic("dev", "release on Friday"))
    settle(core)
    assert a.of(wire.RoomState)[-1].topic == "release on Friday"
    assert a.of(wire.Notice)[-1].text == "bob set the topic: release on Friday"
    core.receive(alice, wire.Mode("dev", "topic_locked", True))
    core.receive(bob, wire.Topic("dev", "no release"))
    settle(core)
    code, text = errors(b)[-1]
    assert code == "not_allowed" and "operator or owner" in text and "locked" in text
    assert a.of(wire.RoomState)[-1].topic_locked
    core.receive(bob, wire.Mode("dev", "private", True))
    assert "operator or owner" in errors(b)[-1][1]


def test_a_private_room_is_unlisted_and_takes_only_the_invited(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "secret", private=True)
    core.receive(bob, wire.ListRooms())
    assert [r[0] for r in b.of(wire.RoomList)[-1].rooms] == ["lobby"]
    core.receive(bob, wire.Join("secret"))
    code, text = errors(b)[-1]
    assert code == "invite_only" and "/invite" in text
    mod(core, alice, "invite", "secret", "bob")
    assert any(n.kind == "invite" and "/join #secret" in n.text for n in b.of(wire.Notice))
    join(core, bob, "secret")
    assert "secret" in bob.session.rooms
    # A plain member may not invite to a private room.
    mod(core, bob, "invite", "secret", "carol")
    assert "operator or owner" in errors(b)[-1][1]
    core.receive(carol, wire.Join("secret"))
    assert errors(c)[-1][0] == "invite_only"


def test_a_room_password_is_needed_to_join_but_not_by_the_invited(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "club")
    core.receive(alice, wire.Mode("club", "password", True, password="beer"))
    settle(core)
    assert a.of(wire.RoomState)[-1].password == "beer"  # the members know it
    assert any("set a password" in n.text for n in a.of(wire.Notice))
    core.receive(bob, wire.Join("club"))
    code, text = errors(b)[-1]
    assert code == "room_password" and "/join #club PASSWORD" in text
    core.receive(bob, wire.Join("club", password="bees"))
    assert errors(b)[-1] == ("room_password", "wrong password for #club")
    join(core, bob, "club")  # still no password: refused again
    assert "club" not in bob.session.rooms
    core.receive(bob, wire.Join("club", password="beer"))
    settle(core)
    assert "club" in bob.session.rooms
    mod(core, alice, "invite", "club", "carol")
    join(core, carol, "club")  # an invitation does without
    assert "club" in carol.session.rooms
    # Only operators set it, and only to one printable word.
    core.receive(bob, wire.Mode("club", "password", False))
    assert "operator or owner" in errors(b)[-1][1]
    for bad in ("", " ", "two words", "x" * 33, "bell\a", None):
        before = len(errors(a))
        core.receive(alice, wire.Mode("club", "password", True, password=bad))
        assert [code for code, _ in errors(a)[before:]] == ["bad_mode_value"], bad
    assert core.directory.get("club").password == "beer"
    core.receive(alice, wire.Mode("club", "password", False))
    settle(core)
    assert a.of(wire.RoomState)[-1].password == ""
    # Compared as NFC: "café" typed as one é or as e + accent is one password.
    core.receive(alice, wire.Mode("club", "password", True, password="caf\u00e9"))
    dan, d = login(core, "dan")
    core.receive(dan, wire.Join("club", password="cafe\u0301"))
    settle(core)
    assert "club" in dan.session.rooms


def test_a_member_limit_stops_joins_once_full_but_not_the_invited(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "small")
    core.receive(alice, wire.Mode("small", "member_limit", True, limit=2))
    settle(core)
    assert a.of(wire.RoomState)[-1].member_limit == 2
    join(core, bob, "small")
    core.receive(carol, wire.Join("small"))
    code, text = errors(c)[-1]
    assert code == "room_full" and "2 members" in text
    core.receive(bob, wire.Part("small"))
    settle(core)
    join(core, carol, "small")  # room again
    assert "small" in carol.session.rooms
    core.receive(alice, wire.Mode("small", "member_limit", True, limit=1))  # below the count
    settle(core)
    assert len(core.directory.get("small").members) == 2  # nobody is put out
    core.receive(bob, wire.Join("small"))
    assert errors(b)[-1][0] == "room_full"
    mod(core, alice, "invite", "small", "bob")
    join(core, bob, "small")
    assert "small" in bob.session.rooms
    for bad in (0, 100_001, None):
        before = len(errors(a))
        core.receive(alice, wire.Mode("small", "member_limit", True, limit=bad))
        assert [code for code, _ in errors(a)[before:]] == ["bad_mode_value"], bad
    assert core.directory.get("small").member_limit == 1
    core.receive(alice, wire.Mode("small", "member_limit", False))
    settle(core)
    assert a.of(wire.RoomState)[-1].member_limit == 0


def test_a_moderated_room_hears_only_its_operators_and_voices(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "stage")
    join(core, bob, "stage")
    join(core, carol, "stage")
    core.receive(alice, wire.Mode("stage", "moderated", True))
    settle(core)
    assert a.of(wire.RoomState)[-1].moderated
    core.receive(bob, wire.Say("may I?", "b1", "stage"))
    code, text = errors(b)[-1]
    assert code == "moderated" and "voice" in text
    mod(core, bob, "voice", "stage", "carol")  # only operators give voices
    assert "operator or owner" in errors(b)[-1][1]
    mod(core, alice, "voice", "stage", "bob")
    assert any(n.kind == "voice" and n.name == "bob" for n in c.of(wire.Notice))
    core.receive(bob, wire.Say("thank you", "b2", "stage"))
    core.receive(alice, wire.Say("welcome", "a1", "stage"))
    core.receive(carol, wire.Say("me too?", "c1", "stage"))
    settle(core)
    assert lines(c, "stage") == ["thank you", "welcome"]
    assert errors(c)[-1][0] == "moderated"
    mod(core, alice, "voice", "stage", "bob")  # twice is nothing new
    assert errors(a)[-1][0] == "unchanged"
    mod(core, alice, "devoice", "stage", "bob")
    core.receive(bob, wire.Say("again", "b3", "stage"))
    assert errors(b)[-1][0] == "moderated"
    core.receive(alice, wire.Mode("stage", "moderated", False))
    core.receive(carol, wire.Say("at last", "c2", "stage"))
    settle(core)
    assert lines(a, "stage")[-1] == "at last"


def test_a_guests_voice_goes_with_it(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "stage")
    join(core, bob, "stage")
    core.receive(alice, wire.Mode("stage", "moderated", True))
    mod(core, alice, "voice", "stage", "bob")
    core.receive(bob, wire.Logout())
    settle(core)
    bob2, b2 = login(core, "bob", address="10.0.0.9:1")  # someone else, the name free again
    join(core, bob2, "stage")
    core.receive(bob2, wire.Say("am I heard?", "x1", "stage"))
    assert errors(b2)[-1][0] == "moderated"
    [record] = [r for r in fired(core.store.load()) if r.key == "stage"]
    assert record.voices == {}  # a guest's voice is not kept


def test_a_default_room_with_a_closed_door_takes_no_newcomer(core):
    # What a join refuses, being put there at login does not do either.
    for flag, settings in (("password", {"password": "sekrit"}), ("private", {}),
                           ("member_limit", {"limit": 1})):
        alice, a = login(core, f"a{flag[:3]}")
        core.room_commands.mode(None, wire.Mode("lobby", flag, True, **settings))
        settle(core)
        newcomer, n = login(core, f"n{flag[:3]}")
        settle(core)
        assert "lobby" not in newcomer.session.rooms, flag
        core.room_commands.mode(None, wire.Mode("lobby", flag, False))
        for link in (alice, newcomer):
            core.receive(link, wire.Logout())
        settle(core)


def test_only_operators_invite_past_a_password_or_a_limit(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    join(core, alice, "club")
    core.receive(alice, wire.Mode("club", "password", True, password="beer"))
    core.receive(bob, wire.Join("club", password="beer"))
    core.receive(alice, wire.Mode("club", "member_limit", True, limit=2))
    settle(core)
    mod(core, bob, "invite", "club", "carol")  # a plain member: the invitation would open both
    assert "operator or owner" in errors(b)[-1][1]
    join(core, carol, "club")
    assert "club" not in carol.session.rooms
    mod(core, alice, "invite", "club", "carol")
    join(core, carol, "club")
    assert "club" in carol.session.rooms


def test_a_direct_line_saved_late_goes_to_its_two_not_the_next_holder_of_a_name(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    held = hold_saving(core)
    core.receive(alice, wire.Direct("bob", "for the first bob only", "c1"))
    settle(core)
    core.receive(bob, wire.Logout())
    settle(core)
    bob2, b2 = login(core, "bob", address="10.0.0.9:1")
    settle(core)
    held.release()
    assert [m.text for m in a.of(wire.DirectMessage)] == ["for the first bob only"]  # the ack
    assert b2.of(wire.DirectMessage) == []


def test_lines_still_being_saved_at_registration_are_the_accounts(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    held = hold_saving(core)
    core.receive(alice, wire.Direct("bob", "said as a guest", "c1"))
    settle(core)
    held.stop_holding()
    core.receive(alice, wire.Register("a long password"))
    settle(core)
    assert alice.session.registered
    held.release()  # saved after the account took the guest's lineage
    settle(core)
    seen = fired(core.store.before("@alice bob", 10**9, 50, alice.session.lineage))
    assert [r.text for r in seen] == ["said as a guest"]


def test_a_rooms_password_and_limit_are_kept_by_the_store(core):
    alice, a = login(core, "alice")
    join(core, alice, "kept")
    core.receive(alice, wire.Mode("kept", "password", True, password="s3cret"))
    core.receive(alice, wire.Mode("kept", "member_limit", True, limit=7))
    [record] = [r for r in fired(core.store.load()) if r.key == "kept"]
    assert (record.password, record.member_limit) == ("s3cret", 7)


def test_each_role_and_its_refusals(core):
    owner, o = login(core, "owner")
    op, p = login(core, "op")
    member, m = login(core, "member")
    other, x = login(core, "other")
    for link in (owner, op, member, other):
        join(core, link, "dev")
    mod(core, member, "kick", "dev", "other")
    assert "operator or owner" in errors(m)[-1][1] and "you are a member" in errors(m)[-1][1]
    mod(core, owner, "op", "dev", "op")
    assert o.of(wire.MemberUpdate)[-1] == wire.MemberUpdate("dev", "op", "online", "operator")
    mod(core, op, "owner", "dev", "member")
    assert "you must be an owner" in errors(p)[-1][1]  # only an owner makes owners
    mod(core, op, "kick", "dev", "owner")
    assert "as high as you" in errors(p)[-1][1]  # nobody acts on a higher role
    mod(core, op, "op", "dev", "owner")  # which would make the owner an operator
    assert "as high as you" in errors(p)[-1][1]
    assert core.directory.get("dev").role_of("owner") == "owner"
    mod(core, op, "deop", "dev", "op")  # but anyone may step down
    assert o.of(wire.MemberUpdate)[-1].role == "member"
    mod(core, owner, "op", "dev", "op")
    mod(core, op, "kick", "dev", "other", reason="off topic")
    assert x.of(wire.RoomLeft)[-1].code == "kicked" and "off topic" in x.of(wire.RoomLeft)[-1].text
    assert other.session is not None and other.session.rooms == {"lobby"}  # still on the server
    mod(core, op, "kick", "dev", "nobody")
    assert errors(p)[-1][0] == "not_in_room"


def test_mute_is_told_to_the_muted_and_lifted_by_unmute(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    mod(core, alice, "mute", "dev", "bob", reason="shouting")
    core.receive(bob, wire.Say("HELLO", "1", room="dev"))
    code, text = errors(b)[-1]
    assert code == "muted" and "#dev" in text
    assert a.of(wire.MemberUpdate)[-1].role == "muted"
    core.receive(bob, wire.Say("in the lobby I may", "2", room="lobby"))
    assert lines(a, "lobby") == ["in the lobby I may"]
    mod(core, alice, "unmute", "dev", "bob")
    core.receive(bob, wire.Say("sorry", "3", room="dev"))
    assert lines(a, "dev") == ["sorry"]
    mod(core, alice, "unmute", "dev", "bob")
    assert errors(a)[-1][0] == "not_muted"


def test_a_room_ban_removes_sticks_and_expires(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    mod(core, alice, "ban", "dev", "bob", minutes=10, reason="spam")
    assert b.of(wire.RoomLeft)[-1].code == "banned"
    core.receive(bob, wire.Join("dev"))
    code, text = errors(b)[-1]
    assert code == "banned" and "from #dev for another 10 minutes: spam" in text
    assert fired(core.store.load())[0].bans["bob"][2] == "spam"  # kept by the store
    clock.advance(601)
    join(core, bob, "dev")
    assert "dev" in bob.session.rooms
    mod(core, alice, "ban", "dev", "bob")  # for ever, then lifted
    mod(core, alice, "unban", "dev", "bob")
    join(core, bob, "dev")
    assert "dev" in bob.session.rooms


def test_a_registered_accounts_rooms_come_back_at_login(core):
    link = core.open_link(MemoryClient(), "127.0.0.1:5")
    core.receive(link, wire.Login("dana", "a long password", register=True))
    join(core, link, "dev")
    join(core, link, "ops")
    core.receive(link, wire.Part("lobby"))
    core.receive(link, wire.Logout())
    core.link_lost(link)
    settle(core)
    again = core.open_link(conn := MemoryClient(), "127.0.0.1:6")
    core.receive(again, wire.Login("dana", "a long password"))
    settle(core)
    assert conn.of(wire.Welcome)[0].rooms == ("dev", "ops")
    assert [s.room for s in conn.of(wire.RoomState)] == ["dev", "ops"]
    assert again.session.rooms == {"dev", "ops"}
    # The creator's ownership is kept with the account.
    assert core.directory.get("dev").role_of("dana") == "owner"


def test_a_kick_from_a_room_outlasts_a_reconnect(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    welcome = b.of(wire.Welcome)[0]
    core.link_lost(bob)
    mod(core, alice, "kick", "dev", "bob")
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:2")
    core.receive(link, wire.Resume(welcome.session, welcome.token,
                                   (("#lobby", 0), ("#dev", 0)), welcome.server_time))
    assert [s.room for s in conn.of(wire.RoomState)] == ["lobby"]


def test_replay_after_a_drop_is_per_room_in_three_rooms(core, clock):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    for room in ("dev", "ops"):
        join(core, alice, room)
        join(core, bob, room)
    for i, room in enumerate(("lobby", "dev", "ops")):
        core.receive(alice, wire.Say(f"{room} before", f"b{i}", room=room))
    positions = tuple((f"#{r.room}", r.seq) for r in b.of(wire.RoomMessage))
    welcome = b.of(wire.Welcome)[0]
    core.link_lost(bob)
    for i, room in enumerate(("lobby", "dev", "ops", "dev")):
        core.receive(alice, wire.Say(f"{room} during {i}", f"d{i}", room=room))
    conn = MemoryClient()
    link = core.open_link(conn, "127.0.0.1:2")
    core.receive(link, wire.Resume(welcome.session, welcome.token, positions,
                                   welcome.server_time))
    got = [(m.room, m.seq, m.text) for m in conn.of(wire.RoomMessage)]
    assert sorted(got) == sorted([("lobby", 2, "lobby during 0"), ("dev", 2, "dev during 1"),
                                  ("dev", 3, "dev during 3"), ("ops", 2, "ops during 2")])
    assert not any(m.history for m in conn.of(wire.RoomMessage))
    for room in ("dev",):  # each room in its own order
        seqs = [seq for r, seq, _ in got if r == room]
        assert seqs == sorted(seqs)


def test_history_is_per_room(core):
    alice, a = login(core, "alice")
    join(core, alice, "dev")
    for i in range(3):
        core.receive(alice, wire.Say(f"dev {i}", f"d{i}", room="dev"))
        core.receive(alice, wire.Say(f"lobby {i}", f"l{i}", room="lobby"))
    a.clear()
    core.receive(alice, wire.HistoryRequest(3, 10, "#dev"))
    assert [m.text for m in a.of(wire.RoomMessage)] == ["dev 0", "dev 1"]
    assert a.of(wire.HistoryEnd)[-1] == wire.HistoryEnd(1, False, "#dev")
    bob, b = login(core, "bob")
    join(core, bob, "dev")
    assert [m.text for m in b.of(wire.RoomMessage) if m.room == "dev"] == ["dev 0", "dev 1",
                                                                          "dev 2"]


def test_room_names_follow_the_rules_of_user_names(core):
    alice, a = login(core, "alice")
    for bad in ("#", "#two words", "#" + "x" * 33, "#esc\x1b"):
        core.receive(alice, wire.Join(bad))
        assert errors(a)[-1][0] == "room_invalid"


def test_a_topic_is_checked_like_a_chat_line(core):
    alice, a = login(core, "alice")
    join(core, alice, "dev")
    for bad in ("\x1b[2Jhijacked", "reads\u202ebackwards", "x" * 301):
        core.receive(alice, wire.Topic("dev", bad))
        assert errors(a)[-1][0] in ("bad_text", "too_long")
    core.receive(alice, wire.Topic("dev", "two\nlines"))
    settle(core)
    assert a.of(wire.RoomState)[-1].topic == "two lines"
    core.receive(alice, wire.Topic("dev", ""))
    settle(core)
    assert a.of(wire.RoomState)[-1].topic == ""


def test_reasons_reach_others_on_one_line_without_control_characters(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    join(core, alice, "dev")
    join(core, bob, "dev")
    core.receive(bob, wire.Part("dev", "bye\x1b[2J\nfake line\u202e"))
    settle(core)
    assert a.of(wire.Notice)[-1].text == "bob left: bye [2J fake line"
    join(core, bob, "dev")
    mod(core, alice, "kick", "dev", "bob", reason="\x07\x07")
    assert b.of(wire.RoomLeft)[-1].text.endswith("by alice: no reason given")


def test_a_session_is_in_at_most_so_many_rooms(core, monkeypatch):
    from spchat.server import room_commands

    monkeypatch.setattr(room_commands, "MAX_ROOMS_PER_SESSION", 3)
    alice, a = login(core, "alice")  # in #lobby
    join(core, alice, "one")
    join(core, alice, "two")
    core.receive(alice, wire.Join("three"))
    assert errors(a)[-1][0] == "too_many_rooms"
    join(core, alice, "one")  # again: still fine


def test_a_room_made_again_goes_on_with_its_numbers(core):
    alice, a = login(core, "alice")
    join(core, alice, "dev")
    core.receive(alice, wire.Say("first life", "1", room="dev"))
    core.room_commands.delete("dev")
    join(core, alice, "dev")
    state = [s for s in a.of(wire.RoomState) if s.room == "dev"][-1]
    assert state.last_seq == 1
    core.receive(alice, wire.Say("second life", "2", room="dev"))
    assert [(m.seq, m.text) for m in a.of(wire.RoomMessage) if m.room == "dev"][-1] == (
        2, "second life")


def test_notices_name_whom_they_are_about_who_did_it_and_why(core):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob")
    carol, c = login(core, "carol")
    for link in (alice, bob, carol):
        join(core, link, "dev")
    settle(core)
    mod(core, alice, "op", "dev", "carol")
    mod(core, alice, "mute", "dev", "bob", reason="calm down")
    mod(core, alice, "kick", "dev", "bob", reason="enough")
    core.receive(alice, wire.Topic("dev", "plans"))
    core.receive(carol, wire.Part("dev", "lunch"))
    settle(core)
    parts = [(n.kind, n.name, n.by, n.reason) for n in a.of(wire.Notice) if n.room == "dev"]
    assert parts[-5:] == [
        ("role", "carol", "alice", ""),
        ("mute", "bob", "alice", "calm down"),
        ("kick", "bob", "alice", "enough"),
        ("topic", "", "alice", ""),
        ("leave", "carol", "", "lunch"),
    ]
    left = b.of(wire.RoomLeft)[-1]
    assert (left.room, left.code, left.by, left.reason) == ("dev", "kicked", "alice", "enough")
