"""The figures the server is run by: what Prometheus scrapes (``--metrics``,
``spchat.server.exposition``) and what ``admin stats`` shows, from one place.

Plain Python, no metrics library: the hot path adds to plain integers
(``MessageCounts``, once per batch), the group committer fills two
``Histogram``s (once per transaction), and everything that is a state
rather than an event (connections, sessions, the password queue) is read
off the parts when someone asks (``ServerFigures.figures``), so nothing is
kept in step by hand.  A server without ``--metrics`` counts the same and
needs nothing more installed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Callable, Iterable, NamedTuple

# Seconds one commit (a batch's transaction) takes: a sync on a fast SSD is
# well under a millisecond, a busy disk takes tens of them.
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                          1.0, 2.5, 5.0)
# Seconds from a line's server time on the node that took it to its
# notice being heard on another: a commit, a publish and a hop through Redis.
BUS_LAG_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                           2.5, 5.0, 10.0)
# Messages in one commit: one alone when the server is quiet, hundreds under load.
BATCH_MESSAGES_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class MetricsError(Exception):
    """``--metrics`` cannot be served (a bad endpoint, a port taken, no
    prometheus_client); ``str()`` is one line."""


class MessageCounts:
    """Lines saved, and their copies handed to connections as they were saved."""

    __slots__ = ("received", "delivered")

    def __init__(self):
        self.received = 0  # accepted from a client and saved (a re-send of a saved one: not)
        # Copies of saved lines given to connections at once: every member
        # online of a room (the sender's copy, its acknowledgement, too),
        # both ends of a direct line.  Lines read back (history, the replay
        # after a reconnect) are reads, not counted here.
        self.delivered = 0


class Histogram:
    """Observations counted into fixed buckets (upper bounds), as
    Prometheus's histograms are: ``counts[i]`` is of those in bucket i alone,
    the last one is above every bound."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, how many at most that), the last bound infinite."""
        total, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append((bound, total))
        return out


class Figure(NamedTuple):
    """One metric: ``samples`` are (labels, value); a histogram's value is a
    ``Histogram``."""

    name: str  # with its unit, without a counter's "_total" (Prometheus adds it)
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float | Histogram], ...]


# What each figure means, once: README.rst's table says the same in more words.
HELP = {
    "spchat_connections": "Open connections, by kind (chat, irc, admin, relay).",
    "spchat_sessions": "Sessions, by state (connected, or reconnecting within the grace).",
    "spchat_messages_received": "Lines accepted from clients and saved (room and direct).",
    "spchat_messages_delivered": "Copies of saved lines handed to connections as they were "
                                 "saved, one per recipient (the sender's acknowledgement too).",
    "spchat_commit_duration_seconds": "Seconds each commit of a batch of lines took.",
    "spchat_commit_batch_messages": "Lines in each commit.",
    "spchat_connections_refused": "Connections refused or cut, by reason (per_ip: over "
                                  "CHAT_MAX_CONNECTIONS_PER_IP; full: the server is full; "
                                  "shed: cut, not logged in, to make room).",
    "spchat_relay_bytes": "Bytes the file-sharing relay carried between peers.",
    "spchat_password_queue_depth": "Password checks and hashes waiting for a free worker.",
    "spchat_bus_connected": "1 while this node is on the bus (subscribed and able to "
                            "publish), else 0; only with --bus.",
    "spchat_bus_lag_seconds": "For each notice of another node's lines: seconds from the "
                              "newest one's server time to the notice being heard here (the "
                              "nodes' clocks must agree).",
    "spchat_bus_backfills": "Reads of the database for lines the bus did not bring (a gap "
                            "in a room's numbers, a reconnection to the bus).",
    "spchat_bus_notices_dropped": "Notices on the bus dropped: not sealed with this "
                                  "cluster's key, stale, heard twice, or malformed.",
}

CONNECTION_KINDS = ("chat", "irc", "admin", "relay")
SESSION_STATES = ("connected", "reconnecting")
REFUSAL_REASONS = ("per_ip", "full", "shed")


class ServerFigures:
    """Every figure of one server, read when asked.

    ``chat``: the ``ChatServerFactory``; ``irc`` and ``relay`` their
    factories or None; ``passwords``: the ``PasswordWorker``.  ``more``:
    further sources of figures (each a callable returning ``Figure``s): the
    cluster's bus is to add its lag and backfills there."""

    def __init__(self, core, chat, irc, relay, passwords,
                 more: Iterable[Callable[[], list[Figure]]] = ()):
        self.core = core
        self.chat = chat
        self.irc = irc
        self.relay = relay
        self.passwords = passwords
        self.more = tuple(more)

    def figures(self) -> list[Figure]:
        core, chat, irc, relay = self.core, self.chat, self.irc, self.relay
        counts = core.messaging.counts
        admins = len(core.admin.links)
        connections = {
            # Admin connections come in on the chat listener.
            "chat": sum(chat.per_ip.held.values()) - admins,
            "irc": len(irc.protocols) if irc is not None else 0,
            "admin": admins,
            "relay": sum(relay.per_ip.held.values()) if relay is not None else 0,
        }
        states = Counter(session.state.value for session in core.sessions.values())
        refused = {
            "per_ip": chat.per_ip.refused + (irc.per_ip.refused if irc is not None else 0),
            "full": chat.slots.refused,
            "shed": chat.slots.shed_count,
        }
        figures = [
            _figure("spchat_connections", "gauge", "kind", connections),
            _figure("spchat_sessions", "gauge", "state",
                    {state: states[state] for state in SESSION_STATES}),
            _figure("spchat_messages_received", "counter", None, counts.received),
            _figure("spchat_messages_delivered", "counter", None, counts.delivered),
        ]
        committer = core.committer
        for name, attribute in (("spchat_commit_duration_seconds", "durations"),
                                ("spchat_commit_batch_messages", "batch_sizes")):
            histogram = getattr(committer, attribute, None)  # None: saved one at a time
            if histogram is not None:
                figures.append(_figure(name, "histogram", None, histogram))
        figures += [
            _figure("spchat_connections_refused", "counter", "reason", refused),
            _figure("spchat_relay_bytes", "counter", None,
                    relay.relayed_bytes if relay is not None else 0),
            _figure("spchat_password_queue_depth", "gauge", None, self.passwords.waiting),
        ]
        if core.cluster is not None:
            figures += bus_figures(core.cluster)
        for source in self.more:
            figures += source()
        return figures

    def rows(self) -> tuple[tuple[str, str, float], ...]:
        """The figures as ``admin stats`` shows them: (metric, labels, value),
        a histogram as its count and sum."""
        out: list[tuple[str, str, float]] = []
        for figure in self.figures():
            suffix = "_total" if figure.kind == "counter" else ""
            for labels, value in figure.samples:
                shown = ",".join(f"{k}={v}" for k, v in zip(figure.labels, labels))
                if isinstance(value, Histogram):
                    out.append((figure.name + "_count", shown, value.count))
                    out.append((figure.name + "_sum", shown, round(value.sum, 6)))
                else:
                    out.append((figure.name + suffix, shown, value))
        return tuple(out)


def bus_figures(cluster) -> list[Figure]:
    """The figures of this node on the bus (a ``ClusterNode``)."""
    return [
        _figure("spchat_bus_connected", "gauge", None,
                int(bool(getattr(cluster.bus, "joined", True)))),
        _figure("spchat_bus_lag_seconds", "histogram", None, cluster.lag),
        _figure("spchat_bus_backfills", "counter", None, cluster.order.reads),
        _figure("spchat_bus_notices_dropped", "counter", None, cluster.ignored),
    ]


def _figure(name: str, kind: str, label: str | None, values) -> Figure:
    """A figure of one sample, or of one per key of ``values`` under ``label``."""
    if label is None:
        return Figure(name, kind, HELP[name], (), (((), values),))
    return Figure(name, kind, HELP[name], (label,),
                  tuple(((key,), value) for key, value in values.items()))
