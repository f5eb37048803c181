"""A shared file's disk work stays off the reactor thread: a slow disk does
not stall the chat, a peer that asks much and reads nothing costs a few
blocks, and closing neither hangs on the disk nor touches the file after."""

import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from spchat.p2p import peer, peerwire, swarm as swarm_mod
from spchat.p2p.diskqueue import DiskClosed, DiskQueue
from spchat.p2p.manifest import Manifest
from spchat.p2p.storage import Download
from spchat.p2p.swarm import SeedFile

from conftest import connect_client, wait_until
from p2p_peers import PIECE, Seeder, connect, downloading, finished, shared_file

MAIN = threading.main_thread()


@pytest.fixture
def shared(tmp_path):
    return shared_file(tmp_path)


@pytest.fixture
def big_shared(tmp_path):
    """16 MiB: far more than the buffers between two peers hold."""
    return shared_file(tmp_path, 16 * 1024 * 1024, 16 * PIECE)


@pytest.fixture
def disk_calls(monkeypatch):
    """Every call of the blocking file functions: (name, thread, time)."""
    calls = []

    def record(cls, name):
        real = getattr(cls, name)

        def recorded(*args, **kwargs):
            calls.append((f"{cls.__name__}.{name}", threading.current_thread(),
                          time.monotonic()))
            return real(*args, **kwargs)

        monkeypatch.setattr(cls, name, recorded)

    for cls, name in [(SeedFile, "read_block"), (Download, "write_piece"),
                      (Download, "read_block"), (Download, "save_state"),
                      (Download, "finish"), (Manifest, "verify")]:
        record(cls, name)
    return calls


class SlowSeed(SeedFile):
    """A disk that takes ``delay`` seconds for every read."""

    delay = 0.2

    def read_block(self, index, offset, length):
        time.sleep(self.delay)
        return super().read_block(index, offset, length)


@pytest_twisted.inlineCallbacks
def test_the_reactor_thread_never_reads_writes_or_hashes_a_shared_file(tmp_path, shared,
                                                                      disk_calls):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    first, first_download, first_done = downloading(tmp_path / "a", manifest)
    # Then the first downloader serves what it got, from its download.
    relay = Seeder(path, manifest)
    yield relay.swarm.close()
    relay.swarm = first
    second, second_download, second_done = downloading(tmp_path / "b", manifest)
    try:
        yield connect(first, seeder, "seed")
        yield finished(first_done, first)
        yield first.download.save_state()
        yield connect(second, relay, "first")
        yield finished(second_done, second)
        saved = yield second.download.finish()
        assert saved.read_bytes() == path.read_bytes()
        called = {name for name, _, _ in disk_calls}
        assert called == {"SeedFile.read_block", "Download.write_piece", "Download.read_block",
                          "Download.save_state", "Download.finish", "Manifest.verify"}
        on_reactor = sorted({name for name, thread, _ in disk_calls if thread is MAIN})
        assert on_reactor == []
    finally:
        yield first.close()
        yield second.close()
        yield relay.port.stopListening()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_slow_disk_does_not_hold_up_chat_lines(tmp_path, shared, chat_server, pins):
    path, manifest = shared
    seeder = Seeder(path, manifest, source=SlowSeed(path, manifest))
    swarm, download, done = downloading(tmp_path, manifest)
    alice = yield connect_client(chat_server, pins, "alice")
    bob = yield connect_client(chat_server, pins, "bob")
    sent, latencies = {}, []
    bob.on_event = lambda e: (getattr(e, "text", "") in sent and latencies.append(
        time.monotonic() - sent[e.text]))
    try:
        yield connect(swarm, seeder, "slow")
        for i in range(10):  # 1 s: five slow reads, more than a pipeline's worth asked
            sent[f"line {i}"] = time.monotonic()
            alice.say(f"line {i}")
            yield task.deferLater(reactor, 0.1, lambda: None)
        yield wait_until(lambda: len(latencies) == 10)
        assert seeder.swarm.stats["downloader"].sent > 0  # it was serving meanwhile
        assert not swarm.complete
        assert max(latencies) < SlowSeed.delay * 0.75, latencies
    finally:
        yield swarm.close()
        yield seeder.stop()
        yield alice.logout()
        yield bob.logout()


class Greedy:
    """A downloader that asks for every block of the file at once, then
    reads nothing more."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.opened = defer.Deferred()

    def peer_open(self, conn):
        for piece in range(len(self.manifest.pieces)):
            _, length = self.manifest.piece_range(piece)
            for offset in range(0, length, swarm_mod.BLOCK):
                conn.send(peerwire.Request(piece, offset, min(swarm_mod.BLOCK,
                                                              length - offset)))
        conn.transport.pauseProducing()  # stop reading
        self.opened.callback(conn)

    def peer_message(self, conn, msg):
        pass

    def peer_closed(self, conn, reason):
        pass


@pytest_twisted.inlineCallbacks
def test_a_peer_that_asks_for_everything_and_reads_nothing_costs_a_few_blocks(
        tmp_path, big_shared, disk_calls):
    path, manifest = big_shared
    seeder = Seeder(path, manifest)
    greedy = Greedy(manifest)
    transfer, key = seeder.introduce()
    conn = yield peer.dial(reactor, "127.0.0.1", seeder.port.getHost().port,
                           lambda: peer.PeerConnection(reactor, True, transfer, key, greedy,
                                                       "greedy"), timeout=5)
    try:
        yield greedy.opened
        yield task.deferLater(reactor, 1.0, lambda: None)  # what it will read, it has
        reads = sum(1 for name, _, _ in disk_calls if name == "SeedFile.read_block")
        asked = manifest.size // swarm_mod.BLOCK
        held = seeder.conns[0].transport
        queued = sum(map(len, held._tempDataBuffer)) + len(held.dataBuffer)
        # A few blocks in the socket buffers and our send buffer, not 16 MiB.
        print(f"asked {asked} blocks, read {reads}, {queued} bytes queued")
        assert reads < asked // 2, (reads, asked)
        assert queued < 2 * 1024 * 1024, queued
    finally:
        conn.transport.abortConnection()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_closing_waits_only_for_the_read_under_way_and_reads_nothing_after(
        tmp_path, shared, disk_calls):
    path, manifest = shared
    SlowSeed.delay = 0.3
    seeder = Seeder(path, manifest, source=SlowSeed(path, manifest))
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        yield connect(swarm, seeder, "slow")
        yield wait_until(lambda: any(n == "SeedFile.read_block" for n, _, _ in disk_calls))
        started = time.monotonic()
        yield seeder.stop()  # with a read under way and more asked
        closed = time.monotonic()
        assert closed - started < 2 * SlowSeed.delay
        yield task.deferLater(reactor, 2 * SlowSeed.delay, lambda: None)
        assert not [n for n, _, when in disk_calls if n == "SeedFile.read_block" and when > closed]
    finally:
        SlowSeed.delay = 0.2
        yield swarm.close()
        if not seeder.swarm.closed:
            yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_closed_queue_drops_the_jobs_not_started_and_closes_after_the_one_running():
    disk = DiskQueue(reactor)
    ran = []

    def job(name, seconds=0.0):
        time.sleep(seconds)
        ran.append((name, threading.current_thread() is not MAIN))
        return name

    first = disk.run(job, "first", 0.2)
    second = disk.run(job, "second")
    closed = disk.close(lambda: job("close"))
    later = disk.run(job, "later")
    assert (yield first) == "first"
    with pytest.raises(DiskClosed):
        yield second
    with pytest.raises(DiskClosed):
        yield later
    yield closed
    assert ran == [("first", True), ("close", True)]
