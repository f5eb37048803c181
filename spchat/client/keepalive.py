"""The client's sign of life: a ``keepalive`` when it has nothing to say.

The server frees a connection that has sent nothing for CHAT_IDLE_TIMEOUT
and tells the client, in its welcome, how often to speak up
(``keepalive_ms``, a third of the timeout).  Whatever else the connection
sends counts too, so a keepalive goes only after that long of silence.
"""

from __future__ import annotations

from spchat import wire


class Keepalive:
    """Sends ``keepalive`` on ``proto`` whenever it has sent nothing for
    ``every`` seconds, until stopped."""

    def __init__(self, clock, proto, every: float):
        if every <= 0:
            raise ValueError("the keepalive interval must be positive")
        self.clock = clock
        self.proto = proto
        self.every = every
        self.sent = 0  # keepalives sent
        self._call = clock.callLater(every, self._due)

    def _due(self) -> None:
        quiet = self.clock.seconds() - self.proto.last_sent
        if quiet >= self.every:
            self.proto.send_message(wire.Keepalive())
            self.sent += 1
            quiet = 0.0
        self._call = self.clock.callLater(self.every - quiet, self._due)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
