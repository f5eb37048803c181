"""The wire schema: round trips, and every kind of bad input is a WireError."""

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from spchat import wire

SAMPLES = [
    wire.Hello("spchat-client/0.1.0"),
    wire.ServerHello("spchat-server/0.1.0", 8192),
    wire.Login("Zoë"),
    wire.Login("zoe", "correct horse", True, (("#lobby", 41), ("@bob", 3)), 1_700_000_000_000),
    wire.Register("correct horse"),
    wire.ChangePassword("correct horse", "battery staple"),
    wire.HistoryRequest(100, 50),
    wire.HistoryRequest(7, 10, "@bob"),
    wire.Join("dev"),
    wire.Join("secret", True, "c20"),
    wire.Part("dev", "lunch"),
    wire.ListRooms(),
    wire.Topic("dev", "release on Friday"),
    wire.Topic("dev"),
    wire.Mode("dev", "topic_locked", True),
    wire.Moderate("dev", "ban", "bob", "spam", 10.0, "c21"),
    wire.Moderate("dev", "op", "carol"),
    wire.RoomState("dev", "release on Friday", False, True, 41),
    wire.RoomLeft("dev", "kicked", "you were kicked from #dev"),
    wire.RoomList((("dev", 3, "release on Friday"), ("lobby", 10, ""))),
    wire.AdminLogin("t" * 43),
    wire.AdminRequest("r1", "kick", "bob", "spam", 10.0),
    wire.AdminRequest("r2", "list"),
    wire.AdminReply("r2", True, "1 sessions",
                    (("bob", "127.0.0.1:4", "connected", "spchat-client/0.1.0",
                      1.5, 1, 2, 3, 4, 5),)),
    wire.AdminEvent((("bob", "127.0.0.1:4", "offline", "x", 1.5, 1, 2, 3, 4, 5),)),
    wire.HistoryEnd(51, True),
    wire.HistoryEnd(1, False, "@bob"),
    wire.RoomMessage(6, 1_700_000_000_000, "lobby", "alice", "old", None, True),
    wire.Say("hello\nworld", "c1"),
    wire.Say("elsewhere", "c2", room="other"),
    wire.Direct("bob", "psst", "c3"),
    wire.Who(),
    wire.Logout(),
    wire.Resume("s1", "t1", (("#lobby", 41),), 1_700_000_000_000),
    wire.Resume("s1", "t1", ()),
    wire.Welcome("alice", "s1", "t1", ("lobby",), 1_700_000_000_000, 5001, 2000, 8),
    wire.Welcome("alice", "s1", "t2", ("lobby", "dev"), 1_700_000_000_000, 0, 2000, 8,
                 resumed=True),
    wire.PresenceRequest(),
    wire.Keepalive(),
    wire.Welcome("alice", "s1", "t1", ("lobby",), 1_700_000_000_000, 5001, 2000, 8,
                 keepalive_ms=40_000),
    wire.Members("lobby", (("alice", "online", "owner"), ("bob", "reconnecting", "muted"))),
    wire.MemberUpdate("lobby", "carol", "online", "operator"),
    wire.MemberUpdate("lobby", "carol", "gone"),
    wire.RoomMessage(7, 1_700_000_000_123, "lobby", "alice", "hi", "c1"),
    wire.RoomMessage(8, 1_700_000_000_124, "lobby", "bob", "hi", None),
    wire.DirectMessage(9, 1, "alice", "bob", "psst"),
    wire.Notice("lobby", 1, "join", "bob joined"),
    wire.Error("too_long", "too long", "c1"),
    wire.Bye("logout", "logged out"),
    wire.Share('{"name":"a"}', 0, "c9"),
    wire.Share('{"name":"a"}', 0, "c9", "dev"),
    wire.Unshare("ab" * 32),
    wire.ListFiles(),
    wire.Fetch("abcdef", "c10"),
    wire.Holding("ab" * 32, 3, 40000),
    wire.RelayRequest("t" * 32),
    wire.Offer("lobby", 1, "ab" * 32, "report.pdf", 1234, "alice"),
    wire.FileList((("ab" * 32, "report.pdf", 1234, "alice", 2),)),
    wire.Swarm("ab" * 32, '{"name":"a"}', "c10",
               (("alice", "127.0.0.1", 40000, "t" * 32, "k" * 64),)),
    wire.PeerRequest("t" * 32, "k" * 64, "ab" * 32, "bob", 0),
    wire.RelayOpen("t" * 32, 7001),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TYPE)
def test_round_trip(msg):
    assert wire.decode(wire.encode(msg)) == msg


def test_every_type_has_a_sample():
    assert {m.TYPE for m in SAMPLES} == set(wire.MESSAGES)


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "not a JSON"),
        (b"\xff\xfe", "not a JSON"),
        (b"[1]", "JSON object"),
        (b'{"text": "no type"}', "unknown message type"),
        (b'{"t": "shout"}', "unknown message type 'shout'"),
        (b'{"t": "login"}', "login.name is missing"),
        (b'{"t": "login", "name": 5}', "login.name must be a string"),
        (b'{"t": "say", "text": "x", "cid": ["a"]}', "say.cid must be a string"),
        (b'{"t": "say", "text": "\\ud800", "cid": "1"}', "not valid Unicode"),
        (b'{"t": "resume", "session": "s", "token": "t", "positions": true}',
         "resume.positions must be a list"),
        (b'{"t": "history", "before": -1, "limit": 5}', "out of range"),
        (b'{"t": "members", "room": "r", "members": "ab"}', "must be a list"),
        (b'{"t": "members", "room": "r", "members": [["a"]]}', "[name, state, role]"),
        (b'{"t": "members", "room": "r", "members": [["a", "away", "member"]]}',
         "state must be one of"),
        (b'{"t": "members", "room": "r", "members": [["a", "online", "king"]]}',
         "role must be one of"),
        (b'{"t": "resume", "session": "s", "token": "t", "positions": [["lobby", 1]]}',
         "'#room' or '@name'"),
        (b'{"t": "resume", "session": "s", "token": "t", "positions": [["#a", -1]]}',
         "out of range"),
        (b'{"t": "moderate", "room": "r", "op": "behead", "name": "bob"}', "must be one of"),
        (b'{"t": "resume", "session": "s", "token": "t", "positions": null}',
         "resume.positions must be a list"),
        (b'{"t": "say", "text": "x", "cid": ""}', "say.cid must not be empty"),
        (b'{"t": "mode", "room": "r", "flag": "secret", "on": true}', "must be one of"),
        (b'{"t": "login", "name": "' + b"x" * 65 + b'"}', "longer than 64"),
        (b"[" * 100000, "not a JSON"),
        (b'{"t": "holding", "file": "x", "pieces": 1, "port": 70000}', "port number"),
        (b'{"t": "file_list", "files": [["x", "n", 1, "a"]]}', "has 5 fields"),
        (b'{"t": "offer", "room": "lobby", "ts": 1, "file": "x", "name": "' + "é".encode() * 128
         + b'", "size": 1, "sharer": "a"}', "longer than 255 bytes"),
    ],
)
def test_bad_input_says_what_is_wrong(data, says):
    with pytest.raises(wire.WireError) as caught:
        wire.decode(data)
    assert says in str(caught.value)


def test_text_limit_is_in_utf8_bytes():
    ok = json.dumps({"t": "say", "text": "é" * 30000, "cid": "1"}).encode()
    assert wire.decode(ok).text == "é" * 30000
    too_long = json.dumps({"t": "say", "text": "é" * 30001, "cid": "1"}).encode()
    with pytest.raises(wire.WireError, match="longer than 60000 bytes"):
        wire.decode(too_long)


def test_unknown_members_are_ignored_for_forward_compatibility():
    assert wire.decode(b'{"t": "who", "future": 1}') == wire.Who()


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_wire_error(data):
    try:
        wire.decode(data)
    except wire.WireError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(wire.MESSAGES)), st.dictionaries(
    st.sampled_from(["name", "text", "cid", "room", "to", "seq", "ts", "members", "code",
                     "token", "last_seq", "after", "udp_port", "resumed", "max_in_flight", "presence_ms",
                     "session", "server_time", "agent", "kind", "sender",
                     "max_message_bytes"]),
    json_values,
))
def test_random_fields_of_real_types_never_raise_anything_but_wire_error(type_name, fields):
    data = json.dumps({"t": type_name, **fields}).encode()
    try:
        msg = wire.decode(data)
    except wire.WireError:
        return
    # Whatever was accepted must encode again without error.
    assert wire.decode(wire.encode(msg)) == msg


def test_a_batch_carries_several_messages_and_a_bad_one_spoils_only_itself():
    one = wire.encode(wire.Notice("lobby", 1, "join", "a joined"))
    two = wire.encode(wire.MemberUpdate("lobby", "a", "online"))
    assert wire.batch([one]) == one  # a single message is sent as it is
    assert wire.decode_frame(wire.batch([one, two])) == [wire.decode(one), wire.decode(two)]
    bad = b'{"t":"notice","room":"lobby"}'
    items = wire.decode_frame(wire.batch([one, bad, two]))
    assert items[0] == wire.decode(one) and items[2] == wire.decode(two)
    assert isinstance(items[1], wire.WireError) and "notice.ts is missing" in str(items[1])
    with pytest.raises(wire.WireError, match="batch.m must be a list"):
        wire.decode_frame(b'{"t":"batch","m":{}}')


def _texts(max_size):  # no lone surrogates: nothing can carry them
    return st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=max_size)


def _ids(max_size):  # printable: ids are shown as they are
    return st.text(st.characters(blacklist_categories=("C", "Zl", "Zp", "Zs")), min_size=1,
                   max_size=max_size)


@given(st.integers(0, wire.MAX_INT), st.integers(0, wire.MAX_INT), _texts(20), _texts(20),
       _texts(200), _ids(20))
def test_a_room_line_encoded_once_decodes_as_the_message_and_its_ack(seq, ts, room, sender,
                                                                     text, cid):
    everyone, ack = wire.encode_room_line(seq, ts, room, sender, text, cid)
    assert wire.decode(everyone) == wire.RoomMessage(seq, ts, room, sender, text)
    assert wire.decode(ack) == wire.RoomMessage(seq, ts, room, sender, text, cid)


@pytest.mark.parametrize("data", [
    b' {"t":"who"}', b'{"t":"who"}\n', b'\t{"t" : "who"} ',  # json.loads allows whitespace
])
def test_whitespace_around_a_message_is_allowed(data):
    assert wire.decode(data) == wire.Who()


@pytest.mark.parametrize("data", [
    b'{"t":"who"} x', b'{"t":"who"}{}', b'', b'{', b'{"t":"who",}', b"\xff{}",
])
def test_anything_after_or_instead_of_one_object_is_refused(data):
    with pytest.raises(wire.WireError, match="not a JSON message"):
        wire.decode(data)


@given(st.lists(st.integers(0, 480), max_size=60), st.sampled_from([256, 2048]))
def test_packed_frames_keep_every_message_in_order_and_within_the_size(sizes, frame_bytes):
    encoded = [wire.encode(wire.Notice("lobby", i, "join", "x" * n)) for i, n in enumerate(sizes)]
    frames = wire.pack(encoded, frame_bytes)
    assert [m for f in frames for m in wire.decode_frame(f)] == [wire.decode(e) for e in encoded]
    for frame in frames:  # full, unless one message alone is longer
        assert len(frame) <= frame_bytes or len(wire.decode_frame(frame)) == 1
    if encoded and sum(map(len, encoded)) + len(encoded) + wire.BATCH_OVERHEAD <= frame_bytes:
        assert len(frames) == 1  # what fits goes as one frame


def test_a_field_and_its_rule_cannot_drift_apart():
    with pytest.raises(TypeError, match="the fields and the rules"):
        @wire.message("test_drift", a=wire._integer)
        class Drift(wire.Message):
            a: int
            b: int = 0
    assert "test_drift" not in wire.MESSAGES


def test_defaults_are_the_class_defaults():
    assert wire.Say.DEFAULTS == {"room": "lobby"}
    assert wire.decode(b'{"t":"say","text":"x","cid":"c"}') == wire.Say("x", "c")
