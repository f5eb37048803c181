"""The five scenarios, full and quick, and how each one is run.

(a) 10 clients, 10 senders, the rate swept until the server saturates;
(b) 100 clients, 10 senders, 1,000 room messages/s;
(c) 1,000 clients, 10 senders, 100 room messages/s;
(d) 10,000 idle connections and one sender at 1 message/s: memory per
    connection, and latency;
(e) reconnect storm (spchat only: the others have no sessions to resume):
    1,000 clients cut at once, time until all have resumed, nothing lost;
(f) one room over 1, 2 and 3 nodes on PostgreSQL and Redis, and SQLite
    against PostgreSQL on one node (spchat only; ``spchat.bench.cluster``).

Each run gets a fresh server: no state carried from one to the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twisted.internet import defer, task

from spchat.bench.load import Result, connect_all, run_room


@dataclass(frozen=True)
class Plan:
    sweep_rates: tuple[float, ...]
    sweep_seconds: float
    b: tuple[int, int, float, float]  # clients, senders, rate, seconds
    c: tuple[int, int, float, float]
    idle_connections: int
    idle_seconds: float
    idle_budget: float  # seconds to connect them; a slow server gets fewer
    storm_clients: int
    f: tuple[int, int, float, float, tuple[int, ...]]  # clients, senders, rate, seconds, nodes


FULL = Plan((2000, 5000, 10000, 15000, 20000, 30000, 40000), 5.0,
            (100, 10, 1000, 10.0), (1000, 10, 100, 10.0), 10000, 10.0, 120.0, 1000,
            (100, 10, 200, 10.0, (1, 2, 3)))
QUICK = Plan((2000, 5000), 1.5, (100, 10, 1000, 2.0), (300, 10, 100, 2.0), 1000, 2.0, 20.0, 100,
             (30, 6, 100, 2.0, (2,)))


STORM_BATCH = 100  # (e): clients logging in at the same time before the cut


def saturated(result: Result) -> bool:
    """Fell behind: most deliveries late, lost, or over a second in the tail."""
    return result.delivered < 0.95 * result.expected or result.percentile(99) > 1000


@defer.inlineCallbacks
def sweep(reactor, start_server, plan: Plan):
    """(a): one fresh server per rate, until it saturates."""
    results = []
    for rate in plan.sweep_rates:
        server = start_server()
        try:
            result = yield run_room(reactor, server, "a", 10, 10, rate, plan.sweep_seconds)
        finally:
            server.stop()
        results.append(result)
        if saturated(result):
            result.note = "saturated"
            break
    return results


@defer.inlineCallbacks
def room(reactor, start_server, key, shape):
    clients, senders, rate, seconds = shape
    server = start_server()
    try:
        result = yield run_room(reactor, server, key, clients, senders, rate, seconds)
    finally:
        server.stop()
    return [result]


@defer.inlineCallbacks
def idle(reactor, start_server, plan: Plan):
    """(d): many idle connections; memory per connection, then one sender."""
    server = start_server()
    try:
        yield task.deferLater(reactor, 1.0, lambda: None)
        before = server.memory_kib("VmRSS")
        t0 = time.monotonic()
        conns = yield connect_all(server.name, reactor, server.port, plan.idle_connections, 0,
                                  prefix="idle", idle=True, budget=plan.idle_budget)
        connect_seconds = time.monotonic() - t0
        yield task.deferLater(reactor, 2.0, lambda: None)
        after = server.memory_kib("VmRSS")
        result = yield run_room(reactor, server, "d", 2, 1, 1.0, plan.idle_seconds)
        result.clients += len(conns)
        result.rss_per_connection_kib = (after - before) / len(conns)
        result.note = (f"{len(conns):,} idle connections in {connect_seconds:.1f} s"
                       + (f" (of {plan.idle_connections:,}: the rest did not get in within "
                          f"{plan.idle_budget:g} s)" if len(conns) < plan.idle_connections else "")
                       + "; latency between the 2 active clients")
        for conn in conns:
            conn.close()
    finally:
        server.stop()
    return [result]


@defer.inlineCallbacks
def storm(reactor, start_server, plan: Plan, config_dir):
    """(e): every client's connection cut at once, while a sender goes on."""
    from spchat.client.pins import PinStore
    from spchat.client.session import ChatClient

    server = start_server()
    result = Result(server.name, "e", plan.storm_clients, 1, 20.0)
    clients = []
    try:
        pins = PinStore(config_dir)
        seqs: list[set[int]] = [set() for _ in range(plan.storm_clients)]

        def make(i):
            def event(msg, got=seqs[i]):
                if getattr(msg, "seq", 0) and getattr(msg, "sender", "") == "storm0":
                    got.add(msg.seq)
            return ChatClient(reactor, "127.0.0.1", server.port, f"storm{i}", pins,
                              on_event=event, reconnect_delay=0.0, max_retries=1000,
                              presence=False)

        logins = []  # seconds per batch: a generator that slows down as the room fills shows
        for start in range(0, plan.storm_clients, STORM_BATCH):
            batch = [make(i) for i in range(start, min(plan.storm_clients, start + STORM_BATCH))]
            t0 = time.monotonic()
            yield defer.gatherResults([c.connect() for c in batch], consumeErrors=True)
            logins.append(time.monotonic() - t0)
            clients.extend(batch)
        sender = clients[0]
        sent: list[str] = []  # cids

        def say():
            sent.append(sender.say(f"storm message {len(sent)}"))

        talk = task.LoopingCall(say)
        talk.clock = reactor
        talk.start(1 / result.offered_rate)
        yield task.deferLater(reactor, 0.5, lambda: None)
        cpu0 = server.cpu_seconds()
        cut = time.monotonic()
        for client in clients:
            client.proto.transport.abortConnection()
        yield task.deferLater(reactor, 0.2, lambda: None)
        deadline = cut + 120
        while not all(c.status.state == "connected" for c in clients):
            if time.monotonic() > deadline:
                result.note = "not all resumed within 120 s"
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        result.elapsed = time.monotonic() - cut
        yield task.deferLater(reactor, 1.0, lambda: None)
        talk.stop()
        all_acked = yield sender.wait_acked(30)
        yield task.deferLater(reactor, 1.0, lambda: None)
        result.server_cpu = server.cpu_seconds() - cpu0
        result.server_peak_rss_kib = server.memory_kib("VmHWM")
        # Everything the server acknowledged to the sender, every client holds.
        wanted = seqs[0]
        result.sent = len(sent)
        result.expected = len(wanted) * (len(clients) - 1)
        result.delivered = sum(len(s) for s in seqs[1:])
        result.lost = sum(len(wanted - s) for s in seqs[1:])
        if not all_acked:
            result.note = f"{len(sender.outbox)} of the sender's messages never acknowledged"
        fresh = sum(1 for c in clients if not c.status.resumed)
        result.note = result.note or (
            f"all {len(clients)} back in {result.elapsed:.2f} s"
            + (f" ({fresh} by a fresh login, the session had expired)" if fresh else
               ", every one by resuming its session"))
        result.note += (f"; the first logins took {', '.join(f'{s:.1f}' for s in logins)} s "
                        f"per {STORM_BATCH}")
    finally:
        for client in clients:
            client.logout()
        yield task.deferLater(reactor, 0.5, lambda: None)
        server.stop()
    return [result]
