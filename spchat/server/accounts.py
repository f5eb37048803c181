"""Passwords and login throttling for the optional accounts.

This module only produces and checks strings; storing them is done elsewhere.

* ``hash_password`` / ``verify_password``: Argon2id (from ``cryptography``)
  with the OWASP minimum parameters, encoded as a PHC string::

      $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>

  (standard base64 without padding).  The parameters are read back from the
  string when verifying, so they can be raised later and old hashes still
  verify; ``needs_rehash`` tells when a stored hash is weaker than the current
  parameters.
* ``PasswordWorker``: runs the (slow, memory hungry) hashing off the reactor
  thread, at most ``max_concurrent`` at a time; extra requests wait in line,
  in two lanes: those for existing accounts (logins, password changes) go
  before any new account's, so a flood of registrations cannot make a
  login wait.
* ``LoginThrottle``: counts failed logins per account name and per IP address
  in a sliding window, with memory that stays bounded under attack.
* ``SignupLimit``: counts new accounts per IP address and server-wide in
  the last hour, the same way.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import os
import re
import unicodedata

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "hash_password",
    "verify_password",
    "needs_rehash",
    "normalise_password",
    "PasswordWorker",
    "PasswordWorkerStopped",
    "LoginThrottle",
    "SignupLimit",
    "ACCOUNTS",
    "SIGNUPS",
]

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


# The password worker's lanes: work for existing accounts goes first.
ACCOUNTS = "accounts"
SIGNUPS = "signups"


class _Slots:
    """At most ``size`` holders at once; those waiting get a slot in the
    order of their lane (``ACCOUNTS`` first), then of their arrival."""

    def __init__(self, size: int):
        self.free = size
        self.waiting: dict[str, collections.deque[defer.Deferred]] = {
            ACCOUNTS: collections.deque(), SIGNUPS: collections.deque()}

    def run(self, lane: str, call, *args) -> defer.Deferred:
        def execute(_):
            return defer.maybeDeferred(call, *args).addBoth(self._release)

        return self._acquire(lane).addCallback(execute)

    def _acquire(self, lane: str) -> defer.Deferred:
        if self.free > 0:
            self.free -= 1
            return defer.succeed(None)
        queue = self.waiting[lane]
        d: defer.Deferred = defer.Deferred(canceller=queue.remove)
        queue.append(d)
        return d

    def _release(self, result):
        for queue in self.waiting.values():  # ACCOUNTS first
            if queue:
                queue.popleft().callback(None)  # the slot passes on
                return result
        self.free += 1
        return result


class PasswordWorkerStopped(Exception):
    """The password worker is not running."""


class PasswordWorker:
    """Hash and verify passwords off the reactor thread.

    At most ``max_concurrent`` computations run at once (each needs 19 MiB);
    further requests wait in line (``_Slots``), so a login flood queues
    instead of spawning work, and what waits for an existing account
    (``ACCOUNTS``) goes before what waits for a new one (``SIGNUPS``).  The
    threads come from a private ``ThreadPool`` (created by ``start()``,
    stopped by ``stop()``), never from the reactor's shared pool.

    Measured here (2 CPUs, Python 3.11, cryptography 50.0.2): one hash or
    verify takes about 13 ms (median of 30 runs, idle machine; up to ~20-25 ms
    when both CPUs are busy).  The library releases the GIL while hashing, so
    two run in parallel and the reactor thread keeps running meanwhile.
    """

    def __init__(self, reactor, max_concurrent: int = 2):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._reactor = reactor
        self.max_concurrent = max_concurrent
        self._slots = _Slots(max_concurrent)
        self._pool: ThreadPool | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    @property
    def waiting(self) -> int:
        """How many requests wait for a free slot."""
        return sum(map(len, self._slots.waiting.values()))

    def waiting_in(self, lane: str) -> int:
        """How many requests of this lane wait for a free slot."""
        return len(self._slots.waiting[lane])

    def start(self) -> None:
        """Start the private thread pool (idempotent)."""
        if self._pool is None:
            pool = ThreadPool(minthreads=0, maxthreads=self.max_concurrent,
                              name="spchat-passwords")
            pool.start()
            self._pool = pool

    def stop(self) -> None:
        """Stop the thread pool, waiting for the computations in progress.

        Requests still waiting in line fail with ``PasswordWorkerStopped``.
        ``start()`` may be called again afterwards.
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def hash(self, password: str, lane: str = ACCOUNTS) -> defer.Deferred:
        """``Deferred[str]``: the encoded hash of a new password (``lane``:
        ``SIGNUPS`` for a new account's).

        Fails with ``ValueError`` (at once, without queueing) if the password
        breaks the rules.
        """
        try:
            normalise_password(password)
        except (TypeError, ValueError):
            return defer.fail()
        # Looked up at call time, so tests can wrap the module function.
        return self._run(lambda: hash_password(password), lane)

    def verify(self, password: str, encoded: str) -> defer.Deferred:
        """``Deferred[bool]``: whether ``password`` matches ``encoded``."""
        if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
            return defer.succeed(False)
        return self._run(lambda: verify_password(password, encoded), ACCOUNTS)

    def _run(self, call, lane: str) -> defer.Deferred:
        if self._pool is None:
            return defer.fail(PasswordWorkerStopped("the password worker is not running"))
        return self._slots.run(lane, self._dispatch, call)

    def _dispatch(self, call) -> defer.Deferred:
        pool = self._pool
        if pool is None:
            raise PasswordWorkerStopped("the password worker was stopped")
        return threads.deferToThreadPool(self._reactor, pool, call)


class _Window(collections.OrderedDict):
    """Per key, the times of its last ``limit`` events (newest last); keys
    in the order of their newest event, oldest first, at most
    ``max_entries`` of them (the least recent are dropped first)."""

    def __init__(self, limit: int, window: float, max_entries: int):
        super().__init__()
        self.limit, self.window, self.max_entries = limit, window, max_entries

    def prune(self, now: float) -> None:
        """Forget the keys whose newest event is older than the window."""
        horizon = now - self.window
        while self:
            key, times = next(iter(self.items()))
            if times[-1] > horizon:
                break
            self.popitem(last=False)

    def wait(self, key, now: float) -> float | None:
        """Seconds until ``key`` has fewer than ``limit`` events in the
        window, or None if it has now."""
        times = self.get(key)
        if times is None or len(times) < self.limit:
            return None
        wait = times[0] + self.window - now
        if wait <= 0:
            return None
        return min(wait, self.window)

    def record(self, key, now: float) -> None:
        times = self.pop(key, None)
        if times is None:
            times = collections.deque(maxlen=self.limit)
        times.append(now)
        self[key] = times  # now the newest entry
        while len(self) > self.max_entries:
            self.popitem(last=False)


def _check_limits(limit: int, window: float, max_entries: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if window <= 0:
        raise ValueError("window must be positive")
    if max_entries < 1:
        raise ValueError("max_entries must be at least 1")


class LoginThrottle:
    """Count failed logins per account name and per IP address.

    A name or an IP with ``limit`` failures within the last ``window``
    seconds must wait until the oldest of those failures is ``window``
    seconds old.  The two are counted separately: guessing many passwords
    for one name from many addresses is stopped by the name count, guessing
    many names from one address by the IP count.

    Memory: only the last ``limit`` failure times are kept per key, entries
    whose newest failure is older than the window are dropped (amortised on
    every call), and each table holds at most ``max_entries`` keys (the
    least recently failed are dropped first when an attack brings more).
    """

    def __init__(self, clock, limit: int = 5, window: float = 60.0,
                 max_entries: int = 100_000):
        _check_limits(limit, window, max_entries)
        self._clock = clock
        self.limit = limit
        self.window = float(window)
        self.max_entries = max_entries
        self._names = _Window(limit, self.window, max_entries)
        self._ips = _Window(limit, self.window, max_entries)

    def __len__(self) -> int:
        """Number of keys (names plus IPs) currently remembered."""
        return len(self._names) + len(self._ips)

    def _prune(self, now: float) -> None:
        self._names.prune(now)
        self._ips.prune(now)

    def retry_after(self, name_key, ip) -> float | None:
        """Seconds until another attempt is allowed, or None if allowed now."""
        now = self._clock.seconds()
        self._prune(now)
        waits = [w for w in (self._names.wait(name_key, now), self._ips.wait(ip, now))
                 if w is not None]
        return max(waits) if waits else None

    def failed(self, name_key, ip) -> None:
        """Record a failed login for this name and this IP."""
        now = self._clock.seconds()
        self._prune(now)
        self._names.record(name_key, now)
        self._ips.record(ip, now)

    def succeeded(self, name_key, ip) -> None:
        """A good login clears the name's failures (not the IP's)."""
        now = self._clock.seconds()
        self._names.pop(name_key, None)
        self._prune(now)


class SignupLimit:
    """Count new accounts per IP address and server-wide, in the last
    ``window`` seconds (an hour): at most ``per_address`` from one address
    and ``total`` in all (0: no limit of that kind).

    Every registration that gets as far as hashing its password counts,
    whether or not it ends in an account: the hashing is the cost, and a
    client that hangs up before its account is saved must not get it free.
    Memory is bounded as in ``LoginThrottle``.
    """

    def __init__(self, clock, per_address: int, total: int, window: float = 3600.0,
                 max_entries: int = 100_000):
        if per_address < 0 or total < 0:
            raise ValueError("limits must be 0 (none) or more")
        _check_limits(1, window, max_entries)
        self._clock = clock
        self.per_address, self.total = per_address, total
        self.window = float(window)
        self._ips = _Window(per_address, self.window, max_entries) if per_address else None
        self._all = _Window(total, self.window, 1) if total else None

    def retry_after(self, ip) -> tuple[float, str] | None:
        """(seconds to wait, ``"address"`` or ``"server"``: which limit is
        reached), or None if a new account may be made now."""
        now = self._clock.seconds()
        for table, key, which in ((self._ips, ip, "address"), (self._all, None, "server")):
            if table is not None:
                table.prune(now)
                wait = table.wait(key, now)
                if wait is not None:
                    return wait, which
        return None

    def counted(self, ip) -> None:
        """One more new account (being made) from ``ip``."""
        now = self._clock.seconds()
        for table, key in ((self._ips, ip), (self._all, None)):
            if table is not None:
                table.record(key, now)
