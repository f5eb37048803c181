"""What the server monitor shows, and what its buttons ask: no Tk here.

The Tk window only renders ``rows()``, ``header()``, ``rate_series()``,
``room_rows()``, ``member_rows()``, ``members_title`` and ``status`` and
forwards clicks to ``ask``/``confirm``/``cancel``, ``sort_by``/``set_filter``
and ``select_room``; everything it displays is decided, and tested, here.
Input is what the server pushes (``wire.AdminEvent``: the sessions and the
rooms) and its answers to ``room_info``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from spchat import wire
from spchat.admin import duration, room_flags, time_left
from spchat.server.rules import ban_length
from spchat.terminal import printable

STATES = ("connected", "reconnecting", "offline")
RATE_WINDOW = 60.0  # seconds of message rate: the header chart, each room's rate
ROOM_INFO_RID = "room_info "  # the presenter's own questions, told apart by their rid
BANS_RID = "bans "
NO_ROOM = "Select a room to see its members"
ACTIONS = {
    # action -> (needs a name, question asked before it is sent); {why} is
    # the reason (or the notice), {banned} the ban that goes with a kick.
    "kick": (True, "Kick {name}{banned}: {why}?"),
    "ban": (True, "Ban {name} {length}: {why}?"),
    "unban": (True, "Unban {name}?"),
    "broadcast": (False, "Send this notice to everyone: {why}?"),
    "disconnect_all": (False, "Disconnect everyone: {why}?"),
    "shutdown": (False, "Shut the server down: {why}?"),
}


@dataclass(frozen=True)
class Row:
    """One session as the table shows it."""

    name: str
    address: str
    state: str
    client: str
    in_state: str  # "1h 02m", ticking
    since: float  # connected since, UTC seconds
    idle: str  # time since last activity
    messages: int
    bytes_in: int
    bytes_out: int
    in_state_seconds: float = 0.0  # what "For" and "Idle" sort by: "2s" is not after "2m"
    idle_seconds: float = 0.0
    node: str = ""  # where it is connected ("": a server alone)

    @property
    def id(self) -> str:
        """One session's row: a name may have an old offline row and a live one."""
        return f"{self.name} {self.since!r}"


# Columns shown as text that sort by the number behind it.
SORTED_BY = {"in_state": "in_state_seconds", "idle": "idle_seconds"}


@dataclass(frozen=True)
class RoomRow:
    """One room as the rooms table shows it."""

    name: str  # without its '#'
    members: int  # online
    topic: str
    flags: str  # "private,topic-locked"
    per_minute: float  # messages, over the last minute
    last_seq: int


@dataclass(frozen=True)
class BanRow:
    """One server ban still running, as the bans list shows it."""

    name: str
    left: str  # "for ever", "9m 59s": ticking
    reason: str


@dataclass(frozen=True)
class MemberRow:
    name: str
    state: str
    role: str


@dataclass(frozen=True)
class Pending:
    """An action waiting for the user's yes or no (shown in the window, not
    a modal dialog: a modal Tk dialog would stall the reactor)."""

    action: str
    name: str | None
    reason: str | None
    minutes: float | None
    question: str


class MonitorPresenter:
    def __init__(self, clock):
        self.clock = clock  # seconds(): the reactor, or task.Clock in tests
        self.status = "connecting"
        self._away = False  # the server went: what is shown is as last seen
        self.pending: Pending | None = None
        self.sort_key = "name"
        self.sort_reverse = False
        self.filter = ""
        self._table: tuple = ()
        self._received_at = 0.0
        self._samples: deque[tuple[float, int]] = deque()  # (time, total messages)
        self._rids = (str(n) for n in itertools.count(1))
        self.selected_room: str | None = None
        self.members_title = NO_ROOM
        self._rooms: tuple = ()
        self._room_samples: dict[str, deque[tuple[float, int]]] = {}  # (time, last_seq)
        self._members: tuple = ()
        self._info_rid: str | None = None  # the room_info whose answer is awaited
        self._bans: tuple = ()  # (name, until in UTC ms or None, reason), as last asked

    # --- from the server ----------------------------------------------------

    def sessions(self, event: wire.AdminEvent | wire.AdminReply) -> None:
        now = self.clock.seconds()
        self._table = event.sessions
        self._received_at = now
        total = sum(row[7] for row in event.sessions)
        self._samples.append((now, total))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()

    def rooms(self, rows: tuple) -> wire.AdminRequest | None:
        """The rooms table (pushed with the sessions); returns a room_info
        to send when it changed, for the selected room's members."""
        changed = rows != self._rooms
        self._rooms = rows
        self._sample_rooms(rows)
        if self.selected_room is not None and not any(r[0] == self.selected_room for r in rows):
            self.select_room(None)  # deleted
        if changed and self.selected_room is not None:
            return self._ask_room_info()
        return None

    def _sample_rooms(self, rows: tuple) -> None:
        now = self.clock.seconds()
        kept = {}
        for row in rows:
            name, last_seq = row[0], row[5]
            samples = self._room_samples.get(name, deque())
            if samples and last_seq < samples[-1][1]:
                samples.clear()  # deleted and made again: its numbers start over
            samples.append((now, last_seq))
            while now - samples[0][0] > RATE_WINDOW:
                samples.popleft()
            kept[name] = samples
        self._room_samples = kept  # rooms gone are forgotten

    def room_info(self, reply: wire.AdminReply) -> bool:
        """An answer to a room_info the presenter asked; False if the reply
        is not one (it answers the user's action instead)."""
        if not reply.rid.startswith(ROOM_INFO_RID):
            return False
        if reply.rid == self._info_rid:  # not an older question's, for another room
            self._members = reply.members if reply.ok else ()
            self.members_title = printable(reply.text)
        return True

    def ask_bans(self) -> wire.AdminRequest:
        """The bans, asked at login and after each action (a ban, an unban or
        a kick with a ban changes them; none of them is pushed)."""
        return wire.AdminRequest(BANS_RID + next(self._rids), "bans")

    def bans(self, reply: wire.AdminReply) -> bool:
        """An answer to ``ask_bans``; False if the reply is not one."""
        if not reply.rid.startswith(BANS_RID):
            return False
        if reply.ok:
            self._bans = reply.bans
        return True

    def connected(self) -> None:
        self.status = "connected"
        self._away = False
        self._rooms = ()  # the first table after a (re)connection asks for members afresh

    def disconnected(self, reason: str, retry_in: float) -> None:
        self.status = f"server gone ({reason}); trying again in {retry_in:g} s"
        self._away = True

    # --- what the window shows ----------------------------------------------

    def rows(self) -> list[Row]:
        now = self.clock.seconds()
        aged = now - self._received_at  # durations tick between pushes
        shown = []
        for name, address, state, client, in_state, since, last, msgs, b_in, b_out, *node \
                in self._table:
            node = node[0] if node else ""
            if self.filter and not any(self.filter in field.casefold()
                                       for field in (name, address, state, client, node)):
                continue
            idle = now - last / 1000
            shown.append(Row(
                name, address, state, printable(client), duration(in_state + aged), since / 1000,
                duration(idle), msgs, b_in, b_out, in_state + aged, idle, printable(node),
            ))
        column = SORTED_BY.get(self.sort_key, self.sort_key)
        key = {
            "state": lambda r: (STATES.index(r.state) if r.state in STATES else 9, r.name.casefold()),
            "name": lambda r: r.name.casefold(),
        }.get(column, lambda r: getattr(r, column))
        return sorted(shown, key=key, reverse=self.sort_reverse)

    @property
    def reachable(self) -> bool:
        """False while the server is away: the tables are as last seen."""
        return not self._away

    def heading(self, column: str, title: str) -> str:
        """A column's heading, with an arrow on the one the rows are sorted by."""
        if column != self.sort_key:
            return title
        return f"{title} {'▼' if self.sort_reverse else '▲'}"

    def header(self) -> str:
        if not self.reachable and self._table:
            return "server unreachable: the tables are as last seen"
        counts = {state: 0 for state in STATES}
        for row in self._table:
            counts[row[2]] = counts.get(row[2], 0) + 1
        rate = self.rate_series()[-1] if self._samples else 0.0
        return (
            f"{counts['connected']} online, {counts['reconnecting']} reconnecting, "
            f"{counts['offline']} offline; {rate:.1f} messages/s"
        )

    def rate_series(self) -> list[float]:
        """Messages per second between consecutive pushes, last minute."""
        samples = list(self._samples)
        rates = []
        for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
            # Totals drop when offline sessions are forgotten: not negative traffic.
            rates.append(max(0, n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)
        return rates or [0.0]

    def room_rows(self) -> list[RoomRow]:
        return [
            RoomRow(name, members, printable(topic), room_flags(private, locked),
                    self.room_rate(name), last_seq)
            for name, members, topic, private, locked, last_seq in self._rooms
        ]

    def room_rate(self, name: str) -> float:
        """Messages a minute in a room: its last_seq's rise over the last minute."""
        samples = self._room_samples.get(name)
        if not samples:
            return 0.0
        (t0, seq0), (t1, seq1) = samples[0], samples[-1]
        return (seq1 - seq0) / (t1 - t0) * 60 if t1 > t0 else 0.0

    def ban_rows(self) -> list[BanRow]:
        """The bans still running, by name; one that ran out meanwhile is gone."""
        now = self.clock.seconds()
        rows = [BanRow(printable(name), time_left(until, now), printable(reason))
                for name, until, reason in self._bans if until is None or until / 1000 > now]
        return sorted(rows, key=lambda b: b.name.casefold())

    def member_rows(self) -> list[MemberRow]:
        """The selected room's members, owners first, then by name."""
        rank = {role: i for i, role in enumerate(wire.ROLES)}
        rows = [MemberRow(printable(name), state, role) for name, state, role in self._members]
        return sorted(rows, key=lambda m: (rank.get(m.role, len(rank)), m.name.casefold()))

    def select_room(self, name: str | None) -> wire.AdminRequest | None:
        """A click in the rooms table ("dev", without '#'): the room_info to
        send, or None if that room was already selected."""
        if name == self.selected_room:
            return None
        self.selected_room, self._members = name, ()
        if name is None:
            self._info_rid = None
            self.members_title = NO_ROOM
            return None
        self.members_title = f"#{printable(name)}: asking…"
        return self._ask_room_info()

    def _ask_room_info(self) -> wire.AdminRequest:
        self._info_rid = ROOM_INFO_RID + next(self._rids)
        return wire.AdminRequest(self._info_rid, "room_info", room=self.selected_room)

    def sort_by(self, column: str) -> None:
        """Click on a heading: sort by it, click again to reverse."""
        if column == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = column, False

    def set_filter(self, text: str) -> None:
        self.filter = text.strip().casefold()

    # --- what the buttons ask -------------------------------------------------

    def ask(self, action: str, name: str | None = None, reason: str | None = None,
            minutes: float | None = None) -> str:
        """First click: returns the question to show next to yes/no buttons."""
        needs_name, question = ACTIONS[action]
        if needs_name and not name:
            raise ValueError(f"choose a session to {action.replace('_', ' ')}")
        if action == "broadcast" and not (reason or "").strip():
            raise ValueError("write the notice first")
        # What will be sent, said in full: the reason and the ban's length.
        banned = "" if minutes is None else f" and ban them {ban_length(minutes)}"
        text = question.format(name=name, why=reason or "no reason given", banned=banned,
                               length=ban_length(minutes))
        self.pending = Pending(action, name, reason, minutes, text)
        return text

    def confirm(self) -> wire.AdminRequest | None:
        """Yes: the request to send (None if nothing was pending)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        return wire.AdminRequest(
            next(self._rids), pending.action, pending.name, pending.reason, pending.minutes
        )

    def cancel(self) -> None:
        self.pending = None
