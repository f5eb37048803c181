"""The administrator's acts on every node: a kick, a ban, a broadcast, a
disconnect-all or a shutdown asked of one node is done there at once, and
sent to the others as an ``act`` notice; each of them does it to its own
sessions and says so in its audit log, with the node it came from.

The bus is lossy: an act is done by the nodes that hear it.  A ban is kept
in the shared database as well, so a node that missed the notice still
refuses the banned name at its next login.  The seal drops a notice heard
twice: an act is done once on each node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

ACT = "act"
# What a node does when it hears of it (a ban's database row is written
# by the node that was asked).
OPS = ("kick", "ban", "broadcast", "disconnect_all", "shutdown")
MAX_TEXT_CHARS = 1000


@dataclass(frozen=True)
class Act:
    op: str
    name: str = ""  # whom a kick or a ban is about
    reason: str = ""  # the reason, or a broadcast's text
    until: float | None = None  # a ban's end (UTC s), None: for ever (a kick's: no ban)
    node: str = ""  # a shutdown's node; "": every node


def body(act: Act) -> dict:
    return {"op": act.op, "name": act.name, "reason": act.reason, "until": act.until,
            "node": act.node}


def read_act(body: dict) -> Act | None:
    """The act in a notice's body, or None if it does not parse."""
    op, until = body.get("op"), body.get("until")
    name, reason, node = body.get("name"), body.get("reason"), body.get("node")
    if not (op in OPS and isinstance(name, str) and isinstance(reason, str)
            and isinstance(node, str)) or max(map(len, (name, reason, node))) > MAX_TEXT_CHARS:
        return None
    if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))):
        return None
    return Act(op, name, reason, until, node)


class ClusterActs:
    """Sends this node's acts to the others, and does theirs here."""

    def __init__(self, cluster, do_here: Callable[[Act], str],
                 audit: Callable[[str], None]):
        """``cluster``: this node's ``ClusterNode``; ``do_here(act)``: does
        the act to this node's sessions and says what it did."""
        self.cluster = cluster
        self.do_here = do_here
        self.audit = audit
        cluster.on(ACT, self._heard)

    @property
    def name(self) -> str:
        return self.cluster.name

    def send(self, act: Act) -> None:
        self.cluster.send(ACT, body(act))

    def _heard(self, node: str, notice: dict) -> None:
        if node == self.cluster.name:
            return  # done here when it was asked
        act = read_act(notice)
        if act is None:
            self.cluster.drop("an administrator's act that does not parse")
            return
        if act.op == "shutdown" and act.node not in ("", self.cluster.name):
            return  # another node's
        subject = f" {act.name}" if act.name else ""
        self.audit(f"admin act from node {node}: {act.op}{subject}: {self.do_here(act)}")
