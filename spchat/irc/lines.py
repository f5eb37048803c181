"""IRC lines: parsing and formatting (RFC 1459 / modern.ircdocs.horse, with
IRCv3 message tags), and cutting text to fit.  No state and no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A line's limit without its tags, CR LF included (RFC 1459 and every server).
MAX_LINE_BYTES = 512
# The client's tags may take this much more (IRCv3 message-tags).
MAX_CLIENT_TAG_BYTES = 4096
MAX_TAG_BYTES = 8191

_TAG_ESCAPES = {";": r"\:", " ": r"\s", "\\": "\\\\", "\r": r"\r", "\n": r"\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


# Commands whose last parameter is text: always written as a trailing one,
# as servers do, since some clients and bots look for the " :" before it.
_TEXT_LAST = frozenset({"PRIVMSG", "NOTICE", "TOPIC", "PART", "QUIT", "KICK", "ERROR", "AWAY"})


class IrcParseError(ValueError):
    """A line that is not IRC at all (no command)."""


@dataclass
class Line:
    command: str
    params: list[str] = field(default_factory=list)
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def escape_tag_value(value: str) -> str:
    return "".join(_TAG_ESCAPES.get(c, c) for c in value)


def unescape_tag_value(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            i += 1
            if i < len(value):
                out.append(_TAG_UNESCAPES.get(value[i], value[i]))
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse(raw: bytes) -> Line:
    """One line from a client (without its CR LF).  Not UTF-8 is read as
    Latin-1, as most servers do for old clients."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    tags: dict[str, str] = {}
    if text.startswith("@"):
        head, _, text = text.partition(" ")
        for item in head[1:].split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag_value(value)
    text = text.lstrip(" ")
    source = None
    if text.startswith(":"):
        head, _, text = text.partition(" ")
        source = head[1:]
        text = text.lstrip(" ")
    trailing = None
    if " :" in text:
        text, trailing = text.split(" :", 1)
    elif text.startswith(":"):
        text, trailing = "", text[1:]
    params = text.split()
    if trailing is not None:
        params.append(trailing)
    if not params:
        raise IrcParseError("no command")
    command = params.pop(0).upper()
    return Line(command, params, source, tags)


def format_line(line: Line) -> bytes:
    """The line to send, CR LF included.  The last parameter is always
    written as a trailing one when it could not be written otherwise."""
    parts = []
    if line.tags:
        parts.append("@" + ";".join(
            k if v == "" else f"{k}={escape_tag_value(v)}" for k, v in line.tags.items()))
    if line.source:
        parts.append(":" + line.source)
    parts.append(line.command)
    params = list(line.params)
    if params:
        last = params.pop()
        parts.extend(params)
        if (last == "" or " " in last or last.startswith(":")
                or line.command in _TEXT_LAST and params):
            last = ":" + last
        parts.append(last)
    return " ".join(parts).encode("utf-8") + b"\r\n"


_BAD_IN_PARAM = re.compile(r"[\r\n\0]")


def encode(source: str | None, command: str, params, tags=None, split: bool = True) -> bytes:
    """A line to send (or several: a PRIVMSG or NOTICE too long for one is
    cut, each piece to what a client's own line may hold, so a line that
    came in whole goes out whole with its source on top, as servers do)."""
    params = [_BAD_IN_PARAM.sub(" ", p) for p in params]
    tags = dict(tags or {})
    if not (split and command in ("PRIVMSG", "NOTICE") and params):
        return format_line(Line(command, params, source, tags))
    head = f"{command} {' '.join(params[:-1])} "
    budget = max(MAX_LINE_BYTES - 2 - len(head.encode("utf-8")), 16)
    return b"".join(format_line(Line(command, [*params[:-1], piece], source, tags))
                    for piece in fit(params[-1], budget))


def fit(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` UTF-8 bytes, cut between
    characters (at a space where there is one near the end)."""
    pieces = []
    while len(text.encode("utf-8")) > budget:
        cut = _cut_at(text, budget)
        pieces.append(text[:cut].rstrip(" ") or text[:cut])
        text = text[cut:].lstrip(" ")
    if text or not pieces:
        pieces.append(text)
    return pieces


def _cut_at(text: str, budget: int) -> int:
    size, cut = 0, 0
    for i, c in enumerate(text):
        size += len(c.encode("utf-8"))
        if size > budget:
            break
        cut = i + 1
    space = text.rfind(" ", 0, cut)
    if space > cut * 2 // 3:  # a word boundary not too far back
        return space + 1
    return max(cut, 1)
