"""What the nodes tell each other about who is connected: the body of the
``roster`` notice (sealed and sent by ``spchat.cluster.seal``).

A node numbers what it says (``seq``, from 1 in each run, the run named
by ``boot``): a *change* says which of its sessions are new or changed
(``sessions``), which went offline (``gone``) and why members left their
rooms (``left``); a *snapshot* says all of its sessions at that number, in
``parts`` notices of at most ``ENTRIES_PER_NOTICE`` sessions each.

Even a sealed notice is trusted no further than its shape: a body that
does not parse is dropped (``read_roster`` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

ROSTER = "roster"
# Sessions in one notice (an entry is some 200 bytes; names are short).
ENTRIES_PER_NOTICE = 200
_STATES = ("online", "idle", "reconnecting")
_TEXT_MAX = 1000


@dataclass(frozen=True)
class RemoteSession:
    """A session connected on another node, as that node last told it."""

    node: str
    id: str
    name: str  # display form
    key: str  # comparison form
    lineage: str  # whose lines it may read (Session.lineage)
    registered: bool
    rooms: frozenset  # room keys
    state: str  # its presence: online, idle or reconnecting
    address: str
    agent: str
    connected_ms: int
    state_ms: int  # since when in its session state
    active_ms: int  # its last user action
    messages: int  # lines it sent
    bytes_in: int
    bytes_out: int

    def same_standing(self, other: RemoteSession | None) -> bool:
        """The same but for its counters (what changes with every line)."""
        return other is not None and self.entry()[:10] == other.entry()[:10]

    def entry(self) -> list:
        return [self.id, self.name, self.key, self.lineage, self.registered,
                sorted(self.rooms), self.state, self.address, self.agent, self.connected_ms,
                self.state_ms, self.active_ms, self.messages, self.bytes_in,
                self.bytes_out]


@dataclass(frozen=True)
class Departure:
    """Why a member left a room (the origin's ``wire.Notice`` fields)."""

    kind: str
    text: str
    by: str
    reason: str


@dataclass(frozen=True)
class Roster:
    boot: int  # the run of the node: a greater one is a restart
    seq: int
    full: bool  # a snapshot (else a change)
    part: int
    parts: int
    sessions: tuple[RemoteSession, ...]
    gone: tuple[str, ...]  # session ids
    left: dict  # session id -> {room key: Departure}: why it left rooms


def change(boot: int, seq: int, entries: list[list], gone: list[str],
           left: list[list]) -> dict:
    """``left``: [session id, room key, kind, text, by, reason] each."""
    return {"boot": boot, "seq": seq, "full": False, "part": 0, "parts": 1,
            "sessions": entries, "gone": gone, "left": left}


def snapshot(boot: int, seq: int, entries: list[list]) -> list[dict]:
    """The bodies of one snapshot: every session, in bounded parts."""
    chunks = [entries[start:start + ENTRIES_PER_NOTICE]
              for start in range(0, len(entries), ENTRIES_PER_NOTICE)] or [[]]
    return [{"boot": boot, "seq": seq, "full": True, "part": i, "parts": len(chunks),
             "sessions": chunk, "gone": [], "left": []} for i, chunk in enumerate(chunks)]


def read_roster(node: str, body: dict) -> Roster | None:
    boot, seq, full = body.get("boot"), body.get("seq"), body.get("full")
    part, parts = body.get("part"), body.get("parts")
    if not (_number(boot) and _number(seq) and isinstance(full, bool) and _number(part)
            and _number(parts) and part < parts <= 10_000):
        return None
    entries, gone, left = body.get("sessions"), body.get("gone"), body.get("left")
    if not (isinstance(entries, list) and isinstance(gone, list) and isinstance(left, list)
            and all(_text(i) for i in gone)):
        return None
    sessions = []
    for entry in entries:
        session = _session(node, entry)
        if session is None:
            return None
        sessions.append(session)
    why: dict[str, dict[str, Departure]] = {}
    for row in left:
        departure = _departure(row)
        if departure is None:
            return None
        (session_id, room), reason = departure
        why.setdefault(session_id, {})[room] = reason
    return Roster(boot, seq, full, part, parts, tuple(sessions), tuple(gone), why)


def _session(node: str, entry) -> RemoteSession | None:
    if not isinstance(entry, list) or len(entry) != 15:
        return None
    id_, name, key, lineage, registered, rooms, state, address, agent, *numbers = entry
    if not (all(_text(v) for v in (id_, name, key, lineage, address, agent))
            and isinstance(registered, bool) and state in _STATES
            and isinstance(rooms, list) and all(_text(r) for r in rooms)
            and all(_number(n) for n in numbers)):
        return None
    return RemoteSession(node, id_, name, key, lineage, registered, frozenset(rooms), state,
                         address, agent, *numbers)


def _departure(row) -> tuple[tuple[str, str], Departure] | None:
    if not (isinstance(row, list) and len(row) == 6 and all(_text(v) for v in row)):
        return None
    return (row[0], row[1]), Departure(*row[2:])


def _text(value) -> bool:
    return isinstance(value, str) and len(value) <= _TEXT_MAX


def _number(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
