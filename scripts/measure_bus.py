"""Which bus between nodes: Redis pub/sub or a Redis stream, through
txredisapi on the reactor or redis-py on threads.

Each candidate carries the same notices (``spchat.cluster.notices.saved``
of a batch of ``--lines`` typical lines) from a publisher to a listener in
this process, through a throwaway ``redis-server`` (or ``--redis URL``):

* latency: one notice every ``--every`` seconds, ``--messages`` of them;
  publish called -> notice in the listener's hands on the reactor thread,
  p50/p99;
* throughput: ``--burst`` notices published at once; notices per second
  until the last arrived.

Candidates:

* ``txredisapi-pubsub``: PUBLISH / SUBSCRIBE, both on the reactor (what
  ``spchat.cluster.redis_bus`` does);
* ``txredisapi-stream``: XADD (MAXLEN ~ ``--maxlen``) / XREAD BLOCK from
  the last id, both on the reactor (a reader further behind than the
  stream is long loses entries: a stream is lossy too, only later);
* ``redis-py-pubsub``: redis-py's sync client (hiredis parser), PUBLISH
  from a thread of its own fed by a queue, SUBSCRIBE read on another
  thread, each notice handed to the reactor with ``callFromThread``.
  (redis-py's asyncio API would need the asyncio reactor under the whole
  server; not measured.)

    python scripts/measure_bus.py [--messages 2000] [--every 0.002] [--burst 20000]
        [--lines 3] [--maxlen 10000] [--rounds 2]

Needs: pip install txredisapi redis hiredis; redis-server on the PATH or
at /usr/bin/redis-server.
"""

import argparse
import queue
import sys
import threading
import time
from pathlib import Path

from twisted.internet import defer, task

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from measure_store import alternate, percentile  # noqa: E402 -- the same counting

CHANNEL = "spchat.measure"
STREAM = "spchat.measure.stream"


def notice(lines: int, number: int) -> bytes:
    from spchat.cluster import notices
    from spchat.server.records import Record

    records = [Record(number * lines + i + 1, 1_700_000_000_000, "alice", "alice",
                      "a line of chat of a usual length, some forty to sixty characters",
                      f"c{number}-{i}", room="lobby", lineage="account:alice")
               for i in range(lines)]
    return notices.saved("lobby", records)


class Probe:
    """When each notice was sent and heard (by its number, first in the payload)."""

    def __init__(self):
        self.sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self.waiting: defer.Deferred | None = None
        self.expect = 0

    def payload(self, lines, number):
        return str(number).encode() + b" " + notice(lines, number)

    def heard(self, data):
        now = time.perf_counter()
        if isinstance(data, str):
            data = data.encode()
        number = int(data.split(b" ", 1)[0])
        self.latencies.append(now - self.sent.pop(number))
        if self.waiting is not None and len(self.latencies) >= self.expect:
            waiting, self.waiting = self.waiting, None
            waiting.callback(None)

    def until(self, reactor, count, seconds=20.0):
        """Fires once ``count`` were heard, or after ``seconds`` (some lost)."""
        self.expect = count
        if len(self.latencies) >= count:
            return defer.succeed(None)
        self.waiting = waiting = defer.Deferred()

        def give_up():
            if self.waiting is waiting:
                self.waiting = None
                waiting.callback(None)

        reactor.callLater(seconds, give_up)
        return waiting


# --- the candidates: start(reactor, url, heard) -> (publish, stop) -----------


@defer.inlineCallbacks
def txredisapi_pubsub(reactor, url, heard):
    import txredisapi

    from spchat.cluster.redis_bus import parse_url

    host, port, _ = parse_url(url)

    class Listener(txredisapi.SubscriberProtocol):
        def messageReceived(self, pattern, channel, message):
            heard(message)

    listener = yield _connect(reactor, host, port, Listener)
    yield listener.subscribe(CHANNEL)
    publisher = yield _connect(reactor, host, port, txredisapi.RedisProtocol)

    def stop():
        listener.transport.loseConnection()
        publisher.transport.loseConnection()

    return (lambda data: publisher.publish(CHANNEL, data)), stop


@defer.inlineCallbacks
def txredisapi_stream(reactor, url, heard, maxlen=10000):
    import txredisapi

    from spchat.cluster.redis_bus import parse_url

    host, port, _ = parse_url(url)
    reader = yield _connect(reactor, host, port, txredisapi.RedisProtocol)
    writer = yield _connect(reactor, host, port, txredisapi.RedisProtocol)
    yield writer.execute_command("DEL", STREAM)
    state = {"last": "0-0", "on": True}

    @defer.inlineCallbacks
    def read_loop():
        while state["on"]:
            try:
                reply = yield reader.execute_command(
                    "XREAD", "COUNT", "500", "BLOCK", "1000", "STREAMS", STREAM, state["last"],
                    apply_timeout=False)
            except Exception:
                return
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    state["last"] = entry_id
                    heard(fields[1])

    read_loop()

    def stop():
        state["on"] = False
        reader.transport.loseConnection()
        writer.transport.loseConnection()

    return (lambda data: writer.execute_command("XADD", STREAM, "MAXLEN", "~", str(maxlen),
                                                "*", "n", data)), stop


def _connect(reactor, host, port, proto_class):
    from twisted.internet import endpoints, protocol

    class Factory(protocol.Factory):
        noisy = False

        def buildProtocol(self, addr):
            return proto_class()

    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
    return endpoint.connect(Factory()).addCallback(lambda p: p.whenConnected())


def redis_py_pubsub(reactor, url, heard):
    import redis

    listener = redis.Redis.from_url(url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    publisher = redis.Redis.from_url(url)
    outgoing: queue.Queue = queue.Queue()
    on = threading.Event()
    on.set()

    def listen():
        while on.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is not None:
                reactor.callFromThread(heard, message["data"])

    def publish_loop():
        while True:
            data = outgoing.get()
            if data is None:
                return
            publisher.publish(CHANNEL, data)

    threads = [threading.Thread(target=listen, daemon=True),
               threading.Thread(target=publish_loop, daemon=True)]
    for thread in threads:
        thread.start()

    def stop():
        on.clear()
        outgoing.put(None)
        for thread in threads:
            thread.join()
        pubsub.close()
        listener.close()
        publisher.close()

    return defer.succeed((outgoing.put, stop))


CANDIDATES = {"txredisapi-pubsub": txredisapi_pubsub, "txredisapi-stream": txredisapi_stream,
              "redis-py-pubsub": redis_py_pubsub}


@defer.inlineCallbacks
def measure(reactor, name, url, args):
    probe = Probe()
    extra = {"maxlen": args.maxlen} if name == "txredisapi-stream" else {}
    publish, stop = yield CANDIDATES[name](reactor, url, probe.heard, **extra)
    yield task.deferLater(reactor, 0.2, lambda: None)  # subscribed, settled
    for number in range(args.messages):
        probe.sent[number] = time.perf_counter()
        publish(probe.payload(args.lines, number))
        yield task.deferLater(reactor, args.every, lambda: None)
    yield probe.until(reactor, args.messages)
    steady = probe.latencies
    lost = args.messages - len(steady)
    probe.latencies = []
    payloads = [probe.payload(args.lines, args.messages + i) for i in range(args.burst)]
    start = time.perf_counter()
    for i, data in enumerate(payloads):
        probe.sent[args.messages + i] = time.perf_counter()
        publish(data)
    yield probe.until(reactor, args.burst)
    rate = len(probe.latencies) / (time.perf_counter() - start)
    lost += args.burst - len(probe.latencies)
    stop()
    print(f"{name:18s} latency p50 {percentile(steady, 0.5) * 1e3:6.3f} ms  "
          f"p99 {percentile(steady, 0.99) * 1e3:6.3f} ms   burst {rate:8.0f} notices/s "
          f"({len(payloads[0])} bytes each){f'; {lost} LOST' if lost else ''}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", help="a redis:// URL (default: a throwaway server)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--every", type=float, default=0.002)
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--maxlen", type=int, default=10000, help="the stream's length")
    parser.add_argument("--lines", type=int, default=3, help="lines in each notice")
    parser.add_argument("--rounds", type=int, default=2,
                        help="each candidate this many times, alternately")
    parser.add_argument("--only", choices=sorted(CANDIDATES), action="append")
    args = parser.parse_args()
    server = None
    url = args.redis
    if url is None:
        sys.path.insert(0, str(REPO))  # this checkout's spchat
        from spchat.bench.engines import TemporaryRedis

        server = TemporaryRedis()
        server.start()
        url = server.url
    print(f"{args.messages} notices one every {args.every * 1e3:g} ms, then {args.burst} "
          f"at once; {args.lines} lines each", flush=True)

    alternate(args.rounds, args.only or list(CANDIDATES),
              lambda reactor, name: measure(reactor, name, url, args), server)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # this checkout's spchat
    main()
