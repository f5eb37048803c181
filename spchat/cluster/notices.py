"""What the nodes tell each other about saved lines: the bodies of the
``saved`` and ``tops`` notices (sealed and sent by ``spchat.cluster.seal``).

``Saved``: a room has new lines, numbered ``first`` to ``last``, and the
lines themselves if they fit in ``MAX_ROWS_BYTES`` (else a node reads them
from the database).  ``Tops``: a node's newest number in each room, sent
when it (re)connects to the bus and every ``TOPS_SECONDS``: a notice lost
while it was away shows as a gap.

Even a sealed notice is trusted no further than its shape: a body that
does not parse is dropped (``read_saved`` and ``read_tops`` return None),
and lines that do not match their range are dropped and read from the
database instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard

from spchat.server.records import Record

# Lines larger than this (as JSON) go as a range only: every node gets
# every notice, and a big one would cost them all.
MAX_ROWS_BYTES = 16_000
SAVED = "saved"
TOPS = "tops"
_FIELDS = len(Record._fields)


@dataclass(frozen=True)
class Saved:
    room: str  # the room's key
    first: int
    last: int
    records: tuple[Record, ...] | None  # None: read them from the database


@dataclass(frozen=True)
class Tops:
    tops: dict[str, int]  # room key -> newest number


def saved(room: str, records: list[Record]) -> dict:
    """The body for consecutive saved lines of one room."""
    head = {"room": room, "first": records[0].seq, "last": records[-1].seq}
    with_rows = {**head, "rows": records}
    if len(json.dumps(with_rows, separators=(",", ":"))) <= MAX_ROWS_BYTES:
        return with_rows
    return head


def tops(numbers: dict[str, int]) -> dict:
    return {"tops": numbers}


def read_saved(body: dict) -> Saved | None:
    room, first, last = body.get("room"), body.get("first"), body.get("last")
    if not (isinstance(room, str) and _number(first) and _number(last) and first <= last):
        return None
    return Saved(room, first, last, _records(body.get("rows"), room, first, last))


def read_tops(body: dict) -> Tops | None:
    numbers = body.get("tops")
    if not isinstance(numbers, dict) or not all(_number(seq) for seq in numbers.values()):
        return None
    return Tops(numbers)


def _number(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _records(rows, room: str, first: int, last: int) -> tuple[Record, ...] | None:
    """The lines, if they are exactly those of the range, else None."""
    if not isinstance(rows, list) or len(rows) != last - first + 1:
        return None
    records = []
    for seq, row in enumerate(rows, first):
        if not isinstance(row, list) or len(row) != _FIELDS:
            return None
        record = Record._make(row)
        if (record.seq != seq or record.room != room or not _number(record.ts)
                or not all(isinstance(record[i], str) for i in range(2, 6))):
            return None
        records.append(record)
    return tuple(records)
