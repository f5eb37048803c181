"""Passwords: Argon2id hashes (from ``cryptography``) with the OWASP
minimum parameters, encoded as a PHC string::

    $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>

(standard base64 without padding).  The parameters are read back from the
string when verifying, so they can be raised later and old hashes still
verify; ``needs_rehash`` tells when a stored hash is weaker than the current
parameters.  This module only produces and checks strings: storing them is
the store's, and running the slow hashing off the reactor thread is
``spchat.server.password_worker``'s.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import unicodedata

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

# Current parameters (OWASP minimum for Argon2id).
MEMORY_KIB = 19456  # 19 MiB
ITERATIONS = 2
LANES = 1
SALT_BYTES = 16
HASH_BYTES = 32
VERSION = 19  # Argon2 version 0x13, the only one `cryptography` implements

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

# Bounds accepted when reading a stored hash.  They allow the parameters to be
# raised a lot later on, but keep a damaged or forged string from making the
# server allocate gigabytes or spin for minutes.
_MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB
_MAX_ITERATIONS = 64
_MAX_LANES = 64
_SALT_RANGE = (8, 64)
_HASH_RANGE = (16, 128)

_B64 = re.compile(r"[A-Za-z0-9+/]+")
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")


def normalise_password(password: str) -> str:
    """Check a new password against the rules and return its NFKC form.

    Raises ``ValueError`` with a message that can be shown to the user.
    """
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    if not password:
        raise ValueError("The password is empty.")
    # Check the raw length first so a huge input is never normalised.
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(
            f"The password is too long: at most {MAX_PASSWORD_LENGTH} characters."
        )
    normal = unicodedata.normalize("NFKC", password)
    if len(normal) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters."
        )
    if len(normal) > MAX_PASSWORD_LENGTH:
        # NFKC can expand some characters (ligatures and the like).
        raise ValueError(
            f"The password is too long: at most {MAX_PASSWORD_LENGTH} characters."
        )
    try:
        normal.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: not text anyone can type.
        raise ValueError("The password contains characters that cannot be used.") from None
    return normal


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("bad base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(password: bytes, salt: bytes, memory: int, iterations: int, lanes: int,
            length: int) -> bytes:
    kdf = Argon2id(
        salt=salt,
        length=length,
        iterations=iterations,
        lanes=lanes,
        memory_cost=memory,
    )
    return kdf.derive(password)


def hash_password(password: str) -> str:
    """Hash a new password; return the encoded string to store.

    Raises ``ValueError`` if the password breaks the rules (empty, shorter
    than 8 or longer than 1024 characters).  This is slow (tens of
    milliseconds) and uses 19 MiB: call it through ``PasswordWorker`` from
    the reactor thread.
    """
    secret = normalise_password(password).encode("utf-8")
    salt = os.urandom(SALT_BYTES)
    digest = _derive(secret, salt, MEMORY_KIB, ITERATIONS, LANES, HASH_BYTES)
    return (
        f"$argon2id$v={VERSION}$m={MEMORY_KIB},t={ITERATIONS},p={LANES}"
        f"${_b64encode(salt)}${_b64encode(digest)}"
    )


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """Split an encoded hash into (memory, iterations, lanes, salt, hash).

    Raises ``ValueError`` for anything that is not a well-formed Argon2id
    string within the accepted bounds.
    """
    if not isinstance(encoded, str) or len(encoded) > 512:
        raise ValueError("not an encoded hash")
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "" or parts[1] != "argon2id":
        raise ValueError("not an argon2id hash")
    if parts[2] != f"v={VERSION}":
        raise ValueError("unsupported version")
    params = {}
    for item in parts[3].split(","):
        key, sep, value = item.partition("=")
        if not sep or key in params or not _NUMBER.fullmatch(value):
            raise ValueError("bad parameters")
        params[key] = int(value)
    if set(params) != {"m", "t", "p"}:
        raise ValueError("bad parameters")
    memory, iterations, lanes = params["m"], params["t"], params["p"]
    if not (1 <= lanes <= _MAX_LANES and 1 <= iterations <= _MAX_ITERATIONS):
        raise ValueError("parameters out of range")
    if not (8 * lanes <= memory <= _MAX_MEMORY_KIB):
        raise ValueError("parameters out of range")
    try:
        salt = _b64decode(parts[4])
        digest = _b64decode(parts[5])
    except (ValueError, binascii.Error):
        raise ValueError("bad base64") from None
    if not (_SALT_RANGE[0] <= len(salt) <= _SALT_RANGE[1]):
        raise ValueError("bad salt length")
    if not (_HASH_RANGE[0] <= len(digest) <= _HASH_RANGE[1]):
        raise ValueError("bad hash length")
    return memory, iterations, lanes, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches the stored ``encoded`` hash.

    Never raises for a bad ``encoded`` string (it just does not match).  The
    length rules for new passwords are not applied here apart from the
    maximum, so raising the minimum later does not lock anyone out.
    """
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        memory, iterations, lanes, salt, expected = _parse(encoded)
        secret = unicodedata.normalize("NFKC", password).encode("utf-8")
        actual = _derive(secret, salt, memory, iterations, lanes, len(expected))
    except Exception:
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    """True if a stored hash uses weaker parameters than the current ones
    (or cannot be read); hash the password again after a good login."""
    try:
        memory, iterations, lanes, salt, digest = _parse(encoded)
    except ValueError:
        return True
    return (
        memory < MEMORY_KIB
        or iterations < ITERATIONS
        or len(salt) < SALT_BYTES
        or len(digest) < HASH_BYTES
    )
