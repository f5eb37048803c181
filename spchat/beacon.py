"""The presence beacon over UDP: keys, datagrams, replay window, snapshots.

Pure and synchronous: no I/O, no Twisted.  ``spchat.server.presence`` and
``spchat.client.presence`` are the thin adapters around it.

Keys.  Both ends of a Noise session know its handshake hash, so both derive
the same :class:`BeaconKeys` from it with HKDF-SHA256: a public 8-byte key id
that names the session in every datagram, and one AES-256-GCM key for each
direction.  The Noise static key is never used for anything but Noise.

Datagram (every field big-endian)::

    key_id (8) | counter (8) | AES-GCM ciphertext and tag (16)

with nonce ``00000000 || counter`` and associated data ``key_id || counter``.
Each direction has its own key, and the sender never repeats a counter under
a key, so a nonce is never reused; the receiver checks the counter against a
:class:`ReplayWindow` *after* the tag verified, so forged datagrams cannot
move the window.

Plaintexts.  The client's hello is ``b"H"`` and 16 bytes: zeros in a plain
hello, the cookie in a hello that echoes one.  Return routability (as QUIC's
address validation or WireGuard's cookies): the server answers an authentic
hello from an address that is not the session's proven endpoint only with a
cookie (``b"C"`` and 16 bytes, see :class:`CookieMaker`; hello and cookie are
both 49-byte datagrams), and makes an address the endpoint only when a hello
from it echoes a valid cookie for it, so a key holder who forges a victim's
source address makes the server send the victim no more than it sent.  A
datagram that did not authenticate is never answered.  The server's snapshot
(see :func:`encode_snapshot_parts`) is a small binary format; at most
:data:`MAX_PLAINTEXT` bytes, so a datagram is at most 1232 bytes and fits the
IPv6 minimum MTU with room for the headers.
"""

from __future__ import annotations

import hmac
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "COOKIE_BUCKET_SECONDS",
    "COOKIE_LEN",
    "HEADER_LEN",
    "HELLO",
    "KEY_ID_LEN",
    "MAX_NAME_CHARS",
    "MAX_PARTS",
    "MAX_PLAINTEXT",
    "MIN_DATAGRAM",
    "STATES",
    "TAG_LEN",
    "BeaconCipher",
    "BeaconError",
    "BeaconKeys",
    "CookieMaker",
    "ReplayWindow",
    "SnapshotAssembler",
    "SnapshotPart",
    "check_interval",
    "cookie_hello",
    "cookie_reply",
    "decode_snapshot",
    "decode_snapshot_part",
    "derive_keys",
    "encode_snapshot",
    "encode_snapshot_parts",
    "is_cookie_reply",
    "open_datagram",
    "parse_cookie_reply",
    "parse_hello",
    "peek_key_id",
    "seal",
]

KEY_ID_LEN = 8
KEY_LEN = 32
COUNTER_LEN = 8
HEADER_LEN = KEY_ID_LEN + COUNTER_LEN
TAG_LEN = 16
MIN_DATAGRAM = HEADER_LEN + TAG_LEN
MAX_COUNTER = 2**64 - 1

COOKIE_LEN = 16
COOKIE_BUCKET_SECONDS = 60.0
_HELLO = b"H"
_COOKIE = b"C"
# A plain hello carries zeros where a cookie hello carries the cookie, so both
# are as large as the cookie reply: the server never sends an unproven address
# more bytes than it received from it.
HELLO = _HELLO + bytes(COOKIE_LEN)

STATES = ("online", "idle", "reconnecting")
_STATE_CODE = {state: code for code, state in enumerate(STATES)}
MAX_NAME_CHARS = 64
MAX_PLAINTEXT = 1200
MAX_PARTS = 255

_LABEL_KEY_ID = b"spchat presence key id"
_LABEL_C2S = b"spchat presence c2s"
_LABEL_S2C = b"spchat presence s2c"

_header = struct.Struct(">8sQ")
_nonce = struct.Struct(">4xQ").pack


class BeaconError(Exception):
    """A datagram or payload was refused; ``reason`` is a short fixed word.

    ``truncated``, ``forged`` and ``garbage`` come from this module; the
    adapters add their own (``unknown``, ``replayed``, ``stale``,
    ``bad_cookie``, ``rate_limited``).
    """

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- keys -------------------------------------------------------------------


@dataclass(frozen=True)
class BeaconKeys:
    """One session's beacon keys; the secret halves stay out of ``repr``."""

    key_id: bytes
    c2s: bytes = field(repr=False)
    s2c: bytes = field(repr=False)

    def __post_init__(self):
        if len(self.key_id) != KEY_ID_LEN:
            raise ValueError(f"a key id is {KEY_ID_LEN} bytes")
        if len(self.c2s) != KEY_LEN or len(self.s2c) != KEY_LEN:
            raise ValueError(f"a beacon key is {KEY_LEN} bytes")

    # Built once per session and reused for every datagram.  cached_property
    # writes the instance __dict__ directly, which a frozen dataclass allows.
    @cached_property
    def c2s_cipher(self) -> BeaconCipher:
        return BeaconCipher(self.c2s)

    @cached_property
    def s2c_cipher(self) -> BeaconCipher:
        return BeaconCipher(self.s2c)


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def derive_keys(handshake_hash: bytes) -> BeaconKeys:
    """The beacon keys of the Noise session whose handshake hash is given."""
    if not isinstance(handshake_hash, (bytes, bytearray)) or len(handshake_hash) < 32:
        raise ValueError("a handshake hash is at least 32 bytes")
    secret = bytes(handshake_hash)
    return BeaconKeys(
        key_id=_hkdf(secret, _LABEL_KEY_ID, KEY_ID_LEN),
        c2s=_hkdf(secret, _LABEL_C2S, KEY_LEN),
        s2c=_hkdf(secret, _LABEL_S2C, KEY_LEN),
    )


# --- datagrams --------------------------------------------------------------


class BeaconCipher:
    """AES-256-GCM for one direction of one session, the AEAD object reused."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes):
        if len(key) != KEY_LEN:
            raise ValueError(f"a beacon key is {KEY_LEN} bytes")
        self._aead = AESGCM(bytes(key))

    def seal(self, key_id: bytes, counter: int, plaintext: bytes) -> bytes:
        """One datagram.  The caller must never repeat ``counter`` under this key."""
        if len(key_id) != KEY_ID_LEN:
            raise ValueError(f"a key id is {KEY_ID_LEN} bytes")
        if not 0 <= counter <= MAX_COUNTER:
            raise ValueError("counter out of range")
        header = _header.pack(key_id, counter)
        return header + self._aead.encrypt(_nonce(counter), plaintext, header)

    def open(self, datagram: bytes) -> tuple[int, bytes]:
        """``(counter, plaintext)``, or BeaconError ``truncated`` / ``forged``."""
        if len(datagram) < MIN_DATAGRAM:
            raise BeaconError("truncated")
        header = datagram[:HEADER_LEN]
        _, counter = _header.unpack(header)
        try:
            plaintext = self._aead.decrypt(_nonce(counter), datagram[HEADER_LEN:], header)
        except InvalidTag:
            raise BeaconError("forged") from None
        return counter, plaintext


def seal(key: bytes, key_id: bytes, counter: int, plaintext: bytes) -> bytes:
    """One datagram under ``key`` (builds a throw-away cipher; see BeaconCipher)."""
    return BeaconCipher(key).seal(key_id, counter, plaintext)


def open_datagram(key: bytes, datagram: bytes) -> tuple[int, bytes]:
    """``(counter, plaintext)`` of a datagram sealed under ``key``."""
    return BeaconCipher(key).open(datagram)


def peek_key_id(datagram: bytes) -> bytes | None:
    """The clear key id at the front of a datagram, None if it is too short."""
    if len(datagram) < KEY_ID_LEN:
        return None
    return bytes(datagram[:KEY_ID_LEN])


class ReplayWindow:
    """Sliding-window anti-replay (RFC 4303 section 3.4.3, as WireGuard).

    Remembers the highest counter accepted and which of the ``size`` counters
    ending at it (``highest - size + 1`` to ``highest``) were seen.  Accepts a
    counter once; refuses duplicates and anything older than the window.  Call
    it only for datagrams that authenticated.
    """

    __slots__ = ("size", "highest", "_seen")

    def __init__(self, size: int = 64):
        if size < 1:
            raise ValueError("a replay window holds at least one counter")
        self.size = size
        self.highest: int | None = None
        self._seen = 0  # bit i set: counter highest - i was accepted

    def accept(self, counter: int) -> bool:
        if not 0 <= counter <= MAX_COUNTER:
            return False
        highest = self.highest
        if highest is None or counter > highest:
            shift = self.size if highest is None else counter - highest
            if shift >= self.size:
                self._seen = 1
            else:
                self._seen = ((self._seen << shift) | 1) & ((1 << self.size) - 1)
            self.highest = counter
            return True
        offset = highest - counter
        if offset >= self.size:
            return False
        bit = 1 << offset
        if self._seen & bit:
            return False
        self._seen |= bit
        return True


# --- hellos and cookies -----------------------------------------------------


def cookie_hello(cookie: bytes | None = None) -> bytes:
    """A hello's plaintext: plain (``cookie`` None) or echoing a cookie."""
    if cookie is None:
        return HELLO
    if len(cookie) != COOKIE_LEN:
        raise ValueError(f"a cookie is {COOKIE_LEN} bytes")
    return _HELLO + bytes(cookie)


def parse_hello(plaintext: bytes) -> bytes | None:
    """The cookie a hello echoes, None for a plain hello; BeaconError ``garbage``."""
    if len(plaintext) != len(HELLO) or plaintext[:1] != _HELLO:
        raise BeaconError("garbage", "not a hello")
    if plaintext == HELLO:
        return None
    return bytes(plaintext[1:])


def cookie_reply(cookie: bytes) -> bytes:
    """The plaintext of the server's cookie datagram."""
    if len(cookie) != COOKIE_LEN:
        raise ValueError(f"a cookie is {COOKIE_LEN} bytes")
    return _COOKIE + bytes(cookie)


def parse_cookie_reply(plaintext: bytes) -> bytes:
    """The cookie in a cookie datagram's plaintext; BeaconError ``garbage``."""
    if len(plaintext) != 1 + COOKIE_LEN or plaintext[:1] != _COOKIE:
        raise BeaconError("garbage", "not a cookie")
    return bytes(plaintext[1:])


def is_cookie_reply(plaintext: bytes) -> bool:
    """True if a server plaintext is meant as a cookie (rather than a snapshot)."""
    return plaintext[:1] == _COOKIE


def _pack_address(addr) -> bytes:
    host, port = addr[0], addr[1]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            raw = socket.inet_pton(family, host)
            break
        except (OSError, ValueError, TypeError):
            continue
    else:
        # Not a plain IP literal (an IPv6 scope, say): its text names it.
        raw = str(host).encode("utf-8")
    if len(raw) > 255:
        raise ValueError("address too long")
    return bytes((len(raw),)) + raw + struct.pack(">H", port)


class CookieMaker:
    """Stateless return-routability cookies for one server.

    A cookie is the first 16 bytes of HMAC-SHA256(secret, key_id || packed
    address || time bucket), the bucket changing every
    :data:`COOKIE_BUCKET_SECONDS`.  Only the server knows ``secret`` (32
    random bytes made when it starts), so only a client that receives what
    the server sends to an address can echo a valid cookie for it; one is
    valid for the current and the previous bucket (60 to 120 s).
    """

    __slots__ = ("_secret", "bucket_seconds")

    def __init__(self, secret: bytes, bucket_seconds: float = COOKIE_BUCKET_SECONDS):
        if len(secret) < 32:
            raise ValueError("a cookie secret is at least 32 bytes")
        if bucket_seconds <= 0:
            raise ValueError("the cookie time bucket must be positive")
        self._secret = bytes(secret)
        self.bucket_seconds = bucket_seconds

    def __repr__(self):
        return f"CookieMaker(bucket_seconds={self.bucket_seconds})"

    def _cookie(self, key_id: bytes, addr, bucket: int) -> bytes:
        message = bytes(key_id) + _pack_address(addr) + struct.pack(">q", bucket)
        return hmac.digest(self._secret, message, "sha256")[:COOKIE_LEN]

    def _bucket(self, now: float) -> int:
        return int(now // self.bucket_seconds)

    def make(self, key_id: bytes, addr, now: float) -> bytes:
        """The cookie for ``addr`` in session ``key_id`` at time ``now``."""
        return self._cookie(key_id, addr, self._bucket(now))

    def check(self, key_id: bytes, addr, cookie: bytes, now: float) -> bool:
        """True if ``cookie`` was made for ``addr`` and ``key_id`` in this bucket or the last."""
        if len(cookie) != COOKIE_LEN:
            return False
        bucket = self._bucket(now)
        ok = False
        for b in (bucket, bucket - 1):
            # Both compared, in constant time, whichever matches.
            ok |= hmac.compare_digest(self._cookie(key_id, addr, b), cookie)
        return ok


# --- snapshots --------------------------------------------------------------
#
# Snapshot plaintext::
#
#     "S" | interval (u16, hundredths of a second) | part (u8) | parts (u8)
#         | entry*
#
#     entry = head (u8) [long length (u8)] | name (UTF-8)
#     head  = state << 6 | length
#
# with state 0 online, 1 idle, 2 reconnecting; a name of 1 to 63 bytes has
# its length in the low six bits, a longer one (64 to 256 bytes: 64
# characters of up to four bytes) has 0 there and ``length - 64`` in the next
# byte.  Real names (1 to 32 letters, digits, "_-.") cost their length plus
# one byte; header 5 bytes, datagram overhead 32.
#
# Large rooms: a snapshot is split into parts of at most MAX_PLAINTEXT bytes
# rather than capped, because a capped list would show the members left out
# as gone.  The parts go out back to back with consecutive datagram counters
# to one peer, so ``counter - part`` names the snapshot they belong to without
# spending bytes on a snapshot id (the counter is authenticated).  The client
# shows a snapshot only once it has every part; a lost part loses that
# snapshot, and the next beacon replaces it.  Beyond MAX_PARTS parts (tens of
# thousands of members, far past what a per-member full snapshot every few
# seconds can serve) the last members are left out.

_snap_header = struct.Struct(">cHBB")
_SNAPSHOT = b"S"
SNAPSHOT_HEADER_LEN = _snap_header.size
# The smallest part limit that still holds the longest entry (2 + 256 bytes).
_MIN_LIMIT = SNAPSHOT_HEADER_LEN + 2 + 4 * MAX_NAME_CHARS


class SnapshotPart(NamedTuple):
    interval: float
    part: int
    parts: int
    members: tuple[tuple[str, str], ...]


def check_interval(interval: float) -> int:
    """The interval in hundredths of a second; ValueError if a snapshot cannot carry it."""
    code = round(float(interval) * 100)
    if not 1 <= code <= 0xFFFF:
        raise ValueError("a beacon interval is 0.01 to 655.35 seconds")
    return code


def _encode_entry(name: str, state: str) -> bytes:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"invalid member name {name!r:.80}")
    code = _STATE_CODE.get(state)
    if code is None:
        raise ValueError(f"invalid presence state {state!r:.40}")
    raw = name.encode("utf-8")
    if len(raw) < 64:
        return bytes((code << 6 | len(raw),)) + raw
    return bytes((code << 6, len(raw) - 64)) + raw


def encode_snapshot_parts(
    interval: float,
    members: Iterable[tuple[str, str]],
    limit: int = MAX_PLAINTEXT,
) -> list[bytes]:
    """The plaintexts of one snapshot, each at most ``limit`` bytes.

    Raises ValueError for an invalid name, state or interval (a caller bug).
    """
    if not _MIN_LIMIT <= limit <= MAX_PLAINTEXT:
        raise ValueError(f"a snapshot part is {_MIN_LIMIT} to {MAX_PLAINTEXT} bytes")
    code = check_interval(interval)
    budget = limit - SNAPSHOT_HEADER_LEN
    bodies: list[list[bytes]] = [[]]
    used = 0
    for name, state in members:
        entry = _encode_entry(name, state)
        if used + len(entry) > budget:
            if len(bodies) == MAX_PARTS:
                break
            bodies.append([])
            used = 0
        bodies[-1].append(entry)
        used += len(entry)
    parts = len(bodies)
    return [
        _snap_header.pack(_SNAPSHOT, code, index, parts) + b"".join(body)
        for index, body in enumerate(bodies)
    ]


def encode_snapshot(interval: float, members: Iterable[tuple[str, str]]) -> bytes:
    """A snapshot as one plaintext; ValueError if it does not fit one datagram."""
    parts = encode_snapshot_parts(interval, members)
    if len(parts) != 1:
        raise ValueError("the snapshot needs several datagrams; use encode_snapshot_parts")
    return parts[0]


def decode_snapshot_part(data: bytes) -> SnapshotPart:
    """One snapshot datagram's plaintext; BeaconError ``garbage`` if invalid."""
    if not isinstance(data, (bytes, bytearray)):
        raise BeaconError("garbage", "not bytes")
    size = len(data)
    if size < SNAPSHOT_HEADER_LEN or size > MAX_PLAINTEXT:
        raise BeaconError("garbage", f"snapshot of {size} bytes")
    kind, code, part, parts = _snap_header.unpack_from(data)
    if kind != _SNAPSHOT:
        raise BeaconError("garbage", "not a snapshot")
    if code == 0:
        raise BeaconError("garbage", "zero interval")
    if parts == 0 or part >= parts:
        raise BeaconError("garbage", f"part {part} of {parts}")
    members = []
    pos = SNAPSHOT_HEADER_LEN
    while pos < size:
        head = data[pos]
        state, length = head >> 6, head & 0x3F
        pos += 1
        if length == 0:
            if pos >= size:
                raise BeaconError("garbage", "truncated entry")
            length = data[pos] + 64
            pos += 1
        if state >= len(STATES):
            raise BeaconError("garbage", "unknown state")
        if pos + length > size:
            raise BeaconError("garbage", "truncated entry")
        try:
            name = bytes(data[pos:pos + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise BeaconError("garbage", "name is not UTF-8") from None
        if len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise BeaconError("garbage", "invalid name")
        pos += length
        members.append((name, STATES[state]))
    return SnapshotPart(code / 100, part, parts, tuple(members))


def decode_snapshot(data: bytes) -> tuple[float, tuple[tuple[str, str], ...]]:
    """``(interval, members)`` of a snapshot sent in one datagram.

    A part of a larger snapshot is ``garbage`` here: it is not the whole room.
    Use :class:`SnapshotAssembler` when snapshots may be split.
    """
    snap = decode_snapshot_part(data)
    if snap.parts != 1:
        raise BeaconError("garbage", f"part {snap.part} of {snap.parts}")
    return snap.interval, snap.members


class SnapshotAssembler:
    """Puts split snapshots back together and keeps only the newest.

    Feed it every authentic, non-replayed snapshot datagram with its counter.
    It returns ``(interval, members)`` when a snapshot is complete, None while
    parts are missing, and raises BeaconError ``garbage`` for an invalid part
    or ``stale`` for a part of a snapshot older than one already shown or in
    progress (UDP may reorder, and an old snapshot must not replace a newer
    one).
    """

    __slots__ = ("_base", "_parts", "_interval", "_count", "delivered")

    def __init__(self):
        self._base: int | None = None  # counter of part 0 of the snapshot in progress
        self._parts: dict[int, tuple] = {}
        self._interval = 0.0
        self._count = 0
        self.delivered: int | None = None  # base of the last complete snapshot

    def feed(self, counter: int, plaintext: bytes):
        snap = decode_snapshot_part(plaintext)
        base = counter - snap.part
        if base < 0:
            raise BeaconError("garbage", "part number beyond the counter")
        if self.delivered is not None and base <= self.delivered:
            raise BeaconError("stale")
        if self._base is None or base > self._base:
            self._base, self._parts = base, {}
            self._interval, self._count = snap.interval, snap.parts
        elif base < self._base:
            raise BeaconError("stale")
        elif snap.parts != self._count or snap.interval != self._interval:
            raise BeaconError("garbage", "parts of one snapshot disagree")
        self._parts[snap.part] = snap.members
        if len(self._parts) < self._count:
            return None
        members = tuple(m for index in range(self._count) for m in self._parts[index])
        self.delivered, self._base, self._parts = base, None, {}
        return self._interval, members

