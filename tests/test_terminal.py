"""Text from other people, made safe for a terminal and a log."""

import sys
import unicodedata

from twisted.logger import formatEvent

from spchat.terminal import SafeLogger, printable


def test_every_control_format_mark_separator_and_surrogate_is_escaped():
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            shown = printable(f"a{ch}b")
            assert shown.isascii() and shown.isprintable() and shown.startswith("a\\"), hex(code)


def test_printable_text_is_left_as_it_is():
    for text in ("alice", "Grüße, 世界 😀", "a b\u00e9", ""):
        assert printable(text) == text
    assert printable("x\x1b[2J\ny\u202e") == "x\\x1b[2J\\ny\\u202e"


def test_a_safe_logger_escapes_the_values_of_its_events():
    events = []
    log = SafeLogger(observer=events.append)
    log.info("{peer}: {reason} ({count})", peer="1.2.3.4:5", reason="bad\x1b]0;x\x07\nfake",
             count=3)
    (event,) = events
    assert formatEvent(event) == "1.2.3.4:5: bad\\x1b]0;x\\x07\\nfake (3)"
