"""Line-mode client: standard input in, one line per event out.

Works with a terminal or a pipe.  Plain lines are said in the room; commands
are ``/msg NAME TEXT``, ``/who``, ``/quit`` and ``/help``.  At the end of
input it waits (bounded) for the server to acknowledge what was sent, logs
out and exits 0.
"""

from __future__ import annotations

import sys
import time

from twisted.internet import defer, stdio
from twisted.protocols.basic import LineReceiver

from spchat import wire
from spchat.client.session import ChatClient, ClientError, Status

ACK_WAIT_SECONDS = 10.0
HELP = (
    "commands: /msg NAME TEXT, /who, /reconnect, /quit, /help; "
    "//text says a line starting with /"
)


def clock_text(ts_ms: int | None = None) -> str:
    """HH:MM:SS in local time, from server UTC milliseconds (or now)."""
    seconds = time.time() if ts_ms is None else ts_ms / 1000
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def render(msg: wire.Message) -> str | None:
    """The line printed for an event, or None for events shown otherwise."""
    if isinstance(msg, wire.RoomMessage):
        return f"[{clock_text(msg.ts)}] {msg.sender}: {msg.text}"
    if isinstance(msg, wire.DirectMessage):
        return f"[{clock_text(msg.ts)}] {msg.sender} -> {msg.to}: {msg.text}"
    if isinstance(msg, wire.Notice):
        return f"[{clock_text(msg.ts)}] * {msg.text}"
    if isinstance(msg, wire.Error):
        return f"[{clock_text()}] * error: {msg.text}"
    if isinstance(msg, wire.Bye):
        return f"[{clock_text()}] * server: {msg.text}"
    return None


class _Lines(LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20  # a line far beyond any message limit gets an error

    def __init__(self, cli: LineModeClient):
        self.cli = cli

    def lineReceived(self, line: bytes) -> None:
        self.cli.line(line.rstrip(b"\r").decode("utf-8", errors="replace"))

    def lineLengthExceeded(self, line):
        self.cli.notice("error: that line is too long; it was not sent")
        # Skip the rest of the over-long line.
        self.clearLineBuffer()

    def connectionLost(self, reason=None):
        self.cli.end_of_input()


class LineModeClient:
    def __init__(self, reactor, client: ChatClient, out=None, err=None):
        self.reactor = reactor
        self.client = client
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.done: defer.Deferred = defer.Deferred()
        self._show_members = False
        self._finishing = False
        self._logged_in = False
        client.on_event = self.event
        client.on_status = self.status_changed

    def print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def notice(self, text: str) -> None:
        self.print(f"[{clock_text()}] * {text}")

    def fatal(self, text: str) -> None:
        self.err.write(f"spchat: {text}\n")
        self.err.flush()
        self._finish(1)

    def _finish(self, status: int) -> None:
        if not self.done.called:
            self.done.callback(status)

    @defer.inlineCallbacks
    def run(self):
        try:
            welcome = yield self.client.connect()
        except ClientError as e:
            self.fatal(str(e))
            return (yield self.done)
        if self.client.newly_pinned:
            self.notice(
                f"new server {self.client.host}:{self.client.port}, "
                f"key {self.client.server_fingerprint} pinned"
            )
        self._logged_in = True
        self.notice(f"logged in as {welcome.name} in {welcome.room}")
        stdio.StandardIO(_Lines(self), reactor=self.reactor)
        return (yield self.done)

    # --- events from the server --------------------------------------------

    def event(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Members):
            if self._show_members:
                self._show_members = False
                listing = ", ".join(f"{name} ({state})" for name, state in msg.members)
                self.notice(f"in {msg.room}: {listing}")
            return
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
        if text.startswith("//"):
            self.client.say(text[1:])
        elif text.startswith("/"):
            self.command(text)
        else:
            self.client.say(text)

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
        elif word == "/reconnect":
            self.client.reconnect()
        elif word == "/quit":
            self.end_of_input()
        elif word == "/help":
            self.notice(HELP)
        else:
            self.notice(f"unknown command {word}; {HELP}")

    @defer.inlineCallbacks
    def end_of_input(self):
        if self._finishing or self.done.called:
            return
        self._finishing = True
        all_acked = yield self.client.wait_acked(ACK_WAIT_SECONDS)
        if not all_acked:
            lost = len(self.client.outbox)
            self.err.write(
                f"spchat: {lost} message(s) not acknowledged by the server\n"
            )
            yield self.client.logout()
            self._finish(1)
            return
        yield self.client.logout()
        self._finish(0)
