"""Reconnect time over forced drops, and presence beacon bytes per member.

Starts `twistd -n spchat` on free ports in a temporary data dir. One client
(in this process) is logged in; its TCP connection is cut N times, and the
time from the cut to the resumed session is taken, once with each
reconnect delay given. Then the size of real beacon datagrams for rooms of
several sizes.

    python scripts/measure_reconnect.py [--drops 20] [--delays 0,3]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task

from spchat import beacon
from _server import start_server
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient


@defer.inlineCallbacks
def measure(reactor, port, drops, delays, config_dir):
    for delay in delays:
        resumed = []
        client = ChatClient(
            reactor, "127.0.0.1", port, f"drop{int(delay * 1000)}", PinStore(config_dir),
            on_status=lambda s: s.state == "connected" and s.resumed and resumed.append(
                time.perf_counter()),
            reconnect_delay=delay, max_retries=5,
        )
        yield client.connect()
        times = []
        for _ in range(drops):
            count = len(resumed)
            cut = time.perf_counter()
            client.proto.transport.abortConnection()
            while len(resumed) == count:
                yield task.deferLater(reactor, 0.001, lambda: None)
            times.append(resumed[-1] - cut)
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield client.logout()
        print(f"reconnect with CHAT_RECONNECT_DELAY={delay:g}: {drops} forced drops, "
              f"median {statistics.median(times) * 1000:.1f} ms, "
              f"worst {max(times) * 1000:.1f} ms")


def beacon_sizes():
    keys = beacon.derive_keys(b"\x01" * 32)
    for count in (1, 10, 50, 100):
        members = [(f"member{i:02d}", "online") for i in range(count)]
        parts = beacon.encode_snapshot_parts(2.0, members)
        size = sum(len(keys.s2c_cipher.seal(keys.key_id, 0, p)) for p in parts)
        print(f"beacon for {count:3d} members (8-character names): {size} bytes in "
              f"{len(parts)} datagram(s), {size / count:.1f} bytes per member")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--delays", default="0,3")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    beacon_sizes()
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp) / "data")
        try:
            task.react(lambda reactor: measure(reactor, port, args.drops, delays,
                                               Path(tmp) / "client"))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
