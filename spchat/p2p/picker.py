"""Which piece to ask a peer for next: no I/O, so every rule is a unit test.

* The first piece is a random one the peer has: something complete to serve
  to others as soon as possible, and no two downloaders start on the same.
* After that, rarest first: the piece the fewest known peers have (ties
  broken at random), so that pieces do not vanish with one peer.
* A piece is given to one peer at a time, until every piece still wanted is
  in progress: then endgame, and a piece may also be asked of another peer
  that has it (the first copy that verifies wins; the caller cancels the
  others).
* A piece that failed its hash is wanted again; a peer that leaves takes
  its pieces out of the counts.
"""

from __future__ import annotations

import random
from collections import Counter


class PiecePicker:
    def __init__(self, pieces: int, have=(), rng: random.Random | None = None):
        self.pieces = pieces
        self.have: set[int] = set(have)
        self.rng = rng or random.Random()
        self._peers: dict[object, set[int]] = {}
        self._count: Counter[int] = Counter()  # piece -> peers that have it
        self._fetching: dict[int, set[object]] = {}  # piece -> peers asked for it

    # --- what the peers have ----------------------------------------------------

    def peer_has(self, peer, pieces) -> None:
        """A peer's bitfield: replaces what was known of what it has (the
        pieces asked of it stay asked)."""
        for piece in self._peers.pop(peer, ()):
            self._count[piece] -= 1
        held = {p for p in pieces if 0 <= p < self.pieces}
        self._peers[peer] = held
        self._count.update(held)

    def peer_have(self, peer, piece: int) -> None:
        held = self._peers.setdefault(peer, set())
        if 0 <= piece < self.pieces and piece not in held:
            held.add(piece)
            self._count[piece] += 1

    def peer_gone(self, peer) -> None:
        for piece in self._peers.pop(peer, ()):
            self._count[piece] -= 1
        for asked in self._fetching.values():
            asked.discard(peer)

    # --- choosing -----------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return len(self.have) == self.pieces

    def wanted(self) -> set[int]:
        return set(range(self.pieces)) - self.have

    def next_piece(self, peer) -> int | None:
        """A piece to ask ``peer`` for, or None (it has nothing we need now)."""
        offered = self._peers.get(peer, set()) - self.have
        free = [p for p in offered if not self._fetching.get(p)]
        if free:
            if not self.have and not self._fetching:
                choice = self.rng.choice(sorted(free))  # the very first: at random
            else:
                rarest = min(self._count[p] for p in free)
                choice = self.rng.choice(sorted(p for p in free if self._count[p] == rarest))
        elif self.endgame:
            extra = [p for p in offered if peer not in self._fetching.get(p, ())]
            if not extra:
                return None
            choice = self.rng.choice(sorted(extra))
        else:
            return None
        self._fetching.setdefault(choice, set()).add(peer)
        return choice

    @property
    def endgame(self) -> bool:
        """Every piece still wanted is being fetched from someone."""
        wanted = self.wanted()
        return bool(wanted) and all(self._fetching.get(p) for p in wanted)

    # --- outcomes -------------------------------------------------------------------

    def done(self, piece: int) -> set:
        """The piece verified; returns the other peers still asked for it
        (to cancel)."""
        self.have.add(piece)
        return self._fetching.pop(piece, set())

    def failed(self, piece: int, peer) -> None:
        """``peer``'s copy did not verify, or it gave up: wanted again."""
        asked = self._fetching.get(piece)
        if asked is not None:
            asked.discard(peer)
            if not asked:
                del self._fetching[piece]
