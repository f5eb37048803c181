"""(f): one room spread over 1, 2 and 3 spchat nodes on one PostgreSQL and
one Redis, and one node on SQLite against one on PostgreSQL at the same
rate.

The clients are dealt to the nodes in turn (client i to node i mod n),
senders too, so most deliveries cross from one node to another through
PostgreSQL and Redis.  Unlike the other scenarios, nothing is pinned to a
core: the nodes, PostgreSQL, Redis and the generator share this
machine's cores, so more nodes cannot mean more capacity here; what the
runs show is what the cluster costs (CPU per delivery on each node,
PostgreSQL's and Redis's CPU) and what it adds to latency.  PostgreSQL
runs with fsync on, as SQLite's default (``CHAT_STORE_SYNC=full``) does.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import defer

from spchat.bench.engines import TemporaryPostgres, TemporaryRedis
from spchat.bench.load import run_room
from spchat.bench.servers import CLOCK_TICKS, RUNNING, SpchatServer
from spchat.server.identity import share_server_key


class Node(SpchatServer):
    """One node: ``twistd -n spchat`` on PostgreSQL, and on the bus if given."""

    def __init__(self, workdir: Path, database: str, bus: str | None, node: str):
        super().__init__(workdir)
        self.database, self.bus, self.node = database, bus, node

    def command(self):
        bus = ["--bus", self.bus] if self.bus else []
        return [*super().command(), "--database", self.database, *bus, "--node", self.node]


def process_cpu(pid: int) -> float:
    """utime + stime of a process and of its children that were waited for."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its living children: PostgreSQL's
    postmaster and its backends, one per connection."""
    total = process_cpu(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid:
            total += process_cpu(int(entry))
    return total


class Nodes:
    """Several nodes as ``run_room`` measures one server: its clients dealt
    to the nodes' ports in turn, CPU summed, and each part's CPU apart."""

    kind = "spchat"

    def __init__(self, name: str, nodes: list, engines: dict[str, int]):
        self.name, self.nodes, self.engines = name, nodes, engines

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def cpu_parts(self) -> dict[str, float]:
        parts = {f"node {i + 1}": node.cpu_seconds() for i, node in enumerate(self.nodes)}
        parts.update({name: tree_cpu(pid) for name, pid in self.engines.items()})
        return parts

    def memory_kib(self, field: str = "VmHWM") -> int:
        return max(node.memory_kib(field) for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def shared_key_dirs(root: Path, count: int) -> list[Path]:
    """Each node's working directory, one server key copied to all their
    data directories (``data`` in each)."""
    dirs = [root / f"node{i + 1}" for i in range(count)]
    share_server_key([workdir / "data" for workdir in dirs])
    return dirs


def start_nodes(root: Path, count: int, database: str, bus: str | None) -> list[Node]:
    nodes = []
    try:
        for i, workdir in enumerate(shared_key_dirs(root, count)):
            node = Node(workdir, database, bus, f"node{i + 1}")
            node.start()  # one at a time: the first makes the schema
            nodes.append(node)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes


def cost_note(result, counts: int) -> str:
    """CPU per million deliveries on each node (of the deliveries to its
    own clients), and the engines' CPU seconds in the run."""
    parts, notes = result.parts_cpu, []
    for k in range(counts):
        mine = sum(result.per_client[k::counts])  # client i is on node i mod n
        cpu = parts.get(f"node {k + 1}", 0.0)
        notes.append(f"node {k + 1} {cpu / mine * 1e6:.2f}" if mine else f"node {k + 1} –")
    engines = [f"{name} {parts[name]:.2f} s" for name in ("PostgreSQL", "Redis")
               if name in parts]
    return ("CPU s per M deliveries on each node: " + ", ".join(notes)
            + ("; CPU in the run: " + ", ".join(engines) if engines else ""))


@defer.inlineCallbacks
def spread(reactor, workdir: Path, plan):
    """(f): SQLite and PostgreSQL on one node, then 1 to n nodes on the bus."""
    clients, senders, rate, seconds, counts = plan.f
    results = []
    sqlite = SpchatServer(workdir / "sqlite")
    sqlite.start()
    try:
        result = yield run_room(reactor, sqlite, "f", clients, senders, rate, seconds)
    finally:
        sqlite.stop()
    result.server = "spchat, SQLite, 1 node"
    results.append(result)
    missing = TemporaryPostgres.missing()
    if missing is not None or not Path("/usr/bin/redis-server").exists():
        result.note = f"the rest skipped: {missing or 'redis-server is missing'}"
        return results
    postgres, redis = TemporaryPostgres(fsync=True), TemporaryRedis()
    postgres.start()
    try:
        redis.start()
        runs = [(1, None)] + [(count, redis.url) for count in counts]
        assert postgres.proc is not None and redis.proc is not None, "started above"
        for number, (count, bus) in enumerate(runs):
            engines = {"PostgreSQL": postgres.proc.pid, **({"Redis": redis.proc.pid} if bus else {})}
            label = (f"spchat, PostgreSQL, {count} node" + ("s" if count > 1 else "")
                     + (", Redis bus" if bus else ""))
            nodes = Nodes(label, start_nodes(workdir / f"cluster{number}", count,
                                             postgres.new_database(), bus), engines)
            RUNNING.add(nodes)  # stopped at exit, if interrupted
            try:
                result = yield run_room(reactor, nodes, "f", clients, senders, rate, seconds)
            finally:
                RUNNING.discard(nodes)
                nodes.stop()
            result.note = "; ".join(filter(None, [cost_note(result, count), result.note]))
            results.append(result)
    finally:
        redis.stop()
        postgres.stop()
    return results

