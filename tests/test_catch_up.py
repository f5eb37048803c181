"""History and replays go at the pace the client reads: a part, then a
wait until the connection drained; live lines meanwhile come after, once."""

from spchat import wire
from spchat.server.catch_up import MAX_WAITING_JOBS, PART_BYTES, wire_size
from spchat.server.core import ChatCore, Limits
from spchat.server.records import Record

from helpers import MemoryClient, login

TEXT = "y" * 1500
PER_PART = -(-PART_BYTES // wire_size(Record(0, 0, "a", "a", TEXT, "c")))


class SlowReader(MemoryClient):
    """A connection that drains only when the test says so."""

    def __init__(self):
        super().__init__()
        self.waiting = []

    def when_drained(self, then):
        self.waiting.append(then)

    def drain(self) -> bool:
        waiting, self.waiting = self.waiting, []
        for then in waiting:
            then()
        return bool(waiting)


def make_core(clock):
    return ChatCore(clock, Limits(flood_burst=100000, flood_rate=100000.0,
                                  flood_queue=100000))


def said(core, count, text=TEXT):
    """A core where alice said ``count`` lines in #lobby; her link."""
    alice, _ = login(core, "alice")
    for i in range(count):
        core.receive(alice, wire.Say(text if text else f"m{i}", f"c{i}"))
    return alice


def lines(conn):
    return [m for m in conn.sent if isinstance(m, wire.RoomMessage)]


def come_back(core, name, seen=0):
    conn = SlowReader()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.Login(name, positions=(("#lobby", seen),), since=0))
    return link, conn


def test_a_replay_goes_a_part_at_a_time_and_live_lines_follow_it_once(clock):
    core = make_core(clock)
    alice = said(core, 300)
    _, slow = come_back(core, "bob")
    assert len(lines(slow)) == 0  # nothing before the connection says it drained
    assert slow.drain()
    assert len(lines(slow)) == PER_PART
    core.receive(alice, wire.Say("live 1", "l1"))  # while bob catches up
    assert len(lines(slow)) == PER_PART
    while slow.drain():
        core.receive(alice, wire.Say(f"live {len(slow.sent)}", f"x{len(slow.sent)}"))
    seqs = [m.seq for m in lines(slow)]
    assert seqs == list(range(1, seqs[-1] + 1))  # in order, none missing, none twice
    assert not any(m.history for m in lines(slow))
    assert not alice.session.catching_up and not core.by_key["bob"].catching_up
    core.receive(alice, wire.Say("now live", "n"))  # caught up: straight through
    assert lines(slow)[-1].text == "now live"


def test_history_on_join_comes_before_the_lines_said_meanwhile(clock):
    core = make_core(clock)
    alice, _ = login(core, "alice")
    for i in range(5):
        core.receive(alice, wire.Say(f"old {i}", f"c{i}"))
    conn = SlowReader()
    link = core.open_link(conn, "127.0.0.1:9")
    core.receive(link, wire.Login("bob"))
    core.receive(alice, wire.Say("new", "n1"))
    assert [m.text for m in lines(conn)] == []
    while conn.drain():
        pass
    got = [(m.text, m.history) for m in lines(conn)]
    assert got == [(f"old {i}", True) for i in range(5)] + [("new", False)]
    kinds = [type(m).__name__ for m in conn.sent if isinstance(m, (wire.RoomMessage,
                                                                   wire.HistoryEnd))]
    assert kinds.index("HistoryEnd") == 5  # its end before the newer line


def test_history_requests_wait_their_turn_and_too_many_are_refused(clock):
    core = make_core(clock)
    said(core, 10, text="")
    _, slow = come_back(core, "bob", seen=10)
    link = core.by_key["bob"].link
    for _ in range(MAX_WAITING_JOBS + 5):
        core.receive(link, wire.HistoryRequest(11, 5, "#lobby"))
    refused = [e for e in slow.of(wire.Error) if e.code == "flood"]
    assert refused and "wait for you to read" in refused[0].text
    assert slow.of(wire.HistoryEnd) == []
    while slow.drain():
        pass
    assert len(slow.of(wire.HistoryEnd)) == MAX_WAITING_JOBS - 2  # the replays took two


def test_a_drop_while_catching_up_drops_the_reads_and_a_logout_still_ends(clock):
    core = make_core(clock)
    said(core, 300)
    link, slow = come_back(core, "bob")
    session = link.session
    core.receive(link, wire.Logout())
    assert slow.closed is None  # the replay asked for first is answered first
    core.link_lost(link)
    assert session.reads == 0 and session.catch_up is None
    assert session.state.name == "OFFLINE"  # the logout it asked for


def test_a_room_left_while_its_replay_waits_sends_no_more_of_it(clock):
    core = make_core(clock)
    said(core, 300)
    link, slow = come_back(core, "bob")
    assert slow.drain()
    sent = len(lines(slow))
    core.receive(link, wire.Part("lobby"))
    while slow.drain():
        pass
    assert len(lines(slow)) == sent
    assert not link.session.catching_up
