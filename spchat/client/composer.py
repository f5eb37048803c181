"""What the message entry remembers and completes: no Tk here.

``LineHistory`` is Up and Down (the lines sent before, the draft kept while
looking at them); ``NameCompleter`` is Tab (member names, cycling on the
next Tab), both fed plain strings so each rule is a unit test.
"""

from __future__ import annotations

import re

from spchat.client.session import name_key

HISTORY_SIZE = 200  # lines kept for Up


class LineHistory:
    """The lines sent, oldest first, walked with ``older`` and ``newer``."""

    def __init__(self, size: int = HISTORY_SIZE):
        self.size = size
        self._lines: list[str] = []
        self._at: int | None = None  # the line shown, None: the draft
        self._draft = ""

    def add(self, text: str) -> None:
        """A line was sent: last in the history (once, if sent twice in a row)."""
        if text.strip() and (not self._lines or self._lines[-1] != text):
            self._lines.append(text)
            del self._lines[:-self.size]
        self._at = None

    def older(self, current: str) -> str | None:
        """Up: the line before the one shown (None at the oldest); what was
        being typed is kept to come back to."""
        if self._at is None:
            if not self._lines:
                return None
            self._draft, self._at = current, len(self._lines)
        if self._at == 0:
            return None
        self._at -= 1
        return self._lines[self._at]

    def newer(self) -> str | None:
        """Down: the line after the one shown, then the draft (None: at the draft)."""
        if self._at is None:
            return None
        self._at += 1
        if self._at == len(self._lines):
            self._at = None
            return self._draft
        return self._lines[self._at]


class NameCompleter:
    """Tab on a word's start: the first name that starts so (as the server
    compares names), the next one on the next Tab, round again after the last."""

    def __init__(self):
        self._cycle = None  # (start, candidates, index, inserted) of the last Tab

    def complete(self, before: str, names) -> tuple[int, str] | None:
        """``before`` is the text left of the cursor: (where the replaced
        word starts, what goes from there to the cursor), or None."""
        if self._cycle is not None:
            start, candidates, index, inserted = self._cycle
            if before[start:] == inserted:  # Tab again, nothing typed between
                return self._take(start, candidates, (index + 1) % len(candidates))
        found = re.search(r"\S*$", before)
        assert found is not None, "an empty match at the end at least"
        word = found.group()
        start = len(before) - len(word)
        prefix = name_key(word.removeprefix("@"))
        candidates = sorted({n for n in names if name_key(n).startswith(prefix)},
                            key=name_key)
        if not prefix or not candidates:
            self._cycle = None
            return None
        return self._take(start, candidates, 0)

    def _take(self, start: int, candidates: list[str], index: int) -> tuple[int, str]:
        # At the start of a line a name is an address ("bob: "), as in IRC.
        inserted = candidates[index] + (": " if start == 0 else " ")
        self._cycle = (start, candidates, index, inserted)
        return start, inserted
