"""The Noise Protocol Framework (revision 34), on the ``cryptography`` package.

Pure and synchronous: no I/O, no Twisted.  Supports DH ``25519``, ciphers
``AESGCM`` and ``ChaChaPoly``, hashes ``SHA256``, ``SHA512``, ``BLAKE2s`` and
``BLAKE2b``, every one-way, fundamental interactive and deferred pattern of
the specification, and the ``pskN`` modifiers (combinable: ``XXpsk0+psk3``).

Keys are raw ``bytes`` throughout: 32-byte X25519 private and public keys.
Every failure a peer can provoke raises :class:`NoiseError`, so a network
adapter needs to catch exactly one exception type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Iterable
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

__all__ = [
    "CHAT_PROLOGUE",
    "CHAT_PROTOCOL",
    "DHLEN",
    "MAX_MESSAGE_LEN",
    "MAX_PAYLOAD_LEN",
    "TAG_LEN",
    "CipherState",
    "HandshakeState",
    "NoiseError",
    "NoiseProtocol",
    "SymmetricState",
    "fingerprint",
    "generate_keypair",
    "parse_protocol_name",
    "public_key",
]

# The chat channel: the client learns (and pins) the server's static key
# during the handshake.  The version lives in the prologue, which both sides
# hash, so peers speaking different versions fail the handshake instead of
# misparsing each other.
CHAT_PROTOCOL = "Noise_NX_25519_AESGCM_SHA256"
CHAT_PROLOGUE = b"spchat/2"  # 2: rooms, numbers per conversation

MAX_MESSAGE_LEN = 65535  # every Noise message, handshake or transport
TAG_LEN = 16
MAX_PAYLOAD_LEN = MAX_MESSAGE_LEN - TAG_LEN  # largest transport plaintext
DHLEN = 32
PSK_LEN = 32

# n = 2^64-1 is reserved for Rekey(); encrypting with it is an error.
MAX_NONCE = 2**64 - 1


class NoiseError(Exception):
    """A handshake or transport operation failed; the session is unusable."""


# --- DH functions (25519) ---------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as ``(private_raw, public_raw)``."""
    key = X25519PrivateKey.generate()
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def public_key(private: bytes) -> bytes:
    """The raw public key belonging to a raw private key."""
    return _load_private(private).public_key().public_bytes_raw()


def fingerprint(public: bytes) -> str:
    """``SHA256:<base64 without padding>`` of the raw public key, as SSH does."""
    digest = hashlib.sha256(public).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _load_private(private: bytes) -> X25519PrivateKey:
    if not isinstance(private, (bytes, bytearray)) or len(private) != DHLEN:
        raise NoiseError(f"a private key must be {DHLEN} bytes")
    return X25519PrivateKey.from_private_bytes(bytes(private))


def _load_public(public: bytes) -> X25519PublicKey:
    if not isinstance(public, (bytes, bytearray)) or len(public) != DHLEN:
        raise NoiseError(f"a public key must be {DHLEN} bytes")
    return X25519PublicKey.from_public_bytes(bytes(public))


class _KeyPair:
    """A private key object with its raw public half cached."""

    __slots__ = ("private", "public")

    def __init__(self, private: X25519PrivateKey):
        self.private = private
        self.public = private.public_key().public_bytes_raw()


def _dh(local: _KeyPair, remote: X25519PublicKey) -> bytes:
    try:
        return local.private.exchange(remote)
    except ValueError:
        # cryptography refuses an all-zero result (a small-order point): a
        # peer sending one is trying to force a known shared secret.
        raise NoiseError("invalid DH result from the peer's public key") from None


# --- Cipher functions -------------------------------------------------------

# Nonce layouts from the spec (section 12): 32 zero bits, then the 64-bit
# counter, big-endian for AES-GCM and little-endian for ChaChaPoly.
_AEAD = AESGCM | ChaCha20Poly1305
_CIPHERS: dict[str, tuple[type[_AEAD], Callable[[int], bytes]]] = {
    "AESGCM": (AESGCM, struct.Struct(">4xQ").pack),
    "ChaChaPoly": (ChaCha20Poly1305, struct.Struct("<4xQ").pack),
}

# --- Hash functions ---------------------------------------------------------

# name -> (constructor, HASHLEN); hmac derives BLOCKLEN (64/128/64/128) from
# the constructor's block_size, as RFC 2104 requires.
_HASHES: dict[str, tuple[Callable[..., Any], int]] = {
    "SHA256": (hashlib.sha256, 32),
    "SHA512": (hashlib.sha512, 64),
    "BLAKE2s": (hashlib.blake2s, 32),
    "BLAKE2b": (hashlib.blake2b, 64),
}


def _hkdf(hash_fn, chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """HKDF as in Noise section 4.3: two or three HASHLEN outputs."""
    temp_key = hmac.digest(chaining_key, ikm, hash_fn)
    out1 = hmac.digest(temp_key, b"\x01", hash_fn)
    out2 = hmac.digest(temp_key, out1 + b"\x02", hash_fn)
    if outputs == 2:
        return out1, out2
    out3 = hmac.digest(temp_key, out2 + b"\x03", hash_fn)
    return out1, out2, out3


# --- CipherState ------------------------------------------------------------


class CipherState:
    """A key ``k`` and a nonce counter ``n`` (Noise section 5.1).

    Encrypts the handshake payloads and, after ``split()``, every transport
    message, so the AEAD object is built once per key and reused.  Without
    a key, encryption and decryption pass data through, as the spec says.
    """

    __slots__ = ("_aead_cls", "_nonce", "_aead", "_key", "n")
    _aead: _AEAD | None

    def __init__(self, cipher: str = "AESGCM", key: bytes | None = None):
        try:
            self._aead_cls, self._nonce = _CIPHERS[cipher]
        except KeyError:
            raise NoiseError(f"unsupported cipher {cipher!r}") from None
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        if key is not None and len(key) != 32:
            raise NoiseError("a cipher key must be 32 bytes")
        self._key = key
        self._aead = None if key is None else self._aead_cls(key)
        self.n = 0

    def has_key(self) -> bool:
        return self._aead is not None

    def set_nonce(self, nonce: int) -> None:
        if not 0 <= nonce <= MAX_NONCE:
            raise NoiseError("nonce out of range")
        self.n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            if len(plaintext) > MAX_MESSAGE_LEN:
                raise NoiseError(f"message longer than {MAX_MESSAGE_LEN} bytes")
            return plaintext
        if len(plaintext) > MAX_PAYLOAD_LEN:
            raise NoiseError(f"plaintext longer than {MAX_PAYLOAD_LEN} bytes")
        n = self.n
        if n >= MAX_NONCE:
            raise NoiseError("nonce exhausted; rekey or start a new session")
        ciphertext = aead.encrypt(self._nonce(n), plaintext, ad)
        self.n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        aead = self._aead
        if aead is None:
            if len(ciphertext) > MAX_MESSAGE_LEN:
                raise NoiseError(f"message longer than {MAX_MESSAGE_LEN} bytes")
            return ciphertext
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise NoiseError(f"message longer than {MAX_MESSAGE_LEN} bytes")
        if len(ciphertext) < TAG_LEN:
            raise NoiseError("ciphertext shorter than the authentication tag")
        n = self.n
        if n >= MAX_NONCE:
            raise NoiseError("nonce exhausted; rekey or start a new session")
        try:
            plaintext = aead.decrypt(self._nonce(n), ciphertext, ad)
        except InvalidTag:
            # n stays put: a forged or damaged message must not desynchronise
            # the receiver from the genuine sender.
            raise NoiseError("decryption failed (altered, replayed or reordered)") from None
        self.n = n + 1
        return plaintext

    def encrypt(self, plaintext: bytes) -> bytes:
        """Transport shorthand: ``encrypt_with_ad(b"", plaintext)``."""
        return self.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Transport shorthand: ``decrypt_with_ad(b"", ciphertext)``."""
        return self.decrypt_with_ad(b"", ciphertext)

    def rekey(self) -> None:
        """Replace k by ENCRYPT(k, 2^64-1, empty, zeros)[:32] (section 4.2)."""
        if self._aead is None:
            raise NoiseError("cannot rekey a cipher without a key")
        key = self._aead.encrypt(self._nonce(MAX_NONCE), bytes(32), b"")[:32]
        n = self.n  # Rekey does not reset the nonce
        self.initialize_key(key)
        self.n = n


# --- SymmetricState ---------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, handshake hash ``h`` and a CipherState (5.2)."""

    __slots__ = ("_cipher_name", "_hash", "hashlen", "ck", "h", "cipher")

    def __init__(self, protocol_name: str, cipher: str, hash_name: str):
        self._cipher_name = cipher
        self._hash, self.hashlen = _HASHES[hash_name]
        name = protocol_name.encode("ascii")
        if len(name) <= self.hashlen:
            self.h = name.ljust(self.hashlen, b"\x00")
        else:
            self.h = self._hash(name).digest()
        self.ck = self.h
        self.cipher = CipherState(cipher)

    def _key(self, temp_k: bytes) -> bytes:
        return temp_k[:32]  # HASHLEN 64 hashes give more than a key needs

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self._hash, self.ck, ikm, 2)
        self.cipher.initialize_key(self._key(temp_k))

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data).digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self._hash, self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cipher.initialize_key(self._key(temp_k))

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self._hash, self.ck, b"", 2)
        return (
            CipherState(self._cipher_name, self._key(temp_k1)),
            CipherState(self._cipher_name, self._key(temp_k2)),
        )


# --- Handshake patterns -----------------------------------------------------

# Written as in the specification (sections 7.4, 7.5 and 18.2): pre-messages
# above "...", then the messages, which alternate starting with "->".
_PATTERN_TEXT = {
    # One-way (7.4)
    "N": "<- s | ... | -> e, es",
    "K": "-> s | <- s | ... | -> e, es, ss",
    "X": "<- s | ... | -> e, es, s, ss",
    # Fundamental interactive (7.5)
    "NN": "-> e | <- e, ee",
    "NK": "<- s | ... | -> e, es | <- e, ee",
    "NX": "-> e | <- e, ee, s, es",
    "XN": "-> e | <- e, ee | -> s, se",
    "XK": "<- s | ... | -> e, es | <- e, ee | -> s, se",
    "XX": "-> e | <- e, ee, s, es | -> s, se",
    "KN": "-> s | ... | -> e | <- e, ee, se",
    "KK": "-> s | <- s | ... | -> e, es, ss | <- e, ee, se",
    "KX": "-> s | ... | -> e | <- e, ee, se, s, es",
    "IN": "-> e, s | <- e, ee, se",
    "IK": "<- s | ... | -> e, es, s, ss | <- e, ee, se",
    "IX": "-> e, s | <- e, ee, se, s, es",
    # Deferred (18.2)
    "NK1": "<- s | ... | -> e | <- e, ee, es",
    "NX1": "-> e | <- e, ee, s | -> es",
    "X1N": "-> e | <- e, ee | -> s | <- se",
    "X1K": "<- s | ... | -> e, es | <- e, ee | -> s | <- se",
    "XK1": "<- s | ... | -> e | <- e, ee, es | -> s, se",
    "X1K1": "<- s | ... | -> e | <- e, ee, es | -> s | <- se",
    "X1X": "-> e | <- e, ee, s, es | -> s | <- se",
    "XX1": "-> e | <- e, ee, s | -> es, s, se",
    "X1X1": "-> e | <- e, ee, s | -> es, s | <- se",
    "K1N": "-> s | ... | -> e | <- e, ee | -> se",
    "K1K": "-> s | <- s | ... | -> e, es | <- e, ee | -> se",
    "KK1": "-> s | <- s | ... | -> e | <- e, ee, se, es",
    "K1K1": "-> s | <- s | ... | -> e | <- e, ee, es | -> se",
    "K1X": "-> s | ... | -> e | <- e, ee, s, es | -> se",
    "KX1": "-> s | ... | -> e | <- e, ee, se, s | -> es",
    "K1X1": "-> s | ... | -> e | <- e, ee, s | -> se, es",
    "I1N": "-> e, s | <- e, ee | -> se",
    "I1K": "<- s | ... | -> e, es, s | <- e, ee | -> se",
    "IK1": "<- s | ... | -> e, s | <- e, ee, se, es",
    "I1K1": "<- s | ... | -> e, s | <- e, ee, es | -> se",
    "I1X": "-> e, s | <- e, ee, s, es | -> se",
    "IX1": "-> e, s | <- e, ee, se, s | -> es",
    "I1X1": "-> e, s | <- e, ee, s | -> se, es",
}

_ONE_WAY = frozenset({"N", "K", "X"})
_TOKENS = frozenset({"e", "s", "ee", "es", "se", "ss", "psk"})


def _parse_pattern(text: str):
    """Pattern text -> (initiator pre-message, responder pre-message, messages)."""
    lines = [line.strip() for line in text.split("|")]
    pre_lines, msg_lines = [], lines
    if "..." in lines:
        cut = lines.index("...")
        pre_lines, msg_lines = lines[:cut], lines[cut + 1 :]

    def split(line: str) -> tuple[str, tuple[str, ...]]:
        arrow, _, rest = line.partition(" ")
        return arrow, tuple(t.strip() for t in rest.split(","))

    pre: dict[str, tuple[str, ...]] = {"->": (), "<-": ()}
    for line in pre_lines:
        arrow, tokens = split(line)
        pre[arrow] = tokens
    messages = []
    for i, line in enumerate(msg_lines):
        arrow, tokens = split(line)
        assert arrow == ("->" if i % 2 == 0 else "<-"), text
        assert set(tokens) <= _TOKENS, text
        messages.append(tokens)
    return pre["->"], pre["<-"], messages


_PATTERNS = {name: _parse_pattern(text) for name, text in _PATTERN_TEXT.items()}


class NoiseProtocol:
    """A parsed protocol name such as ``Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s``."""

    __slots__ = (
        "name",
        "pattern",
        "base_pattern",
        "modifiers",
        "cipher",
        "hash",
        "pre_initiator",
        "pre_responder",
        "messages",
        "one_way",
        "psk_count",
    )
    name: str
    pattern: str
    base_pattern: str
    modifiers: tuple[str, ...]
    cipher: str
    hash: str
    pre_initiator: tuple[str, ...]
    pre_responder: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]
    one_way: bool
    psk_count: int

    def __repr__(self) -> str:
        return f"<noise.NoiseProtocol {self.name}>"


def parse_protocol_name(name: str) -> NoiseProtocol:
    """Parse and check a full protocol name; NoiseError if unsupported."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise":
        raise NoiseError(f"malformed protocol name {name!r}")
    _, pattern, dh, cipher, hash_name = parts
    if dh != "25519":
        raise NoiseError(f"unsupported DH function {dh!r}")
    if cipher not in _CIPHERS:
        raise NoiseError(f"unsupported cipher {cipher!r}")
    if hash_name not in _HASHES:
        raise NoiseError(f"unsupported hash {hash_name!r}")

    # The base name is upper case letters and digits ("X1K1"); modifiers
    # follow in lower case, joined by "+" ("psk0+psk2").
    split_at = next((i for i, ch in enumerate(pattern) if ch.islower()), len(pattern))
    base, modifier_text = pattern[:split_at], pattern[split_at:]
    if base not in _PATTERNS:
        raise NoiseError(f"unsupported handshake pattern {base!r}")
    pre_i, pre_r, messages = _PATTERNS[base]
    messages = [list(m) for m in messages]

    modifiers = tuple(modifier_text.split("+")) if modifier_text else ()
    for modifier in modifiers:
        digits = modifier[3:]
        if not (modifier.startswith("psk") and digits.isdigit()):
            raise NoiseError(f"unsupported pattern modifier {modifier!r}")
        position = int(digits)
        if position > len(messages):
            raise NoiseError(f"{modifier} is past the last message of {base}")
        # psk0: start of the first message; pskN: end of the Nth message.
        if position == 0:
            messages[0].insert(0, "psk")
        else:
            messages[position - 1].append("psk")

    proto = NoiseProtocol()
    proto.name = name
    proto.pattern = pattern
    proto.base_pattern = base
    proto.modifiers = modifiers
    proto.cipher = cipher
    proto.hash = hash_name
    proto.pre_initiator = pre_i
    proto.pre_responder = pre_r
    proto.messages = tuple(tuple(m) for m in messages)
    proto.one_way = base in _ONE_WAY
    proto.psk_count = sum(m.count("psk") for m in proto.messages)
    return proto


# --- HandshakeState ---------------------------------------------------------


class HandshakeState:
    """One side of a Noise handshake (section 5.3).

    ``s`` and ``e`` are raw private keys (``e`` only for test vectors; it is
    otherwise generated when needed), ``rs`` and ``re`` raw public keys known
    in advance, ``psks`` the 32-byte pre-shared keys in the order the pattern
    uses them.  Call ``write_message`` and ``read_message`` in turn until
    ``complete``, then ``split()`` for this side's ``(send, recv)`` ciphers.

    A failed ``read_message`` (or a ``write_message`` that fails part-way,
    e.g. on a bad DH result) leaves the handshake failed: every later call
    raises NoiseError, since the spec requires the handshake to be aborted.
    Refusals that change nothing (wrong turn, oversized payload) do not.
    """

    def __init__(
        self,
        protocol_name: str,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Iterable[bytes] = (),
    ):
        self.protocol = proto = parse_protocol_name(protocol_name)
        self.initiator = bool(initiator)
        self._s = None if s is None else _KeyPair(_load_private(s))
        self._e = None if e is None else _KeyPair(_load_private(e))
        self._rs = None if rs is None else bytes(rs)
        self._re = None if re is None else bytes(re)
        self._rs_key = None if rs is None else _load_public(rs)
        self._re_key = None if re is None else _load_public(re)
        self._psks = [bytes(p) for p in psks]
        self._psk_mode = proto.psk_count > 0
        if len(self._psks) != proto.psk_count:
            raise NoiseError(f"{proto.pattern} needs {proto.psk_count} PSK(s), got {len(self._psks)}")
        if any(len(p) != PSK_LEN for p in self._psks):
            raise NoiseError(f"a PSK must be {PSK_LEN} bytes")
        self._check_keys()

        self._sym = SymmetricState(protocol_name, proto.cipher, proto.hash)
        self._sym.mix_hash(prologue)
        # Pre-message keys are hashed initiator's first, then responder's.
        for owner_is_me, tokens in ((self.initiator, proto.pre_initiator),
                                    (not self.initiator, proto.pre_responder)):
            for token in tokens:
                key = self._pre_message_key(token, owner_is_me)
                self._sym.mix_hash(key)
                if token == "e" and self._psk_mode:
                    self._sym.mix_key(key)

        self._index = 0  # next message in proto.messages
        self._psk_index = 0
        self._failed = False
        self._ciphers: tuple[CipherState | None, CipherState | None] | None = None

    def _pre_message_key(self, token: str, mine: bool) -> bytes:
        """The public key a pre-message names ("e" or "s"), mine or the
        peer's: _check_keys has made sure it was given."""
        if mine:
            pair = self._e if token == "e" else self._s
            key = pair.public if pair is not None else None
        else:
            key = self._re if token == "e" else self._rs
        assert key is not None, f"a pre-message {token} key, checked at start"
        return key

    def _check_keys(self) -> None:
        """Refuse at once a handshake that lacks a key it will need."""
        proto = self.protocol
        mine = proto.pre_initiator if self.initiator else proto.pre_responder
        theirs = proto.pre_responder if self.initiator else proto.pre_initiator
        need_s = "s" in mine
        for i, tokens in enumerate(proto.messages):
            writing = (i % 2 == 0) == self.initiator
            for token in tokens:
                if token == "s" and writing:
                    need_s = True
                elif len(token) == 2 and token != "ee":  # es, se, ss
                    local = token[0] if self.initiator else token[1]
                    need_s = need_s or local == "s"
        if need_s and self._s is None:
            raise NoiseError(f"{proto.pattern} needs this side's static key s")
        if "e" in mine and self._e is None:
            raise NoiseError(f"{proto.pattern} needs this side's ephemeral key e")
        if "s" in theirs and self._rs is None:
            raise NoiseError(f"{proto.pattern} needs the remote static key rs")
        if "e" in theirs and self._re is None:
            raise NoiseError(f"{proto.pattern} needs the remote ephemeral key re")

    # --- state ---------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._ciphers is not None

    @property
    def my_turn(self) -> bool:
        """True if the next handshake message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        """h after the handshake: a unique id for the session (channel binding)."""
        if not self.complete:
            raise NoiseError("the handshake hash is final only after the handshake")
        return self._sym.h

    @property
    def remote_static(self) -> bytes | None:
        """The peer's raw static public key, once known."""
        return self._rs

    def split(self) -> tuple[CipherState | None, CipherState | None]:
        """This side's ``(send_cipher, recv_cipher)``.

        For one-way patterns the responder gets ``(None, recv)`` and the
        initiator ``(send, None)``: only the initiator may send.  Returns the
        same objects on every call, so nonces are never reused.
        """
        if self._ciphers is None:
            raise NoiseError("the handshake is not complete")
        return self._ciphers

    # --- messages ------------------------------------------------------------

    def _local_remote(self, token: str):
        """The (local key pair, remote public key) for a DH token."""
        mine, theirs = (token[0], token[1]) if self.initiator else (token[1], token[0])
        local = self._e if mine == "e" else self._s
        remote = self._re_key if theirs == "e" else self._rs_key
        return local, remote

    def _check_usable(self, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise NoiseError("the handshake has already failed")
        if self.complete:
            raise NoiseError("the handshake is already complete")
        if self.my_turn != writing:
            raise NoiseError(f"not this side's turn to {'write' if writing else 'read'}")
        return self.protocol.messages[self._index]

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload``."""
        tokens = self._check_usable(writing=True)
        # Work out the length first so an oversized payload is refused
        # before any state changes.
        keyed = self._sym.cipher.has_key()
        length = 0
        for token in tokens:
            if token == "e":
                length += DHLEN
                keyed = keyed or self._psk_mode
            elif token == "s":
                length += DHLEN + (TAG_LEN if keyed else 0)
            else:
                keyed = True
        length += len(payload) + (TAG_LEN if keyed else 0)
        if length > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {length} bytes exceeds {MAX_MESSAGE_LEN}")

        try:
            message = self._write(tokens, payload)
        except NoiseError:
            self._failed = True  # state is half-updated: no way back
            raise
        self._advance()
        return message

    def _write(self, tokens: tuple[str, ...], payload: bytes) -> bytes:
        sym = self._sym
        out = []
        for token in tokens:
            if token == "e":
                if self._e is None:
                    self._e = _KeyPair(X25519PrivateKey.generate())
                out.append(self._e.public)
                sym.mix_hash(self._e.public)
                if self._psk_mode:
                    sym.mix_key(self._e.public)
            elif token == "s":
                assert self._s is not None, "a static key to send, checked at start"
                out.append(sym.encrypt_and_hash(self._s.public))
            elif token == "psk":
                sym.mix_key_and_hash(self._next_psk())
            else:
                local, remote = self._local_remote(token)
                sym.mix_key(_dh(local, remote))
        out.append(sym.encrypt_and_hash(payload))
        return b"".join(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's handshake message; returns its payload."""
        tokens = self._check_usable(writing=False)
        try:
            if len(message) > MAX_MESSAGE_LEN:
                raise NoiseError(f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE_LEN}")
            payload = self._read(tokens, bytes(message))
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return payload

    def _read(self, tokens: tuple[str, ...], message: bytes) -> bytes:
        sym = self._sym
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if len(message) - pos < n:
                raise NoiseError("handshake message too short")
            pos += n
            return message[pos - n : pos]

        for token in tokens:
            if token == "e":
                self._re = take(DHLEN)
                self._re_key = _load_public(self._re)
                sym.mix_hash(self._re)
                if self._psk_mode:
                    sym.mix_key(self._re)
            elif token == "s":
                size = DHLEN + (TAG_LEN if sym.cipher.has_key() else 0)
                self._rs = sym.decrypt_and_hash(take(size))
                self._rs_key = _load_public(self._rs)
            elif token == "psk":
                sym.mix_key_and_hash(self._next_psk())
            else:
                local, remote = self._local_remote(token)
                sym.mix_key(_dh(local, remote))
        return sym.decrypt_and_hash(message[pos:])

    def _next_psk(self) -> bytes:
        psk = self._psks[self._psk_index]
        self._psk_index += 1
        return psk

    def _advance(self) -> None:
        self._index += 1
        if self._index < len(self.protocol.messages):
            return
        c1, c2 = self._sym.split()
        if self.protocol.one_way:
            # Only initiator -> responder traffic exists; c2 is discarded.
            self._ciphers = (c1, None) if self.initiator else (None, c1)
        else:
            self._ciphers = (c1, c2) if self.initiator else (c2, c1)
        # The ephemeral private key has done its job; drop our reference.
        self._e = None
