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
bus is lossy: a notice lost (Redis away, a node started a moment ago)
costs a little allowance, never a refusal of anyone who should pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LIMIT = "limit"
FAILED, SUCCEEDED, SIGNUP = "failed", "succeeded", "signup"
EVENTS = (FAILED, SUCCEEDED, SIGNUP)
MAX_TEXT_CHARS = 200  # a name key or an address


@dataclass(frozen=True)
class LimitEvent:
    event: str
    name: str  # the login's name key ("" for a new account: counted by address)
    ip: str
    at: float  # when, on the sending node's clock (s)


def body(event: LimitEvent) -> dict:
    return {"event": event.event, "name": event.name, "ip": event.ip, "at": event.at}


def read_event(body: dict) -> LimitEvent | None:
    """The event in a ``limit`` notice's body, or None if it does not parse."""
    event, name, ip, at = body.get("event"), body.get("name"), body.get("ip"), body.get("at")
    if not (event in EVENTS and isinstance(name, str) and isinstance(ip, str)):
        return None
    if max(len(name), len(ip)) > MAX_TEXT_CHARS:
        return None
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        return None
    return LimitEvent(event, name, ip, float(at))


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
        self.heard = 0  # other nodes' events recorded here
        cluster.on(LIMIT, self._heard)

    def tell(self, event: str, name: str, ip: str) -> None:
        self.cluster.send(LIMIT, body(LimitEvent(event, name, ip, self.clock.seconds())))

    def _heard(self, node: str, notice: dict) -> None:
        if node == self.cluster.name:
            return  # counted here when it happened
        event = read_event(notice)
        if event is None:
            self.cluster.drop("a failed-login or new-account notice that does not parse")
            return
        if event.event == SIGNUP:
            if self._signups is not None:
                self._signups.counted(event.ip, at=event.at)
        elif self._throttle is not None:
            if event.event == FAILED:
                self._throttle.failed(event.name, event.ip, at=event.at)
            else:
                self._throttle.succeeded(event.name, event.ip)
        self.heard += 1


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
