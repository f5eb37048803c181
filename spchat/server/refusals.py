"""Refusals counted per address, and logged at a bounded rate.

Whatever a peer can make the server refuse again and again (one more
connection than allowed, an admin request without the token) is counted,
but written to the log at most once a minute per address: an attacker who
repeats it costs the log a line a minute, not a line per try.
"""

from __future__ import annotations

from collections import Counter

# At most one log line per address in this many seconds (the default of
# CHAT_REFUSAL_LOG_SECONDS).
REFUSAL_LOG_SECONDS = 60.0
# Addresses remembered; past this the one logged longest ago is forgotten,
# so refusals from a whole network of addresses cannot fill the memory.
MAX_ADDRESSES = 10_000


class Refusals:
    """How often each address was refused; ``count`` says when to log it."""

    def __init__(self, clock, interval: float = REFUSAL_LOG_SECONDS,
                 max_addresses: int = MAX_ADDRESSES):
        self.clock = clock
        self.interval = interval
        self.max_addresses = max_addresses
        self._counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}  # oldest log line first

    def __getitem__(self, address: str) -> int:
        return self._counts[address]

    def count(self, address: str) -> bool:
        """One more refusal of ``address``: True if it is to be logged now
        (its first, or the first for ``interval`` seconds)."""
        self._counts[address] += 1
        now = self.clock.seconds()
        last = self._logged.get(address)
        if last is not None and now - last < self.interval:
            return False
        self._logged.pop(address, None)
        self._logged[address] = now
        while len(self._logged) > self.max_addresses:
            oldest = next(iter(self._logged))
            del self._logged[oldest], self._counts[oldest]
        return True


class ThrottledLog:
    """A log line per key at most every ``every`` seconds, with the count
    so far (``Refusals`` deciding): for listeners that log as they refuse."""

    def __init__(self, log, clock, every: float = REFUSAL_LOG_SECONDS):
        self.log = log
        self.refusals = Refusals(clock, every)

    def __call__(self, key: str, fmt: str, **fields) -> None:
        """``fmt`` may use ``{count}``: how many times ``key`` happened."""
        if self.refusals.count(key):
            self.log.info(fmt, count=self.refusals[key], **fields)

    def __getitem__(self, key: str) -> int:
        return self.refusals[key]


class PerAddress:
    """How many of something each source address holds, up to ``limit``."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held: Counter[str] = Counter()
        self.refused = 0  # takes refused, from every address (for the metrics)

    def take(self, host: str) -> bool:
        """One more for ``host``, unless it holds ``limit`` already."""
        if self.held[host] >= self.limit:
            self.refused += 1
            return False
        self.held[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.held[host] -= 1
        if self.held[host] <= 0:
            del self.held[host]
