"""Limits that count events in a sliding window with bounded memory:
failed logins per account name and per IP address (``LoginThrottle``),
and new accounts per IP address and server-wide (``SignupLimit``)."""

from __future__ import annotations

import collections

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

    def record(self, key, when: float) -> None:
        """One event of ``key`` at ``when`` (now, or a moment ago: one
        heard from another node may come after a newer one here)."""
        times = self.get(key)
        if times is not None and when < times[-1]:
            if len(times) < self.limit or when > times[0]:
                kept = sorted([*times, when])[-self.limit:]
                times.clear()
                times.extend(kept)
            return  # its newest event is the same: it stays where it is
        times = self.pop(key, None)
        if times is None:
            times = collections.deque(maxlen=self.limit)
        times.append(when)
        self[key] = times  # now the newest entry
        while len(self) > self.max_entries:
            self.popitem(last=False)


def _when(at: float | None, now: float, window: float) -> float | None:
    """When an event counts: now, or at ``at`` if that is within the window
    (never later than now: another node's clock may be a little ahead);
    None if it is too old to count."""
    if at is None:
        return now
    if at <= now - window:
        return None
    return min(at, now)


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

    A good login clears the name's failures up to its time, and a failure
    of the name at or before that time heard afterwards (from another
    node, late or replayed after a gap on the bus) counts for its address
    only: the name's last good login is kept (one time per name, bounded
    and pruned alike).
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
        self._cleared = _Window(1, self.window, max_entries)  # a name's last good login

    def __len__(self) -> int:
        """Number of keys (names plus IPs) currently remembered."""
        return len(self._names) + len(self._ips)

    def _prune(self, now: float) -> None:
        self._names.prune(now)
        self._ips.prune(now)
        self._cleared.prune(now)

    def retry_after(self, name_key, ip) -> float | None:
        """Seconds until another attempt is allowed, or None if allowed now."""
        now = self._clock.seconds()
        self._prune(now)
        waits = [w for w in (self._names.wait(name_key, now), self._ips.wait(ip, now))
                 if w is not None]
        return max(waits) if waits else None

    def failed(self, name_key, ip, at: float | None = None) -> None:
        """Record a failed login for this name and this IP, now or ``at``
        (a moment ago, on another node)."""
        now = self._clock.seconds()
        self._prune(now)
        when = _when(at, now, self.window)
        if when is None:
            return
        cleared = self._cleared.get(name_key)
        if cleared is None or when > cleared[-1]:
            self._names.record(name_key, when)
        self._ips.record(ip, when)

    def succeeded(self, name_key, ip, at: float | None = None) -> None:
        """A good login, now or ``at``: it clears the name's failures up
        to then (not the IP's)."""
        now = self._clock.seconds()
        self._prune(now)
        when = _when(at, now, self.window)
        if when is None:
            return  # the failures before it are out of the window too
        self._cleared.record(name_key, when)
        times = self._names.get(name_key)
        if times is not None:
            later = [t for t in times if t > when]
            if later:
                times.clear()
                times.extend(later)
            else:
                del self._names[name_key]


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

    def counted(self, ip, at: float | None = None) -> None:
        """One more new account (being made) from ``ip``, now or ``at`` (a
        moment ago, on another node)."""
        when = _when(at, self._clock.seconds(), self.window)
        for table, key in ((self._ips, ip), (self._all, None)):
            if table is not None and when is not None:
                table.record(key, when)
