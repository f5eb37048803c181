"""Limits on what one source address may hold, and log lines that an
attacker cannot multiply: the pieces every listener shares."""

from __future__ import annotations

from collections import Counter

# A log key unused for this long is forgotten once the table is this big,
# so a flood from ever new addresses cannot grow it without end.
FORGET_AFTER_KEYS = 1024


class ThrottledLog:
    """Counts every occurrence of a key, and writes at most one line per
    key every ``every`` seconds, with the count so far."""

    def __init__(self, log, clock, every: float = 60.0):
        self.log = log
        self.clock = clock
        self.every = every
        self.counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def __call__(self, key: str, fmt: str, **fields) -> None:
        """``fmt`` may use ``{count}``: how many times ``key`` happened."""
        self.counts[key] += 1
        now = self.clock.seconds()
        last = self._logged.get(key)
        if last is not None and 0 <= now - last < self.every:
            return
        if len(self._logged) >= FORGET_AFTER_KEYS:
            self._forget(now)
        self._logged[key] = now
        self.log.info(fmt, count=self.counts[key], **fields)

    def _forget(self, now: float) -> None:
        stale = [k for k, t in self._logged.items() if not 0 <= now - t < self.every]
        if len(stale) < FORGET_AFTER_KEYS // 2:  # a flood from new addresses: the oldest half
            stale = list(self._logged)[:FORGET_AFTER_KEYS // 2]
        for key in stale:
            del self._logged[key]
            self.counts.pop(key, None)


class PerAddress:
    """How many of something each source address holds, up to ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held: Counter[str] = Counter()

    def take(self, host: str) -> bool:
        """One more for ``host``, unless it holds ``limit`` already."""
        if self.held[host] >= self.limit:
            return False
        self.held[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.held[host] -= 1
        if self.held[host] <= 0:
            del self.held[host]
