"""What a person typed that the wire cannot carry, said in their words
before anything is sent.

The server answers a message its wire rules refuse with "malformed message:
join.room longer than 64 characters", the protocol's words for a typo.  The
client checks each message against the same rules (``wire.check``) and
refuses it itself: "room names are at most 64 characters", nothing sent.
A room to join is checked first against the server's own rule for room
names (``spchat.server.rules``), stricter than the wire's: one mistake,
one answer, whichever side finds it.
"""

from __future__ import annotations

from spchat import wire
from spchat.server.rules import Refused, normalise_room

# What a field holds, by its name; by message and field where that says more.
_HOLDS = {"room": "room names are", "to": "names are", "name": "names are",
          "reason": "reasons are", "password": "passwords are", "old": "passwords are",
          "new": "passwords are", "file": "file ids are", "text": "messages are",
          "conversation": "conversation names are"}
_HOLDS_IN = {("topic", "text"): "a topic is", ("join", "password"): "room passwords are",
             ("mode", "password"): "room passwords are"}


def refusal(msg: wire.Message) -> str | None:
    """Why ``msg`` cannot go, as a person reads it; None if it can."""
    try:
        if isinstance(msg, wire.Join):
            normalise_room(msg.room)
    except Refused as refused:
        return refused.text  # the server's words
    try:
        wire.check(msg)
    except wire.WireError as e:
        return plain(e)
    return None


def plain(error: wire.WireError) -> str:
    """"join.room longer than 64 characters" -> "room names are at most 64 characters"."""
    kind, field = error.kind or "", error.field or ""
    holds = _HOLDS_IN.get((kind, field)) or _HOLDS.get(field)
    rule = str(error).removeprefix(f"{kind}.{field} ")
    if holds is None:
        return f"that cannot be sent: {error}"
    if rule.startswith("longer than "):
        return f"{holds} at most {rule.removeprefix('longer than ')}"
    noun = holds.rsplit(" ", 1)[0]  # "room names"
    return f"{noun}: {rule}" if rule != "must not be empty" else f"{noun} must not be empty"
