"""Right-to-left text in the order people read it.

Tk 8.6 draws a string's characters left to right in the order they are
stored: Hebrew comes out backwards and Arabic letters stand unjoined.  What
the window shows is therefore put in visual order first (Unicode's
bidirectional algorithm, UAX #9), with Arabic letters in their joined forms.
Text without right-to-left letters is left exactly as it is.

What this cannot do inside Tk: a right-to-left paragraph long enough to wrap
is ordered as one line, and text copied from the window comes in the order
it is shown.
"""

from __future__ import annotations

import re

import arabic_reshaper
from bidi import get_display

# Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic and their
# presentation forms: the scripts Tk would draw backwards.
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff]")


def has_rtl(text: str) -> bool:
    return _RTL.search(text) is not None


def display_order(text: str) -> str:
    """``text`` as it should appear when drawn left to right, one line of
    it at a time (each line of a multi-line text is its own paragraph)."""
    if not has_rtl(text):
        return text
    return "\n".join(_line_in_display_order(line) for line in text.split("\n"))


def _line_in_display_order(line: str) -> str:
    if not has_rtl(line):
        return line
    if _ARABIC.search(line):
        line = arabic_reshaper.reshape(line)
    # The paragraph's direction is that of its first strong letter, so a
    # Hebrew sentence with an English word in it reads right to left.
    return get_display(line)
