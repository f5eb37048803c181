"""What the desktop chat window shows: no Tk here.

The Tk view renders ``lines(view)``, ``member_list()`` (kept in place, so
only the rows that changed are drawn), ``header()``, ``status_text()``,
``conversations()`` and ``download_rows()``, offers the menus
``member_actions(row)`` and ``conversation_actions(view)``, and forwards
what the user does to ``send``, ``open``, ``join``, ``act_on_member``,
``act_on_conversation``, ``reached_top``, ``reconnect`` and ``download``.
Fed by a ``ChatClient``'s events and statuses (``event``, ``status``), and
reading the rooms and member lists the client keeps, so every rule is a
plain unit test.

File sharing goes through a ``SharingNode`` (``sharing``, None when it is
off): an offer is a line of kind "offer" with the file's id, which the view
draws with a Download button; a download under way is a row of
``download_rows()`` until it ends in a "saved …" notice or an error line.

A *view* is a room ("#" and its name, as the server spells it) or one
direct conversation (the peer's name, as the server spells it): "#" cannot
be in a name, so no user (not even one called "lobby") shares a view with a
room.  Until the first room comes, the view is "" (it then becomes that
room's).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from twisted.internet import defer

from spchat import wire
from spchat.client.commands import (NO_ROOM, ROOM_HELP, ROOM_USAGE, CommandError,
                                    room_command, room_flags, room_list_lines, who_text)
from spchat.client.connect import KeyChange, key_change
from spchat.client.days import day_break, local_day, stamp, today
from spchat.client.members import RANKS, MemberList
from spchat.client.pins import PinMismatch
from spchat.client.session import Status, conversation_key, direct_peer, name_key
from spchat.p2p.manifest import safe_name
from spchat.p2p.report import (SHORT_ID, cancelled_text, file_row_text, progress_text,
                               size_text, summary_text)

HELP = (
    "Enter says it in the open conversation, Shift+Enter starts a new line. Commands: "
    "/msg NAME TEXT (stays here), /query NAME [TEXT] (opens the conversation), /who, /history, "
    f"{ROOM_HELP} (on the open room), /register PASSWORD, /password OLD NEW, /share PATH, "
    "/unshare ID, /files, /get ID [DIR], /reconnect, /help; //text says a line starting "
    "with /. Double-click a member to talk to them alone, right-click one for what your role "
    "lets you do; the box under the room list joins or creates a room; Share file… picks a "
    "file to offer in the open room; Download on an offer saves the file (Cancel on its row "
    "stops it)."
)
BAN_HOUR = 60.0  # minutes: the menu's short ban
# Name colours: each readable on white and on the tinted lines (contrast
# 4.5:1 or more, as WCAG asks of text), none grey, hues far apart.
PALETTE = ("#c0392b", "#a84300", "#8a5a00", "#1e7b34", "#00707a", "#1f5fbf",
           "#7b3fb5", "#b0206e")


def name_colour(name: str) -> str:
    """The same colour for a name in every window, run after run."""
    digest = hashlib.sha256(name.casefold().encode()).digest()
    return PALETTE[digest[0] % len(PALETTE)]


def local_time(ts_ms: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))


def now_time() -> str:
    return local_time(time.time() * 1000)


def mentions(text: str, name: str | None) -> bool:
    """``name`` in ``text`` as a word of its own, in any case."""
    if not name:
        return False
    return re.search(rf"(?<!\w){re.escape(name_key(name))}(?!\w)", name_key(text)) is not None


def mention_spans(text: str, name: str | None) -> list[tuple[int, int]]:
    """Where ``text`` says ``name`` as a word of its own: (start, end) pairs."""
    if not name:
        return []
    pattern = rf"(?<!\w){re.escape(name)}(?!\w)"
    return [m.span() for m in re.finditer(pattern, text, re.IGNORECASE)]


def view_key(view: str) -> str:
    """Views compare as the server compares names."""
    return view[:1] + name_key(view[1:]) if view.startswith("#") else name_key(view)


@dataclass(frozen=True)
class Line:
    """One line of a conversation."""

    kind: str  # "message", "notice", "error", "offer"
    time: str  # HH:MM:SS, local
    text: str
    sender: str = ""
    colour: str = ""
    own: bool = False
    pending: bool = False  # sent, not yet confirmed by the server
    history: bool = False
    seq: int = 0
    cid: str | None = None
    notice: str = ""  # a notice's kind: join, leave, broadcast, kick, idle, ...
    file: str = ""  # an offer's file id
    # An offer's download: "", "running", "saved" or "failed"; of my own
    # offer, "sharing" while I still share the file.
    download: str = ""
    mention: bool = False  # someone else's line with my name in it
    day: str = field(default_factory=today)  # YYYY-MM-DD, local


class Conversation(NamedTuple):
    """One entry of the list of conversations."""

    view: str
    unread: int
    mentioned: bool = False  # an unread line in a room names me
    left: bool = False  # a room the client is no longer in


class MemberRow(NamedTuple):
    name: str
    state: str
    role: str
    me: bool


class MenuAction(NamedTuple):
    """One entry of a context menu: its label, and what it does."""

    label: str
    op: str  # a wire.MODERATION_OPS op, or "message", "part", "join", "remove"
    minutes: float | None = None  # a ban's length (None: for ever)


def moderation_actions(mine: str, theirs: str, name: str) -> list[MenuAction]:
    """What a member whose role is ``mine`` may do to one whose role is
    ``theirs``, by the server's rules (spchat/server/room_commands.py), so
    that the menu offers nothing the server would refuse: operators and
    owners act on those below them, only owners make owners (and demote
    operators)."""
    if RANKS[mine] < RANKS["operator"]:
        return []
    actions = []
    if RANKS[mine] > RANKS[theirs]:
        actions += [MenuAction(f"Kick {name}", "kick"),
                    MenuAction(f"Ban {name} for an hour", "ban", BAN_HOUR),
                    MenuAction(f"Ban {name} for ever", "ban")]
    if theirs == "member":
        actions.append(MenuAction(f"Mute {name}", "mute"))
    if theirs == "muted":
        actions.append(MenuAction(f"Unmute {name}", "unmute"))
    if theirs in ("member", "muted"):
        actions.append(MenuAction(f"Make {name} an operator", "op"))
    if mine == "owner" and theirs == "operator":
        actions.append(MenuAction(f"Make {name} a plain member", "deop"))
    if mine == "owner" and theirs != "owner":
        actions.append(MenuAction(f"Make {name} an owner", "owner"))
    return actions


@dataclass
class DownloadRow:
    """One download, as the view shows it (a bar, a line and its buttons):
    Cancel while it runs; Open folder once saved (and the folder's path
    itself where no program opens it); a saved or cancelled one stays
    until it is closed."""

    key: int
    name: str
    fraction: float  # 0 to 1
    text: str
    state: str = "running"  # "running", "saved" or "cancelled"
    folder: str = ""  # where it is saved
    folder_shown: bool = False  # no program opened it: the path is shown instead


class _Download:
    def __init__(self, ref: str, name: str, directory):
        self.ref, self.name, self.directory = ref, name, directory
        self.fetch = None  # the node's Fetch, once the server has answered
        self.state = "running"
        self.cancelled = False  # Cancel was pressed (maybe before the server answered)
        self.text = ""  # what its row says once it is over
        self.folder_shown = False

    def folder(self) -> str:
        """The folder it was saved in ("" until it is)."""
        if self.state != "saved" or self.fetch is None:
            return ""
        return str(Path(self.fetch.path).parent)


class ChatPresenter:
    def __init__(self, client, clock=time.monotonic, sharing=None, download_dir="."):
        self.client = client  # a ChatClient (or anything with its methods)
        self.sharing = sharing  # a SharingNode, or None: file sharing is off
        self.download_dir = download_dir
        # Called when something changed by itself (a download ended).
        self.on_change = lambda: None
        # Called with (title, text) for a live line that is for me (a direct
        # message, a mention), to draw the user's attention to it.
        self.on_attention = lambda title, text: None
        self._downloads: dict[int, _Download] = {}
        self._offered: dict[str, str] = {}  # file id -> its name, as offered
        self._offers_shown: set[tuple[str, str, int]] = set()  # (view, file id, ts) shown
        self._next_download = 0
        self.clock = clock  # for the countdown to the next reconnect attempt
        self.today = today  # the local date, YYYY-MM-DD: which lines need theirs
        self.state = getattr(client, "status", Status("connecting"))
        self._state_at = clock()
        self._dropped = False  # "connection lost" was said: "reconnected" is due
        self.active = ""
        self._lines: dict[str, list[Line]] = {"": []}
        self._rooms: list[str] = []  # room views, in the order first entered
        self._left: set[str] = set()  # room views of rooms the client left
        self._last_room = ""  # the room view whose members show beside a direct one
        self._joining: set[str] = set()  # keys of rooms a /join here asked for
        self._unread: dict[str, int] = {}
        self._mentioned: set[str] = set()  # room views with an unread mention
        self._history_asked: set[str] = set()  # conversation keys: a page is on its way
        self._no_older: set[str] = set()  # conversation keys: the start was reached

    # --- from the client --------------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
            self._message(msg)
        elif isinstance(msg, wire.RoomState):
            self._entered(msg.room)
        elif isinstance(msg, wire.RoomLeft):
            view = self._room_view(msg.room)
            self._left.add(view)
            self._add(view, Line("notice", now_time(), msg.text, notice=msg.code))
        elif isinstance(msg, wire.Notice):
            self._add(self._notice_view(msg.room),
                      Line("notice", local_time(msg.ts), msg.text, notice=msg.kind,
                           day=local_day(msg.ts)))
        elif isinstance(msg, wire.HistoryEnd):
            self._history_end(msg)
        elif isinstance(msg, wire.Error):
            self._error(msg)
        elif isinstance(msg, wire.Bye):
            self._add(self.active, Line("notice", now_time(), msg.text, notice=msg.code))
        elif isinstance(msg, wire.RoomList):
            for text in room_list_lines(msg):
                self.notice(text, "rooms")
        elif isinstance(msg, wire.Offer):
            self._offer(msg)
        elif isinstance(msg, wire.FileList):
            self.notice("offered files:" if msg.files else "no files are offered", "files")
            for row in msg.files:
                self.notice(file_row_text(row), "files")

    def status(self, status: Status) -> None:
        self._say_connection(status)
        self.state = status
        self._state_at = self.clock()
        if status.state != "connected":
            # A page asked for on a connection that went is not coming.
            self._history_asked.clear()
        if status.state == "offline" and status.recovery == "never":
            changed = self.key_change() is not None  # its panel says the rest
            self._unsendable("the server's key has changed" if changed else status.reason)

    def _say_connection(self, status: Status) -> None:
        """A drop and a return show in the conversations, where one reads,
        not only in the status line (a kick or a logout says it itself)."""
        if self.state.state == "connected" and status.state != "connected":
            lost = ("connection lost" if status.reason in ("", "connection lost")
                    else f"connection lost ({status.reason})")
            if status.state == "reconnecting":
                self._connection_line(f"{lost}; reconnecting…")
                self._dropped = True
            elif status.recovery != "never":
                self._connection_line(f"{lost}; Reconnect now tries again")
                self._dropped = True
        elif status.state == "connected" and self._dropped:
            self._connection_line("reconnected")
            self._dropped = False

    def _connection_line(self, text: str) -> None:
        """In every room still joined, and in the open conversation."""
        views = [v for v in self._rooms if v not in self._left]
        if self.active not in views:
            views.append(self.active)
        for view in views:
            self._add(view, Line("notice", now_time(), text, notice="connection"))

    def _unsendable(self, reason: str) -> None:
        """The client will not come back by itself: "sending…" would be a lie."""
        for lines in self._lines.values():
            for i, old in enumerate(lines):
                if old.pending:
                    lines[i] = replace(old, pending=False, kind="error",
                                       text=f"{old.text}  (not sent: {reason})")

    def _find(self, view: str) -> str | None:
        """The view already open under another spelling, if any."""
        key = view_key(view)
        return next((v for v in self._lines if view_key(v) == key), None)

    def _room_view(self, room: str) -> str:
        return self._find("#" + room) or "#" + room

    def _entered(self, room: str) -> None:
        """In a room (joined, or back after a reconnect), or its settings changed."""
        view = self._room_view(room)
        if view not in self._rooms:
            self._rooms.append(view)
        self._left.discard(view)
        self._lines.setdefault(view, [])
        if self.active == "":  # the first room: what was said before it shows there
            self._lines[view] = self._lines.pop("") + self._lines[view]
            self.open(view)
        elif name_key(room) in self._joining:
            self.open(view)
        self._joining.discard(name_key(room))

    def _notice_view(self, room: str) -> str:
        """A room's notice goes to its view; news of no room (or of a room not
        shown, as an invitation) to the open one."""
        return (self._find("#" + room) if room else None) or self.active

    def _history_end(self, msg: wire.HistoryEnd) -> None:
        key = conversation_key(msg.conversation)
        self._history_asked.discard(key)
        if msg.more:
            self._no_older.discard(key)
        else:
            self._no_older.add(key)

    def _view_of(self, msg) -> str:
        if isinstance(msg, wire.RoomMessage):
            return self._room_view(msg.room)
        return direct_peer(msg, self.client.name)

    def _message(self, msg) -> None:
        view = self._view_of(msg)
        own = name_key(msg.sender) == name_key(self.client.name or "")
        line = Line("message", local_time(msg.ts), msg.text, msg.sender, name_colour(msg.sender),
                    own, False, msg.history, msg.seq, msg.cid,
                    mention=not own and mentions(msg.text, self.client.name),
                    day=local_day(msg.ts))
        if msg.cid is not None and self._confirm(line, view):
            return
        lines = self._lines.setdefault(view, [])
        if msg.history:
            self._insert_history(lines, line)
            return
        self._add(view, line)
        if not own and (line.mention or not view.startswith("#")):
            where = f" in {view}" if view.startswith("#") else ""
            self.on_attention(f"{msg.sender}{where}", msg.text)

    def _confirm(self, line: Line, view: str) -> bool:
        """Put the server's copy of my line where the server numbered it
        (typed offline, it goes after the lines missed meanwhile)."""
        for where, lines in list(self._lines.items()):
            for i, old in enumerate(lines):
                if old.pending and old.cid == line.cid:
                    del lines[i]
                    if line.history:
                        self._insert_history(lines, line)
                    else:
                        lines.insert(self._numbered_place(lines, line.seq), line)
                    if where != view:
                        self._rename(where, view)  # "/msg BOB" is "bob" here
                    return True
        return False

    @staticmethod
    def _pending_start(lines: list[Line]) -> int:
        """Where the lines still waiting for the server begin: they stay last."""
        at = len(lines)
        while at and lines[at - 1].pending:
            at -= 1
        return at

    @classmethod
    def _numbered_place(cls, lines: list[Line], seq: int) -> int:
        """Before the pending lines and after every message numbered before ``seq``."""
        at = cls._pending_start(lines)
        while at and lines[at - 1].kind == "message" and lines[at - 1].seq > seq:
            at -= 1
        return at

    @staticmethod
    def _insert_history(lines: list[Line], line: Line) -> None:
        # History is older than anything live (the join notice too), and
        # older pages arrive after newer ones: keep it in seq order, first.
        # A room joined again brings history shown before: not twice.
        if any(old.seq == line.seq and not old.pending for old in lines):
            return
        at = next((i for i, old in enumerate(lines) if not old.history or old.seq > line.seq),
                  len(lines))
        lines.insert(at, line)

    def _offer(self, msg: wire.Offer) -> None:
        own = name_key(msg.sharer) == name_key(self.client.name or "")
        self._offered[msg.file] = safe_name(msg.name)
        view = self._room_view(msg.room)
        # An offer shown already (the room joined again shows its offers
        # again; a sharer is confirmed its own): not twice.
        if (view, msg.file, msg.ts) in self._offers_shown:
            return
        self._offers_shown.add((view, msg.file, msg.ts))
        self._add(view,
                  Line("offer", local_time(msg.ts),
                       f"shares {safe_name(msg.name)} ({size_text(msg.size)})", msg.sharer,
                       name_colour(msg.sharer), own, file=msg.file, day=local_day(msg.ts),
                       download=self._shared_state(msg.file) if own
                       else self._download_state(msg.file)))

    def _error(self, msg: wire.Error) -> None:
        text = msg.text
        for view, lines in self._lines.items():
            for i, old in enumerate(lines):
                if old.pending and old.cid is not None and old.cid == msg.cid:
                    lines[i] = replace(old, pending=False, kind="error",
                                       text=f"{old.text}  (not sent: {text})")
                    return
        self._add(self.active, Line("error", now_time(), text))

    def _rename(self, old: str, new: str) -> None:
        """A conversation opened under another spelling of the name."""
        lines = self._lines.pop(old)
        self._lines[new] = sorted(self._lines.get(new, []) + lines,
                                  key=lambda l: (l.pending, l.seq or float("inf")))
        unread = self._unread.pop(old, 0) + self._unread.pop(new, 0)
        if unread:
            self._unread[new] = unread
        if self.active == old:
            self.active = new

    def _add(self, view: str, line: Line) -> None:
        lines = self._lines.setdefault(view, [])
        # What the server has said goes above my lines it has not confirmed.
        lines.insert(len(lines) if line.pending else self._pending_start(lines), line)
        if view != self.active and line.kind == "message" and not line.own:
            self._unread[view] = self._unread.get(view, 0) + 1
            if line.mention and view.startswith("#"):
                # In a direct conversation every line is for me: the unread
                # count says it.
                self._mentioned.add(view)

    # --- what the window shows ----------------------------------------------

    def lines(self, view: str | None = None) -> list[Line]:
        return list(self._lines.get(view or self.active, []))

    def stamp(self, line: Line) -> str:
        """A line's time, with its date if it is not from today."""
        return stamp(line.time, line.day, self.today())

    def day_break(self, previous: Line | None, line: Line) -> str | None:
        """The day separator above ``line`` (after ``previous``), if any."""
        return day_break(previous.day if previous is not None else None, line.day, self.today())

    def conversations(self) -> list[Conversation]:
        """The rooms first, in the order entered, then direct conversations."""
        others = sorted((v for v in self._lines if v and not v.startswith("#")), key=str.casefold)
        rooms = [Conversation(view, self._unread.get(view, 0), view in self._mentioned,
                              view in self._left) for view in self._rooms]
        return rooms + [Conversation(view, self._unread.get(view, 0)) for view in others]

    def key_change(self) -> KeyChange | None:
        """The server's key changed since it was trusted: its panel, if so."""
        problem = getattr(self.client, "trust_problem", None)
        if isinstance(problem, PinMismatch) and self.state.state == "offline":
            return key_change(problem)
        return None

    def status_text(self) -> str:
        s = self.state
        if self.key_change() is not None:  # the whole story is in its panel
            return "offline: the server's key has changed (see above)"
        if s.state == "connected":
            on = f" on {s.address}" if s.address else ""  # one of several nodes
            return f"connected as {self.client.name}{on}"
        if s.state == "connecting":
            return "connecting…"
        if s.state == "reconnecting":
            left = math.ceil(s.retry_in - (self.clock() - self._state_at) - 1e-9)
            when = f"next try in {left:g} s" if left > 0 else "trying now…"
            return f"reconnecting (attempt {s.attempt} of {s.attempts}), {when} — {s.reason}"
        return f"offline: {s.reason}"

    def pending_note(self) -> str:
        """What a line waiting for the server says after it."""
        if self.state.state == "offline":  # "never" lines are not pending: see _unsendable
            return "not sent yet: offline; Reconnect now sends it"
        return "sending…"

    @property
    def can_reconnect(self) -> bool:
        s = self.state
        return s.state == "reconnecting" or (s.state == "offline" and s.recovery != "never")

    def open_room(self) -> str | None:
        """The open room's name (without "#"), if a room is open."""
        return self.active[1:] if self.active.startswith("#") else None

    def member_room(self) -> str | None:
        """Whose members show: the open room, or beside a direct conversation
        the room open before it."""
        view = self.active if self.active.startswith("#") else self._last_room
        return view[1:] if view else None

    def member_list(self) -> MemberList | None:
        """The members of ``member_room()``, kept up to date in place (see
        ``member_row``); None while offline (no longer live) or if none shows."""
        room = self.member_room()
        known = self.client.room(room) if room is not None else None
        if known is None or self.state.state == "offline":
            return None
        return known.members

    @property
    def members_stale(self) -> bool:
        """The member list shown is as it was when the connection went."""
        return self.state.state != "connected"

    def member_row(self, member) -> MemberRow:
        """One member of ``member_list()`` as the window shows it."""
        name, state, role = member
        return MemberRow(name, state, role, name_key(name) == name_key(self.client.name or ""))

    def member_rows(self) -> list[MemberRow]:
        """The members of ``member_room()``: owners, operators, members, then
        the muted (who may moderate is what one looks for), each group in
        the server's order (by name); none while offline (no longer live)."""
        members = self.member_list()
        return [] if members is None else [self.member_row(m) for m in members.ranked()]

    def completion_names(self) -> list[str]:
        """The names Tab completes: the members beside the conversation, and
        in a direct one its peer; never my own."""
        members = self.member_list()
        names = [m[0] for m in members.ranked()] if members is not None else []
        if self.active and not self.active.startswith("#"):
            names.append(self.active)
        me = name_key(self.client.name or "")
        return [n for n in names if name_key(n) != me]

    def my_role(self) -> str:
        """My role in ``member_room()`` ("member" until its list says)."""
        members = self.member_list()
        me = members.get(name_key(self.client.name or "")) if members is not None else None
        return me[2] if me is not None else "member"

    def member_actions(self, row: MemberRow) -> list[MenuAction]:
        """A member's context menu: a direct conversation with anyone else,
        and the moderation my role in the room allows on them."""
        if row.me:
            return []
        return [MenuAction(f"Message {row.name}", "message"),
                *moderation_actions(self.my_role(), row.role, row.name)]

    def conversation_actions(self, view: str) -> list[MenuAction]:
        """A conversation's context menu in the list: close a direct one;
        leave a room, or once left join it again or take it off the list."""
        if not view.startswith("#"):
            return [MenuAction(f"Close the conversation with {view}", "close")]
        if view in self._left:
            return [MenuAction(f"Join {view} again", "join"),
                    MenuAction(f"Remove {view} from the list", "remove")]
        return [MenuAction(f"Leave {view}", "part")]

    def header(self) -> str:
        """The line above the conversation: the open room and its topic."""
        room = self.open_room()
        if room is None:
            return f"direct conversation with {self.active}" if self.active else ""
        if self.active in self._left:
            return (f"{self.active}: you are no longer in this room; /join {self.active} to go "
                    "back, or right-click it in the list to remove it")
        known = self.client.room(room)
        if known is None:
            return self.active
        extra = "".join(f" ({flag})" for flag in room_flags(known))
        return f"#{known.name}{extra}" + (f" — {known.topic}" if known.topic else "")

    def unread_total(self) -> int:
        return sum(self._unread.values())

    # --- what the user does ---------------------------------------------------

    def _canonical(self, view: str) -> str:
        """A view as the server spells it (so "BOB" opens "bob")."""
        if view.startswith("#"):
            return self._find(view) or view
        person = self.client.person(view)
        if person is not None:
            return person[0]
        key = name_key(view)
        for known in self._lines:
            if not known.startswith("#") and name_key(known) == key:
                return known
        return view

    def open(self, view: str) -> None:
        """Show a conversation (double-click on a member opens a direct one)."""
        view = self._canonical(view)
        self._lines.setdefault(view, [])
        self.active = view
        if view.startswith("#"):
            self._last_room = view
        self._unread.pop(view, None)
        self._mentioned.discard(view)

    def join(self, typed: str, private: bool = False) -> bool:
        """The join box: join the room typed ("#dev" or "dev"), creating it
        (``private``: invited people only) if it is new.  False: refused as
        typed (said why)."""
        words = typed.split()
        if len(words) != 1 or not words[0].removeprefix("#"):
            self._say_error("type the name of one room to join or create, as #name")
            return False
        return self._command(f"/join {words[0]}" + (" private" if private else ""))

    def act_on_member(self, name: str, action: MenuAction) -> None:
        """An entry of a member's context menu, on ``member_room()``."""
        if action.op == "message":
            self.open(name)
            return
        room = self.member_room()
        if room is None:
            return
        try:
            self.client.moderate(room, action.op, name, None, action.minutes)
        except ValueError as e:  # too many commands waiting for the connection
            self._say_error(str(e))

    def act_on_conversation(self, view: str, action: MenuAction) -> None:
        """An entry of a room's context menu in the list."""
        if action.op == "remove":
            self.remove(view)
        elif action.op == "close":
            self.close(view)
        elif action.op == "join":
            self.join(view)
        elif action.op == "part":
            try:
                self.client.part(view[1:])
            except ValueError as e:
                self._say_error(str(e))

    def remove(self, view: str) -> None:
        """Forget a room the client has left, with its lines; another
        conversation opens if it was the open one."""
        if view not in self._left:
            return
        self._left.discard(view)
        self._rooms.remove(view)
        if self._last_room == view:
            self._last_room = ""
        self._forget(view)

    def close(self, view: str) -> None:
        """Take a direct conversation off the list (as a tab is closed); a
        new line from that person, or /query, opens it again, its history
        on the server. Lines still waiting for the server keep it open."""
        if view.startswith("#") or view not in self._lines:
            return
        if any(line.pending for line in self._lines[view]):
            self._say_error(f"lines to {view} are still on their way: close it once they are "
                            "sent")
            return
        self.client.forget_shown("@" + view)
        self._forget(view)

    def _forget(self, view: str) -> None:
        """A conversation and all it showed go; another opens if it was open."""
        key = conversation_key(view if view.startswith("#") else "@" + view)
        self._lines.pop(view, None)
        self._offers_shown = {shown for shown in self._offers_shown if shown[0] != view}
        self._unread.pop(view, None)
        self._mentioned.discard(view)
        self._history_asked.discard(key)
        self._no_older.discard(key)
        if self.active == view:
            self._open_another()

    def _open_another(self) -> None:
        """The open conversation went: the first one left, or none."""
        remaining = self.conversations()
        if remaining:
            self.open(remaining[0].view)
        else:
            self.active = ""
            self._lines.setdefault("", [])

    def _say_error(self, text: str) -> None:
        self._add(self.active, Line("error", now_time(), text))

    def _command(self, text: str) -> bool:
        """Run a /command typed in the entry; False if it was refused as typed."""
        command, _, rest = text.partition(" ")
        args = rest.split()
        try:
            if command == "/help":
                self.notice(HELP, "help")
            elif command == "/who":
                self._who()
            elif command == "/history":
                if not self.reached_top():
                    self._say_error(self._why_no_history())
            elif command in ROOM_USAGE:
                self._room_command(command, rest)
            elif command == "/register" and len(args) == 1:
                self.client.register(args[0])
            elif command == "/password" and len(args) == 2:
                self.client.change_password(*args)
            elif command == "/reconnect":
                if not self.can_reconnect:
                    self._say_error(f"cannot reconnect now: {self.status_text()}")
                else:
                    self.reconnect()
            elif command in ("/share", "/unshare", "/files", "/get"):
                self._sharing_command(command, rest.strip())
            elif command in ("/register", "/password"):
                self._say_error("usage: /register PASSWORD, /password OLD NEW")
            else:
                self._say_error(f"unknown command {command}; /help lists them")
        except (CommandError, ValueError) as e:  # typed wrong; too many queued offline
            self._say_error(str(e))
            return False
        return True

    def _who(self) -> None:
        room = self.client.room(self.open_room() or "")
        if room is None:
            raise CommandError(NO_ROOM)
        self.notice(who_text(room.name, room.members), "who")

    def _room_command(self, command: str, rest: str) -> None:
        outcome = room_command(self.client, command, rest, self.open_room())
        if outcome.show:
            self.notice(outcome.show, "topic")
        if outcome.joining:
            known = self._find("#" + outcome.joining)
            if known in self._rooms and known not in self._left:
                self.open(known)  # in it already
            else:
                self._joining.add(name_key(outcome.joining))  # opened once in

    def notice(self, text: str, kind: str, view: str | None = None) -> None:
        self._add(view or self.active, Line("notice", now_time(), text, notice=kind))

    def _sharing_command(self, command: str, rest: str) -> None:
        """/share PATH, /unshare ID, /files, /get ID [DIR]: as in line mode."""
        if self.sharing is None:
            self._say_error("file sharing is off in this window")
        elif command == "/files":
            self.sharing.list_files()
        elif not rest:
            self._say_error(f"usage: {command} {'PATH' if command == '/share' else 'ID'}"
                            f"{' [DIR]' if command == '/get' else ''}")
        elif command == "/share":
            self.share(rest)
        elif command == "/unshare":
            self.unshare(rest)
        else:
            ref, _, directory = rest.partition(" ")
            self._get(ref, directory.strip() or self.download_dir, ref)

    @defer.inlineCallbacks
    def share(self, path: str):
        """Offer a file in the open room (/share PATH, the window's picker)."""
        from spchat.p2p.node import SharingError

        room = self.open_room()
        if self.sharing is None or room is None:
            self._say_error("file sharing is off in this window" if self.sharing is None else
                            "a file is offered to a room's members: open a room to share it")
            return
        view = self.active
        try:
            file_id, manifest = yield self.sharing.share(path, room)
        except SharingError as e:
            self._add(view, Line("error", now_time(),
                                 f"cannot share {path}: {e}"))
        else:
            self.notice(f"sharing {safe_name(manifest.name)} ({size_text(manifest.size)}) "
                         f"as {file_id[:SHORT_ID]}", "files", view)
            self._mark(file_id, "sharing", own=True)  # offered before, unshared since
        self.on_change()

    def unshare(self, ref: str) -> None:
        """Stop sharing a file (/unshare ID, Stop sharing on my own offer)."""
        if self.sharing is None:
            self._say_error("file sharing is off in this window")
            return
        file_id = self.sharing.unshare(ref)
        if file_id is None:
            self._say_error(f"you are not sharing a file {ref}")
            return
        self._mark(file_id, "", own=True)
        self.notice(f"no longer sharing {file_id[:SHORT_ID]}", "files")

    def _shared_state(self, file_id: str) -> str:
        return "sharing" if file_id in getattr(self.sharing, "seeds", {}) else ""

    def download(self, file_id: str) -> None:
        """Download on an offer: fetch the file into the download folder."""
        if self.sharing is None:
            self._say_error("file sharing is off in this window")
            return
        if self._download_state(file_id) in ("running", "saved"):
            return  # one at a time; a saved file is on disk already
        self._get(file_id, self.download_dir, self._offered.get(file_id, file_id[:SHORT_ID]))

    @defer.inlineCallbacks
    def _get(self, ref: str, directory, name: str):
        from spchat.p2p.node import SharingError

        view = self.active
        key, self._next_download = self._next_download, self._next_download + 1
        download = self._downloads[key] = _Download(ref.lower(), name, directory)
        self._mark(ref, "running")
        try:
            try:
                fetch = yield self.sharing.fetch(ref, directory)
            except SharingError as e:
                raise SharingError(f"cannot get {name}: {e}") from None
            download.fetch, download.ref = fetch, fetch.file_id
            download.name = safe_name(fetch.manifest.name)
            self._mark(fetch.file_id, "running")
            if download.cancelled:  # pressed while the server was asked
                self.sharing.cancel(fetch.file_id)
            self.on_change()
            try:
                yield fetch.result
            except SharingError as e:
                raise SharingError(f"{download.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - said in the window, never lost
            if download.cancelled:
                self._cancelled(download)
            else:
                del self._downloads[key]
                self._add(view, Line("error", now_time(), str(e)))
            self._mark(download.ref, self._download_state(download.ref) or "failed")
        else:
            download.state = "saved"
            download.text = f"{download.name}: saved in"  # its folder follows
            self._mark(fetch.file_id, "saved")
            self.notice(summary_text(fetch.summary()), "saved", view)
        self.on_change()

    def _cancelled(self, download: _Download) -> None:
        download.state = "cancelled"
        fetch = download.fetch
        if fetch is None:
            download.text = f"{download.name}: cancelled"
            return
        download.text = cancelled_text(fetch.progress(), "Download resumes it")

    def cancel_download(self, key: int) -> None:
        """Cancel on a download's row: its peers are hung up, the part
        fetched stays (resumable), the row says "cancelled"."""
        download = self._downloads.get(key)
        if download is None or download.state != "running" or download.cancelled:
            return
        download.cancelled = True
        if download.fetch is not None:
            self.sharing.cancel(download.fetch.file_id)

    def close_download(self, key: int) -> None:
        """The row of a download that is over goes from the bar."""
        download = self._downloads.get(key)
        if download is not None and download.state != "running":
            del self._downloads[key]

    def download_folder(self, key: int) -> str | None:
        """Where a saved download is, for Open folder."""
        download = self._downloads.get(key)
        if download is None:
            return None
        return download.folder() or None

    def show_folder(self, key: int) -> None:
        """Nothing opened the folder: its row shows the path, to be copied."""
        download = self._downloads.get(key)
        if download is not None:
            download.folder_shown = True

    def downloads_running(self) -> bool:
        return any(d.state == "running" for d in self._downloads.values())

    def _download_state(self, file_id: str) -> str:
        """"running", "saved" or "" for a file id (or an id prefix)."""
        if any(d.state == "running" and (d.ref.startswith(file_id) or file_id.startswith(d.ref))
               for d in self._downloads.values()):
            return "running"
        fetches = getattr(self.sharing, "fetches", {})
        fetch = next((f for f_id, f in fetches.items() if f_id.startswith(file_id)), None)
        if fetch is not None:
            return "saved" if fetch.path is not None else "running"
        return ""

    def _mark(self, ref: str, state: str, own: bool = False) -> None:
        """The offers of a file (or of an id prefix) show where its download
        is (``own``: my own offers, whether I still share it)."""
        ref = ref.lower()
        for lines in self._lines.values():
            for i, old in enumerate(lines):
                if (old.kind == "offer" and old.own == own and old.file.startswith(ref)
                        and old.download != state):
                    lines[i] = replace(old, download=state)

    def download_rows(self) -> list[DownloadRow]:
        """The downloads under way, then over but not closed, oldest first."""
        rows = []
        for key, download in self._downloads.items():
            if download.fetch is None:
                text = f"{download.name}: asking the server for peers…"
                rows.append(DownloadRow(key, download.name, 0.0, download.text or text,
                                        download.state))
                continue
            p = download.fetch.progress()
            fraction = p["done"] / p["size"] if p["size"] else 1.0
            text = download.text or progress_text(p)
            if download.state == "saved" and not download.folder_shown:
                text += f" {download.folder()}"  # else in an entry of its own, to copy
            rows.append(DownloadRow(key, download.name, fraction, text, download.state,
                                    download.folder(), download.folder_shown))
        return rows

    def send(self, text: str) -> bool:
        """Enter in the entry: say it (or run a command) in the open view.
        False if it was not taken (too long, no room to say it in): the
        entry keeps it, to shorten or split."""
        text = text.strip("\n")
        if not text.strip():
            return True
        command = text.split(None, 1)[0]
        if text.startswith("//"):
            text = text[1:]
        elif command in ("/msg", "/query"):
            return self._to_person(text)
        elif text.startswith("/"):
            self._command(text.strip())
            return True
        return self._say(self.active, text)

    def _to_person(self, text: str) -> bool:
        """/msg NAME TEXT sends without leaving the open conversation (as
        HexChat and WeeChat do); /query NAME [TEXT] opens NAME's."""
        command, name, body = (text.split(None, 2) + ["", ""])[:3]
        query = command == "/query"
        if not name or name.startswith("#") or not (query or body.strip()):
            self._say_error("usage: /query NAME [TEXT]" if query else "usage: /msg NAME TEXT")
            return False
        view = self._canonical(name)
        if query:
            self.open(view)
            return self._say(view, body) if body.strip() else True
        here = self.active
        if not self._say(view, body, where_error=here):
            return False
        if view_key(view) != view_key(here):
            self.notice(f"to {view}: {body}", "direct", here)
        return True

    def _say(self, view: str, text: str, where_error: str | None = None) -> bool:
        try:
            cid = self._send_to(view, text)
        except (CommandError, ValueError) as e:  # not in a room; too long
            self._add(self.active if where_error is None else where_error,
                      Line("error", now_time(), f"{e} (it is still in the entry)"))
            return False
        self._lines.setdefault(view, [])
        me = self.client.name or "me"
        self._add(view, Line("message", now_time(), text, me, name_colour(me), own=True,
                             pending=True, cid=cid))
        return True

    def _send_to(self, view: str, text: str) -> str:
        if not view:
            raise CommandError(NO_ROOM)
        if view in self._left:
            raise CommandError(f"you are no longer in {view}; /join {view} to go back")
        if view.startswith("#"):
            return self.client.say(text, view[1:])
        return self.client.direct(view, text)

    def _open_conversation(self) -> str | None:
        """The open view as the server names conversations: "#room", "@name"."""
        if not self.active:
            return None
        return self.active if self.active.startswith("#") else "@" + self.active

    def reached_top(self) -> bool:
        """Scrolled to the top: ask for the open conversation's older page,
        once at a time.

        True if a page was asked for (not while one is on its way, or when
        the server has said there is nothing older).
        """
        conversation = self._open_conversation()
        if conversation is None:
            return False
        key = conversation_key(conversation)
        if key in self._history_asked or key in self._no_older:
            return False
        self.client.history_page(conversation)
        self._history_asked.add(key)
        return True

    def _why_no_history(self) -> str:
        conversation = self._open_conversation()
        if conversation is not None and conversation_key(conversation) in self._history_asked:
            return "older messages are on their way"
        return "no older messages"

    def reconnect(self) -> None:
        self.client.reconnect()
