"""Numbering a batch of new messages: the one rule every store applies
inside its transaction, so that they all number alike."""

from __future__ import annotations

from typing import Mapping

from spchat.server.records import Record


def number(
    records: list[Record],
    saved: Mapping[tuple[str, str], Record],
    last_seq: Mapping[str, int],
) -> tuple[list[Record], list[tuple[Record, Record]], dict[str, int]]:
    """Number ``records`` in their conversations, in the given order.

    ``saved``: the records already saved, by (sender_key, cid), at least
    those of this batch's keys; ``last_seq``: each conversation's newest
    number so far (a missing one has none yet).  Returns the fresh records,
    numbered; ``(record, saved_before)`` pairs for those re-sent (a second
    copy within this batch counts too); and the newest number given in each
    conversation of the batch, to be written back."""
    fresh, again, newest = [], [], {}
    in_batch: dict[tuple[str, str], Record] = {}
    for record in records:
        key = (record.sender_key, record.cid)
        old = saved.get(key) or in_batch.get(key)
        if old is not None:
            again.append((record, old))
            continue
        conversation = record.conversation
        seq = (newest.get(conversation) or last_seq.get(conversation, 0)) + 1
        newest[conversation] = seq
        record = Record._make((seq,) + record[1:])
        in_batch[key] = record
        fresh.append(record)
    return fresh, again, newest
