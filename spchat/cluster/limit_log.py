"""The failed logins, good logins and new accounts this node knows of (its
own and those heard from the others), each by its identity, for as long
as it counts in its window.

Two uses: an event heard twice (live, then again in the answer to a node
that rejoined the bus) is known by its identity and counted once; and
the events kept are what this node answers a node that (re)joins the bus
with, so that it counts what it missed.

Memory is bounded: at most ``max_events`` per window (the oldest heard
are forgotten first when an attack brings more; an event forgotten that
way and heard again would count twice, which only tightens a limit that
is being hammered anyway).  An answer is bounded too: the newest
``ANSWER_PER_EVENT`` of each kind of event, so that many failures from
many addresses cannot push out the few new accounts of an hour, and no
answer grows with an attack.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from spchat.cluster.limit_notices import EVENTS, LimitEvent

MAX_EVENTS = 50_000  # per window
ANSWER_PER_EVENT = 200  # of each kind (failed, succeeded, signup)


class EventLog:
    def __init__(self, clock, window_of: Callable[[str], float | None],
                 max_events: int = MAX_EVENTS):
        """``window_of(event)``: how long an event of that kind counts
        (None: not counted here, not kept)."""
        self.clock = clock
        self.window_of = window_of
        self.max_events = max_events
        # Per window length, the events by identity, in the order heard.
        self._kept: dict[float, OrderedDict[str, LimitEvent]] = {}

    def __len__(self) -> int:
        return sum(len(events) for events in self._kept.values())

    def add(self, event: LimitEvent) -> bool:
        """Keep ``event``; False if it was kept already (or is too old to
        count, or of a kind not counted here): not to be counted again."""
        window = self.window_of(event.event)
        if window is None:
            return False
        now = self.clock.seconds()
        self._prune(now)
        if event.at <= now - window or any(event.id in kept for kept in self._kept.values()):
            return False
        kept = self._kept.setdefault(window, OrderedDict())
        kept[event.id] = event
        while len(kept) > self.max_events:
            kept.popitem(last=False)
        return True

    def answer(self) -> tuple[list[LimitEvent], int]:
        """The events that count now, the newest ``ANSWER_PER_EVENT`` of
        each kind; and how many more there are, left out."""
        now = self.clock.seconds()
        self._prune(now)
        counting = [event for window, kept in self._kept.items() for event in kept.values()
                    if event.at > now - window]
        chosen: list[LimitEvent] = []
        left_out = 0
        for kind in EVENTS:
            # Newest first (of two at one time, the one heard last).
            events = sorted(reversed([e for e in counting if e.event == kind]),
                            key=lambda e: e.at, reverse=True)
            chosen.extend(events[:ANSWER_PER_EVENT])
            left_out += max(0, len(events) - ANSWER_PER_EVENT)
        return chosen, left_out

    def _prune(self, now: float) -> None:
        """Forget events out of their window, from the oldest heard (one
        heard late may wait behind a newer one a while: ``answer`` leaves
        it out meanwhile)."""
        for window, kept in self._kept.items():
            while kept and next(iter(kept.values())).at <= now - window:
                kept.popitem(last=False)
