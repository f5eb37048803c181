"""What the desktop chat window shows: no Tk here.

The Tk view renders ``lines(view)``, ``members``, ``status_text()``,
``conversations()`` and ``download_rows()``, and forwards what the user does
to ``send``, ``open``, ``reached_top``, ``reconnect`` and ``download``.  Fed
by a ``ChatClient``'s events and statuses (``event``, ``status``), so every
rule is a plain unit test.

File sharing goes through a ``SharingNode`` (``sharing``, None when it is
off): an offer is a line of kind "offer" with the file's id, which the view
draws with a Download button; a download under way is a row of
``download_rows()`` until it ends in a "saved …" notice or an error line.

A *view* is the room (``ROOM``) or one direct conversation (the peer's
name, as the server spells it).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace

from twisted.internet import defer

from spchat import wire
from spchat.client.session import Status
from spchat.p2p.manifest import safe_name
from spchat.p2p.report import SHORT_ID, file_row_text, progress_text, size_text, summary_text

# The room's view: "#" cannot be in a name, so no user (not even one called
# "lobby") can share a view with the room.
ROOM = "#lobby"
HELP = (
    "Enter says it in the open conversation. Commands: /msg NAME TEXT, /who, /history, "
    "/register PASSWORD, /password OLD NEW, /share PATH, /unshare ID, /files, /get ID [DIR], "
    "/reconnect, /help; //text says a line starting with /. Double-click a member to talk "
    "to them alone; Download on an offer saves the file."
)
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
    download: str = ""  # an offer's download: "", "running", "saved" or "failed"


@dataclass
class DownloadRow:
    """One download under way, as the view shows it (a bar and a line)."""

    key: int
    name: str
    fraction: float  # 0 to 1
    text: str


class _Download:
    def __init__(self, ref: str, name: str):
        self.ref, self.name = ref, name
        self.fetch = None  # the node's Fetch, once the server has answered


class ChatPresenter:
    def __init__(self, client, clock=time.monotonic, sharing=None, download_dir="."):
        self.client = client  # a ChatClient (or anything with its methods)
        self.sharing = sharing  # a SharingNode, or None: file sharing is off
        self.download_dir = download_dir
        # Called when something changed by itself (a download ended).
        self.on_change = lambda: None
        self._downloads: dict[int, _Download] = {}
        self._offered: dict[str, str] = {}  # file id -> its name, as offered
        self._next_download = 0
        self.clock = clock  # for the countdown to the next reconnect attempt
        self.members: tuple[tuple[str, str], ...] = ()
        self.state = getattr(client, "status", Status("connecting"))
        self._state_at = clock()
        self.active = ROOM
        self._lines: dict[str, list[Line]] = {ROOM: []}
        self._unread: dict[str, int] = {}
        self._history_asked = False  # a page is on its way
        self._more_history = True

    # --- from the client --------------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
            self._message(msg)
        elif isinstance(msg, wire.Notice):
            self._add(ROOM, Line("notice", local_time(msg.ts), msg.text, notice=msg.kind))
        elif isinstance(msg, wire.HistoryEnd):
            self._history_asked = False
            self._more_history = msg.more
        elif isinstance(msg, wire.Error):
            self._error(msg)
        elif isinstance(msg, wire.Bye):
            self._add(self.active, Line("notice", local_time(time.time() * 1000), msg.text,
                                        notice=msg.code))
        elif isinstance(msg, wire.Members):
            self.members = msg.members
        elif isinstance(msg, wire.Offer):
            own = msg.sharer.casefold() == (self.client.name or "").casefold()
            self._offered[msg.file] = safe_name(msg.name)
            self._add(ROOM, Line("offer", local_time(msg.ts),
                                 f"shares {safe_name(msg.name)} ({size_text(msg.size)})",
                                 msg.sharer, name_colour(msg.sharer), own, file=msg.file,
                                 download=self._download_state(msg.file)))
        elif isinstance(msg, wire.FileList):
            self.notice("offered files:" if msg.files else "no files are offered", "files")
            for row in msg.files:
                self.notice(file_row_text(row), "files")

    def status(self, status: Status) -> None:
        self.state = status
        self._state_at = self.clock()
        if status.state != "connected":
            # A page asked for on a connection that went is not coming.
            self._history_asked = False
        if status.state == "offline":
            self.members = ()  # no longer live: an empty list says so
            if status.recovery == "never":
                self._unsendable(status.reason)

    def _unsendable(self, reason: str) -> None:
        """The client will not come back by itself: "sending…" would be a lie."""
        for lines in self._lines.values():
            for i, old in enumerate(lines):
                if old.pending:
                    lines[i] = replace(old, pending=False, kind="error",
                                       text=f"{old.text}  (not sent: {reason})")

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
        if msg.cid is not None:
            for where, pending in list(self._lines.items()):
                for i, old in enumerate(pending):
                    if old.pending and old.cid == msg.cid:
                        pending[i] = line  # confirmed: server time, and its place
                        if where != view:
                            self._rename(where, view)  # "/msg BOB" is "bob" here
                        return
        lines = self._lines.setdefault(view, [])
        if msg.history:
            # History is older than anything live (the join notice too), and
            # older pages arrive after newer ones: keep it in seq order, first.
            at = next((i for i, old in enumerate(lines) if not old.history or old.seq > msg.seq),
                      len(lines))
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
            left = math.ceil(s.retry_in - (self.clock() - self._state_at) - 1e-9)
            when = f"next try in {left:g} s" if left > 0 else "trying now…"
            return f"reconnecting (attempt {s.attempt} of {s.attempts}), {when} — {s.reason}"
        if s.recovery == "on_activity":
            return f"offline: {s.reason} (sending a message reconnects)"
        return f"offline: {s.reason}"

    @property
    def can_reconnect(self) -> bool:
        s = self.state
        return s.state == "reconnecting" or (s.state == "offline" and s.recovery != "never")

    def member_rows(self) -> list[tuple[str, str, bool]]:
        """(name, state, is me) for the member list, in the server's order."""
        me = (self.client.name or "").casefold()
        return [(name, state, name.casefold() == me) for name, state in self.members]

    def unread_total(self) -> int:
        return sum(self._unread.values())

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

    def _say_error(self, text: str) -> None:
        self._add(self.active, Line("error", local_time(time.time() * 1000), text))

    def _command(self, text: str) -> bool:
        """Run a /command; False if ``text`` is to be said as it is."""
        command, _, rest = text.partition(" ")
        args = rest.split()
        try:
            if command == "/help":
                self._add(self.active, Line("notice", local_time(time.time() * 1000), HELP,
                                            notice="help"))
            elif command == "/who":
                who = ", ".join(f"{n} ({st})" if st != "online" else n for n, st in self.members)
                self._add(self.active, Line("notice", local_time(time.time() * 1000),
                                            f"in the room: {who or 'nobody you can see'}",
                                            notice="who"))
            elif command == "/history":
                if not self.reached_top():
                    self._say_error("no older messages" if not self._more_history
                                    else "older messages are on their way")
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
        except ValueError as e:  # too many commands queued while offline
            self._say_error(str(e))
        return True

    def notice(self, text: str, kind: str, view: str | None = None) -> None:
        self._add(view or self.active, Line("notice", local_time(time.time() * 1000), text,
                                            notice=kind))

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
            self._share(rest)
        elif command == "/unshare":
            file_id = self.sharing.unshare(rest)
            if file_id is not None:
                self.notice(f"no longer sharing {file_id[:SHORT_ID]}", "files")
            else:
                self._say_error(f"you are not sharing a file {rest}")
        else:
            ref, _, directory = rest.partition(" ")
            self._get(ref, directory.strip() or self.download_dir, ref)

    @defer.inlineCallbacks
    def _share(self, path: str):
        from spchat.p2p.node import SharingError

        view = self.active
        try:
            file_id, manifest = yield self.sharing.share(path)
        except SharingError as e:
            self._add(view, Line("error", local_time(time.time() * 1000),
                                 f"cannot share {path}: {e}"))
        else:
            self.notice(f"sharing {safe_name(manifest.name)} ({size_text(manifest.size)}) "
                         f"as {file_id[:SHORT_ID]}", "files", view)
        self.on_change()

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
        download = self._downloads[key] = _Download(ref.lower(), name)
        self._mark(ref, "running")
        try:
            try:
                fetch = yield self.sharing.fetch(ref, directory)
            except SharingError as e:
                raise SharingError(f"cannot get {name}: {e}") from None
            download.fetch, download.ref = fetch, fetch.file_id
            download.name = safe_name(fetch.manifest.name)
            self._mark(fetch.file_id, "running")
            self.on_change()
            try:
                yield fetch.result
            except SharingError as e:
                raise SharingError(f"{download.name}: {e}") from None
        except Exception as e:  # noqa: BLE001 - said in the window, never lost
            del self._downloads[key]
            self._mark(download.ref, self._download_state(download.ref) or "failed")
            self._add(view, Line("error", local_time(time.time() * 1000), str(e)))
        else:
            del self._downloads[key]
            self._mark(fetch.file_id, "saved")
            self.notice(summary_text(fetch.summary()), "saved", view)
        self.on_change()

    def _download_state(self, file_id: str) -> str:
        """"running", "saved" or "" for a file id (or an id prefix)."""
        if any(d.ref.startswith(file_id) or file_id.startswith(d.ref)
               for d in self._downloads.values()):
            return "running"
        fetches = getattr(self.sharing, "fetches", {})
        fetch = next((f for f_id, f in fetches.items() if f_id.startswith(file_id)), None)
        if fetch is not None:
            return "saved" if fetch.path is not None else "running"
        return ""

    def _mark(self, ref: str, state: str) -> None:
        """The offers of a file (or of an id prefix) show where its download is."""
        ref = ref.lower()
        for lines in self._lines.values():
            for i, old in enumerate(lines):
                if old.kind == "offer" and old.file.startswith(ref) and old.download != state:
                    lines[i] = replace(old, download=state)

    def download_rows(self) -> list[DownloadRow]:
        """The downloads under way, oldest first."""
        rows = []
        for key, download in self._downloads.items():
            if download.fetch is None:
                rows.append(DownloadRow(key, download.name, 0.0,
                                        f"{download.name}: asking the server for peers…"))
                continue
            p = download.fetch.progress()
            fraction = p["done"] / p["size"] if p["size"] else 1.0
            rows.append(DownloadRow(key, download.name, fraction, progress_text(p)))
        return rows

    def send(self, text: str) -> None:
        """Enter in the entry: say it (or run a command) in the open view."""
        text = text.strip("\n")
        if not text.strip():
            return
        if text.startswith("//"):
            text = text[1:]
        elif text.startswith("/") and not text.startswith("/msg "):
            self._command(text.strip())
            return
        view = self.active
        if text.startswith("/msg "):
            view, _, text = text[5:].strip().partition(" ")
            if not view or not text.strip():
                self._say_error("usage: /msg NAME TEXT")
                return
            self.open(view)
            view = self.active
        try:
            cid = self.client.say(text) if view == ROOM else self.client.direct(view, text)
        except ValueError as e:  # too long
            self._say_error(str(e))
            return
        me = self.client.name or "me"
        self._add(view, Line("message", local_time(time.time() * 1000), text, me,
                             name_colour(me), own=True, pending=True, cid=cid))

    def reached_top(self) -> bool:
        """Scrolled to the top: ask for the older page, once at a time.

        True if a page was asked for (not while one is on its way, or when
        the server has said there is nothing older).
        """
        if self._history_asked or not self._more_history:
            return False
        self.client.history_page()
        self._history_asked = True
        return True

    def reconnect(self) -> None:
        self.client.reconnect()
