"""Failed logins and new accounts counted across the nodes.

Each node keeps its own windows (``spchat.server.throttles``) and tells
the others of every event that counts in them: a failed login (a name and
an address), a good one (which clears the name's failures) and a new
account being made (an address).  Every node records what it hears into
its windows at the time the event happened, so an attacker who spreads
password guesses or sign-ups over the nodes gets the allowance of one
node, and a name locked out on one node is locked out on every other,
for the same wait.

On the bus rather than in PostgreSQL: a login that is refused for being
throttled must cost nothing (an attacker's refused attempts would each be
a query on the shared database), and the check stays synchronous.  The
bus is lossy: a notice lost costs a little allowance, never a refusal of
anyone who should pass.

A node that (re)joins the bus (started, or back after Redis was away)
has missed what the others counted meanwhile, and would give, for up to
a window, an allowance of its own again.  So it asks (``limit_ask``),
and each node answers with the events it keeps that still count
(``spchat.cluster.limit_log``: its own and those it heard, a bounded
number of each kind; the answer says how many it left out).  Events
are recorded at their own times, and each has an identity (its node's
run and a counter), so one heard live and again in an answer counts
once.  Notices: ``spchat.cluster.limit_notices``.
"""

from __future__ import annotations

import itertools

from twisted.logger import Logger

from spchat.cluster.limit_log import EventLog
from spchat.cluster.limit_notices import (
    FAILED, LIMIT, LIMIT_ASK, LIMIT_EVENTS, SIGNUP, SUCCEEDED, LimitEvent, answers, body,
    read_answer, read_event,
)

log = Logger()


class ClusterLimits:
    """This node's login throttle and sign-up limit, shared with the others:
    ``throttle`` and ``signups`` stand in for the node's own (None stays
    None: no limit of that kind)."""

    def __init__(self, clock, cluster, throttle, signups):
        """``cluster``: this node's ``ClusterNode``; ``throttle``: its
        ``LoginThrottle``; ``signups``: its ``SignupLimit``."""
        self.clock = clock
        self.cluster = cluster
        self._throttle, self._signups = throttle, signups
        self.throttle = None if throttle is None else SharedThrottle(self, throttle)
        self.signups = None if signups is None else SharedSignups(self, signups)
        self.heard = 0  # other nodes' events recorded here (live or in answers)
        self.replayed = 0  # of those, heard in answers
        self.left_out = 0  # events the answers to this node left out (capped)
        self.events = EventLog(clock, self._window_of)
        self._numbers = itertools.count(1)
        cluster.on(LIMIT, self._heard)
        cluster.on(LIMIT_ASK, self._asked)
        cluster.on(LIMIT_EVENTS, self._answered)
        cluster.on_connected.append(self._ask)

    def _window_of(self, event: str) -> float | None:
        limit = self._signups if event == SIGNUP else self._throttle
        return None if limit is None else limit.window

    def tell(self, event: str, name: str, ip: str) -> None:
        ident = f"{self.cluster.run}.{next(self._numbers)}"
        said = LimitEvent(event, name, ip, self.clock.seconds(), ident)
        self.events.add(said)
        self.cluster.send(LIMIT, body(said))

    def _heard(self, node: str, notice: dict) -> None:
        if node == self.cluster.name:
            return  # counted here when it happened
        event = read_event(notice)
        if event is None:
            self.cluster.drop("a failed-login or new-account notice that does not parse")
        elif not event.id or self.events.add(event):  # (no id: an earlier version's)
            self._record(event)

    def _record(self, event: LimitEvent) -> None:
        if event.event == SIGNUP:
            if self._signups is not None:
                self._signups.counted(event.ip, at=event.at)
        elif self._throttle is not None:
            if event.event == FAILED:
                self._throttle.failed(event.name, event.ip, at=event.at)
            else:
                self._throttle.succeeded(event.name, event.ip, at=event.at)
        self.heard += 1

    # --- a node (re)joining the bus ------------------------------------------------

    def _ask(self) -> None:
        self.cluster.send(LIMIT_ASK, {})

    def _asked(self, node: str, _: dict) -> None:
        if node == self.cluster.name:
            return
        events, left_out = self.events.answer()
        for answer in answers(node, events, left_out):
            self.cluster.send(LIMIT_EVENTS, answer)

    def _answered(self, node: str, notice: dict) -> None:
        answer = read_answer(notice)
        if answer is None or answer.unreadable:
            self.cluster.drop("an answer of failed logins and new accounts that does not parse")
        if answer is None or answer.to != self.cluster.name or node == self.cluster.name:
            return
        for event in answer.events:
            if self.events.add(event):
                self._record(event)
                self.replayed += 1
        if answer.left_out:
            if not self.left_out:
                log.warn("node {node} left {count} failed logins or new accounts out of "
                         "its answer (capped): they are not counted here (counted, not "
                         "logged again)", node=node, count=answer.left_out)
            self.left_out += answer.left_out


class SharedThrottle:
    """A ``LoginThrottle`` whose events every node hears."""

    def __init__(self, shared: ClusterLimits, throttle):
        self._shared, self._throttle = shared, throttle

    def retry_after(self, name_key, ip) -> float | None:
        return self._throttle.retry_after(name_key, ip)

    def failed(self, name_key, ip) -> None:
        self._throttle.failed(name_key, ip)
        self._shared.tell(FAILED, name_key, ip)

    def succeeded(self, name_key, ip) -> None:
        self._throttle.succeeded(name_key, ip)
        self._shared.tell(SUCCEEDED, name_key, ip)


class SharedSignups:
    """A ``SignupLimit`` whose new accounts every node hears."""

    def __init__(self, shared: ClusterLimits, signups):
        self._shared, self._signups = shared, signups
        self.per_address, self.total = signups.per_address, signups.total

    def retry_after(self, ip) -> tuple[float, str] | None:
        return self._signups.retry_after(ip)

    def counted(self, ip) -> None:
        self._signups.counted(ip)
        self._shared.tell(SIGNUP, "", ip)
