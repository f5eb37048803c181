"""Lines as the store tests write them: new room and direct lines, not
numbered yet, and what a store numbered them as."""

import itertools

from spchat.server.records import Record

_cids = itertools.count(1)


def say(text="hi", room="lobby", sender="alice", ts=1000, cid=None):
    """A new room line, not numbered yet."""
    return Record(0, ts, sender, sender.casefold(), text, cid or f"c{next(_cids)}", room=room)


def dm(text, sender, to, ts=1000, cid=None):
    """A new direct message, not numbered yet."""
    return Record(0, ts, sender, sender.casefold(), text, cid or f"c{next(_cids)}",
                  to=to, to_key=to.casefold())


def numbered(records):
    return [(r.conversation, r.seq, r.text) for r in records]
