"""What the desktop chat window shows: no Tk here.

The Tk view renders ``lines(view)``, ``members``, ``status_text()``,
``conversations()`` and forwards what the user does to ``send``, ``open``,
``reached_top`` and ``reconnect``.  Fed by a ``ChatClient``'s events and
statuses (``event``, ``status``), so every rule is a plain unit test.

A *view* is the room (``ROOM``) or one direct conversation (the peer's
name, as the server spells it).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

from spchat import wire
from spchat.client.session import Status

ROOM = "lobby"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#ff7f0e", "#7f7f7f")


def name_colour(name: str) -> str:
    """The same colour for a name in every window, run after run."""
    digest = hashlib.sha256(name.casefold().encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def local_time(ts_ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


@dataclass(frozen=True)
class Line:
    """One line of a conversation."""

    kind: str  # "message", "notice", "error"
    time: str  # HH:MM:SS, local
    text: str
    sender: str = ""
    colour: str = ""
    own: bool = False
    pending: bool = False  # sent, not yet confirmed by the server
    history: bool = False
    seq: int = 0
    cid: str | None = None


class ChatPresenter:
    def __init__(self, client):
        self.client = client  # a ChatClient (or anything with its methods)
        self.members: tuple[tuple[str, str], ...] = ()
        self.state = Status("connecting")
        self.active = ROOM
        self._lines: dict[str, list[Line]] = {ROOM: []}
        self._unread: dict[str, int] = {}

    # --- from the client --------------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
            self._message(msg)
        elif isinstance(msg, wire.Notice):
            self._add(ROOM, Line("notice", local_time(msg.ts), msg.text))
        elif isinstance(msg, wire.Error):
            self._error(msg)
        elif isinstance(msg, wire.Bye):
            self._add(self.active, Line("notice", local_time(time.time() * 1000), msg.text))
        elif isinstance(msg, wire.Members):
            self.members = msg.members

    def status(self, status: Status) -> None:
        self.state = status

    def _view_of(self, msg) -> str:
        if isinstance(msg, wire.RoomMessage):
            return ROOM
        mine = self.client.name
        return msg.to if msg.sender == mine else msg.sender

    def _message(self, msg) -> None:
        view = self._view_of(msg)
        own = msg.sender == self.client.name
        line = Line("message", local_time(msg.ts), msg.text, msg.sender, name_colour(msg.sender),
                    own, False, msg.history, msg.seq, msg.cid)
        lines = self._lines.setdefault(view, [])
        if msg.cid is not None:
            for i, old in enumerate(lines):
                if old.pending and old.cid == msg.cid:
                    lines[i] = line  # confirmed: server time, and its place
                    return
        if msg.history:
            # Older pages arrive after newer lines: keep the view in seq order.
            at = next((i for i, old in enumerate(lines) if old.seq > msg.seq), len(lines))
            lines.insert(at, line)
            return
        self._add(view, line)

    def _error(self, msg: wire.Error) -> None:
        text = msg.text
        for view, lines in self._lines.items():
            for i, old in enumerate(lines):
                if old.pending and old.cid is not None and old.cid == msg.cid:
                    lines[i] = replace(old, pending=False, kind="error",
                                       text=f"{old.text}  (not sent: {text})")
                    return
        self._add(self.active, Line("error", local_time(time.time() * 1000), text))

    def _add(self, view: str, line: Line) -> None:
        self._lines.setdefault(view, []).append(line)
        if view != self.active and line.kind == "message" and not line.own:
            self._unread[view] = self._unread.get(view, 0) + 1

    # --- what the window shows ----------------------------------------------

    def lines(self, view: str | None = None) -> list[Line]:
        return list(self._lines.get(view or self.active, []))

    def conversations(self) -> list[tuple[str, int]]:
        """(view, unread count): the room first, then direct conversations."""
        others = sorted((v for v in self._lines if v != ROOM), key=str.casefold)
        return [(view, self._unread.get(view, 0)) for view in [ROOM, *others]]

    def status_text(self) -> str:
        s = self.state
        if s.state == "connected":
            return f"connected as {self.client.name}"
        if s.state == "connecting":
            return "connecting…"
        if s.state == "reconnecting":
            return f"reconnecting (attempt {s.attempt} of {s.attempts}), next try in {s.retry_in:g} s"
        return f"offline: {s.reason}"

    @property
    def can_reconnect(self) -> bool:
        return self.state.state == "offline" and self.state.recovery != "never"

    # --- what the user does ---------------------------------------------------

    def _canonical(self, name: str) -> str:
        """A member's name as the server spells it (so "BOB" opens "bob")."""
        if name == ROOM:
            return ROOM
        for view in [*(m for m, _ in self.members), *self._lines]:
            if view.casefold() == name.casefold():
                return view
        return name

    def open(self, view: str) -> None:
        """Show a conversation (double-click on a member opens a direct one)."""
        view = self._canonical(view)
        self._lines.setdefault(view, [])
        self.active = view
        self._unread.pop(view, None)

    def send(self, text: str) -> None:
        """Enter in the entry: say it (or ``/msg NAME TEXT``) in the open view."""
        text = text.strip("\n")
        if not text.strip():
            return
        view = self.active
        if text.startswith("/msg "):
            view, _, text = text[5:].strip().partition(" ")
            if not view or not text.strip():
                self._add(self.active, Line("error", local_time(time.time() * 1000),
                                            "usage: /msg NAME TEXT"))
                return
            self.open(view)
            view = self.active
        try:
            cid = self.client.say(text) if view == ROOM else self.client.direct(view, text)
        except ValueError as e:  # too long
            self._add(view, Line("error", local_time(time.time() * 1000), str(e)))
            return
        me = self.client.name or "me"
        self._add(view, Line("message", local_time(time.time() * 1000), text, me,
                             name_colour(me), own=True, pending=True, cid=cid))

    def reached_top(self) -> None:
        """Scrolled to the top of the room: ask for older messages."""
        self.client.history_page()

    def reconnect(self) -> None:
        self.client.reconnect()
