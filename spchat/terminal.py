"""Text from other people, made safe to show on a terminal or in a log.

A name, an agent string, a topic or a reason comes from someone else: an
ESC in it would be a terminal escape (retitle, clear, move the cursor), a
newline would draw a line of its own, a bidi control would reorder what
follows.  ``printable`` shows every such character as its escape instead;
``SafeLogger`` does that to every value a log line is given.
"""

from __future__ import annotations

from twisted.logger import Logger


def printable(text: str) -> str:
    """``text`` with every character that is not printable (controls, bidi
    and other formatting marks, line separators, lone surrogates) written as
    its Python escape: ``\\x1b``, ``\\u202e``."""
    if text.isprintable():  # the usual case, at C speed
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class SafeLogger(Logger):
    """A Logger whose events' string values are ``printable``: a log line
    that quotes a peer cannot carry a terminal escape or a line of its own."""

    def emit(self, level, format=None, **kwargs):
        for key, value in kwargs.items():
            if isinstance(value, str) and not key.startswith("log_") and not value.isprintable():
                kwargs[key] = printable(value)
        super().emit(level, format, **kwargs)
