"""Names that look alike: Unicode TR39 skeletons and mixed scripts.

Two names whose *skeletons* are equal look the same on screen ("alice" in
Latin letters and "аlice" with a Cyrillic "а"; "rn" and "m"; "l", "I" and
"1").  The data is Unicode's confusables.txt as the confusable-homoglyphs
package ships it: pairs of characters that look alike.  Each source
character is paired with one prototype, so the pairs make groups of
look-alikes; a character's skeleton is its group's smallest character (an
ASCII one where the group has any), or the skeleton of its prototype when
that is several characters ("m" is "rn").

A skeleton also folds case: it is the skeleton of the case-folded
skeleton, so ``Ian`` (in a sans-serif font) looks like ``lan``.  A name
has two *looks*: the skeletons of its display form and of its comparison
key (``ALICE`` shows as ``ALICE`` but is ``alice``, like ``аlice``).  Two
names look alike when one of their looks is the same.

A name mixes scripts when its letters come from more than one script
(digits and ``_-.`` go with any), except for the combinations TR39's
"highly restrictive" level allows (Han with Hiragana and Katakana, with
Bopomofo or with Hangul, each with Latin too), so Japanese, Chinese and
Korean names are not refused.
"""

from __future__ import annotations

import functools
import unicodedata

import confusable_homoglyphs
from confusable_homoglyphs import categories

# Stored skeletons are made again when this changes (a new data release, or
# a change to how they are made here).
VERSION = f"1:{confusable_homoglyphs.__version__}"

# The comments the data comes from wrap right-to-left characters in marks.
_DIRECTION_MARKS = str.maketrans("", "", "\u200e\u200f")
_ANY_SCRIPT = frozenset({"COMMON", "INHERITED", "Unknown"})
_ALLOWED_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


@functools.cache
def _table() -> dict[int, str]:
    """Character -> its skeleton, for ``str.translate``."""
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while parent.get(ch, ch) != ch:
            parent[ch] = parent.get(parent[ch], parent[ch])  # path halving
            ch = parent[ch]
        return ch

    longer: dict[str, str] = {}  # a character whose prototype is several characters
    for key, pairs in confusables_data.items():
        one = key.translate(_DIRECTION_MARKS)
        for pair in pairs:
            other = pair["c"].translate(_DIRECTION_MARKS)
            if len(one) == 1 and len(other) == 1:
                a, b = root(one), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # the smallest character leads
            elif len(one) == 1:
                longer[one] = other
            elif len(other) == 1:
                longer[other] = one
    table = {ord(ch): root(ch) for ch in parent if root(ch) != ch}
    for ch, prototype in longer.items():
        table[ord(ch)] = "".join(root(c) for c in prototype)
    return table


def _skeleton(text: str) -> str:
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).translate(_table()))


def skeleton(name: str) -> str:
    """What ``name`` looks like: equal for names a reader cannot tell apart."""
    return _skeleton(_skeleton(name).casefold())


def looks(display: str, key: str) -> frozenset[str]:
    """The skeletons a name is seen as (see the top of this module)."""
    return frozenset((skeleton(display), skeleton(key)))


def scripts(name: str) -> set[str]:
    """The scripts of the letters of ``name`` (upper case, as in Unicode's
    Scripts.txt: LATIN, CYRILLIC, ...)."""
    found = set()
    for ch in unicodedata.normalize("NFD", name):
        if unicodedata.category(ch)[0] == "N":
            continue  # digits go with any script
        script = categories.alias(ch)
        if script not in _ANY_SCRIPT:
            found.add(script)
    return found


def mixed_scripts(name: str) -> set[str]:
    """The scripts ``name`` mixes (empty: none, or an allowed mix)."""
    found = scripts(name)
    if len(found) <= 1 or any(found <= mix for mix in _ALLOWED_MIXES):
        return set()
    return found
