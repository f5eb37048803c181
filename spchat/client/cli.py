"""Line-mode client: standard input in, one line per event out.

Works with a terminal or a pipe.  Plain lines are said in the current room:
the first room the client is put in (normally #lobby), then the last one
``/join`` went to.  A line from another room starts with its name ("#dev
alice: hi").  ``/help`` lists the commands.  At the end of input it waits
(bounded) for the server to acknowledge what was sent, logs out and exits
0; 1 if anything was refused or not acknowledged.

Lines typed before the client is in its first room, or right after a
``/join``, wait until it is in (at most ``ROOM_WAIT_SECONDS``), so that a
script's lines go to the room it meant, in order.

Output goes through the standard-I/O transport, never ``sys.stdout``: Twisted
makes the descriptor non-blocking, and a plain write to a full pipe would
drop lines without a word.
"""

from __future__ import annotations

import sys
import time
from collections import deque

from twisted.internet import defer, interfaces, stdio, task
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from spchat import wire
from spchat.client.alternate import alternate_name
from spchat.client.commands import (NO_ROOM, ROOM_HELP, ROOM_USAGE, CommandError,
                                    room_command, room_list_lines, unsent_text, who_text)
from spchat.client.days import local_day, stamp, today as days_today
from spchat.client.session import (ChatClient, ClientError, Status, conversation_key,
                                   name_key)
from spchat.p2p.report import (cancelled_text, file_row_text, offer_text, progress_text,
                               size_text, summary_text)
from spchat.server.rules import counted

# At the end of input, how long to wait for an acknowledgement that does
# not come before giving up.
ACK_WAIT_SECONDS = 10.0
# Output still queued for a reader that does not read is given up after this.
FLUSH_WAIT_SECONDS = 10.0
MAX_LINE_BYTES = 1 << 20
HELP = (
    f"commands: /msg NAME TEXT, /who, /history [#room|@name], {ROOM_HELP}, "
    "/register PASSWORD, /password OLD NEW, /share PATH, /unshare ID, /files, "
    "/get ID [DIR], /cancel ID, /reconnect, /quit, /help; //text says a line starting with /; "
    "room commands act on the current room, the last one joined"
)
# How long typed lines wait for the room they are meant for (see above).
ROOM_WAIT_SECONDS = 5.0
FIRST_ROOM = ""  # awaited: whichever room the client is put in first
# A download's progress is printed this often.
PROGRESS_SECONDS = 2.0
# Continuation lines of a multi-line message are marked, so no user can
# print a line that looks like it came from someone else or the server.
CONTINUATION = "\n           | "


def clock_text(ts_ms: int | None = None) -> str:
    """HH:MM:SS in local time, from server UTC milliseconds (or now)."""
    seconds = time.time() if ts_ms is None else ts_ms / 1000
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def render(msg: wire.Message, current: str | None = None,
           today: str | None = None) -> str | None:
    """The line printed for an event, or None for events shown otherwise.

    A line of a room other than ``current`` (None: no room is current)
    starts with that room's name.  A line from before ``today`` (local
    YYYY-MM-DD; None: this machine's) carries its date: history, and
    messages that waited for a login, may be days old.
    """
    where = _elsewhere(msg, current)

    def when(ts_ms: int) -> str:
        return stamp(clock_text(ts_ms), local_day(ts_ms), today or days_today())

    if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
        mark = "(history) " if msg.history else ""
        who = msg.sender if isinstance(msg, wire.RoomMessage) else f"{msg.sender} -> {msg.to}"
        line = f"[{when(msg.ts)}] {where}{mark}{who}: {msg.text}"
    elif isinstance(msg, wire.Notice):
        line = f"[{when(msg.ts)}] {where}* {msg.text}"
    elif isinstance(msg, wire.RoomLeft):
        line = f"[{clock_text()}] {where}* {msg.text}"
    elif isinstance(msg, wire.RoomList):
        line = f"[{clock_text()}] * " + "\n".join(room_list_lines(msg))
    elif isinstance(msg, wire.Error):
        line = f"[{clock_text()}] * error: {msg.text}"
    elif isinstance(msg, wire.Bye):
        line = f"[{clock_text()}] * server: {msg.text}"
    elif isinstance(msg, wire.Offer):
        line = (f"[{when(msg.ts)}] {where}* "
                f"{offer_text(msg.sharer, msg.name, msg.size, msg.file)}")
    elif isinstance(msg, wire.FileList):
        rows = [file_row_text(row) for row in msg.files] or ["no files are offered"]
        line = f"[{clock_text()}] * files:\n" + "\n".join(rows)
    else:
        return None
    return line.replace("\n", CONTINUATION)


def _elsewhere(msg: wire.Message, current: str | None) -> str:
    """"#dev " for a line of a room that is not the current one, else ""."""
    room = getattr(msg, "room", "") if isinstance(
        msg, (wire.RoomMessage, wire.Notice, wire.RoomLeft, wire.Offer)) else ""
    if not room or (current is not None and name_key(room) == name_key(current)):
        return ""
    return f"#{room} "


@implementer(interfaces.IHalfCloseableProtocol)
class _Terminal(Protocol):
    """Standard input split into lines; standard output as a transport."""

    transport: interfaces.ITransport  # standard output's, set by makeConnection

    def __init__(self, cli: LineModeClient):
        self.cli = cli
        self.buffer = b""
        self.discarding = False  # inside a line that was too long
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            line, newline, rest = self.buffer.partition(b"\n")
            if not newline:
                break
            self.buffer = rest
            if self.discarding:
                self.discarding = False  # the long line ends here
            else:
                self._line(line)
        if len(self.buffer) > MAX_LINE_BYTES:
            if not self.discarding:
                self.cli.line_too_long()
            self.discarding = True
            self.buffer = b""

    def _line(self, line: bytes) -> None:
        self.cli.line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def readConnectionLost(self) -> None:
        if self.buffer and not self.discarding:
            self._line(self.buffer)  # the last line had no newline
        self.buffer = b""
        self.cli.end_of_input()

    def writeConnectionLost(self) -> None:
        # Whoever read our output has gone (`| head`): nobody to talk to.
        self.cli.output_gone()

    def connectionLost(self, reason=None) -> None:
        if not self.closed.called:
            self.closed.callback(None)


class LineModeClient:
    def __init__(self, reactor, client: ChatClient, err=None, stdin: int = 0, stdout: int = 1,
                 sharing=None, download_dir="."):
        self.reactor = reactor
        self.client = client
        self.sharing = sharing  # a SharingNode, or None: no file sharing
        self.download_dir = download_dir
        self.today = days_today  # the local date, for which lines need none
        self._downloads: list[defer.Deferred] = []
        self._cancelled: set[str] = set()  # ids of the downloads /cancel stopped
        self.err = err or sys.stderr
        self.done: defer.Deferred = defer.Deferred()
        self.refused = 0  # messages the server (or the client) turned down
        self.commands_refused = 0  # commands: said when refused, not "messages"
        self._in_flight: set[str] = set()  # cids of my messages, until answered
        self.room: str | None = None  # the current room, as the server spells it
        self._fds = (stdin, stdout)
        self._terminal: _Terminal | None = None
        self._announced: set[str] = set()  # keys of the rooms we said we are in
        self._who: set[str] = set()  # keys of rooms whose member list /who awaits
        self._history_asked: set[str] = set()  # conversation keys /history asked for
        self._held: deque[str] = deque()  # lines waiting for the room they are meant for
        self._awaited: str | None = FIRST_ROOM  # that room's key; None: no waiting
        self._awaited_join: str | None = None  # the cid of the /join awaited
        self._await_timer = None
        self._settled_waiters: list[defer.Deferred] = []
        self._quit = False
        self._finishing = False
        self._logged_in = False
        self._output_gone = False
        self._login: defer.Deferred = defer.Deferred()  # fires True once logged in, False if not
        client.on_event = self.event
        client.on_status = self.status_changed

    def print(self, text: str) -> None:
        if self._terminal is not None and not self._output_gone:
            self._terminal.transport.write(text.encode("utf-8", errors="replace") + b"\n")

    def notice(self, text: str) -> None:
        self.print(f"[{clock_text()}] * {text}")

    def fatal(self, text: str) -> None:
        self.err.write(f"spchat: {text}\n")
        self.err.flush()
        self._finish(1)

    @defer.inlineCallbacks
    def _finish(self, status: int):
        if self.done.called or getattr(self, "_status", None) is not None:
            return
        self._status = status
        if self._terminal is not None:
            # Let queued output reach the reader, but not wait forever.
            self._terminal.transport.loseConnection()
            timer = self.reactor.callLater(
                FLUSH_WAIT_SECONDS, self._terminal.closed.callback, None
            )
            yield self._terminal.closed
            if timer.active():
                timer.cancel()
        self.done.callback(status)

    @defer.inlineCallbacks
    def run(self):
        # Read from the start: lines typed before the login completes wait
        # for the first room, then go out in order.
        self._terminal = _Terminal(self)
        stdio.StandardIO(self._terminal, *self._fds, reactor=self.reactor)
        try:
            welcome = yield self.client.connect()
        except ClientError as e:
            taken = e.code == "name_taken"
            self.fatal(f"{e}; try --name {alternate_name(self.client.requested_name)}"
                       if taken else str(e))
            self._login.callback(False)
            return (yield self.done)
        self.logged_in(welcome)
        return (yield self.done)

    def logged_in(self, welcome: wire.Welcome) -> None:
        """The first welcome: say so, and wait (bounded) for the first room."""
        if self.client.newly_pinned:
            self.notice(
                f"new server {self.client.where}, "
                f"key {self.client.server_fingerprint} pinned"
            )
        self._logged_in = True
        on = self.client.status.address
        self.notice(f"logged in as {welcome.name}" + (f" on {on}" if on else ""))
        if self._awaited is not None:  # the rooms follow the welcome
            self._await(self._awaited)
        self._login.callback(True)

    # --- waiting for a room -------------------------------------------------

    def _await(self, key: str, join_cid: str | None = None) -> None:
        """Hold typed lines until the room ``key`` (or FIRST_ROOM) is entered,
        or the /join of cid ``join_cid`` is refused."""
        self._awaited, self._awaited_join = key, join_cid
        if self._await_timer is not None and self._await_timer.active():
            self._await_timer.cancel()
        self._await_timer = self.reactor.callLater(ROOM_WAIT_SECONDS, self._release)

    def _release(self) -> None:
        """Run the held lines, up to the next one that waits for a room."""
        self._awaited = None
        if self._await_timer is not None and self._await_timer.active():
            self._await_timer.cancel()
        self._await_timer = None
        while self._held and self._awaited is None and not self._quit:
            self._run(self._held.popleft())
        if self._awaited is None:
            self._held.clear()  # after a /quit: not to be run
            waiters, self._settled_waiters = self._settled_waiters, []
            for d in waiters:
                d.callback(None)

    def _settled(self) -> defer.Deferred:
        """Fires once no typed line waits for a room."""
        if self._awaited is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._settled_waiters.append(d)
        return d

    # --- events from the server --------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.RoomState):
            self._room_state(msg)
            return
        if isinstance(msg, wire.Members):
            if name_key(msg.room) in self._who:
                self._who.discard(name_key(msg.room))
                self.notice(who_text(msg.room, msg.members))
            return
        if isinstance(msg, wire.HistoryEnd):
            self._history_end(msg)
            return
        if isinstance(msg, wire.Error):
            if msg.cid in self._in_flight:
                self._in_flight.discard(msg.cid)
                self.refused += 1
            else:
                self.commands_refused += 1
            if self._awaited not in (None, FIRST_ROOM) and msg.cid in (None,
                                                                     self._awaited_join):
                self._release()  # the /join, refused (or, with no cid, most likely)
        elif isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
            self._in_flight.discard(msg.cid)  # mine, acknowledged (or not mine)
        line = render(msg, self.room, self.today())
        if line is not None:
            self.print(line)
        if isinstance(msg, wire.RoomLeft):
            self._room_left(msg)

    def _room_state(self, msg: wire.RoomState) -> None:
        key = name_key(msg.room)
        if key not in self._announced:  # not after a reconnect, nor for a new topic
            self._announced.add(key)
            self.notice(f"you are in #{msg.room}" + (f"; topic: {msg.topic}" if msg.topic else ""))
        if self._awaited in (FIRST_ROOM, key):
            # The first room: "you are in" said it.
            self._make_current(msg.room, quietly=self._awaited == FIRST_ROOM)
            self._release()
        elif self.room is None:
            self._make_current(msg.room)
        elif name_key(self.room) == key:
            self.room = msg.room  # the server's spelling

    def _make_current(self, room: str | None, quietly: bool = False) -> None:
        before, self.room = self.room, room
        if quietly:
            return
        if room is None:
            self.notice("you are in no room now; /join #name to talk")
        elif before is None or name_key(before) != name_key(room):
            self.notice(f"lines now go to #{room}")

    def _room_left(self, msg: wire.RoomLeft) -> None:
        key = name_key(msg.room)
        self._announced.discard(key)
        self._who.discard(key)
        if self.room is not None and name_key(self.room) == key:
            others = [room.name for room in self.client.rooms.values()]
            self._make_current(others[0] if others else None)

    def _history_end(self, msg: wire.HistoryEnd) -> None:
        key = conversation_key(msg.conversation)
        if key not in self._history_asked:
            return  # history on join: not asked for
        self._history_asked.discard(key)
        if not msg.more:
            here = self.room is not None and key == conversation_key("#" + self.room)
            self.notice("no older messages" + ("" if here else f" in {msg.conversation}"))

    def status_changed(self, status: Status) -> None:
        # Before the first welcome, run() reports failures; while finishing,
        # end_of_input decides the exit status.
        if not self._logged_in or self._finishing:
            return
        if status.state == "reconnecting":
            self.notice(
                f"reconnecting (attempt {status.attempt} of {status.attempts}) "
                f"in {status.retry_in:g} s: {status.reason}"
            )
        elif status.state == "connected" and status.resumed:
            self.notice("reconnected" + (f" to {status.address}" if status.address else ""))
        elif status.state == "offline":
            if status.recovery == "never":
                if self.client.outbox:
                    self.err.write(f"spchat: {unsent_text(self.client.unsent(), status.reason)}\n")
                self.fatal(f"disconnected: {status.reason}")
            else:
                self.notice(f"{status.reason}; type /reconnect to try again")

    # --- user input --------------------------------------------------------

    def line(self, text: str) -> None:
        if self._finishing or self._quit or not text.strip():
            return
        if self._awaited is not None:
            self._held.append(text)
        else:
            self._run(text)

    def _run(self, text: str) -> None:
        try:
            if text.startswith("//"):
                self._say(text[1:])
            elif text.startswith("/"):
                self.command(text)
            else:
                self._say(text)
        except CommandError as e:  # typed wrong: nothing was sent
            self.notice(str(e))
        except ValueError as e:  # refused before sending: too long, not connected
            if text.startswith("/") and not text.startswith(("//", "/msg ")):
                self.commands_refused += 1
            else:
                self.refused += 1
            self.notice(f"error: {e}")

    def _say(self, text: str) -> None:
        if self.room is None:
            raise ValueError(NO_ROOM)
        self._in_flight.add(self.client.say(text, self.room))
        if self.client.status.state == "offline":  # given up: it waits for the user
            self.notice("not sent yet: offline; /reconnect sends it")

    def command(self, text: str) -> None:
        word, _, rest = text.partition(" ")
        if word == "/msg":
            to, _, body = rest.strip().partition(" ")
            if not to or not body.strip():
                self.notice("usage: /msg NAME TEXT")
            else:
                self._in_flight.add(self.client.direct(to, body))
        elif word == "/who":
            self._show_who(rest.strip())
        elif word == "/history":
            self._ask_history(rest.strip())
        elif word in ROOM_USAGE:
            outcome = room_command(self.client, word, rest, self.room)
            if outcome.show:
                self.notice(outcome.show)
            if outcome.joining:
                self._join(outcome.joining, outcome.join_cid)
        elif word == "/register":
            if not rest.strip():
                self.notice("usage: /register PASSWORD")
            else:
                self.client.register(rest.strip())
        elif word == "/password":
            old, _, new = rest.strip().partition(" ")
            if not old or not new.strip():
                self.notice("usage: /password OLD NEW")
            else:
                self.client.change_password(old, new.strip())
        elif word in ("/share", "/unshare", "/files", "/get", "/cancel"):
            self.sharing_command(word, rest.strip())
        elif word == "/reconnect":
            self._reconnect()
        elif word == "/quit":
            self._quit = True
            self.end_of_input()
        elif word == "/help":
            self.notice(HELP)
        else:
            self.notice(f"unknown command {word}; {HELP}")

    def _join(self, name: str, cid: str | None) -> None:
        """The room /join asked for becomes current: now if the client is in
        it already, else once it is in (the lines after wait for that)."""
        known = self.client.room(name)
        if known is not None:
            self._make_current(known.name)
        else:
            self._await(name_key(name), cid)

    def _show_who(self, args: str) -> None:
        """The current room's members, now or as soon as the list is whole."""
        if args:
            raise CommandError("usage: /who")
        room = self.client.room(self.room) if self.room is not None else None
        if room is None:
            raise CommandError(NO_ROOM)
        if room.members_known:
            self.notice(who_text(room.name, room.members))
        else:
            self._who.add(name_key(room.name))

    def _ask_history(self, conversation: str) -> None:
        if not conversation:
            if self.room is None:
                raise CommandError(NO_ROOM)
            conversation = "#" + self.room
        if conversation[:1] not in ("#", "@") or len(conversation) < 2:
            raise CommandError("usage: /history [#room|@name]")
        self._history_asked.add(conversation_key(conversation))
        self.client.history_page(conversation)

    # --- file sharing ------------------------------------------------------

    def sharing_command(self, word: str, rest: str) -> None:
        if self.sharing is None:
            self.notice("file sharing is not available in this client")
        elif word == "/files":
            self.sharing.list_files()
        elif not rest:
            self.notice(f"usage: {word} {'PATH' if word == '/share' else 'ID'}"
                        f"{' [DIR]' if word == '/get' else ''}")
        elif word == "/share":
            if self.room is None:
                raise ValueError(NO_ROOM)
            self._share(rest, self.room)
        elif word == "/unshare":
            file_id = self.sharing.unshare(rest)
            if file_id is not None:
                self.notice(f"no longer sharing {file_id[:12]}")
            else:
                self.notice(f"you are not sharing a file {rest}")
        elif word == "/cancel":
            self._cancel(rest)
        else:
            ref, _, directory = rest.partition(" ")
            d = self._get(ref, directory.strip() or self.download_dir)
            self._downloads.append(d)

    @defer.inlineCallbacks
    def _share(self, path: str, room: str):
        from spchat.p2p.node import SharingError

        try:
            file_id, manifest = yield self.sharing.share(path, room)
        except SharingError as e:
            self.commands_refused += 1
            self.notice(f"error: cannot share {path}: {e}")
            return
        self.notice(f"sharing {manifest.name} ({size_text(manifest.size)}) as {file_id[:12]}")

    def _cancel(self, ref: str) -> None:
        """/cancel ID: stop a download under way (what it has is kept)."""
        running = [file_id for file_id, fetch in self.sharing.fetches.items()
                   if file_id.startswith(ref.lower()) and fetch.path is None]
        if len(running) != 1:
            raise CommandError(f"no download {ref} is under way" if not running else
                               f"{ref} is more than one download: type more of its id")
        self._cancelled.add(running[0])
        self.sharing.cancel(running[0])

    @defer.inlineCallbacks
    def _get(self, ref: str, directory: str):
        from spchat.p2p.node import SharingError

        try:
            fetch = yield self.sharing.fetch(ref, directory)
        except SharingError as e:
            self.commands_refused += 1
            self.notice(f"error: cannot get {ref}: {e}")
            return
        ticker = task.LoopingCall(lambda: self.notice(progress_text(fetch.progress())))
        ticker.clock = self.reactor
        ticker.start(PROGRESS_SECONDS, now=False)
        try:
            yield fetch.result
        except SharingError as e:
            if fetch.file_id in self._cancelled:
                self._cancelled.discard(fetch.file_id)
                self.notice(cancelled_text(fetch.progress(),
                                           f"/get {fetch.file_id[:12]} resumes it"))
                return
            self.commands_refused += 1
            self.notice(f"error: {fetch.manifest.name}: {e}")
            return
        finally:
            ticker.stop()
        self.notice(summary_text(fetch.summary()))

    def line_too_long(self) -> None:
        self.refused += 1
        self.notice(f"error: that line is over {MAX_LINE_BYTES} bytes; it was not sent")

    def output_gone(self) -> None:
        self._output_gone = True
        self.end_of_input()

    def _reconnect(self) -> None:
        """/reconnect: at once if the connection is away; else say why not."""
        state = self.client.status.state
        if state == "connected":
            self.notice(f"already connected to {self.client.host}:{self.client.port}")
        elif state == "connecting":
            self.notice(f"connecting to {self.client.host}:{self.client.port} already")
        else:
            self.notice(f"reconnecting to {self.client.host}:{self.client.port} now")
            self.client.reconnect()

    @defer.inlineCallbacks
    def _answers(self):
        """A /register or /password at the very end: wait (bounded) for its answer."""
        for _ in range(int(ACK_WAIT_SECONDS * 10)):
            if not self.client.account_request_pending:
                break
            yield task.deferLater(self.reactor, 0.1, lambda: None)

    @defer.inlineCallbacks
    def end_of_input(self):
        if self._finishing or self.done.called:
            return
        self._finishing = True
        if not (yield self._login):
            return  # the login failed: already reported
        yield self._settled()  # lines typed before the first room go out first
        # Downloads started here finish before we leave.
        if self._downloads:
            self.notice(f"waiting for {len(self._downloads)} download(s) to finish")
            yield defer.DeferredList(self._downloads)
        if self._quit and self.client.status.state != "connected":
            # /quit while the connection is away: leave now, saying what is lost.
            all_acked = not self.client.outbox
        else:
            yield self._answers()
            all_acked = yield self.client.drain(ACK_WAIT_SECONDS)
        # Why, as it is before the logout: offline, or the server's silence.
        why = (self.client.why_unsent() if self.client.status.state != "connected"
               else "not acknowledged by the server in time")
        yield self.client.logout()
        problems = []
        if not all_acked:
            problems.append(unsent_text(self.client.unsent(), why))
        if self.refused:
            problems.append(f"{counted(self.refused, 'message')} refused")
        if self.commands_refused:
            problems.append(f"{counted(self.commands_refused, 'command')} refused (said above)")
        for problem in problems:
            self.err.write(f"spchat: {problem}\n")
        self._finish(1 if problems else 0)
