"""Passwords (Argon2id), the password worker, login throttling and the
limits on new accounts."""

import threading
import time

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from twisted.internet import defer, reactor, task

from spchat.server import passwords as accounts
from spchat.server.password_worker import ACCOUNTS, SIGNUPS, PasswordWorker, PasswordWorkerStopped
from spchat.server.passwords import hash_password, needs_rehash, verify_password
from spchat.server.throttles import LoginThrottle, SignupLimit

PASSWORD = "correct horse battery"


# --- hashing -----------------------------------------------------------------


def test_round_trip():
    encoded = hash_password(PASSWORD)
    assert verify_password(PASSWORD, encoded) is True


def test_wrong_password_is_false():
    encoded = hash_password(PASSWORD)
    assert verify_password("correct horse battery!", encoded) is False
    assert verify_password("Correct horse battery", encoded) is False
    assert verify_password("", encoded) is False


def test_same_password_twice_gives_different_hashes():
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]  # different salts
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)


def test_encoded_string_names_the_parameters():
    encoded = hash_password(PASSWORD)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    _, name, version, params, salt, digest = encoded.split("$")
    assert "=" not in salt and "=" not in digest  # no padding
    assert len(salt) == 22 and len(digest) == 43  # 16 and 32 bytes
    assert not needs_rehash(encoded)


def test_interoperates_with_the_library_phc_format():
    # Our string is accepted by cryptography's own PHC verifier ...
    encoded = hash_password(PASSWORD)
    Argon2id.verify_phc_encoded(PASSWORD.encode(), encoded)
    # ... and a string made by the library verifies with ours.
    theirs = Argon2id(
        salt=b"0123456789abcdef", length=32, iterations=2, lanes=1, memory_cost=19456
    ).derive_phc_encoded(PASSWORD.encode())
    assert verify_password(PASSWORD, theirs)


def test_parameters_are_read_from_the_string():
    stronger = Argon2id(
        salt=b"saltsaltsaltsalt", length=32, iterations=3, lanes=2, memory_cost=32768
    ).derive_phc_encoded(PASSWORD.encode())
    assert "m=32768,t=3,p=2" in stronger
    assert verify_password(PASSWORD, stronger)
    assert not verify_password("another password", stronger)
    assert not needs_rehash(stronger)

    weaker = Argon2id(
        salt=b"saltsaltsaltsalt", length=32, iterations=1, lanes=1, memory_cost=8192
    ).derive_phc_encoded(PASSWORD.encode())
    assert verify_password(PASSWORD, weaker)
    assert needs_rehash(weaker)


def test_nfkc_fullwidth_and_ascii_match():
    ascii_pw = "pass12345"
    fullwidth = "ｐａｓｓ１２３４５"  # U+FF50... / U+FF11...
    assert fullwidth != ascii_pw
    assert verify_password(fullwidth, hash_password(ascii_pw))
    assert verify_password(ascii_pw, hash_password(fullwidth))
    # Digits only differing in width, too.
    assert verify_password("secret１２３", hash_password("secret123"))


def _good():
    return hash_password(PASSWORD)


def _swap(encoded, index, value):
    parts = encoded.split("$")
    parts[index] = value
    return "$".join(parts)


def test_malformed_encoded_strings_are_false():
    good = _good()
    salt, digest = good.split("$")[4:6]
    malformed = [
        "",
        "garbage",
        "$",
        "$$$$$",
        good + "$extra",
        good.rsplit("$", 1)[0],  # hash missing
        good[1:],  # no leading $
        _swap(good, 1, "argon2i"),
        _swap(good, 1, "bcrypt"),
        _swap(good, 2, "v=16"),
        _swap(good, 2, "v=nineteen"),
        _swap(good, 3, "m=19456,t=2"),
        _swap(good, 3, "m=19456,t=2,p=1,x=3"),
        _swap(good, 3, "m=19456,t=2,t=2"),
        _swap(good, 3, "m=abc,t=2,p=1"),
        _swap(good, 3, "m=-1,t=2,p=1"),
        _swap(good, 3, "m=0,t=2,p=1"),
        _swap(good, 3, "m=19456,t=0,p=1"),
        _swap(good, 3, "m=19456,t=2,p=0"),
        _swap(good, 3, "m=4,t=2,p=1"),  # below 8*p
        _swap(good, 3, "m=4194304,t=2,p=1"),  # 4 GiB: refused, not allocated
        _swap(good, 3, "m=99999999999999999999,t=2,p=1"),
        _swap(good, 3, "m=19456,t=100000,p=1"),
        _swap(good, 3, "m=19456 ,t=2,p=1"),
        _swap(good, 4, ""),
        _swap(good, 4, "!!!!notbase64!!!!"),
        _swap(good, 4, salt + "=="),  # padding is not allowed
        _swap(good, 4, "c2FsdA"),  # 4-byte salt: too short
        _swap(good, 4, salt[:-1]),  # impossible base64 length
        _swap(good, 5, ""),
        _swap(good, 5, digest[:10]),  # too short a hash
        _swap(good, 5, digest + "é"),
        "$argon2id$v=19$m=19456,t=2,p=1$" + "A" * 600,
        None,
        good.encode(),
        12345,
    ]
    for encoded in malformed:
        assert verify_password(PASSWORD, encoded) is False, encoded
        assert needs_rehash(encoded) is True


def test_tampered_hash_is_false():
    good = _good()
    digest = good.split("$")[5]
    flipped = ("B" if digest[0] == "A" else "A") + digest[1:]
    assert verify_password(PASSWORD, _swap(good, 5, flipped)) is False


@pytest.mark.parametrize(
    "password, words",
    [
        ("", "empty"),
        ("short77", "too short"),  # 7 characters
        ("x" * 1025, "too long"),
        ("\ufdfa" * 100, "too long"),  # NFKC expands each to 18 characters
        ("abcdefgh\ud800", "cannot be used"),  # lone surrogate
    ],
)
def test_password_rules(password, words):
    with pytest.raises(ValueError) as info:
        hash_password(password)
    assert words in str(info.value)


def test_password_length_limits_accepted():
    for password in ("8chars!!", "y" * 1024):
        assert verify_password(password, hash_password(password))
    assert verify_password("y" * 1025, hash_password("y" * 1024)) is False


def test_password_must_be_text():
    with pytest.raises(TypeError):
        hash_password(b"bytes password")


# --- PasswordWorker ------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_worker_hash_and_verify():
    worker = PasswordWorker(reactor)
    worker.start()
    try:
        encoded = yield worker.hash(PASSWORD)
        assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert (yield worker.verify(PASSWORD, encoded)) is True
        assert (yield worker.verify("wrong password", encoded)) is False
        assert (yield worker.verify(PASSWORD, "malformed")) is False
        with pytest.raises(ValueError):
            yield worker.hash("short")
    finally:
        worker.stop()


@pytest_twisted.inlineCallbacks
def test_worker_runs_off_the_reactor_thread(monkeypatch):
    """The reactor keeps ticking while four hashes are in progress.

    Each hash, after computing, waits in its worker thread until the reactor
    has ticked three times while hashing was in progress.  If the hash ran on
    the reactor thread, that could never happen and the wait would time out.
    """
    real_hash = accounts.hash_password
    lock = threading.Lock()
    state = {"active": 0, "ticks_while_active": 0}
    ticked = threading.Event()
    worker_threads = []
    timed_out = []

    def instrumented(password):
        worker_threads.append(threading.get_ident())
        with lock:
            state["active"] += 1
        try:
            result = real_hash(password)
            if not ticked.wait(10):
                timed_out.append(True)
            return result
        finally:
            with lock:
                state["active"] -= 1

    def tick():
        with lock:
            if state["active"]:
                state["ticks_while_active"] += 1
                if state["ticks_while_active"] >= 3:
                    ticked.set()

    monkeypatch.setattr(accounts, "hash_password", instrumented)
    reactor_thread = threading.get_ident()
    loop = task.LoopingCall(tick)
    loop.start(0.001)
    worker = PasswordWorker(reactor, max_concurrent=2)
    worker.start()
    try:
        results = yield defer.gatherResults(
            [worker.hash(f"password number {i}") for i in range(4)]
        )
    finally:
        loop.stop()
        worker.stop()
    assert not timed_out
    assert state["ticks_while_active"] >= 3
    assert len(worker_threads) == 4
    assert reactor_thread not in worker_threads
    assert all(verify_password(f"password number {i}", r) for i, r in enumerate(results))


@pytest_twisted.inlineCallbacks
def test_worker_never_exceeds_max_concurrent(monkeypatch):
    real_hash = accounts.hash_password
    real_verify = accounts.verify_password
    lock = threading.Lock()
    state = {"active": 0, "most": 0, "calls": 0}

    def counted(real):
        def wrapper(*args):
            with lock:
                state["active"] += 1
                state["calls"] += 1
                state["most"] = max(state["most"], state["active"])
            try:
                time.sleep(0.02)  # widen the window for overlap
                return real(*args)
            finally:
                with lock:
                    state["active"] -= 1

        return wrapper

    monkeypatch.setattr(accounts, "hash_password", counted(real_hash))
    monkeypatch.setattr(accounts, "verify_password", counted(real_verify))
    encoded = real_hash(PASSWORD)
    worker = PasswordWorker(reactor, max_concurrent=2)
    worker.start()
    try:
        pending = [worker.hash(f"flood password {i}") for i in range(6)]
        pending += [worker.verify(PASSWORD, encoded) for _ in range(6)]
        # The flood waits in the semaphore, not in the thread pool.
        assert worker.waiting == 10
        results = yield defer.gatherResults(pending)
    finally:
        worker.stop()
    assert state["calls"] == 12
    assert state["most"] == 2
    assert results[6:] == [True] * 6
    assert worker.waiting == 0


@pytest_twisted.inlineCallbacks
def test_worker_stop_and_restart():
    worker = PasswordWorker(reactor, max_concurrent=1)
    with pytest.raises(PasswordWorkerStopped):
        yield worker.hash(PASSWORD)  # not started yet
    worker.start()
    worker.start()  # idempotent
    encoded = yield worker.hash(PASSWORD)
    worker.stop()
    worker.stop()  # idempotent
    assert not worker.running
    with pytest.raises(PasswordWorkerStopped):
        yield worker.verify(PASSWORD, encoded)
    worker.start()
    try:
        assert (yield worker.verify(PASSWORD, encoded)) is True
    finally:
        worker.stop()


@pytest_twisted.inlineCallbacks
def test_worker_stop_fails_queued_requests():
    worker = PasswordWorker(reactor, max_concurrent=1)
    worker.start()
    first = worker.hash(PASSWORD)
    queued = worker.hash(PASSWORD)
    worker.stop()  # waits for the one in progress
    with pytest.raises(PasswordWorkerStopped):
        yield queued
    assert (yield first).startswith("$argon2id$")


@pytest_twisted.inlineCallbacks
def test_worker_serves_existing_accounts_before_new_ones(monkeypatch):
    order = []

    def recorded(label):
        order.append(label)
        time.sleep(0.01)
        return label

    monkeypatch.setattr(accounts, "hash_password", recorded)
    monkeypatch.setattr(accounts, "verify_password", lambda password, encoded: recorded(password))
    worker = PasswordWorker(reactor, max_concurrent=1)
    worker.start()
    try:
        pending = [worker.hash(f"new account {i}", SIGNUPS) for i in range(3)]
        pending += [worker.verify("login 1", "hash"), worker.hash("new password", ACCOUNTS),
                    worker.verify("login 2", "hash")]
        assert (worker.waiting_in(SIGNUPS), worker.waiting_in(ACCOUNTS)) == (2, 3)
        yield defer.gatherResults(pending)
    finally:
        worker.stop()
    # The first new account had the worker already; then every login and
    # password change went before the new accounts still waiting.
    assert order == ["new account 0", "login 1", "new password", "login 2",
                     "new account 1", "new account 2"]


@pytest_twisted.inlineCallbacks
def test_a_request_given_up_while_waiting_leaves_the_line():
    worker = PasswordWorker(reactor, max_concurrent=1)
    worker.start()
    try:
        first = worker.hash(PASSWORD, SIGNUPS)
        given_up = worker.hash(PASSWORD, SIGNUPS)
        given_up.cancel()
        assert worker.waiting == 0
        with pytest.raises(defer.CancelledError):
            yield given_up
        assert (yield first).startswith("$argon2id$")
        assert (yield worker.hash(PASSWORD)).startswith("$argon2id$")  # the slot is free
    finally:
        worker.stop()


def test_worker_rejects_bad_max_concurrent():
    with pytest.raises(ValueError):
        PasswordWorker(reactor, max_concurrent=0)


# --- LoginThrottle -------------------------------------------------------------


def test_throttle_blocks_after_limit_for_remaining_window():
    clock = task.Clock()
    throttle = LoginThrottle(clock, limit=5, window=60.0)
    for _ in range(4):
        throttle.failed("alice", "192.0.2.1")
        assert throttle.retry_after("alice", "192.0.2.1") is None
    throttle.failed("alice", "192.0.2.1")
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(60.0)
    clock.advance(15)
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(45.0)
    clock.advance(44.5)
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(0.5)
    clock.advance(0.5)
    assert throttle.retry_after("alice", "192.0.2.1") is None


def test_throttle_window_slides():
    clock = task.Clock()
    throttle = LoginThrottle(clock, limit=5, window=60.0)
    for _ in range(5):
        throttle.failed("alice", "192.0.2.1")
        clock.advance(10)
    # Failures at 0, 10, 20, 30, 40; now 50: the first expires at 60.
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(10.0)
    clock.advance(10)
    assert throttle.retry_after("alice", "192.0.2.1") is None
    throttle.failed("alice", "192.0.2.1")  # five again in the window
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(10.0)


def test_throttle_per_ip_across_names():
    clock = task.Clock()
    throttle = LoginThrottle(clock)
    for i in range(5):
        throttle.failed(f"user{i}", "198.51.100.7")
    assert throttle.retry_after("somebody", "198.51.100.7") == pytest.approx(60.0)
    assert throttle.retry_after("somebody", "198.51.100.8") is None
    assert throttle.retry_after("user0", "198.51.100.8") is None


def test_throttle_per_name_across_ips():
    clock = task.Clock()
    throttle = LoginThrottle(clock)
    for i in range(5):
        throttle.failed("alice", f"203.0.113.{i}")
    assert throttle.retry_after("alice", "203.0.113.200") == pytest.approx(60.0)
    assert throttle.retry_after("bob", "203.0.113.0") is None


def test_throttle_reports_the_longer_wait():
    clock = task.Clock()
    throttle = LoginThrottle(clock)
    for i in range(5):
        throttle.failed("alice", f"203.0.113.{i}")
    clock.advance(20)
    for i in range(5):
        throttle.failed(f"user{i}", "198.51.100.7")
    assert throttle.retry_after("alice", "198.51.100.7") == pytest.approx(60.0)
    assert throttle.retry_after("alice", "192.0.2.99") == pytest.approx(40.0)


def test_throttle_success_clears_name_not_ip():
    clock = task.Clock()
    throttle = LoginThrottle(clock)
    for _ in range(4):
        throttle.failed("alice", "192.0.2.1")
    throttle.succeeded("alice", "192.0.2.1")
    throttle.failed("alice", "192.0.2.2")
    for _ in range(3):
        throttle.failed("alice", "192.0.2.2")
    assert throttle.retry_after("alice", "192.0.2.3") is None  # only 4 for alice
    # The IP still has its earlier failures: one more blocks it.
    throttle.failed("bob", "192.0.2.1")
    assert throttle.retry_after("carol", "192.0.2.1") == pytest.approx(60.0)


def test_throttle_prunes_after_many_distinct_names():
    clock = task.Clock()
    throttle = LoginThrottle(clock, limit=5, window=60.0)
    most = 0
    for i in range(100_000):
        throttle.failed(f"name{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        clock.advance(0.01)
        most = max(most, len(throttle))
    # Only failures within the last 60 s are kept: 6000 names + 6000 IPs.
    assert most <= 2 * 6001
    assert len(throttle._names) <= 6001 and len(throttle._ips) <= 6001
    clock.advance(60)
    assert throttle.retry_after("anyone", "192.0.2.1") is None
    assert len(throttle) == 0


def test_throttle_caps_entries_under_a_burst():
    clock = task.Clock()
    throttle = LoginThrottle(clock, max_entries=1000)
    for i in range(100_000):
        throttle.failed(f"name{i}", f"2001:db8::{i:x}")
    assert len(throttle._names) == 1000 and len(throttle._ips) == 1000
    # The most recent attackers are still remembered.
    for _ in range(4):
        throttle.failed("name99999", f"2001:db8::{99999:x}")
    assert throttle.retry_after("name99999", "192.0.2.1") == pytest.approx(60.0)


def test_throttle_keeps_only_limit_times_per_key():
    clock = task.Clock()
    throttle = LoginThrottle(clock, limit=5)
    for _ in range(1000):
        throttle.failed("alice", "192.0.2.1")
        clock.advance(0.01)
    assert len(throttle._names["alice"]) == 5
    assert len(throttle._ips["192.0.2.1"]) == 5
    assert throttle.retry_after("alice", "192.0.2.1") == pytest.approx(60.0 - 0.05)


def test_throttle_rejects_bad_settings():
    clock = task.Clock()
    for kwargs in ({"limit": 0}, {"window": 0}, {"max_entries": 0}):
        with pytest.raises(ValueError):
            LoginThrottle(clock, **kwargs)


# --- SignupLimit ------------------------------------------------------------------


def test_signups_are_limited_per_address_for_an_hour():
    clock = task.Clock()
    limit = SignupLimit(clock, per_address=2, total=0)
    for _ in range(2):
        assert limit.retry_after("192.0.2.1") is None
        limit.counted("192.0.2.1")
    assert limit.retry_after("192.0.2.1") == (pytest.approx(3600.0), "address")
    assert limit.retry_after("192.0.2.2") is None  # another address
    clock.advance(3599)
    assert limit.retry_after("192.0.2.1") == (pytest.approx(1.0), "address")
    clock.advance(1)
    assert limit.retry_after("192.0.2.1") is None  # the oldest is an hour old


def test_signups_are_limited_server_wide():
    clock = task.Clock()
    limit = SignupLimit(clock, per_address=2, total=3)
    for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        clock.advance(10)
        limit.counted(address)
    assert limit.retry_after("192.0.2.3") == (pytest.approx(3580.0), "server")
    clock.advance(3580)
    assert limit.retry_after("192.0.2.3") is None


def test_no_signup_limit_when_zero():
    clock = task.Clock()
    limit = SignupLimit(clock, per_address=0, total=0)
    for _ in range(1000):
        limit.counted("192.0.2.1")
    assert limit.retry_after("192.0.2.1") is None


def test_signup_limit_memory_is_bounded():
    clock = task.Clock()
    limit = SignupLimit(clock, per_address=1, total=0, max_entries=100)
    for i in range(10_000):
        limit.counted(f"2001:db8::{i:x}")
    assert len(limit._ips) == 100


def test_signup_limit_rejects_bad_settings():
    clock = task.Clock()
    for kwargs in ({"per_address": -1, "total": 0}, {"per_address": 1, "total": -1},
                   {"per_address": 1, "total": 1, "window": 0}):
        with pytest.raises(ValueError):
            SignupLimit(clock, **kwargs)
