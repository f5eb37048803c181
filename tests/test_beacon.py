"""The pure beacon layer: keys, datagrams, replay window, snapshot codec."""

import os
import random
import struct

import pytest

from spchat import beacon
from spchat.beacon import BeaconError, ReplayWindow


@pytest.fixture
def keys():
    return beacon.derive_keys(os.urandom(32))


def members(n, state="online"):
    return [(f"user{i:03d}", state) for i in range(n)]


# --- keys -------------------------------------------------------------------


def test_both_ends_derive_the_same_keys_from_the_handshake_hash():
    h = os.urandom(32)
    server, client = beacon.derive_keys(h), beacon.derive_keys(bytes(h))
    assert server == client
    assert len(server.key_id) == 8 and len(server.c2s) == 32 and len(server.s2c) == 32
    assert len({server.key_id + bytes(24), server.c2s, server.s2c}) == 3


def test_derivation_is_pinned_to_hkdf_sha256_with_its_labels():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    h = bytes(range(32))
    expected = HKDF(hashes.SHA256(), 32, None, b"spchat presence c2s").derive(h)
    assert beacon.derive_keys(h).c2s == expected


def test_distinct_handshake_hashes_give_distinct_keys():
    a, b = beacon.derive_keys(os.urandom(32)), beacon.derive_keys(os.urandom(32))
    assert a.key_id != b.key_id and a.c2s != b.c2s and a.s2c != b.s2c


def test_keys_stay_out_of_repr(keys):
    text = repr(keys)
    assert keys.c2s.hex() not in text and repr(keys.c2s) not in text
    assert repr(keys.s2c) not in text


def test_a_short_handshake_hash_is_refused():
    with pytest.raises(ValueError):
        beacon.derive_keys(b"short")


# --- datagrams --------------------------------------------------------------


def test_seal_and_open_round_trip(keys):
    d = beacon.seal(keys.c2s, keys.key_id, 7, beacon.HELLO)
    assert d[:8] == keys.key_id and d[8:16] == struct.pack(">Q", 7)
    assert len(d) == 8 + 8 + 17 + 16 == 49
    assert beacon.open_datagram(keys.c2s, d) == (7, beacon.HELLO)
    assert beacon.peek_key_id(d) == keys.key_id


def test_the_cipher_object_matches_the_functions(keys):
    cipher = keys.s2c_cipher
    assert keys.s2c_cipher is cipher  # built once, reused
    d = cipher.seal(keys.key_id, 2**64 - 1, b"payload")
    assert d == beacon.seal(keys.s2c, keys.key_id, 2**64 - 1, b"payload")
    assert cipher.open(d) == (2**64 - 1, b"payload")


def test_every_altered_byte_is_forged(keys):
    d = beacon.seal(keys.s2c, keys.key_id, 1, b"snapshot bytes")
    for i in range(len(d)):
        for flip in (0x01, 0x80):
            bad = bytearray(d)
            bad[i] ^= flip
            with pytest.raises(BeaconError) as e:
                beacon.open_datagram(keys.s2c, bytes(bad))
            assert e.value.reason == "forged"


def test_appended_or_cut_bytes_are_forged_or_truncated(keys):
    d = beacon.seal(keys.s2c, keys.key_id, 1, b"x")
    with pytest.raises(BeaconError, match="forged"):
        beacon.open_datagram(keys.s2c, d + b"\0")
    with pytest.raises(BeaconError, match="forged"):
        beacon.open_datagram(keys.s2c, d[:-1])  # still 32 bytes: an empty plaintext's length


@pytest.mark.parametrize("size", [0, 1, 7, 8, 16, 31])
def test_short_datagrams_are_truncated(keys, size):
    with pytest.raises(BeaconError) as e:
        beacon.open_datagram(keys.c2s, os.urandom(size))
    assert e.value.reason == "truncated"
    assert beacon.peek_key_id(b"1234567") is None


def test_wrong_key_or_direction_is_forged(keys):
    d = beacon.seal(keys.c2s, keys.key_id, 0, beacon.HELLO)
    other = beacon.derive_keys(os.urandom(32))
    for key in (keys.s2c, other.c2s):  # a reflected hello, another session
        with pytest.raises(BeaconError) as e:
            beacon.open_datagram(key, d)
        assert e.value.reason == "forged"


def test_a_key_id_swap_is_forged(keys):
    d = beacon.seal(keys.c2s, keys.key_id, 0, beacon.HELLO)
    with pytest.raises(BeaconError, match="forged"):
        beacon.open_datagram(keys.c2s, os.urandom(8) + d[8:])


def test_seal_refuses_bad_arguments(keys):
    with pytest.raises(ValueError):
        beacon.seal(keys.c2s, keys.key_id, -1, b"")
    with pytest.raises(ValueError):
        beacon.seal(keys.c2s, keys.key_id, 2**64, b"")
    with pytest.raises(ValueError):
        beacon.seal(keys.c2s, b"short", 0, b"")
    with pytest.raises(ValueError):
        beacon.BeaconCipher(b"k" * 16)


# --- hellos and cookies -----------------------------------------------------


def test_a_cookie_reply_is_never_larger_than_a_hello(keys):
    cookie = os.urandom(beacon.COOKIE_LEN)
    hello = keys.c2s_cipher.seal(keys.key_id, 0, beacon.HELLO)
    echo = keys.c2s_cipher.seal(keys.key_id, 1, beacon.cookie_hello(cookie))
    reply = keys.s2c_cipher.seal(keys.key_id, 0, beacon.cookie_reply(cookie))
    assert len(reply) <= len(hello) == len(echo) == 49
    assert beacon.HELLO == b"H" + bytes(16) == beacon.cookie_hello()


def test_hellos_and_cookie_replies_parse():
    cookie = os.urandom(beacon.COOKIE_LEN)
    assert beacon.parse_hello(beacon.HELLO) is None
    assert beacon.parse_hello(beacon.cookie_hello(cookie)) == cookie
    assert beacon.parse_cookie_reply(beacon.cookie_reply(cookie)) == cookie
    assert beacon.is_cookie_reply(beacon.cookie_reply(cookie))
    assert not beacon.is_cookie_reply(beacon.encode_snapshot(2.0, []))
    for bad in [b"", b"H", b"H" + bytes(15), b"H" + bytes(17), b"C" + cookie, b"S" + cookie]:
        with pytest.raises(BeaconError, match="garbage"):
            beacon.parse_hello(bad)
    for bad in [b"", b"C", b"C" + cookie[:15], b"C" + cookie + b"x", b"H" + cookie]:
        with pytest.raises(BeaconError, match="garbage"):
            beacon.parse_cookie_reply(bad)
    for bad in [b"", cookie[:15], cookie + b"x"]:
        with pytest.raises(ValueError):
            beacon.cookie_hello(bad)
        with pytest.raises(ValueError):
            beacon.cookie_reply(bad)


def test_a_cookie_is_bound_to_secret_session_address_and_time(keys):
    jar = beacon.CookieMaker(os.urandom(32))
    addr = ("192.0.2.7", 5001)
    now = 6000.0  # the start of a 60 s bucket
    cookie = jar.make(keys.key_id, addr, now)
    assert len(cookie) == beacon.COOKIE_LEN
    assert jar.make(keys.key_id, addr, now + 59.9) == cookie  # stateless
    assert jar.check(keys.key_id, addr, cookie, now)
    assert jar.check(keys.key_id, addr, cookie, now + 119.9)  # the previous bucket
    assert not jar.check(keys.key_id, addr, cookie, now + 120)  # expired
    assert not jar.check(keys.key_id, addr, cookie, now - 0.1)  # not yet made
    other = beacon.derive_keys(os.urandom(32))
    for key_id, where in [
        (other.key_id, addr),  # another session
        (keys.key_id, ("192.0.2.7", 5002)),  # another port
        (keys.key_id, ("192.0.2.8", 5001)),  # another host
        (keys.key_id, ("::ffff:192.0.2.7", 5001)),
    ]:
        assert not jar.check(key_id, where, cookie, now)
    assert not beacon.CookieMaker(os.urandom(32)).check(keys.key_id, addr, cookie, now)
    assert not jar.check(keys.key_id, addr, cookie[:15], now)
    assert not jar.check(keys.key_id, addr, bytes(16), now)
    v6 = ("2001:db8::1", 5001)
    assert jar.check(keys.key_id, v6, jar.make(keys.key_id, v6, now), now)
    scoped = ("fe80::1%eth0", 5001)  # not an IP literal: packed as text
    assert jar.check(keys.key_id, scoped, jar.make(keys.key_id, scoped, now), now)
    assert "secret" not in repr(jar)
    with pytest.raises(ValueError):
        beacon.CookieMaker(b"short")


# --- replay window ----------------------------------------------------------


def test_replay_window_in_order():
    w = ReplayWindow()
    assert all(w.accept(i) for i in range(200))
    assert not any(w.accept(i) for i in range(200))


def test_replay_window_out_of_order_within_the_window():
    w = ReplayWindow(size=64)
    assert w.accept(100)
    for c in (99, 37, 50, 98, 60):
        assert w.accept(c), c
    assert not w.accept(50)
    assert not w.accept(100)
    assert w.accept(101) and w.accept(38)


def test_replay_window_duplicates_and_too_old():
    w = ReplayWindow(size=64)
    assert w.accept(0)
    assert not w.accept(0)
    assert w.accept(63)
    assert w.accept(1)  # 63 - 62: still inside
    assert w.accept(64)
    assert not w.accept(0)  # left the window
    assert not w.accept(1)  # seen
    assert w.accept(2)
    assert not w.accept(-1) and not w.accept(2**64)


def test_replay_window_huge_jump_forgets_everything_older():
    w = ReplayWindow(size=64)
    for c in range(10):
        w.accept(c)
    assert w.accept(2**63)
    assert not w.accept(9)
    assert not w.accept(2**63 - 64)
    assert w.accept(2**63 - 63)
    assert not w.accept(2**63)
    assert w.accept(2**64 - 1)
    assert not w.accept(2**64 - 1)


def test_replay_window_matches_a_reference_model():
    rng = random.Random(1)
    w, seen, highest = ReplayWindow(size=16), set(), -1
    for _ in range(5000):
        c = max(0, highest + rng.randint(-24, 6))
        expected = c not in seen and c > highest - 16
        assert w.accept(c) == expected, c
        if expected:
            seen.add(c)
            highest = max(highest, c)


# --- snapshots --------------------------------------------------------------


def test_snapshot_round_trip():
    room = [("alice", "online"), ("bob", "reconnecting"), ("Zoë", "idle"), ("x" * 64, "online"),
            ("\U0001f600" * 64, "idle"), ("y" * 63, "reconnecting")]
    data = beacon.encode_snapshot(2.0, room)
    assert beacon.decode_snapshot(data) == (2.0, tuple(room))
    assert beacon.decode_snapshot(beacon.encode_snapshot(0.25, [])) == (0.25, ())


def test_snapshot_costs_name_length_plus_one_byte_per_member():
    one = beacon.encode_snapshot(2.0, [("alice", "online")])
    two = beacon.encode_snapshot(2.0, [("alice", "online"), ("bob", "idle")])
    assert len(one) == 5 + 1 + 5 and len(two) == len(one) + 1 + 3


def test_ten_member_snapshot_datagram_is_small(keys):
    data = beacon.encode_snapshot(2.0, members(10))
    datagram = keys.s2c_cipher.seal(keys.key_id, 0, data)
    assert len(datagram) < 200
    assert len(datagram) == 32 + 5 + 10 * 8


@pytest.mark.parametrize("interval", [0, -1, 0.001, 700])
def test_snapshot_refuses_an_interval_it_cannot_carry(interval):
    with pytest.raises(ValueError):
        beacon.encode_snapshot(interval, [])


@pytest.mark.parametrize("member", [
    ("", "online"), ("x" * 65, "online"), ("bob", "away"), ("tab\there", "online"), (b"bob", "idle"),
])
def test_snapshot_refuses_invalid_members(member):
    with pytest.raises(ValueError):
        beacon.encode_snapshot(2.0, [member])


GOOD = beacon.encode_snapshot(2.0, [("alice", "online"), ("bob", "idle")])


@pytest.mark.parametrize("data", [
    b"",
    b"S\x00",
    b"H",
    b"X" + GOOD[1:],                      # wrong type
    b"S\x00\x00\x00\x01",                 # zero interval
    b"S\x00\xc8\x00\x00",                 # zero parts
    b"S\x00\xc8\x01\x01",                 # part 1 of 1
    GOOD[:-1],                            # name cut short
    GOOD + b"\x05ab",                     # entry longer than the rest
    GOOD + bytes([3 << 6 | 3]) + b"bob",  # state 3
    GOOD + b"\x02\xff\xfe",               # not UTF-8
    GOOD + b"\x01\x07",                   # control character
    GOOD + b"\x00",                       # long form without its length byte
    GOOD + b"\x00\x01" + b"x" * 65,       # 65 characters
    b"S\x00\xc8\x00\x01" + b"\x01a" * 600,  # over 1200 bytes
])
def test_garbage_snapshots_are_refused(data):
    with pytest.raises(BeaconError) as e:
        beacon.decode_snapshot(data)
    assert e.value.reason == "garbage"


def test_random_bytes_never_crash_the_decoder():
    rng = random.Random(7)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if rng.random() < 0.5:
            data = GOOD[:5] + data
        try:
            interval, room = beacon.decode_snapshot(data)
        except BeaconError as e:
            assert e.reason == "garbage"
        else:
            assert interval > 0
            assert all(s in beacon.STATES and 1 <= len(n) <= 64 for n, s in room)


def test_a_large_room_is_split_into_parts_that_each_fit_a_datagram(keys):
    room = members(500, "idle") + [("é" * 64, "online")] * 10
    parts = beacon.encode_snapshot_parts(2.0, room)
    assert len(parts) > 1
    assert all(len(p) <= beacon.MAX_PLAINTEXT for p in parts)
    assert all(len(keys.s2c_cipher.seal(keys.key_id, 0, p)) <= 1232 for p in parts)
    decoded = [beacon.decode_snapshot_part(p) for p in parts]
    assert [(d.part, d.parts) for d in decoded] == [(i, len(parts)) for i in range(len(parts))]
    assert sum((d.members for d in decoded), ()) == tuple(room)
    with pytest.raises(ValueError):
        beacon.encode_snapshot(2.0, room)
    with pytest.raises(BeaconError, match="garbage"):
        beacon.decode_snapshot(parts[0])  # one part is not the room


def test_a_room_beyond_the_part_limit_is_cut_not_crashed():
    room = [("n" * 63, "online")] * (255 * 20)
    parts = beacon.encode_snapshot_parts(2.0, room)
    assert len(parts) == beacon.MAX_PARTS
    kept = sum(len(beacon.decode_snapshot_part(p).members) for p in parts)
    assert 0 < kept < len(room)


def assemble(parts, counters):
    a = beacon.SnapshotAssembler()
    return a, [a.feed(c, parts[i]) for i, c in counters]


def test_assembler_puts_parts_back_together_in_any_order():
    room = members(400)
    parts = beacon.encode_snapshot_parts(1.5, room)
    n = len(parts)
    order = list(range(n))
    random.Random(3).shuffle(order)
    a, results = assemble(parts, [(i, 10 + i) for i in order])
    assert results[:-1] == [None] * (n - 1)
    assert results[-1] == (1.5, tuple(room))


def test_assembler_drops_older_snapshots_and_incomplete_ones():
    small = beacon.encode_snapshot(2.0, members(2))
    big = beacon.encode_snapshot_parts(2.0, members(300))
    a = beacon.SnapshotAssembler()
    assert a.feed(5, small) == (2.0, tuple(members(2)))
    with pytest.raises(BeaconError, match="stale"):
        a.feed(4, small)  # reordered: older than what was shown
    assert a.feed(10, big[0]) is None
    # A newer snapshot overtakes the incomplete one, whose last part is then stale.
    assert a.feed(20, small) == (2.0, tuple(members(2)))
    with pytest.raises(BeaconError, match="stale"):
        a.feed(11, big[1])


def test_assembler_refuses_inconsistent_parts():
    big = beacon.encode_snapshot_parts(2.0, members(300))
    other = beacon.encode_snapshot_parts(3.0, members(300))
    a = beacon.SnapshotAssembler()
    a.feed(10, big[0])
    with pytest.raises(BeaconError, match="garbage"):
        a.feed(11, other[1])
    with pytest.raises(BeaconError, match="garbage"):
        a.feed(0, big[1])  # part 1 cannot carry counter 0
