"""IRCv3 labeled-response: the answer to a command the client labeled,
marked so it can tell which command it answers.

While a labeled command runs, what the connection writes is held; once the
command is answered it goes out with the label: no line is an ``ACK``, one
line carries the ``label`` tag, more come in a ``labeled-response`` batch.
A command answered later (a line echoed once it is saved, CHATHISTORY
read from the store) says so with ``later()``, and its answer is written
through ``answer()``; what other events the connection gets meanwhile goes
out unheld, as it comes.
"""

from __future__ import annotations

import itertools
from typing import Callable

from spchat.irc.lines import escape_tag_value

# Longer labels are not repeated (the specification's limit is 64 bytes).
MAX_LABEL_BYTES = 64


class Held:
    """One labeled command's answer, as it is written."""

    __slots__ = ("label", "lines", "waiting")

    def __init__(self, label: str):
        self.label = label
        self.lines: list[bytes] = []
        self.waiting = 0  # answers still to come later


class Labels:
    def __init__(self, write: Callable[[bytes], None], server_name: str):
        self._write = write
        self.server_name = server_name
        self.current: Held | None = None
        self._ids = itertools.count(1)

    @staticmethod
    def usable(label: str | None) -> bool:
        return bool(label and len(label.encode("utf-8")) <= MAX_LABEL_BYTES)

    def hold(self, data: bytes) -> bool:
        """Keep ``data`` for the answer being written, if there is one."""
        if self.current is None:
            return False
        self.current.lines.extend(line + b"\r\n" for line in data.split(b"\r\n") if line)
        return True

    def run(self, label: str, command: Callable[[], None]) -> None:
        """Run a labeled command, and answer it unless it answers later."""
        held = Held(label)
        self._within(held, command)
        if not held.waiting:
            self._send(held)

    def later(self) -> Held | None:
        """The command running now answers later: what to ``answer`` with
        (None if it is not labeled)."""
        if self.current is not None:
            self.current.waiting += 1
        return self.current

    def answer(self, held: Held | None, writing: Callable[[], None]) -> None:
        """Write a later answer (``writing()``) as ``held``'s."""
        if held is None:
            writing()
            return
        self._within(held, writing)
        held.waiting -= 1
        if not held.waiting:
            self._send(held)

    def aside(self, writing: Callable[[], None]) -> None:
        """Write what is not the answer (a line to oneself, as it arrives)."""
        outer, self.current = self.current, None
        try:
            writing()
        finally:
            self.current = outer

    def _within(self, held: Held, writing: Callable[[], None]) -> None:
        outer, self.current = self.current, held
        try:
            writing()
        finally:
            self.current = outer

    def _send(self, held: Held) -> None:
        label = escape_tag_value(held.label)
        if not held.lines:
            self._write(f"@label={label} :{self.server_name} ACK\r\n".encode())
            return
        if len(held.lines) == 1:
            self._write(_tagged(held.lines[0], f"label={label}"))
            return
        ref = f"l{next(self._ids)}"
        self._write(f"@label={label} :{self.server_name} BATCH +{ref} labeled-response\r\n"
                    .encode() + b"".join(_tagged(line, f"batch={ref}") for line in held.lines)
                    + f":{self.server_name} BATCH -{ref}\r\n".encode())


def _tagged(line: bytes, tag: str) -> bytes:
    """An encoded line with one more tag, first; a line in a batch of its
    own (a CHATHISTORY batch's) stays in that one, which is in ours."""
    if line.startswith(b"@"):
        tags = line[1:line.find(b" ")].split(b";")
        if tag.startswith("batch=") and any(t.startswith(b"batch=") for t in tags):
            return line
        return b"@" + tag.encode() + b";" + line[1:]
    return b"@" + tag.encode() + b" " + line
