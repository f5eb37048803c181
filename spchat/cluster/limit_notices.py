"""The notices of ``spchat.cluster.limits``: their bodies and the parsing of
what is heard.

- ``limit``: one event, as it happens on its node.
- ``limit_ask``: a node that (re)joined the bus asks for the events it
  may have missed (an empty body).
- ``limit_events``: an answer, to the node that asked (``to``): some of
  the events the answering node keeps, at most ``EVENTS_PER_NOTICE`` a
  notice, and in the last notice how many it ``left_out`` (its answer
  is capped).

An event's identity (``id``) is its node's run and a counter there: the
same event heard live and again in an answer is one.  A ``limit``
notice from a node of an earlier version has none; it counts when
heard, and is passed on in no answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LIMIT, LIMIT_ASK, LIMIT_EVENTS = "limit", "limit_ask", "limit_events"
FAILED, SUCCEEDED, SIGNUP = "failed", "succeeded", "signup"
EVENTS = (FAILED, SUCCEEDED, SIGNUP)
MAX_TEXT_CHARS = 200  # a name key or an address
MAX_ID_CHARS = 64
MAX_NODE_CHARS = 200
# An answer's events in one notice: each at most some 500 bytes.
EVENTS_PER_NOTICE = 50


@dataclass(frozen=True)
class LimitEvent:
    event: str
    name: str  # the login's name key ("" for a new account: counted by address)
    ip: str
    at: float  # when, on the sending node's clock (s)
    id: str = ""  # its node's run and a counter there ("": from an earlier version)


def body(event: LimitEvent) -> dict:
    said = {"event": event.event, "name": event.name, "ip": event.ip, "at": event.at}
    if event.id:
        said["id"] = event.id
    return said


def read_event(body: dict) -> LimitEvent | None:
    """The event in a ``limit`` notice's body, or None if it does not parse."""
    if not isinstance(body, dict):
        return None
    event, name, ip, at = body.get("event"), body.get("name"), body.get("ip"), body.get("at")
    ident = body.get("id", "")
    if not (event in EVENTS and isinstance(name, str) and isinstance(ip, str)
            and isinstance(ident, str)):
        return None
    if max(len(name), len(ip)) > MAX_TEXT_CHARS or len(ident) > MAX_ID_CHARS:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        return None
    return LimitEvent(event, name, ip, float(at), ident)


def answers(to: str, events: list[LimitEvent], left_out: int) -> list[dict]:
    """The bodies of the ``limit_events`` notices answering ``to``."""
    bodies = [{"to": to, "events": [body(e) for e in events[i:i + EVENTS_PER_NOTICE]],
               "left_out": 0} for i in range(0, len(events), EVENTS_PER_NOTICE)]
    if left_out:
        if not bodies:
            bodies.append({"to": to, "events": [], "left_out": 0})
        bodies[-1]["left_out"] = left_out
    return bodies


@dataclass(frozen=True)
class Answer:
    to: str
    events: tuple[LimitEvent, ...]  # those that parse and have an identity
    unreadable: int  # events that did not (dropped)
    left_out: int


def read_answer(body: dict) -> Answer | None:
    """A ``limit_events`` body, or None if it does not parse."""
    to, events, left_out = body.get("to"), body.get("events"), body.get("left_out", 0)
    if not (isinstance(to, str) and len(to) <= MAX_NODE_CHARS and isinstance(events, list)
            and len(events) <= EVENTS_PER_NOTICE and isinstance(left_out, int)
            and not isinstance(left_out, bool) and left_out >= 0):
        return None
    read = [read_event(e) for e in events]
    good = tuple(e for e in read if e is not None and e.id)
    return Answer(to, good, len(events) - len(good), left_out)
