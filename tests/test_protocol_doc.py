"""docs/protocol.rst agrees with the code: its message reference is the one
spchat.wire_doc generates from the schema, every message type has a
direction, and the facts its prose quotes are the code's."""

import re
from pathlib import Path

import pytest
from twisted.internet import task

from spchat import beacon, config, noise, wire, wire_doc
from spchat.server.core import ChatCore

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.rst"
REGENERATE = f"regenerate with: {wire_doc.REGENERATE}"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_generated_message_table_matches_the_schema(doc):
    assert wire_doc.generated_part(doc) == wire_doc.expected_part(), (
        f"docs/protocol.rst's message reference differs from the schema; {REGENERATE}"
    )


def test_every_message_type_is_classified_once():
    classified = [name for _, _, names in wire_doc.DIRECTIONS for name in names]
    missing = sorted(set(wire.MESSAGES) - set(classified))
    assert not missing, (
        f"message types with no direction: {', '.join(missing)}; add each to "
        f"spchat/wire_doc.py DIRECTIONS, then {REGENERATE}"
    )
    unknown = sorted(set(classified) - set(wire.MESSAGES))
    assert not unknown, f"spchat/wire_doc.py DIRECTIONS names no such types: {unknown}"
    twice = sorted({name for name in classified if classified.count(name) > 1})
    assert not twice, f"classified more than once in spchat/wire_doc.py: {twice}"


def test_client_to_server_types_are_those_the_server_takes():
    core = ChatCore(task.Clock())
    taken = {cls.TYPE for cls in core._handlers} | {wire.AdminLogin.TYPE, wire.AdminRequest.TYPE}
    _, _, names = next(d for d in wire_doc.DIRECTIONS if d[0] == wire_doc.CLIENT_TO_SERVER)
    assert set(names) == taken


def test_every_rule_has_words():
    for cls in wire.MESSAGES.values():
        for field, rule in wire_doc.rules_of(cls):
            columns = wire_doc.ROW_COLUMNS.get((cls.TYPE, field))
            assert wire_doc.describe(rule, columns).text, f"{cls.TYPE}.{field}"


def test_rules_are_described_from_the_schema():
    words = wire_doc.describe(wire.Say.SCHEMA["text"]).text
    assert str(wire.MAX_TEXT_BYTES) in words
    assert wire_doc.describe(wire.Part.SCHEMA["reason"]).text.endswith("or ``null``")
    listing = wire_doc.describe(wire.RoomList.SCHEMA["rooms"], wire.ROOM_LIST_FIELDS)
    assert [column for column, _ in listing.parts] == list(wire.ROOM_LIST_FIELDS)


def test_optional_fields_show_their_defaults():
    section = "\n".join(wire_doc.message_section("login"))
    assert re.search(r"``register``\s+``false``", section)
    assert re.search(r"``name``\s+required", section)


def test_summary_is_the_first_sentence():
    assert wire_doc.summary(wire.Part) == "Leave a room."
    assert wire_doc.summary(wire.Logout) == ""  # no docstring, only dataclass's


def test_rewriting_puts_the_table_between_the_markers(tmp_path):
    path = tmp_path / "protocol.rst"
    path.write_text(f"Title\n=====\n\n{wire_doc.BEGIN}\nstale\n{wire_doc.END}\n\nafter\n",
                    encoding="utf-8")
    assert wire_doc.main([str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert wire_doc.generated_part(text) == wire_doc.expected_part()
    assert "stale" not in text and text.endswith(f"{wire_doc.END}\n\nafter\n")
    assert wire_doc.main([str(path)]) == 0  # again: nothing to change
    assert path.read_text(encoding="utf-8") == text


def test_rewriting_refuses_a_file_without_markers(tmp_path):
    path = tmp_path / "protocol.rst"
    path.write_text("no markers here\n", encoding="utf-8")
    assert wire_doc.main([str(path)]) == 1
    assert path.read_text(encoding="utf-8") == "no markers here\n"


# --- facts the prose quotes ----------------------------------------------------


def test_prose_names_the_protocol_and_the_prologue(doc):
    assert f"``{noise.CHAT_PROTOCOL}``" in doc
    assert f"``{noise.CHAT_PROLOGUE.decode('ascii')}``" in doc
    assert f"``{wire.BATCH_TYPE}``" in doc or f'"t":"{wire.BATCH_TYPE}"' in doc


def test_prose_fingerprint_example_is_right(doc):
    assert noise.fingerprint(bytes(range(32))) in doc


def test_prose_presence_keys_are_right(doc):
    for label in (beacon._LABEL_KEY_ID, beacon._LABEL_C2S, beacon._LABEL_S2C):
        assert f"``{label.decode('ascii')}``" in doc
    keys = beacon.derive_keys(bytes(range(32)))
    for key in (keys.key_id, keys.c2s, keys.s2c):
        assert key.hex() in doc


def test_prose_bye_table_marks_exactly_the_no_reconnect_codes(doc):
    rows = dict(re.findall(r"^``([a-z_]+)``\s+(yes|no)\s", doc, re.MULTILINE))
    assert {code for code, reconnect in rows.items() if reconnect == "no"} \
        == set(wire.NO_RECONNECT_CODES)


def test_prose_defaults_are_the_settings_defaults(doc):
    quoted = re.findall(r"``(CHAT_[A-Z_]+)``\s+\(default\s+([^\s)]+)", doc)
    assert quoted
    defaults = {s.env: s.default for s in config.SETTINGS}
    wrong = [(env, value, defaults.get(env)) for env, value in quoted
             if defaults.get(env) != value]
    assert not wrong, f"docs/protocol.rst quotes defaults that are not the settings': {wrong}"


def test_prose_names_only_real_settings(doc):
    named = set(re.findall(r"\bCHAT_[A-Z_]+", doc))
    unknown = named - {s.env for s in config.SETTINGS}
    assert not unknown, f"docs/protocol.rst names settings that do not exist: {sorted(unknown)}"


def test_prose_limits_are_the_code_s(doc):
    from spchat.client import presence as client_presence
    from spchat.client import session as client_session
    from spchat.server import passwords, messaging, presence, protocol, room_settings, rooms, rules
    from spchat.server import capacity, catch_up

    limits = {
        "a batch frame's plaintext": f"{wire.BATCH_FRAME_BYTES} bytes",
        "a history page": f"at most {messaging.HISTORY_PAGE_MAX}",
        "a replay": f"newest {messaging.MAX_REPLAY}",
        "a page read": f"a page of {catch_up.PAGE_RECORDS} messages read, "
                       f"{catch_up.PART_BYTES // 1024} KiB",
        "history requests waiting": f"waiting {catch_up.MAX_WAITING_JOBS}, then",
        "descriptors kept": f"descriptor limit less {capacity.DESCRIPTOR_MARGIN}",
        "malformed messages": (f"More than {protocol.MAX_MALFORMED} such messages within "
                               f"{protocol.MALFORMED_WINDOW_SECONDS:g} seconds"),
        "positions": f"at most {wire.MAX_POSITIONS}",
        "a chat text": f"at most {config.MAX_MESSAGE_BYTES_LIMIT}",
        "a password": (f"{passwords.MIN_PASSWORD_LENGTH} to {passwords.MAX_PASSWORD_LENGTH} "
                       "characters"),
        "a name": f"1 to {rules.NAME_MAX_CHARS} characters",
        "a topic": f"{room_settings.MAX_TOPIC_BYTES} bytes of UTF-8",
        "room events": f"within {rooms.ROOM_EVENT_SECONDS:g} seconds",
        "a slow reader": f"not drained for {protocol.SLOW_READER_SECONDS:g} seconds",
        "snapshots on change": f"at most every {presence.CHANGE_GAP_SECONDS:g} seconds",
        "a snapshot part": f"at most {beacon.MAX_PLAINTEXT} bytes",
        "snapshot parts": f"up to {beacon.MAX_PARTS}",
        "silence": f"for {['one', 'two', 'three'][client_presence.SILENT_INTERVALS - 1]} intervals",
        "reconnect delays": f"at most {client_session.MAX_RETRY_DELAY:g} seconds",
    }
    missing = {what: words for what, words in limits.items()
               if words not in " ".join(doc.split())}
    assert not missing, f"docs/protocol.rst does not say (or says otherwise): {missing}"
