"""Another name to try when the one asked for is taken, as IRC clients
try an alternate nick: a number at the end, counted up ("bob" gives "bob2",
"bob2" gives "bob3"), within the server's 32 characters."""

from __future__ import annotations

from spchat.server.rules import NAME_MAX_CHARS


def alternate_name(name: str) -> str:
    base = name.rstrip("0123456789")
    digits = name[len(base):]
    number = str(int(digits) + 1 if digits else 2)
    return base[:NAME_MAX_CHARS - len(number)] + number
