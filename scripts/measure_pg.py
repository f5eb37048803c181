"""Which PostgreSQL driver: psycopg 3 or psycopg2, each through
``twisted.enterprise.adbapi`` (as Synapse does) with one connection, at the
same load and with the same SQL (``spchat.server.pg_tables.append_rows``);
and the store itself (psycopg2 on its own writer thread), to show it costs
what the driver costs.

Group commit (``spchat.server.commit``) over each, in this process on the
real reactor, each in a fresh database of a throwaway PostgreSQL cluster
(fsync on, as in production; ``--database URL`` uses yours instead, and
creates its tables there):

* batches: N appends in transactions of ``--batch`` messages, one after
  the other (the committer's pace under a steady load): appends saved per
  second, and each transaction's commit latency (from append called to
  its Deferred fired), p50/p99;
* burst: N messages accepted ``--per-turn`` a reactor turn (as a fast
  client's arrive), through the group committer: saved per second;
* steady: messages at a steady rate through the group committer, p50/p99
  from accepted to saved.

    python scripts/measure_pg.py [--messages 20000] [--batch 20] [--per-turn 50]
        [--rate 500] [--seconds 5] [--rooms 4] [--interval 0.005]

Needs both drivers: pip install 'psycopg[binary]' psycopg2-binary.
"""

import argparse
import sys
import time
from pathlib import Path

from twisted.internet import defer, task

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from measure_store import Saved, alternate, percentile  # noqa: E402 -- the same counting


class Timed:
    """An IMessageLog's append, with each transaction's latency noted."""

    def __init__(self, append, close):
        self._append, self._close = append, close
        self.path = None
        self.latencies = []

    def append(self, records):
        start = time.perf_counter()

        def done(result):
            self.latencies.append(time.perf_counter() - start)
            return result

        return self._append(records).addCallback(done)

    def close(self):
        return self._close()


def create_schema(url):
    from spchat.server.pg_link import Link, parse_url
    from spchat.server.pg_schema import migrate

    link = Link(parse_url(url), url)
    migrate(link)
    link.close()


@defer.inlineCallbacks
def open_store(reactor, url):
    from spchat.server.pg_store import PostgresStore

    store = PostgresStore(url, reactor=reactor)
    yield store.open()
    return Timed(store.append, store.close)


def open_adbapi(reactor, url, module):
    from twisted.enterprise import adbapi

    from spchat.server.pg_tables import append_rows

    create_schema(url)
    # One connection: one transaction at a time, in order, as the store's
    # writer thread.
    pool = adbapi.ConnectionPool(module, url, cp_min=1, cp_max=1, cp_reconnect=True,
                                 cp_reactor=reactor)
    pool.start()

    def close():
        pool.close()
        return defer.succeed(None)

    return defer.succeed(Timed(lambda records: pool.runInteraction(append_rows, records), close))


DRIVERS = {
    "psycopg3 adbapi": lambda reactor, url: open_adbapi(reactor, url, "psycopg"),
    "psycopg2 adbapi": lambda reactor, url: open_adbapi(reactor, url, "psycopg2"),
    "psycopg2 store": open_store,
}


def record(i, text, room):
    from spchat.server.records import Record

    return Record(0, int(time.time() * 1000), "bench", "bench", text, f"c{i}", room=room,
                  lineage="guest:bench")


@defer.inlineCallbacks
def measure(reactor, driver, url, args):
    from spchat.server.commit import GroupCommitter

    log = yield DRIVERS[driver](reactor, url)
    start = time.perf_counter()
    for first in range(0, args.messages, args.batch):
        yield log.append([record(i, f"batch {i} " + "x" * 80, f"room{i % args.rooms}")
                          for i in range(first, min(args.messages, first + args.batch))])
    batched = args.messages / (time.perf_counter() - start)
    commits, log.latencies = log.latencies, []
    print(f"{driver:<15} batches of {args.batch}: {batched:>7,.0f} appends/s, commit "
          f"p50 {percentile(commits, 0.5) * 1000:5.2f} ms p99 "
          f"{percentile(commits, 0.99) * 1000:5.2f} ms", flush=True)

    saved = Saved()
    committer = GroupCommitter(log, reactor, saved, args.interval)
    rooms = [f"room{i}" for i in range(args.rooms)]
    start = time.perf_counter()
    done = saved.reaching(args.messages)
    for first in range(0, args.messages, args.per_turn):
        for i in range(first, min(args.messages, first + args.per_turn)):
            committer.add(record(args.messages + i, f"message {i} " + "x" * 80, rooms[i % len(rooms)]))
        yield task.deferLater(reactor, 0, lambda: None)  # the next reactor turn
    yield done
    burst = args.messages / (time.perf_counter() - start)

    steady = int(args.rate * args.seconds)
    done = saved.reaching(args.messages + steady)
    log.latencies = []
    begin = time.perf_counter()
    for i in range(steady):
        due = begin + i / args.rate
        if due > time.perf_counter():
            yield task.deferLater(reactor, due - time.perf_counter(), lambda: None)
        line = record(2 * args.messages + i, f"steady {i}", rooms[i % len(rooms)])
        saved.accepted_at[line.cid] = time.perf_counter()
        committer.add(line)
    yield done
    yield committer.stop()
    yield log.close()
    commits = log.latencies
    print(f"{'':<15} burst {burst:>9,.0f} saved/s; steady {args.rate}/s: accepted to saved "
          f"p50 {percentile(saved.latencies, 0.5) * 1000:5.2f} ms "
          f"p99 {percentile(saved.latencies, 0.99) * 1000:5.2f} ms, commit "
          f"p50 {percentile(commits, 0.5) * 1000:5.2f} ms "
          f"p99 {percentile(commits, 0.99) * 1000:5.2f} ms", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="a PostgreSQL URL (default: a throwaway cluster)")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--per-turn", type=int, default=50)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--rounds", type=int, default=2,
                        help="each driver this many times, alternately")
    args = parser.parse_args()

    server = None
    if args.database is None:
        sys.path.insert(0, str(REPO))  # this checkout's spchat
        from spchat.bench.engines import TemporaryPostgres

        server = TemporaryPostgres(fsync=True)
        server.start()
    print(f"{args.messages} appends, {args.rooms} rooms", flush=True)

    alternate(args.rounds, DRIVERS, lambda reactor, driver: measure(
        reactor, driver, args.database or server.new_database(), args), server)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's spchat
    main()
