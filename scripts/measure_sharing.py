"""A chat line's latency on a client while it serves a large file.

Starts `twistd -n spchat` on a free port, then in this process alice, who
shares a file, and bob, who reads #lobby; a separate process (`python -m
spchat.client get`) downloads the file from alice.  While it does, alice
says a line every 50 ms and bob notes when each arrives: both ends run on
alice's reactor, so anything that stalls it (a disk read of the shared
file, a hash) shows in the figures.  ``--slow-read-ms`` makes every read
of the shared file that long (a slow or busy disk), through the same
seam the real reads use.  Prints the transfer's time and rate and the
lines' latency: median, 95th percentile and worst.

    python scripts/measure_sharing.py [--mib 256] [--slow-read-ms 0]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, task

from _server import NO_FLOOD_LIMIT, measure_with_server
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient
from spchat.p2p import node as node_mod
from spchat.p2p.node import SharingNode

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
LINE_EVERY = 0.05


def slow_reads(milliseconds: float) -> None:
    """Every read of a shared file takes ``milliseconds`` longer."""

    class SlowSeed(node_mod.SeedFile):
        def read_block(self, index, offset, length):
            time.sleep(milliseconds / 1000)
            return super().read_block(index, offset, length)

    node_mod.SeedFile = SlowSeed


def make_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def downloader(port: int, file_id: str, scratch: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SPCHAT_CONFIG_DIR"] = str(scratch / "dl-config")
    return subprocess.Popen(
        [sys.executable, "-m", "spchat.client", "get", file_id[:12], "--name", "dl",
         "--dir", str(scratch / "dl"), "--json", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@defer.inlineCallbacks
def measure(reactor, port, scratch: Path, mib: int):
    shared = scratch / "big.bin"
    make_file(shared, mib)
    alice = ChatClient(reactor, "127.0.0.1", port, "alice", PinStore(scratch / "alice"))
    sent, latencies = {}, []

    def arrived(event):
        text = getattr(event, "text", "")
        if text.startswith("ping ") and text in sent:
            latencies.append(time.monotonic() - sent.pop(text))

    bob = ChatClient(reactor, "127.0.0.1", port, "bob", PinStore(scratch / "bob"),
                     on_event=arrived)
    yield alice.connect()
    yield bob.connect()
    sharing = SharingNode(reactor, alice)
    sharing.start()
    file_id, _ = yield sharing.share(shared)
    proc = downloader(port, file_id, scratch)
    started, count = time.monotonic(), 0
    while proc.poll() is None:
        text = f"ping {count}"
        count += 1
        sent[text] = time.monotonic()
        alice.say(text)
        yield task.deferLater(reactor, LINE_EVERY, lambda: None)
    took = time.monotonic() - started
    yield task.deferLater(reactor, 0.5, lambda: None)  # the last lines arrive
    yield sharing.stop()
    yield alice.logout()
    yield bob.logout()
    if proc.returncode != 0 or not (scratch / "dl" / "big.bin").exists():
        raise SystemExit(f"the download failed (exit {proc.returncode})")
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    print(f"served {mib} MiB in {took:.1f} s ({mib / took:.0f} MiB/s); "
          f"{len(ms)} of {count} lines arrived while it did")
    if ms:
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        print(f"chat line latency: median {statistics.median(ms):.1f} ms, "
              f"95th percentile {p95:.1f} ms, worst {ms[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the shared file")
    parser.add_argument("--slow-read-ms", type=float, default=0,
                        help="extra time every read of the shared file takes")
    args = parser.parse_args()
    if args.slow_read_ms:
        slow_reads(args.slow_read_ms)
    measure_with_server(
        lambda reactor, proc, port, scratch: measure(reactor, port, scratch, args.mib),
        *NO_FLOOD_LIMIT)


if __name__ == "__main__":
    main()
