"""The window's file picker, without Tk: a folder's listing, and where a
name picked or typed leads.

Tk's own file dialog (``tkinter.filedialog``) is modal: it runs an event
loop of its own until it is closed, and the reactor, which drives Tk by
polling it (``tksupport``), stands still meanwhile: no line comes in, no
keepalive goes out, peers downloading from us wait.  The window's picker
is a plain Toplevel on this model instead (``spchat.client.tkfiles``), and
the chat goes on while it is open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    name: str
    folder: bool
    size: int = 0  # bytes, of a file


class FileChooser:
    def __init__(self, start: Path):
        self.folder = Path(start).expanduser().absolute()
        self.items: list[Item] = []
        self.problem = ""  # what went wrong last, said in the picker
        self.go(self.folder)

    def go(self, folder: Path) -> None:
        """List ``folder``: its folders first, then its files, by name;
        hidden ones left out (a typed name still finds them)."""
        try:
            items = _listing(folder)
        except OSError as e:
            self.problem = f"cannot open {folder}: {e.strerror or e}"
            return  # where it was, still listed
        self.folder, self.problem = folder, ""
        self.items = sorted(items, key=lambda item: (not item.folder, item.name.casefold()))

    def up(self) -> None:
        self.go(self.folder.parent)

    def choose(self, typed: str) -> Path | None:
        """A name (or a path, ~ for home) picked or typed: a file is the
        choice; a folder is opened instead (None), as is anything else
        said in ``problem`` (None)."""
        typed = typed.strip()
        if not typed:
            self.problem = "pick a file, or type its name"
            return None
        path = self.folder / Path(typed).expanduser()  # an absolute path stays itself
        if path.is_dir():
            self.go(Path(os.path.normpath(path)))
            return None
        if not path.is_file():
            self.problem = f"no file {typed} in {self.folder}"
            return None
        return path


def _listing(folder: Path) -> list[Item]:
    items = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    items.append(Item(entry.name, True))
                elif entry.is_file():
                    items.append(Item(entry.name, False, entry.stat().st_size))
            except OSError:  # gone meanwhile, or a link to nowhere: not offered
                continue
    return items
