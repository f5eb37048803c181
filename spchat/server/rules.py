"""The chat's pure rules: names, texts, ban wording, rate buckets, limits.

No state and no I/O: every part of the server uses these, and none of them
uses any part.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from spchat import wire

NAME_MAX_CHARS = 32
# Characters allowed in a name besides letters and digits.
NAME_PUNCTUATION = frozenset("_-.")
# Text may span lines, but other control characters (terminal escapes above
# all) would let one user rewrite another user's screen.
TEXT_ALLOWED_CONTROLS = frozenset("\n\t")
# Bidirectional overrides and isolates reorder what follows them on screen
# (text that reads differently than it is); line and paragraph separators
# break lines where a client does not expect it.
TEXT_FORBIDDEN = frozenset(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)
# Unicode's control characters (category Cc) are exactly U+0000-001F and
# U+007F-009F; a test checks that against unicodedata.
_CONTROLS = "".join(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))
_BAD_TEXT = re.compile("[" + re.escape("".join(
    sorted(set(_CONTROLS) - TEXT_ALLOWED_CONTROLS | TEXT_FORBIDDEN))) + "]")


_UNSAFE = re.compile("[" + re.escape("".join(sorted(set(_CONTROLS) | TEXT_FORBIDDEN))) + "]")


def plain(text: str, limit: int = 200) -> str:
    """Someone's reason or remark, safe to show others on one line: control
    characters (newlines too) and invisible formatting become spaces."""
    return wire.clip(" ".join(_UNSAFE.sub(" ", text).split()), limit)


class Refused(Exception):
    """A request the server will not carry out; becomes a wire ``error``."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = wire.clip(text, wire.MAX_REASON_CHARS)


def quoted(user_text: str) -> str:
    """What a user typed, quoted for an error message: short and printable."""
    return repr(wire.clip(user_text, 40))[:120]


@dataclass(frozen=True)
class Limits:
    """The chat rules' share of the configuration."""

    max_message_bytes: int = 8192
    resume_grace: float = 30.0
    idle_timeout: float = 120.0  # a connection silent this long is closed; 0: never
    idle_after: float = 30.0  # shown as idle after this long without activity
    flood_burst: int = 10
    flood_rate: float = 5.0
    flood_queue: int = 20
    history_on_join: int = 50
    max_waiting_directs: int = 100  # per account, kept until it logs in; 0: none
    max_waiting_from_one: int = 25  # of those, from one sender
    offline_retention: float = 600.0  # seconds an offline session stays listed
    presence_interval: float = 2.0  # told to clients, for their beacon watchdog
    max_share_bytes: int = 4 * 1024**3  # largest shared file; 0: sharing off
    default_rooms: tuple[str, ...] = ("lobby",)  # where a newcomer starts
    refusal_log_seconds: float = 60.0  # one log line per refused address in this time

    @property
    def max_in_flight(self) -> int:
        # A client that never has more unacknowledged messages than fit the
        # flood queue is delayed by flood control, never cut off by it.
        return max(1, self.flood_queue // 2)


@dataclass
class Ports:
    """Where the server's other listeners are, as clients are told: the
    service fills them in once it has bound them (0: none, or not yet)."""

    udp: int = 0  # the presence beacon
    relay: int = 0  # the file-sharing relay
    # Where peers connected to other nodes dial this node's relay ("": the
    # address the downloader reached this node at, wrong behind NAT).
    relay_host: str = ""


def _normalise(text: str, code: str, noun: str) -> tuple[str, str]:
    display = unicodedata.normalize("NFKC", text)
    if not 1 <= len(display) <= NAME_MAX_CHARS:
        raise Refused(code, f"{noun} must be 1 to {NAME_MAX_CHARS} characters long")
    for ch in display:
        if not (ch.isalnum() or ch in NAME_PUNCTUATION):
            raise Refused(
                code,
                f"{noun} may contain only letters, digits, '_', '-' and '.' (not {ch!r})",
            )
    return display, unicodedata.normalize("NFKC", display.casefold())


def normalise_name(name: str) -> tuple[str, str]:
    """Return (display form, comparison key) or raise Refused.

    NFKC folds look-alike compatibility characters (fullwidth letters, ligatures)
    and casefold makes "Alice" and "ALICE" the same name.
    """
    return _normalise(name, "name_invalid", "a name")


def normalise_room(name: str) -> tuple[str, str]:
    """A room name, with or without its '#': the rules of user names."""
    return _normalise(name[1:] if name.startswith("#") else name, "room_invalid",
                      "a room name")


def check_text(text: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8"))
    if size == 0 or not text.strip():
        raise Refused("empty", "the message is empty")
    if size > max_bytes:
        raise Refused(
            "too_long",
            f"the message is {size} bytes; the limit is {max_bytes} bytes (UTF-8)",
        )
    found = _BAD_TEXT.search(text)  # one C-speed scan, not a call per character
    if found is None:
        return
    ch = found.group()
    if ch in TEXT_FORBIDDEN:
        raise Refused(
            "bad_text", f"the message contains the invisible formatting character {ch!r}"
        )
    raise Refused("bad_text", "the message contains control characters")


def counted(count: float, word: str) -> str:
    """"1 minute", "10 minutes", "1.5 minutes": a count and its noun."""
    return f"{count:g} {word}{'s' * (count != 1)}"


def ban_length(minutes: float | None) -> str:
    """"for ever", "for 1 minute", "for 10 minutes"."""
    return "for ever" if minutes is None else f"for {counted(minutes, 'minute')}"


def ban_text(reason: str, until: float | None, now: float, where: str = "") -> str:
    """What a banned user is told; ``where``: " from #room" for a room ban."""
    if until is None:
        return f"you are banned{where}: {reason}"
    minutes = math.ceil((until - now) / 60)
    return f"you are banned{where} for another {counted(minutes, 'minute')}: {reason}"


# A token due within this many seconds is here: after the wait for it, the
# clock's rounding (at 1.7e9 s, a quarter of a microsecond) can leave it a
# sliver short, and a wait for the sliver would not move the clock on.
CLOCK_ROUNDING = 1e-6


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1 - self.rate * CLOCK_ROUNDING:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until the next token."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)
