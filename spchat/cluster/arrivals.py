"""Direct lines to a name that no node is known to have: they wait a
moment for it.  A login on another node is heard of from that node's
roster some milliseconds after its client was welcomed, and a line sent
to it meanwhile would be refused as to nobody.  So a line to a name not
found waits up to ``WAIT_SECONDS`` for the roster to name it, and the
sender's next lines to that name wait behind it, in the order sent.
Sans-IO: a clock, and ``find(key)``, the session of that name here or
elsewhere (None: nobody known).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

WAIT_SECONDS = 0.5


class _Line:
    __slots__ = ("due", "then")

    def __init__(self, due: float, then: Callable):
        self.due = due
        self.then = then  # then(target): the session found, or None past the wait


class Arrivals:
    def __init__(self, clock, find: Callable, wait: float = WAIT_SECONDS):
        self.clock = clock
        self.find = find
        self.wait = wait
        # By (sender's session id, recipient's key), in the order sent.
        self._waiting: dict[tuple[str, str], deque[_Line]] = {}
        self._timer = None

    def waits(self, sender: str, key: str) -> bool:
        """Lines of ``sender`` to ``key`` wait: the next one waits behind them."""
        return (sender, key) in self._waiting

    def hold(self, sender: str, key: str, then: Callable) -> None:
        """``then(target)`` once the session of ``key`` is known (None if it
        is not within the wait), after the lines held before it."""
        self._waiting.setdefault((sender, key), deque()).append(
            _Line(self.clock.seconds() + self.wait, then))
        self._schedule()

    def changed(self) -> None:
        """Someone came, here or on another node: maybe whom lines wait for."""
        self._release()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._waiting.clear()

    def _release(self) -> None:
        now = self.clock.seconds()
        for pair in list(self._waiting):
            lines = self._waiting[pair]
            target = self.find(pair[1])
            while lines and (target is not None or lines[0].due <= now):
                lines.popleft().then(target)
            if not lines:
                del self._waiting[pair]
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._waiting:
            due = min(lines[0].due for lines in self._waiting.values())
            self._timer = self.clock.callLater(max(0.0, due - self.clock.seconds()),
                                               self._due)

    def _due(self) -> None:
        self._timer = None
        self._release()
