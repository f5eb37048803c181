"""Desktop notifications through ``notify-send``, where the system has it.

Spawned by the reactor and never waited for (``spawn``): a notification
daemon that is slow or missing cannot stall the chat.  Without
``notify-send`` nothing is sent (the window's bell and its title still say it).
"""

from __future__ import annotations

import shutil

from spchat.client.spawn import spawn_quietly

BODY_CHARS = 200  # a notification is a glimpse, not the message
# A burst (a replay of missed direct messages) is one notification, not a pile.
QUIET_SECONDS = 3.0


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
        if not spawn_quietly(self.reactor, [self.command, "--app-name=spchat", "--", title, body]):
            return False
        self._last = now
        return True
