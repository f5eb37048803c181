"""A helper program started by the reactor and never waited for (a
notification, a file manager): one that is slow or missing cannot stall
the chat."""

from __future__ import annotations

import os

from twisted.internet import protocol
from twisted.logger import Logger

log = Logger()


class _Quiet(protocol.ProcessProtocol):
    """Its output and exit are of no interest; its failure only logged."""

    def __init__(self, what: str):
        self.what = what

    def processEnded(self, reason):
        if reason.value.exitCode:
            log.info("{what}: {reason}", what=self.what, reason=reason.getErrorMessage())


def spawn_quietly(reactor, args: list[str]) -> bool:
    """Start ``args`` (the program's path first); True if it is on its way."""
    what = os.path.basename(args[0])
    try:
        reactor.spawnProcess(_Quiet(what), args[0], args, env=dict(os.environ))
    except OSError as e:  # gone since it was found: not the chat's problem
        log.info("{what}: {error}", what=what, error=e)
        return False
    return True
