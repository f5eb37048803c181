"""Flood control: each session's requests pass a token bucket (fakelag, as
IRC servers do): too fast, they wait their turn; too many waiting, the
session ends."""

from __future__ import annotations

from typing import Callable

from spchat import wire
from spchat.server.rules import Limits
from spchat.server.sessions import Session, State


class FloodControl:
    def __init__(self, clock, limits: Limits, handle: Callable, end: Callable):
        """``handle(session, msg)`` carries a request out; ``end(session, code,
        text, reason, notice)`` takes a flooding session off the server."""
        self.clock = clock
        self.limits = limits
        self.handle = handle
        self.end = end

    def admit(self, session: Session, msg: wire.Message) -> bool:
        """True to handle ``msg`` now; otherwise it waits or the session ends."""
        now = self.clock.seconds()
        if not session.backlog and session.bucket.take(now):
            return True
        if len(session.backlog) >= self.limits.flood_queue:
            if session.link is not None:
                session.link.conn.send(wire.Error(
                    "flood", "too many messages too fast", getattr(msg, "cid", None)))
            self.end(session, "flood", "disconnected for sending too many messages too fast",
                     "flood", f"{session.name} left (flooding)")
            return False
        session.backlog.append(msg)
        if session.drain_call is None:
            session.drain_call = self.clock.callLater(session.bucket.wait(now), self._drain,
                                                      session)
        return False

    def _drain(self, session: Session) -> None:
        session.drain_call = None
        if session.state is State.OFFLINE:
            return
        while session.backlog and session.bucket.take(self.clock.seconds()):
            self.handle(session, session.backlog.popleft())
            if session.state is State.OFFLINE:
                return
        if session.backlog:
            session.drain_call = self.clock.callLater(
                session.bucket.wait(self.clock.seconds()), self._drain, session)
