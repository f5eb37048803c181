"""Line-mode client: standard input in, one line per event out.

Works with a terminal or a pipe.  Plain lines are said in the room; commands
are ``/msg NAME TEXT``, ``/who``, ``/reconnect``, ``/quit`` and ``/help``.
At the end of input it waits (bounded) for the server to acknowledge what was
sent, logs out and exits 0; 1 if anything was refused or not acknowledged.

Output goes through the standard-I/O transport, never ``sys.stdout``: Twisted
makes the descriptor non-blocking, and a plain write to a full pipe would
drop lines without a word.
"""

from __future__ import annotations

import sys
import time

from twisted.internet import defer, interfaces, stdio, task
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from spchat import wire
from spchat.client.session import ChatClient, ClientError, Status
from spchat.p2p.report import file_row_text, offer_text, progress_text, size_text, summary_text

# At the end of input, how long to wait for an acknowledgement that does
# not come before giving up.
ACK_WAIT_SECONDS = 10.0
# Output still queued for a reader that does not read is given up after this.
FLUSH_WAIT_SECONDS = 10.0
MAX_LINE_BYTES = 1 << 20
HELP = (
    "commands: /msg NAME TEXT, /who, /history, /register PASSWORD, "
    "/password OLD NEW, /share PATH, /unshare ID, /files, /get ID [DIR], "
    "/reconnect, /quit, /help; //text says a line starting with /"
)
# A download's progress is printed this often.
PROGRESS_SECONDS = 2.0
# Continuation lines of a multi-line message are marked, so no user can
# print a line that looks like it came from someone else or the server.
CONTINUATION = "\n           | "


def clock_text(ts_ms: int | None = None) -> str:
    """HH:MM:SS in local time, from server UTC milliseconds (or now)."""
    seconds = time.time() if ts_ms is None else ts_ms / 1000
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def render(msg: wire.Message) -> str | None:
    """The line printed for an event, or None for events shown otherwise."""
    if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
        mark = "(history) " if msg.history else ""
        who = msg.sender if isinstance(msg, wire.RoomMessage) else f"{msg.sender} -> {msg.to}"
        line = f"[{clock_text(msg.ts)}] {mark}{who}: {msg.text}"
    elif isinstance(msg, wire.Notice):
        line = f"[{clock_text(msg.ts)}] * {msg.text}"
    elif isinstance(msg, wire.Error):
        line = f"[{clock_text()}] * error: {msg.text}"
    elif isinstance(msg, wire.Bye):
        line = f"[{clock_text()}] * server: {msg.text}"
    elif isinstance(msg, wire.Offer):
        line = f"[{clock_text(msg.ts)}] * {offer_text(msg.sharer, msg.name, msg.size, msg.file)}"
    elif isinstance(msg, wire.FileList):
        rows = [file_row_text(row) for row in msg.files] or ["no files are offered"]
        line = f"[{clock_text()}] * files:\n" + "\n".join(rows)
    else:
        return None
    return line.replace("\n", CONTINUATION)


@implementer(interfaces.IHalfCloseableProtocol)
class _Terminal(Protocol):
    """Standard input split into lines; standard output as a transport."""

    def __init__(self, cli: LineModeClient):
        self.cli = cli
        self.buffer = b""
        self.discarding = False  # inside a line that was too long
        self.closed = defer.Deferred()

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
        self._downloads: list[defer.Deferred] = []
        self.err = err or sys.stderr
        self.done: defer.Deferred = defer.Deferred()
        self.refused = 0
        self._fds = (stdin, stdout)
        self._terminal: _Terminal | None = None
        self._show_members = False
        self._show_history_end = False
        self._finishing = False
        self._logged_in = False
        self._output_gone = False
        self._login = defer.Deferred()  # fires True once logged in, False if not
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
        # in the outbox and go out right after it.
        self._terminal = _Terminal(self)
        stdio.StandardIO(self._terminal, *self._fds, reactor=self.reactor)
        try:
            welcome = yield self.client.connect()
        except ClientError as e:
            self.fatal(str(e))
            self._login.callback(False)
            return (yield self.done)
        if self.client.newly_pinned:
            self.notice(
                f"new server {self.client.host}:{self.client.port}, "
                f"key {self.client.server_fingerprint} pinned"
            )
        self._logged_in = True
        self.notice(f"logged in as {welcome.name} in {welcome.room}")
        self._login.callback(True)
        return (yield self.done)

    # --- events from the server --------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Members):
            if self._show_members:
                self._show_members = False
                listing = ", ".join(f"{name} ({state})" for name, state in msg.members)
                self.notice(f"in {msg.room}: {listing}")
            return
        if isinstance(msg, wire.HistoryEnd):
            if not msg.more and self._show_history_end:
                self.notice("no older messages")
            self._show_history_end = False
            return
        if isinstance(msg, wire.Error):
            self.refused += 1  # a message or a command the server turned down
        line = render(msg)
        if line is not None:
            self.print(line)

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
            self.notice("reconnected")
        elif status.state == "offline":
            if status.recovery == "never":
                self.fatal(f"disconnected: {status.reason}")
            elif status.recovery == "on_activity":
                self.notice(f"{status.reason}; type a message to reconnect")
            else:
                self.notice(f"{status.reason}; type /reconnect to try again")

    # --- user input --------------------------------------------------------

    def line(self, text: str) -> None:
        if self._finishing or not text.strip():
            return
        try:
            if text.startswith("//"):
                self.client.say(text[1:])
            elif text.startswith("/"):
                self.command(text)
            else:
                self.client.say(text)
        except ValueError as e:  # refused before sending: too long, not connected
            self.refused += 1
            self.notice(f"error: {e}")

    def command(self, text: str) -> None:
        word, _, rest = text.partition(" ")
        if word == "/msg":
            to, _, body = rest.strip().partition(" ")
            if not to or not body.strip():
                self.notice("usage: /msg NAME TEXT")
            else:
                self.client.direct(to, body)
        elif word == "/who":
            self._show_members = True
            self.client.who()
        elif word == "/history":
            self._show_history_end = True
            self.client.history_page()
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
        elif word in ("/share", "/unshare", "/files", "/get"):
            self.sharing_command(word, rest.strip())
        elif word == "/reconnect":
            self.client.reconnect()
        elif word == "/quit":
            self.end_of_input()
        elif word == "/help":
            self.notice(HELP)
        else:
            self.notice(f"unknown command {word}; {HELP}")

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
            self._share(rest)
        elif word == "/unshare":
            file_id = self.sharing.unshare(rest)
            if file_id is not None:
                self.notice(f"no longer sharing {file_id[:12]}")
            else:
                self.notice(f"you are not sharing a file {rest}")
        else:
            ref, _, directory = rest.partition(" ")
            d = self._get(ref, directory.strip() or self.download_dir)
            self._downloads.append(d)

    @defer.inlineCallbacks
    def _share(self, path: str):
        from spchat.p2p.node import SharingError

        try:
            file_id, manifest = yield self.sharing.share(path)
        except SharingError as e:
            self.refused += 1
            self.notice(f"error: cannot share {path}: {e}")
            return
        self.notice(f"sharing {manifest.name} ({size_text(manifest.size)}) as {file_id[:12]}")

    @defer.inlineCallbacks
    def _get(self, ref: str, directory: str):
        from spchat.p2p.node import SharingError

        try:
            fetch = yield self.sharing.fetch(ref, directory)
        except SharingError as e:
            self.refused += 1
            self.notice(f"error: cannot get {ref}: {e}")
            return
        ticker = task.LoopingCall(lambda: self.notice(progress_text(fetch.progress())))
        ticker.clock = self.reactor
        ticker.start(PROGRESS_SECONDS, now=False)
        try:
            yield fetch.result
        except SharingError as e:
            self.refused += 1
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

    @defer.inlineCallbacks
    def end_of_input(self):
        if self._finishing or self.done.called:
            return
        self._finishing = True
        if not (yield self._login):
            return  # the login failed: already reported
        # Downloads started here finish before we leave.
        if self._downloads:
            self.notice(f"waiting for {len(self._downloads)} download(s) to finish")
            yield defer.DeferredList(self._downloads)
        # A /register or /password at the very end: wait for its answer.
        for _ in range(int(ACK_WAIT_SECONDS * 10)):
            if not self.client.account_request_pending:
                break
            yield task.deferLater(self.reactor, 0.1, lambda: None)
        # Flood control may pace a long paste: keep waiting while
        # acknowledgements come in, give up after a quiet spell.
        while True:
            before = len(self.client.outbox)
            all_acked = yield self.client.wait_acked(ACK_WAIT_SECONDS)
            if all_acked or len(self.client.outbox) >= before:
                break
        yield self.client.logout()
        problems = []
        if not all_acked:
            problems.append(f"{len(self.client.outbox)} message(s) not acknowledged by the server")
        if self.refused:
            problems.append(f"{self.refused} message(s) refused by the server")
        for problem in problems:
            self.err.write(f"spchat: {problem}\n")
        self._finish(1 if problems else 0)
