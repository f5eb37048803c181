"""A direct line to someone who just logged in on another node, sans-IO:
two cores on one store and a bus that takes its time, on a fake clock.
The line waits a moment for the roster to name them, not refused as to
nobody; lines to nobody are still refused, after the wait."""

import pytest

from spchat import wire
from spchat.cluster.arrivals import WAIT_SECONDS, Arrivals
from spchat.server.core import ChatCore, Limits
from spchat.server.memory_store import MemoryStore

from helpers import SharedBus, fired, login, run_for

KEY = b"k" * 32
LATE = 0.05  # how long the bus takes to carry a notice


class LateBus(SharedBus):
    """A bus on which every notice takes ``LATE`` seconds of the clock."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def port(self):
        bus, port = self, super().port()
        publish = port.publish

        class Late:
            listen = port.listen

            def publish(self, data):
                bus.clock.callLater(LATE, publish, data)

        return Late()


@pytest.fixture
def nodes(clock):
    store, bus = MemoryStore(), LateBus(clock)
    cores = {}
    for node in "ab":
        core = ChatCore(clock, Limits(), store=store, bus=bus.port(), bus_key=KEY, node=node)
        fired(core.start())
        cores[node] = core
    return cores


def test_a_line_to_someone_just_welcomed_on_another_node_reaches_them(nodes, clock):
    alice_link, alice = login(nodes["a"], "alice")
    run_for(clock, 1)
    _, bob = login(nodes["b"], "bob")  # a has not heard of bob yet
    for n in range(3):
        nodes["a"].receive(alice_link, wire.Direct("bob", f"hi {n}", f"c{n}"))
    run_for(clock, 1)
    assert [e.code for e in alice.of(wire.Error)] == []
    assert [m.text for m in bob.of(wire.DirectMessage)] == ["hi 0", "hi 1", "hi 2"]
    assert [m.seq for m in alice.of(wire.DirectMessage)] == [1, 2, 3]  # acknowledged, in order


def test_a_line_to_nobody_is_refused_after_the_wait(nodes, clock):
    alice_link, alice = login(nodes["a"], "alice")
    nodes["a"].receive(alice_link, wire.Direct("nobody", "hi", "c1"))
    run_for(clock, WAIT_SECONDS * 0.9)
    assert alice.of(wire.Error) == []
    run_for(clock, WAIT_SECONDS * 0.2)
    assert [(e.code, e.cid) for e in alice.of(wire.Error)] == [("unknown_user", "c1")]


def test_lines_held_for_a_name_go_in_the_order_sent_and_later_ones_wait_behind(clock):
    known = {}
    told = []
    arrivals = Arrivals(clock, known.get)
    arrivals.hold("s", "bob", lambda found: told.append((1, found)))
    known["bob"] = "bob's session"
    assert arrivals.waits("s", "bob")  # a next line waits behind the first
    arrivals.hold("s", "bob", lambda found: told.append((2, found)))
    arrivals.hold("s", "carol", lambda found: told.append((3, found)))
    arrivals.changed()
    assert told == [(1, "bob's session"), (2, "bob's session")]
    assert not arrivals.waits("s", "bob")
    clock.advance(WAIT_SECONDS)
    assert told[-1] == (3, None)
