"""Acknowledged means saved: what it costs.

For each way of saving (a writer thread or short inline transactions) and
each durability level (``full``: fsync per group commit; ``normal``: safe
against a crash, not a power cut), starts `twistd -n spchat` in a fresh data
dir and measures from one client in this process:

* throughput: N messages sent at once, acknowledged (saved) per second;
* latency: messages sent at a steady rate, p50/p99 from send to acknowledgement.

    python scripts/measure_store.py [--messages 5000] [--rate 500] [--seconds 5]
"""

import argparse
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task

from spchat import wire
from _server import NO_FLOOD_LIMIT, start_server
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient



def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


@defer.inlineCallbacks
def measure(reactor, port, config_dir, label, messages, rate, seconds):
    sent_at, latencies = {}, []

    def event(msg):
        if isinstance(msg, wire.RoomMessage) and msg.cid in sent_at:
            latencies.append(time.perf_counter() - sent_at.pop(msg.cid))

    client = ChatClient(reactor, "127.0.0.1", port, "bench", PinStore(config_dir),
                        on_event=event, presence=False)
    yield client.connect()
    start = time.perf_counter()
    for i in range(messages):
        sent_at[client.say(f"message {i} " + "x" * 80)] = time.perf_counter()
    yield client.wait_acked(120)
    burst = messages / (time.perf_counter() - start)
    latencies.clear()
    interval = 1 / rate
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        due = begin + i * interval
        if due > time.perf_counter():
            yield task.deferLater(reactor, due - time.perf_counter(), lambda: None)
        sent_at[client.say(f"steady {i}")] = time.perf_counter()
    yield client.wait_acked(60)
    yield client.logout()
    print(f"{label:<16} {burst:>10,.0f} acked/s   steady {rate}/s: "
          f"p50 {percentile(latencies, 0.5) * 1000:6.2f} ms  "
          f"p99 {percentile(latencies, 0.99) * 1000:6.2f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    print(f"{'writer/sync':<16} {'burst of ' + str(args.messages):>16}")
    runs = [("thread", "full"), ("inline", "full"), ("thread", "normal"), ("inline", "normal")]

    def all_runs(reactor):
        @defer.inlineCallbacks
        def go():
            for writer, sync in runs:
                with tempfile.TemporaryDirectory() as tmp:
                    proc, port = start_server(
                        Path(tmp) / "data", "--store-writer", writer, "--store-sync", sync,
                        *NO_FLOOD_LIMIT,
                    )
                    try:
                        yield measure(reactor, port, Path(tmp) / "client", f"{writer}/{sync}",
                                      args.messages, args.rate, args.seconds)
                    finally:
                        proc.terminate()
                        proc.wait()
        return go()

    task.react(all_runs)


if __name__ == "__main__":
    main()
