"""The offers this node knew of lately, on any node, each with the time it
was first made: an offer made again soon after is the same offer, and no
news.

When a sharer's node dies, its client resumes on another node, where its
offers are not (``shares_kept`` False in its welcome), and offers its
files again.  To the rooms nothing changed: each offer was shown, and it
is the one they were told of.  So an offer of the same file, in the same
room, by the same sharer, made within ``REOFFER_SECONDS`` of the last time
this node knew it offered (said by this node, or heard from the node that
had it), is not told to its room again, here or on the other nodes (nor
through the IRC gateway, which shows each offer it is given); and it
keeps its first time, so that a client that knows an offer by its time
(as the sharer's own does) shows it once.  An offer withdrawn (its last
holder unshared it or logged out, here or on a node still heard) is
forgotten: made again, it is news, as on a node alone, to those who came
meanwhile and were never shown it.

``REOFFER_SECONDS``: a node says its offers at least every
``RESEND_SECONDS`` (30 s); a dead node is known as such after the node
timeout (20 s by default), and its clients reconnect within a few
seconds more.  Memory is bounded: the offers are those of the sessions of
every node, forgotten in turn, and at most ``MAX_OFFERS``.
"""

from __future__ import annotations

from collections import OrderedDict

from spchat.server.tracker import SharedFile

REOFFER_SECONDS = 90.0
MAX_OFFERS = 100_000


class RecentOffers:
    def __init__(self, clock, seconds: float = REOFFER_SECONDS, max_offers: int = MAX_OFFERS):
        self.clock = clock
        self.seconds = seconds
        self.max_offers = max_offers
        # (room key, file id, sharer) -> (first made, ms; last known offered, s),
        # the least recently known first.
        self._offers: OrderedDict[tuple[str, str, str], tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._offers)

    def seen(self, shared: SharedFile) -> None:
        """``shared`` is offered now (here, or on the node that said so)."""
        now = self.clock.seconds()
        self._forget(now)
        key = (shared.room_key, shared.file_id, shared.sharer)
        known = self._offers.pop(key, None)
        first = shared.ts if known is None else min(known[0], shared.ts)
        self._offers[key] = (first, now)
        while len(self._offers) > self.max_offers:
            self._offers.popitem(last=False)

    def made_at(self, room_key: str, file_id: str, sharer: str) -> int | None:
        """When this offer was first made (ms), if it is known from lately:
        made again now, it is no news; None if it is."""
        self._forget(self.clock.seconds())
        known = self._offers.get((room_key, file_id, sharer))
        return None if known is None else known[0]

    def withdrawn(self, shared: SharedFile) -> None:
        """``shared`` is offered no more: made again, it is news."""
        self._offers.pop((shared.room_key, shared.file_id, shared.sharer), None)

    def _forget(self, now: float) -> None:
        while self._offers and next(iter(self._offers.values()))[1] <= now - self.seconds:
            self._offers.popitem(last=False)
