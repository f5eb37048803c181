"""Open folder, for a saved download: the desktop's file manager, through
``xdg-open`` where the system has it (spawned, never waited for)."""

from __future__ import annotations

import shutil

from spchat.client.spawn import spawn_quietly

OPENER = ("xdg-open",)


class FolderOpener:
    def __init__(self, reactor, command=OPENER, which=shutil.which):
        self.reactor = reactor
        program = which(command[0])
        # None: nothing opens folders here (the window shows the path instead).
        self.command = [program, *command[1:]] if program else None

    def open(self, folder: str) -> bool:
        """True if the folder is being opened."""
        return self.command is not None and spawn_quietly(self.reactor, [*self.command, folder])
