"""Acknowledged means saved: what it costs at the store.

Group commit (``spchat.server.commit``) over the SQLite store, in this
process on the real reactor, for each way of writing (``thread``: the
store's writer thread; ``inline``: on the reactor thread) and durability
level (``full``: fsync per transaction; ``normal``: safe against a crash,
not a power cut), each in a fresh data directory:

* burst: N messages accepted ``--per-turn`` a reactor turn (as a fast
  client's arrive), saved per second;
* steady: messages at a steady rate, p50/p99 from accepted to saved.

    python scripts/measure_store.py [--messages 20000] [--per-turn 50]
        [--rate 500] [--seconds 5] [--rooms 1] [--interval 0.005]

End to end through the server and clients: ``python -m spchat.bench``.
To compare with another tree, call ``main(open_target)`` with a target of
that tree's making (see ``open_target``).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def alternate(rounds, names, measure_one, server=None):
    """``measure_one(reactor, name)`` for each name, ``rounds`` times over,
    on the real reactor; then stop ``server`` (a throwaway one), if any."""

    @defer.inlineCallbacks
    def all_runs(reactor):
        for _ in range(rounds):
            for name in names:
                yield measure_one(reactor, name)

    try:
        task.react(all_runs)
    finally:
        if server is not None:
            server.stop()


class Target:
    """This tree's store and committer, as the server builds them."""

    def __init__(self, store, committer, record_type):
        self.store = store
        self.committer = committer
        self.record_type = record_type

    def record(self, i, text, room):
        return self.record_type(0, int(time.time() * 1000), "bench", "bench", text, f"c{i}",
                                room=room)

    def add(self, record):
        self.committer.add(record)

    @defer.inlineCallbacks
    def close(self):
        yield self.committer.stop()
        yield self.store.close()


@defer.inlineCallbacks
def open_target(reactor, data_dir, writer, sync, interval, on_committed):
    from spchat.server.commit import GroupCommitter
    from spchat.server.records import Record
    from spchat.server.store import SQLiteStore

    store = SQLiteStore.in_dir(data_dir, sync=sync, mode=writer, reactor=reactor)
    yield store.open()
    return Target(store, GroupCommitter(store, reactor, on_committed, interval), Record)


class Saved:
    """Counts what was saved and when each was accepted."""

    def __init__(self):
        self.count = 0
        self.accepted_at = {}
        self.latencies = []
        self.goal = None

    def __call__(self, saved, again):
        now = time.perf_counter()
        self.count += len(saved)
        for r in saved:
            accepted = self.accepted_at.pop(r.cid, None)
            if accepted is not None:
                self.latencies.append(now - accepted)
        if self.goal is not None and self.count >= self.goal[0]:
            goal, self.goal = self.goal, None
            goal[1].callback(None)

    def reaching(self, count):
        d = defer.Deferred()
        self.goal = (count, d)
        return d


@defer.inlineCallbacks
def measure(reactor, open_target, data_dir, writer, sync, args):
    saved = Saved()
    target = yield open_target(reactor, data_dir, writer, sync, args.interval, saved)
    rooms = [f"room{i}" for i in range(args.rooms)]
    start = time.perf_counter()
    done = saved.reaching(args.messages)
    for first in range(0, args.messages, args.per_turn):
        for i in range(first, min(args.messages, first + args.per_turn)):
            target.add(target.record(i, f"message {i} " + "x" * 80, rooms[i % len(rooms)]))
        yield task.deferLater(reactor, 0, lambda: None)  # the next reactor turn
    yield done
    burst = args.messages / (time.perf_counter() - start)

    steady = int(args.rate * args.seconds)
    done = saved.reaching(args.messages + steady)
    begin = time.perf_counter()
    for i in range(steady):
        due = begin + i / args.rate
        if due > time.perf_counter():
            yield task.deferLater(reactor, due - time.perf_counter(), lambda: None)
        record = target.record(args.messages + i, f"steady {i}", rooms[i % len(rooms)])
        saved.accepted_at[record.cid] = time.perf_counter()
        target.add(record)
    yield done
    yield target.close()
    print(f"{writer + '/' + sync:<16} {burst:>12,.0f} saved/s   steady {args.rate}/s: "
          f"p50 {percentile(saved.latencies, 0.5) * 1000:6.2f} ms  "
          f"p99 {percentile(saved.latencies, 0.99) * 1000:6.2f} ms", flush=True)


def main(open_target=open_target):
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--per-turn", type=int, default=50)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--runs", default="thread/full,inline/full,thread/normal,inline/normal")
    args = parser.parse_args()
    print(f"{'writer/sync':<16} {'burst of ' + str(args.messages):>12}", flush=True)

    @defer.inlineCallbacks
    def all_runs(reactor):
        for run in args.runs.split(","):
            writer, sync = run.split("/")
            with tempfile.TemporaryDirectory() as tmp:
                yield measure(reactor, open_target, Path(tmp), writer, sync, args)

    task.react(all_runs)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's spchat
    main()
