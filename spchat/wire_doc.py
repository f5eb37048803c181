"""The message reference of ``docs/protocol.rst``, generated from the wire schema.

``docs/protocol.rst`` is written by hand, except for its message reference,
which :func:`message_table` makes from ``spchat.wire.MESSAGES``: for every
message type its direction, the first sentence of its docstring, and its
fields, each with a plain-words type, and, if it may be left out, its
default (the class's ``DEFAULTS``).  The types are read off the rules
themselves (a rule's ``__name__``, and the closure variables of the
``_string`` and ``_rows`` factories' rules), so every limit in the document
is the schema's own; only the words for the named rules are written here.

The document keeps the generated part between two marker comments::

    .. BEGIN GENERATED MESSAGE TABLE
    .. END GENERATED MESSAGE TABLE

``python -m spchat.wire_doc [PATH]`` rewrites that part in place (PATH:
``docs/protocol.rst`` of this checkout), and ``tests/test_protocol_doc.py``
fails when the file and the schema disagree, as ``tests/test_config.py`` does
for ``.env.example``.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from spchat import wire

BEGIN = ".. BEGIN GENERATED MESSAGE TABLE"
END = ".. END GENERATED MESSAGE TABLE"
REGENERATE = "python -m spchat.wire_doc"
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.rst"

# Which way each message type travels: the schema does not say, so it is
# kept here, by hand, in the order the reference shows them.  The test checks
# that every type of wire.MESSAGES is in exactly one group, and that the
# client's are exactly those the server takes.
HANDSHAKE = "Handshake"
CLIENT_TO_SERVER = "Client → server"
SERVER_TO_CLIENT = "Server → client"
DIRECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (HANDSHAKE, "Handshake payloads", ("hello", "server_hello")),
    (CLIENT_TO_SERVER, "Client to server", (
        "login", "resume", "register", "change_password", "logout",
        "say", "direct", "history", "who", "presence", "keepalive",
        "join", "part", "rooms", "topic", "mode", "moderate",
        "share", "unshare", "files", "fetch", "holding", "relay",
        "admin_login", "admin",
    )),
    (SERVER_TO_CLIENT, "Server to client", (
        "welcome", "room", "left", "room_list", "members", "member",
        "message", "direct_message", "history_end", "notice", "error", "bye",
        "offer", "file_list", "swarm", "peer_request", "relay_open",
        "admin_reply", "admin_event",
    )),
)

# The columns of the row lists (``_rows``), by (message type, field), as the
# schema names them.  The swarm's peers have no constant in wire.py; their
# columns are those Swarm's docstring gives.
ROW_COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("room_list", "rooms"): wire.ROOM_LIST_FIELDS,
    ("file_list", "files"): wire.FILE_FIELDS,
    ("swarm", "peers"): ("name", "host", "port", "transfer", "key"),
    ("admin_reply", "rooms"): wire.ROOM_FIELDS,
    ("admin_reply", "members"): wire.MEMBER_FIELDS,
    ("admin_reply", "stats"): wire.STAT_FIELDS,
    ("admin_reply", "bans"): wire.BAN_FIELDS,
    ("admin_event", "rooms"): wire.ROOM_FIELDS,
}


def direction_of(type_name: str) -> str:
    """The direction of a message type; LookupError if it is not classified."""
    for direction, _, names in DIRECTIONS:
        if type_name in names:
            return direction
    raise LookupError(f"the message type {type_name!r} has no direction in "
                      "spchat/wire_doc.py DIRECTIONS")


# --- rules in words ----------------------------------------------------------


class Words(NamedTuple):
    """A type in plain words; ``parts``: (column, words) of each entry of a
    list of fixed-length lists, shown below the table."""

    text: str
    parts: tuple[tuple[str, str], ...] = ()


def _literal(value: Any) -> str:
    """A JSON value as an inline literal: ``null``, ``"lobby"``, ``[]``."""
    return f"``{json.dumps(value, ensure_ascii=False)}``"


def _one_of(values) -> str:
    return "one of " + ", ".join(_literal(v) for v in values)


def _large(number: int) -> str:
    """2^53 rather than 9007199254740992."""
    if number > 2**20 and number & (number - 1) == 0:
        return f"2^{number.bit_length() - 1}"
    return str(number)


def _string_words(max_chars: int, optional: bool = False, max_bytes: int | None = None,
                  min_chars: int = 0) -> str:
    words = f"string of {min_chars} to {max_chars} characters" if min_chars else \
        f"string of at most {max_chars} characters"
    if max_bytes is not None:
        words += f" and {max_bytes} bytes of UTF-8"
    return words + (", or ``null``" if optional else "")


def _entries(columns, what: str = "") -> str:
    """"list of [a, b]", or with ``what`` "list of at most 9 rows, each [a, b]"."""
    return f"list of {what}[{', '.join(columns)}]"


INTEGER = f"integer from 0 to {_large(wire.MAX_INT)}"
NAME = _string_words(wire.MAX_NAME_CHARS)
# A session row (wire.SESSION_FIELDS): its first four columns are texts, the
# others numbers but the last, the node, a text sent only by a node with
# others (wire._session_rows checks them so).
SESSION_TEXT_COLUMNS = 4

# Words for the rules that are module-level functions of wire.py, by name.
# A limit the schema names as a constant is taken from it; the few it writes
# as bare numbers inside a rule (list lengths, the largest number of minutes)
# are left out rather than copied.
RULE_WORDS: dict[str, Words] = {
    "_integer": Words(INTEGER),
    "_optional_integer": Words(f"{INTEGER}, or ``null``"),
    "_boolean": Words("``true`` or ``false``"),
    "_figure": Words(f"number from 0 to {_large(wire.MAX_INT)} (a fraction is allowed)"),
    "_optional_boolean": Words("``true``, ``false`` or ``null``"),
    "_optional_number": Words("number of minutes, 0 or more (a fraction is allowed), "
                              "or ``null``"),
    "_port": Words("port number: integer from 0 to 65535"),
    "_role": Words(_one_of(wire.ROLES)),
    "_member_state": Words(_one_of((*wire.PRESENCE_STATES, "gone"))),
    "_room_flag": Words(_one_of(wire.ROOM_FLAGS)),
    "_mode_flag": Words(_one_of(wire.MODE_FLAGS)),
    "_moderation_op": Words(_one_of(wire.MODERATION_OPS)),
    "_admin_op": Words(_one_of(wire.ADMIN_OPS)),
    "_admin_action": Words(_one_of(wire.MODERATION_OPS + wire.ROOM_FLAGS) + ", or ``null``"),
    "_members": Words(_entries(("name", "state", "role")), (
        ("name", NAME),
        ("state", _one_of(wire.PRESENCE_STATES)),
        ("role", _one_of(wire.ROLES)),
    )),
    "_positions": Words(
        f"list of at most {wire.MAX_POSITIONS} [conversation, number]", (
            ("conversation", "``\"#room\"`` or ``\"@name\"``, a "
             + _string_words(wire.MAX_NAME_CHARS + 1)),
            ("number", INTEGER),
        )),
    "_optional_positions": Words(
        f"list of at most {wire.MAX_POSITIONS} [conversation, number], or ``null``", (
            ("conversation", "``\"#room\"`` or ``\"@name\"``, a "
             + _string_words(wire.MAX_NAME_CHARS + 1)),
            ("number", INTEGER),
        )),
    "_optional_outbox": Words(f"printable string of {wire.MIN_OUTBOX_CHARS} to "
                              f"{wire.MAX_OUTBOX_CHARS} characters (a secret), or ``null``"),
    "_rows_of_names": Words(f"list of at most {wire.MAX_POSITIONS} names, each a {NAME}"),
    "_session_rows": Words(_entries(wire.SESSION_FIELDS), tuple(
        (column, "string" if i < SESSION_TEXT_COLUMNS else "number")
        for i, column in enumerate(wire.SESSION_FIELDS[:-1])
    ) + (("node", "string, only from a node with others (a row without it is "
                  "of a node alone)"),)),
}


def _factory(rule: Callable) -> str | None:
    """``"_string"``, ``"_label"`` or ``"_rows"`` for a rule those factories
    made, else None."""
    if rule.__name__ != "rule":
        return None
    factory = rule.__qualname__.partition(".<locals>.")[0]
    return factory if factory in ("_string", "_label", "_rows") else None


def _closure(rule: Callable, *names: str) -> list:
    found = inspect.getclosurevars(rule).nonlocals
    missing = [name for name in names if name not in found]
    if missing:
        raise LookupError(f"{rule.__qualname__} no longer has {', '.join(missing)} in its "
                          "closure: update spchat/wire_doc.py")
    return [found[name] for name in names]


def describe(rule: Callable, columns: tuple[str, ...] | None = None) -> Words:
    """A field rule in plain words; ``columns`` names a row list's columns."""
    factory = _factory(rule)
    if factory == "_string":
        return Words(_string_words(*_closure(rule, "max_chars", "optional", "max_bytes",
                                             "min_chars")))
    if factory == "_label":
        (check,) = _closure(rule, "check")
        return Words("printable " + describe(check).text)
    if factory == "_rows":
        what, rules, max_rows = _closure(rule, "what", "rules", "max_rows")
        if columns is None or len(columns) != len(rules):
            raise LookupError(f"the rows of {what} need their {len(rules)} column names "
                              "in spchat/wire_doc.py ROW_COLUMNS")
        return Words(_entries(columns, f"at most {max_rows} {what}, each "),
                     tuple((name, describe(cell).text) for name, cell in zip(columns, rules)))
    words = RULE_WORDS.get(rule.__name__)
    if words is None:
        raise LookupError(f"no words for the rule {rule.__qualname__}: add them to "
                          "spchat/wire_doc.py RULE_WORDS")
    return words


def rules_of(cls: type[wire.Message]):
    """``(field, rule)`` of a message type, the rules of its row lists included."""
    for field, rule in cls.SCHEMA.items():
        yield field, rule
        if _factory(rule) == "_rows":
            for cell in _closure(rule, "rules")[0]:
                yield field, cell


# --- docstrings --------------------------------------------------------------


def has_docstring(cls: type) -> bool:
    """False if the docstring is the one ``dataclass`` makes up ("Name(a: 'str')")."""
    doc = cls.__doc__
    return bool(doc and not doc.startswith(f"{cls.__name__}("))


def summary(cls: type) -> str:
    """The first sentence of a class's docstring, on one line ("" if none)."""
    if not has_docstring(cls):
        return ""
    paragraph = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    text = " ".join(paragraph.split())
    end = re.search(r"[.!?](?=\s+[A-Z`\"(])", text)
    return text[: end.end()] if end else text


# --- the table ----------------------------------------------------------------


def _heading(text: str, mark: str) -> list[str]:
    return [text, mark * len(text), ""]


def _paragraph(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False) + [""]


# Lines of prose are wrapped at this width; a table's last column may run
# past its border (reStructuredText allows it), which is drawn at most
# LAST_COLUMN wide.
WIDTH = 78
LAST_COLUMN = 48


def _simple_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    widths[-1] = max(len(header[-1]), min(widths[-1], LAST_COLUMN))
    border = "  ".join("=" * width for width in widths)

    def line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return [border, line(header), border, *map(line, rows), border, ""]


def message_section(type_name: str) -> list[str]:
    """One message type: its heading, its direction and summary, and its
    table of fields."""
    cls = wire.MESSAGES[type_name]
    lines = _heading(f"``{type_name}``", "~")
    lines += _paragraph(f"*{direction_of(type_name)}.*  {summary(cls)}".rstrip())
    if not cls.SCHEMA:
        return lines + [f"No fields besides ``\"t\"``: ``{{\"t\":\"{type_name}\"}}``.", ""]
    rows, details = [], []
    for field, rule in cls.SCHEMA.items():
        default = _literal(cls.DEFAULTS[field]) if field in cls.DEFAULTS else "required"
        words = describe(rule, ROW_COLUMNS.get((type_name, field)))
        rows.append((f"``{field}``", default, words.text))
        if words.parts:
            details += _paragraph(f"Each entry of ``{field}``:")
            details += [f"- {column}: {part}" for column, part in words.parts] + [""]
    return lines + _simple_table(("Field", "If left out", "Type"), rows) + details


INTRODUCTION = """\
.. This part is generated from spchat/wire.py by ``python -m spchat.wire_doc``:
   change the schema (or spchat/wire_doc.py) and regenerate; do not edit it here.

Every message is a JSON object whose ``"t"`` member is the type name in the
heading; its other members are the fields below.  A field whose default is
given may be left out and then takes that default; a *required* one must be
there.  A field takes ``null`` only where its type says so.  "Characters"
are Unicode code points (not UTF-16 units); integers are written without a
fraction or an exponent, and ``true`` and ``false`` are not numbers.
Members not listed are ignored.
"""


def message_table() -> str:
    """The generated part of docs/protocol.rst: every type of ``wire.MESSAGES``;
    LookupError if one has no direction or a rule has no words."""
    for type_name in wire.MESSAGES:
        direction_of(type_name)  # none is left out
    lines = INTRODUCTION.splitlines() + [""]
    for _, title, names in DIRECTIONS:
        lines += _heading(title, "-")
        for type_name in names:
            lines += message_section(type_name)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- the file -------------------------------------------------------------------


def _bounds(text: str) -> tuple[int, int]:
    """Where the generated part starts (after the BEGIN line) and ends (at
    the END line); ValueError if the markers are not there once each, in order."""
    lines = text.splitlines(keepends=True)
    marks: dict[str, list[tuple[int, int]]] = {BEGIN: [], END: []}
    offset = 0
    for line in lines:
        if line.rstrip() in marks:
            marks[line.rstrip()].append((offset, offset + len(line)))
        offset += len(line)
    if len(marks[BEGIN]) != 1 or len(marks[END]) != 1:
        raise ValueError(f"the file must have one line {BEGIN!r} and one line {END!r}")
    start, end = marks[BEGIN][0][1], marks[END][0][0]
    if start > end:
        raise ValueError(f"{END!r} comes before {BEGIN!r}")
    return start, end


def generated_part(text: str) -> str:
    """What the file has between the markers."""
    start, end = _bounds(text)
    return text[start:end]


def expected_part(table: str | None = None) -> str:
    """What belongs between the markers: the table, a blank line either side."""
    return "\n" + (message_table() if table is None else table) + "\n"


def with_table(text: str, table: str | None = None) -> str:
    """The file's text with its generated part made anew."""
    start, end = _bounds(text)
    return text[:start] + expected_part(table) + text[end:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(arg.startswith("-") for arg in args):
        sys.stderr.write(f"usage: {REGENERATE} [PATH]  (default: {DOC_PATH})\n")
        return 2
    path = Path(args[0]) if args else DOC_PATH
    try:
        text = path.read_text(encoding="utf-8")
        new = with_table(text)
    except (OSError, ValueError, LookupError) as e:
        sys.stderr.write(f"spchat.wire_doc: {path}: {e}\n")
        return 1
    if new == text:
        print(f"{path}: the message table is up to date")
        return 0
    path.write_text(new, encoding="utf-8")
    print(f"{path}: message table rewritten ({len(wire.MESSAGES)} message types)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
