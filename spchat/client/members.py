"""A room's member list, kept in order as it changes.

A join, a leave or a change of state or role finds its place by bisection
(O(log n) comparisons, then one move of the references behind it), instead
of rebuilding and sorting the whole list: in a room of thousands every
member hears every join, and a client that sorted the list each time would
stall.  Two orders are kept, both by folded name within:

* the server's, by name (``iter()``): the /who line, the whole list;
* the window's, by role then name (``ranked()``): owners, operators,
  members, then the muted.

The window's order also keeps its recent changes as "remove row i" and
"insert this member at row j", so a window can change the rows that
changed instead of drawing the list again.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator

from spchat import wire

Member = tuple[str, str, str]  # name, state, role
# Roles from the lowest up, as the server ranks them (wire.ROLES is highest first).
RANKS = {role: rank for rank, role in enumerate(reversed(wire.ROLES))}
# A window further behind than this many changes draws the list again.
KEPT_CHANGES = 1024


def name_key(name: str) -> str:
    """How the server compares user and room names: "Bob" and "BOB" are one."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


class MemberList:
    """Members by folded name, in the server's order and in the window's."""

    def __init__(self, members: Iterable[Member] = ()):
        self._by_key: dict[str, Member] = {}
        self._names: list[str] = []  # keys, by name
        self._ranked: list[tuple[int, str]] = []  # (-rank, key): by role, then name
        self.version = 0  # one more for each change
        self._changes: deque = deque(maxlen=KEPT_CHANGES)  # the latest changes, oldest first
        self.replace(members)

    def replace(self, members: Iterable[Member]) -> None:
        """A whole new list (as the server sends one): sorted once."""
        self._by_key = {name_key(m[0]): (m[0], m[1], m[2]) for m in members}
        self._names = sorted(self._by_key)
        self._ranked = sorted((-RANKS[m[2]], key) for key, m in self._by_key.items())
        self._changes.clear()  # a window behind this draws the whole list
        self.version += 1

    def update(self, name: str, state: str, role: str = "member") -> bool:
        """One member's news ("gone": left); False if nothing changed."""
        key = name_key(name)
        old = self._by_key.get(key)
        new = None if state == "gone" else (name, state, role)
        if old == new:
            return False
        if old is not None:
            del self._names[bisect_left(self._names, key)]
            row = bisect_left(self._ranked, (-RANKS[old[2]], key))
            del self._ranked[row]
            del self._by_key[key]
            self._changed(("remove", row))
        if new is not None:
            self._names.insert(bisect_left(self._names, key), key)
            place = (-RANKS[role], key)
            row = bisect_left(self._ranked, place)
            self._ranked.insert(row, place)
            self._by_key[key] = new
            self._changed(("insert", row, new))
        return True

    def set_state(self, key: str, state: str) -> Member | None:
        """A member's new presence state, by folded name; the member as it
        is now if that changed anything (nobody is added)."""
        old = self._by_key.get(key)
        if old is None or old[1] == state:
            return None
        self.update(old[0], state, old[2])
        return self._by_key[key]

    def _changed(self, change: tuple) -> None:
        self._changes.append(change)
        self.version += 1

    def changes_since(self, version: int) -> list[tuple] | None:
        """The changes to the window's order after ``version``, oldest first:
        ("remove", row) and ("insert", row, member); None if they are no
        longer all kept (or a whole list came): draw it all again."""
        behind = self.version - version
        if behind < 0 or behind > len(self._changes):
            return None
        return list(self._changes)[len(self._changes) - behind:]

    def get(self, key: str) -> Member | None:
        """The member of that folded name, if in the list."""
        return self._by_key.get(key)

    def keys(self) -> Iterable[str]:
        return self._by_key.keys()

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Member]:
        """In the server's order."""
        by_key = self._by_key
        return (by_key[key] for key in self._names)

    def keyed(self) -> Iterator[tuple[str, Member]]:
        """(folded name, member), in the server's order."""
        by_key = self._by_key
        return ((key, by_key[key]) for key in self._names)

    def ranked(self) -> list[Member]:
        """Everyone in the window's order: by role, then by name."""
        by_key = self._by_key
        return [by_key[key] for _, key in self._ranked]
