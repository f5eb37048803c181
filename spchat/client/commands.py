"""Room commands as both clients take them: parsed, checked, sent.

``room_command`` runs one of ``ROOM_USAGE``'s commands on a ChatClient for
the current room; a command typed wrong raises ``CommandError`` with its
usage line, never anything else.  The texts both clients show of rooms and
their members are here too, so the window and the terminal say the same.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from spchat import wire

ROOM_USAGE = {
    "/join": "/join #name [private|PASSWORD]",
    "/part": "/part [#name] [reason]",
    "/rooms": "/rooms",
    "/topic": "/topic [text|-delete]",
    "/mode": "/mode +i|-i|+t|-t|+m|-m|+k PASSWORD|-k|+l NUMBER|-l",
    "/invite": "/invite NAME",
    "/kick": "/kick NAME [reason]",
    "/ban": "/ban NAME [minutes] [reason]",
    "/unban": "/unban NAME",
    "/mute": "/mute NAME",
    "/unmute": "/unmute NAME",
    "/op": "/op NAME",
    "/deop": "/deop NAME",
    "/owner": "/owner NAME",
    "/voice": "/voice NAME",
    "/devoice": "/devoice NAME",
}
ROOM_HELP = ", ".join(ROOM_USAGE.values())
NO_ROOM = "that needs a room, and you are in none here: /join #name first"
# The /mode letters, as on IRC: +i invited people only, +t only operators
# set the topic, +m only operators and voices speak (and +k PASSWORD,
# +l NUMBER, see _mode).
MODES = {"+i": ("private", True), "-i": ("private", False),
         "+t": ("topic_locked", True), "-t": ("topic_locked", False),
         "+m": ("moderated", True), "-m": ("moderated", False)}
CLEAR_TOPIC = "-delete"  # as irssi's /topic -delete
_MINUTES = re.compile(r"\d+(\.\d+)?")


class CommandError(Exception):
    """A command that cannot run as typed; the text says why (a usage line)."""


class Outcome(NamedTuple):
    show: str = ""  # something to tell the user (the topic asked for)
    joining: str = ""  # the room a /join asked for, as typed
    join_cid: str | None = None  # that request's id: a refusal names it


def room_command(client, word: str, rest: str, room: str | None) -> Outcome:
    """Run ``word rest`` (a key of ROOM_USAGE) with ``room`` current (None:
    no room); CommandError if it is typed wrong or needs a room."""
    args = rest.strip()
    if word == "/join":
        return _join(client, args)
    if word == "/rooms":
        _no_arguments(word, args)
        client.list_rooms()
        return Outcome()
    if word == "/part":
        _part(client, args, room)
        return Outcome()
    if room is None:
        raise CommandError(NO_ROOM)
    if word == "/topic":
        return _topic(client, args, room)
    if word == "/mode":
        _mode(client, args, room)
        return Outcome()
    _moderate(client, word, args, room)
    return Outcome()


def _usage(word: str) -> CommandError:
    return CommandError(f"usage: {ROOM_USAGE[word]}")


def _no_arguments(word: str, args: str) -> None:
    if args:
        raise _usage(word)


def _room_name(word: str, typed: str) -> str:
    name = typed.removeprefix("#")
    if not name:
        raise _usage(word)
    return name


def _join(client, args: str) -> Outcome:
    words = args.split()
    if not 1 <= len(words) <= 2:
        raise _usage("/join")
    name = _room_name("/join", words[0])
    extra = words[1] if len(words) == 2 else None
    if extra is not None and extra.lower() == "private":
        cid = client.join(name, private=True)
    else:
        cid = client.join(name, password=extra)
    return Outcome(joining=name, join_cid=cid)


def _mode(client, args: str, room: str) -> None:
    if args in MODES:
        client.mode(room, *MODES[args])
        return
    letters, _, value = args.partition(" ")
    value = value.strip()
    if letters in ("-k", "-l") and not value:
        (client.set_password if letters == "-k" else client.set_member_limit)(room, None)
    elif letters == "+k" and value and " " not in value:
        client.set_password(room, value)
    elif letters == "+l" and value.isdecimal() and int(value) > 0:
        client.set_member_limit(room, int(value))
    else:
        raise _usage("/mode")


def _part(client, args: str, room: str | None) -> None:
    first, _, reason = args.partition(" ")
    if first.startswith("#"):  # a reason's first word is no room
        room = _room_name("/part", first)
    else:
        reason = args
    if room is None:
        raise CommandError(NO_ROOM)
    client.part(room, reason.strip() or None)


def _topic(client, args: str, room: str) -> Outcome:
    if not args:
        known = client.room(room)
        return Outcome(show=topic_text(known) if known else f"you are not in #{room}")
    client.topic(room, "" if args == CLEAR_TOPIC else args)
    return Outcome()


def _moderate(client, word: str, args: str, room: str) -> None:
    op = word[1:]
    name, _, tail = args.partition(" ")
    tail = tail.strip()
    if not name or name.startswith("#"):
        raise _usage(word)
    minutes = None
    if op == "ban":
        first, _, reason = tail.partition(" ")
        if _MINUTES.fullmatch(first):
            minutes, tail = float(first), reason.strip()
            if not 0 < minutes <= 1e7:
                raise CommandError(f"usage: {ROOM_USAGE[word]} (1 to 10000000 minutes; "
                                   "no number: for ever)")
    if tail and op not in ("kick", "ban"):
        raise _usage(word)
    client.moderate(room, op, name, tail or None, minutes)


# --- what both clients say about rooms ------------------------------------------


def room_flags(room) -> list[str]:
    """What sets a ``session.Room`` apart from a plain one: private, topic locked."""
    return [what for what, on in (("private", room.private),
                                  ("topic locked", room.topic_locked),
                                  ("moderated", room.moderated),
                                  ("needs a password", room.password),
                                  (f"at most {room.member_limit} members", room.member_limit))
            if on]


def topic_text(room) -> str:
    """The answer to /topic: a room's topic, and its modes."""
    topic = f"topic of #{room.name}: {room.topic}" if room.topic else f"#{room.name} has no topic"
    flags = room_flags(room)
    return topic + (f" ({', '.join(flags)})" if flags else "")


def member_text(member) -> str:
    """"bob (idle, operator)": a member's state, and role unless plain."""
    name, state, role = member
    return f"{name} ({state}{'' if role == 'member' else ', ' + role})"


def who_text(room: str, members) -> str:
    """The answer to /who: everyone in a room."""
    return f"in #{room}: " + (", ".join(map(member_text, members)) or "nobody")


def room_list_lines(msg: wire.RoomList) -> list[str]:
    """The answer to /rooms: a heading, then one line per room."""
    if not msg.rooms:
        return ["no public rooms"]
    rows = [f"#{name} ({count} member{'' if count == 1 else 's'})" + (f": {topic}" if topic else "")
            for name, count, topic in msg.rooms]
    return ["rooms:", *rows]


def unsent_text(texts: list[str], why: str) -> str:
    """Lines typed that will not be sent, and why: never dropped without a word."""
    quoted = ", ".join(f"“{_clipped(text)}”" for text in texts[:3])
    more = f" and {len(texts) - 3} more" if len(texts) > 3 else ""
    lines = "1 line you typed was" if len(texts) == 1 else f"{len(texts)} lines you typed were"
    return f"{lines} not sent ({why}): {quoted}{more}"


def _clipped(text: str, limit: int = 40) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"
