"""Which day a line is from, as the window says it: no Tk here.

A time alone ("14:02:07") is only clear for today's lines; a line from
another day carries its date, and a conversation is cut by day separators
("Yesterday", "Monday 30 November 2026").
"""

from __future__ import annotations

import datetime as dt
import time

# The last day a date can name (9999-12-31, UTC): the wire allows time
# stamps far past it, which a server may send.
LAST_SECONDS = 253_402_214_400


def local_day(ts_ms: float) -> str:
    """The local date of a server time stamp, as YYYY-MM-DD (at most the
    last day of the year 9999)."""
    return time.strftime("%Y-%m-%d", time.localtime(min(ts_ms / 1000, LAST_SECONDS)))


def today() -> str:
    return local_day(time.time() * 1000)


def day_label(day: str, now: str) -> str:
    """A day separator's words for ``day`` seen on the day ``now``."""
    date, current = dt.date.fromisoformat(day), dt.date.fromisoformat(now)
    if date == current:
        return "Today"
    if date == current - dt.timedelta(days=1):
        return "Yesterday"
    return f"{date:%A} {date.day} {date:%B %Y}"


def stamp(clock: str, day: str, now: str) -> str:
    """A line's time stamp: its time, and its date unless it is from ``now``."""
    if day == now:
        return clock
    date = dt.date.fromisoformat(day)
    year = "" if day[:4] == now[:4] else f" {date.year}"
    return f"{date.day} {date:%b}{year} {clock}"


def day_break(previous_day: str | None, day: str, now: str) -> str | None:
    """The separator to draw before a line from ``day`` after one from
    ``previous_day`` (None: it is the first): where the day changes, and
    above a first line that is not from today."""
    if previous_day == day or (previous_day is None and day == now):
        return None
    return day_label(day, now)
