"""Desktop notifications through ``notify-send``, where the system has it.

Spawned by the reactor and never waited for: a notification daemon that is
slow or missing cannot stall the chat. Without ``notify-send`` nothing is
sent (the window's bell and its title still say it).
"""

from __future__ import annotations

import os
import shutil

from twisted.internet import protocol
from twisted.logger import Logger

BODY_CHARS = 200  # a notification is a glimpse, not the message
# A burst (a replay of missed direct messages) is one notification, not a pile.
QUIET_SECONDS = 3.0


class _Quiet(protocol.ProcessProtocol):
    """notify-send's output and exit are of no interest; its failure only logged."""

    log = Logger()

    def processEnded(self, reason):
        if reason.value.exitCode:
            self.log.info("notify-send: {reason}", reason=reason.getErrorMessage())


class DesktopNotifier:
    def __init__(self, reactor, which=shutil.which):
        self.reactor = reactor
        self.command = which("notify-send")  # None: not on this system
        self._last = None  # when the last notification went, by the reactor's clock

    @property
    def available(self) -> bool:
        return self.command is not None

    def notify(self, title: str, body: str) -> bool:
        """True if a notification was sent on its way."""
        now = self.reactor.seconds()
        if self.command is None or (self._last is not None and now - self._last < QUIET_SECONDS):
            return False
        if len(body) > BODY_CHARS:
            body = body[:BODY_CHARS - 1] + "…"
        # "--" so that a body starting with "-" is not taken as an option.
        args = [self.command, "--app-name=spchat", "--", title, body]
        try:
            self.reactor.spawnProcess(_Quiet(), self.command, args, env=dict(os.environ))
        except OSError as e:  # gone since it was found: not the chat's problem
            _Quiet.log.info("notify-send: {error}", error=e)
            return False
        self._last = now
        return True
