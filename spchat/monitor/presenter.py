"""What the server monitor shows, and what its buttons ask: no Tk here.

The Tk window (to come) only renders ``rows()``, ``header()``, ``rate_series()``
and ``status`` and forwards clicks to ``ask``/``confirm``/``cancel`` and
``sort_by``/``set_filter``; everything it displays is decided, and tested,
here.  Input is the session table the server pushes (``wire.AdminEvent``).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from spchat import wire

STATES = ("connected", "reconnecting", "offline")
RATE_WINDOW = 60.0  # seconds of message rate shown in the header chart
ACTIONS = {
    # action -> (needs a name, question asked before it is sent)
    "kick": (True, "Kick {name}?"),
    "ban": (True, "Ban {name}?"),
    "unban": (True, "Unban {name}?"),
    "broadcast": (False, "Send this notice to everyone?"),
    "disconnect_all": (False, "Disconnect everyone?"),
    "shutdown": (False, "Shut the server down?"),
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


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


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
        self.pending: Pending | None = None
        self.sort_key = "name"
        self.sort_reverse = False
        self.filter = ""
        self._table: tuple = ()
        self._received_at = 0.0
        self._samples: deque[tuple[float, int]] = deque()  # (time, total messages)
        self._rids = (str(n) for n in itertools.count(1))

    # --- from the server ----------------------------------------------------

    def sessions(self, event: wire.AdminEvent | wire.AdminReply) -> None:
        now = self.clock.seconds()
        self._table = event.sessions
        self._received_at = now
        total = sum(row[7] for row in event.sessions)
        self._samples.append((now, total))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()

    def connected(self) -> None:
        self.status = "connected"

    def disconnected(self, reason: str, retry_in: float) -> None:
        self.status = f"server gone ({reason}); trying again in {retry_in:g} s"

    # --- what the window shows ----------------------------------------------

    def rows(self) -> list[Row]:
        now = self.clock.seconds()
        aged = now - self._received_at  # durations tick between pushes
        shown = []
        for name, address, state, client, in_state, since, last, msgs, b_in, b_out in self._table:
            if self.filter and not any(self.filter in field.casefold()
                                       for field in (name, address, state, client)):
                continue
            shown.append(Row(
                name, address, state, client, duration(in_state + aged), since / 1000,
                duration(now - last / 1000), msgs, b_in, b_out,
            ))
        key = {
            "state": lambda r: (STATES.index(r.state) if r.state in STATES else 9, r.name.casefold()),
            "name": lambda r: r.name.casefold(),
        }.get(self.sort_key, lambda r: getattr(r, self.sort_key))
        return sorted(shown, key=key, reverse=self.sort_reverse)

    def header(self) -> str:
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
        self.pending = Pending(action, name, reason, minutes, question.format(name=name))
        return self.pending.question

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
