"""What one member event costs the client, by the size of the room.

A ``ChatClient`` in one room of N members (no server: the messages are
handed to it as the protocol would) takes joins, state changes and
leaves; the figure is microseconds per event, which should barely grow
with N (a change is found by bisection, not by sorting the list).

    python scripts/measure_members.py [--sizes 1000,10000,100000] [--events 20000]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's spchat

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient


def per_event_us(size: int, events: int) -> float:
    client = ChatClient(None, "127.0.0.1", 1, "me", PinStore(tempfile.mkdtemp()),
                        presence=False)
    client.message_received(wire.RoomState("lobby", "", False, False, 0))
    client.message_received(wire.Members(
        "lobby", tuple((f"user{i:07d}", "online", "member") for i in range(size))))
    # A newcomer comes and goes; someone already in goes idle and back.
    updates = []
    for i in range(events // 4):
        updates += [wire.MemberUpdate("lobby", f"new{i:07d}", "online", "member"),
                    wire.MemberUpdate("lobby", f"user{i * 7919 % size:07d}", "idle", "member"),
                    wire.MemberUpdate("lobby", f"user{i * 7919 % size:07d}", "online", "member"),
                    wire.MemberUpdate("lobby", f"new{i:07d}", "gone", "member")]
    started = time.perf_counter()
    for update in updates:
        client.message_received(update)
    elapsed = time.perf_counter() - started
    assert len(client.room("lobby").members) == size
    return elapsed / len(updates) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    print("members in the room   µs per member event")
    for size in map(int, args.sizes.split(",")):
        print(f"{size:>17,}   {per_event_us(size, args.events):8.2f}")


if __name__ == "__main__":
    main()
