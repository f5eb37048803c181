"""Numbering a batch of new messages: the one rule every store applies
inside its transaction, so that they all number alike."""

from __future__ import annotations

from typing import Mapping

from spchat.server.records import Record


# A copy of a message (the same cid in the same lineage) is taken as sent
# again only within this long of the first: a cid is unique for that long,
# not for ever (docs/protocol.rst, "Client message ids").
RESEND_WINDOW_MS = 24 * 3600 * 1000


_LINEAGE = Record._fields.index("lineage")


def number(
    records: list[Record],
    conversations: list[str],
    saved: Mapping[tuple[str, str], Record],
    last_seq: Mapping[str, int],
) -> tuple[list[Record], list[str], list[tuple[Record, Record]], dict[str, int]]:
    """Number ``records`` in their conversations, in the given order.

    ``conversations``: each record's conversation, in the same order
    (computed once by the caller, who needs them too); ``saved``: the
    records saved before within RESEND_WINDOW_MS, by ``Record.sent_as``,
    at least those of this batch's keys; ``last_seq``: each conversation's newest number so far (a
    missing one has none yet).  Returns the fresh records, numbered, and
    their conversations; ``(record, saved_before)`` pairs for those re-sent
    (a second copy within this batch counts too); and the newest number
    given in each conversation of the batch, to be written back."""
    fresh, fresh_conversations, again = [], [], []
    newest: dict[str, int] = {}
    in_batch: dict[tuple[str, str], Record] = {}
    make = Record._make
    for record, conversation in zip(records, conversations):
        key = record.sent_as
        old = saved.get(key) or in_batch.get(key)
        if old is not None:
            again.append((record, old))
            continue
        seq = (newest.get(conversation) or last_seq.get(conversation, 0)) + 1
        newest[conversation] = seq
        # Numbered, and with the lineage its copies are compared by.
        record = make((seq,) + record[1:_LINEAGE] + (key[0],) + record[_LINEAGE + 1:])
        in_batch[key] = record
        fresh.append(record)
        fresh_conversations.append(conversation)
    return fresh, fresh_conversations, again, newest
