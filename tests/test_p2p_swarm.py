"""Peers over real loopback connections, without a server: the peer
handshake and the swarm's rules (several seeders, bad data, hostile peers)."""

import hashlib
import os
import secrets

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import basic, portforward

from spchat.p2p import peer, peerwire, swarm as swarm_mod
from spchat.p2p.storage import Download
from spchat.p2p.tags import relay_name
from spchat.p2p.swarm import SeedFile, Swarm

from conftest import wait_until
from p2p_peers import (DOWNLOAD_SECONDS, PIECE, HeldDisk, Seeder, connect, downloading, finished,
                       shared_file)


class FlippingSeed(SeedFile):
    """Serves pieces with one byte changed: a broken or hostile peer."""

    def read_block(self, index, offset, length):
        data = bytearray(super().read_block(index, offset, length))
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


@pytest.fixture
def shared(tmp_path):
    return shared_file(tmp_path)


@pytest_twisted.inlineCallbacks
def test_three_seeders_each_give_a_share_and_the_file_is_whole(tmp_path, shared):
    path, manifest = shared
    seeders = [Seeder(path, manifest) for _ in range(3)]
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        for i, seeder in enumerate(seeders):
            yield connect(swarm, seeder, f"seed{i}")
        yield finished(done, swarm)
        saved = download.finish()
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(
            path.read_bytes()).digest()
        received = {name: s.received for name, s in swarm.stats.items()}
        assert sum(received.values()) >= manifest.size
        assert all(r > 0 for r in received.values()), received
    finally:
        yield swarm.close()
        for seeder in seeders:
            yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_peer_with_the_wrong_key_cannot_connect(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    swarm, download, _ = downloading(tmp_path, manifest)
    try:
        with pytest.raises(peer.PeerFailed):
            yield connect(swarm, seeder, "seed", key=b"\x01" * 32)
        assert not download.have
        assert not seeder.swarm.peers  # nothing was served
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_peer_the_server_did_not_introduce_is_turned_away(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    swarm, _, _ = downloading(tmp_path, manifest)
    try:
        with pytest.raises(peer.PeerFailed, match="hung up before the handshake"):
            yield peer.dial(reactor, "127.0.0.1", seeder.port.getHost().port,
                            lambda: peer.PeerConnection(reactor, True, "ab" * 16,
                                                        b"\x02" * 32, swarm, "x"),
                            timeout=5)
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_bad_pieces_are_fetched_again_elsewhere_and_the_flipper_is_dropped(tmp_path, shared):
    path, manifest = shared
    honest = Seeder(path, manifest)
    flipper = Seeder(path, manifest, source=FlippingSeed(path, manifest))
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        yield connect(swarm, flipper, "flipper")
        yield connect(swarm, honest, "honest")
        yield finished(done, swarm)
        saved = download.finish()
        assert saved.read_bytes() == path.read_bytes()
        bad = swarm.stats["flipper"]
        assert bad.bad_pieces == swarm_mod.MAX_STRIKES
        assert "did not match" in bad.dropped and not bad.connected
        assert "flipper" in swarm.banned
        assert swarm.stats["honest"].bad_pieces == 0
    finally:
        yield swarm.close()
        yield honest.stop()
        yield flipper.stop()


@pytest_twisted.inlineCallbacks
def test_a_good_copy_that_comes_while_a_bad_one_is_hashed_is_not_lost(tmp_path, shared):
    # Under load, the flipper's pieces wait in the disk queue while the
    # honest seeder's copies of the same pieces come in (the endgame, or
    # once the flipper is dropped): those copies must be kept, or asked for
    # again, never thrown away with the piece still counted as on its way.
    path, manifest = shared
    pieces = len(manifest.pieces)
    honest = Seeder(path, manifest)
    flipper = Seeder(path, manifest, source=FlippingSeed(path, manifest))
    disk = HeldDisk(reactor)
    swarm, download, done = downloading(tmp_path, manifest, disk=disk)
    try:
        yield connect(swarm, flipper, "flipper")
        yield wait_until(lambda: disk.waiting == pieces)  # every piece, bad, waits
        yield connect(swarm, honest, "honest")
        yield wait_until(lambda: swarm.stats["honest"].received == manifest.size)
        disk.release()
        yield finished(done, swarm, seconds=10)
        assert (yield swarm.download.finish()).read_bytes() == path.read_bytes()
        bad = swarm.stats["flipper"]
        assert bad.bad_pieces == swarm_mod.MAX_STRIKES  # none counted once it was dropped
        assert "did not match" in bad.dropped and "flipper" in swarm.banned
        assert swarm.stats["honest"].received == manifest.size  # nothing fetched twice
    finally:
        yield swarm.close()
        yield honest.stop()
        yield flipper.stop()


class Hostile(Swarm):
    """A seeder that answers the bitfield with a block nobody asked for."""

    def peer_open(self, conn):
        super().peer_open(conn)
        conn.send(peerwire.Block(0, 100, b"x" * 100))  # no request starts there


@pytest_twisted.inlineCallbacks
def test_an_unsolicited_block_closes_the_connection(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    seeder.swarm = Hostile(reactor, manifest, SeedFile(path, manifest))
    swarm, download, _ = downloading(tmp_path, manifest)
    try:
        yield connect(swarm, seeder, "hostile")
        yield wait_until(lambda: "hostile" in swarm.stats and not swarm.stats["hostile"].connected)
        assert "nobody asked for" in swarm.stats["hostile"].dropped
        assert 0 not in download.have
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_an_out_of_range_request_closes_the_connection(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    closed = defer.Deferred()

    class Asker:
        manifest = seeder.swarm.manifest

        def peer_open(self, conn):
            # Bypass the encoder's checks: piece 0, bytes past its end.
            conn.sendString(conn._send.encrypt_with_ad(
                b"", peerwire._RANGE.pack(peerwire.REQUEST, 0, PIECE - 10, 100)))

        def peer_message(self, conn, msg):
            pass

        def peer_closed(self, conn, reason):
            closed.callback(reason)

    transfer, key = seeder.introduce()
    try:
        yield peer.dial(reactor, "127.0.0.1", seeder.port.getHost().port,
                        lambda: peer.PeerConnection(reactor, True, transfer, key, Asker(), "a"),
                        timeout=5)
        yield closed
        assert seeder.swarm.stats["downloader"].sent == 0
    finally:
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_silent_peer_is_dropped_and_its_pieces_go_to_another(tmp_path, shared, monkeypatch):
    path, manifest = shared
    monkeypatch.setattr(swarm_mod, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(swarm_mod, "TICK_SECONDS", 0.1)

    class Mute(Swarm):
        def _requested(self, peer_state, req):
            pass  # never answers

    mute = Seeder(path, manifest)
    mute.swarm = Mute(reactor, manifest, SeedFile(path, manifest))
    honest = Seeder(path, manifest)
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        yield connect(swarm, mute, "mute")
        yield wait_until(lambda: not swarm.stats["mute"].connected, timeout=5)
        assert "no answer for 0.5 s" in swarm.stats["mute"].dropped
        assert not swarm.picker._fetching  # its pieces are free for others
        yield connect(swarm, honest, "honest")
        yield finished(done, swarm)
        assert download.finish().read_bytes() == path.read_bytes()
    finally:
        yield swarm.close()
        yield mute.stop()
        yield honest.stop()


@pytest_twisted.inlineCallbacks
def test_the_upload_cap_paces_a_seeder(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest, upload_bps=2 * 1024 * 1024)
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        started = reactor.seconds()
        yield connect(swarm, seeder, "slow")
        yield finished(done, swarm)
        took = reactor.seconds() - started
        # 2.6 MB at 2 MiB/s, with one second's burst: over half a second.
        assert took > (manifest.size - 2 * 1024 * 1024) / (2 * 1024 * 1024) * 0.8
        assert download.finish().read_bytes() == path.read_bytes()
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_downloader_serves_the_pieces_it_already_has(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest, upload_bps=1024 * 1024)  # about 2.5 s for the file
    first, first_download, first_done = downloading(tmp_path / "a", manifest)
    second, second_download, second_done = downloading(tmp_path / "b", manifest)
    # The first downloader takes connections too, like every client.
    intros = peer.Introductions(reactor, wait=0.5)
    listener = reactor.listenTCP(0, peer.ListenFactory(reactor, intros), interface="127.0.0.1")
    try:
        yield connect(first, seeder, "seed")
        yield wait_until(lambda: len(first.download.have) >= 5, timeout=10)
        transfer, key = secrets.token_hex(16), secrets.token_bytes(32)
        intros.add(transfer, key, first, "second")
        yield peer.dial(reactor, "127.0.0.1", listener.getHost().port,
                        lambda: peer.PeerConnection(reactor, True, transfer, key, second, "first"),
                        timeout=5)
        # Only the first downloader is connected to the second one.
        yield wait_until(lambda: second.stats["first"].received > 0, timeout=10)
        assert not first.complete  # it served while still downloading
        yield finished(first_done, first)
        yield finished(second_done, second)
        assert second_download.finish().read_bytes() == path.read_bytes()
        assert first.stats["second"].sent == manifest.size
    finally:
        yield first.close()
        yield second.close()
        yield listener.stopListening()
        yield seeder.stop()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB file system (tmpfs), for a disk that fills up."""
    import subprocess

    where = tmp_path / "tiny"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
            capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a small file system")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


@pytest_twisted.inlineCallbacks
def test_a_full_disk_stops_the_download_with_one_line_and_keeps_the_part(tmp_path, shared,
                                                                         tiny_disk):
    path, manifest = shared  # 2.6 MB: more than the disk holds
    seeder = Seeder(path, manifest)
    download = Download(tiny_disk, manifest)
    failed = defer.Deferred()
    swarm = Swarm(reactor, manifest, download=download,
                  on_failed=failed.callback)
    try:
        yield connect(swarm, seeder, "seed")
        reason = yield failed.addTimeout(DOWNLOAD_SECONDS, reactor)
        assert reason.startswith("the disk is full writing ") and "partial file is kept" in reason
        assert "\n" not in reason
        yield swarm.close()  # the state cannot be saved either: no exception
        assert 0 < len(download.have) < len(manifest.pieces)
        part = (tiny_disk / "shared.bin.part").read_bytes()
        for i in download.have:  # what was written is good
            offset, length = manifest.piece_range(i)
            assert manifest.verify(i, part[offset:offset + length])
        yield wait_until(lambda: not swarm.peers)  # it hung up on its peers
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_peer_that_comes_before_the_servers_introduction_is_kept_waiting(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    swarm, download, done = downloading(tmp_path, manifest)
    transfer, key = secrets.token_hex(16), secrets.token_bytes(32)
    try:
        # Its first two frames (the transfer id, the handshake) arrive
        # together, before the holder has heard of the transfer.
        opening = peer.dial(reactor, "127.0.0.1", seeder.port.getHost().port,
                            lambda: peer.PeerConnection(reactor, True, transfer, key, swarm,
                                                        "seed"), timeout=5)
        yield task.deferLater(reactor, 0.2, lambda: None)
        assert not opening.called
        seeder.intros.add(transfer, key, seeder.swarm, "downloader")
        yield opening
        yield finished(done, swarm)
        assert download.finish().read_bytes() == path.read_bytes()
        assert not seeder.intros._waiting  # nothing left behind
    finally:
        yield swarm.close()
        yield seeder.stop()


@pytest_twisted.inlineCallbacks
def test_a_seeder_whose_file_changed_on_disk_serves_only_pieces_that_still_match(tmp_path,
                                                                                  shared):
    path, manifest = shared
    copy = tmp_path / "copy.bin"
    copy.write_bytes(path.read_bytes())
    changed = Seeder(copy, manifest)
    with open(copy, "r+b") as f:  # edited after sharing: piece 5 is no longer that piece
        f.seek(5 * PIECE + 7)
        f.write(b"edited")
    honest = Seeder(path, manifest)
    swarm, download, done = downloading(tmp_path, manifest)
    try:
        yield connect(swarm, changed, "changed")
        everything_else = set(range(len(manifest.pieces))) - {5}
        yield wait_until(lambda: swarm.download.have == everything_else)
        yield task.deferLater(reactor, 0.2, lambda: None)
        # It refused piece 5 rather than send bad data, and no longer offers it.
        assert swarm.download.have == everything_else
        assert swarm.stats["changed"].bad_pieces == 0
        assert changed.swarm.source.have == everything_else
        yield connect(swarm, honest, "honest")
        yield finished(done, swarm)
        assert download.finish().read_bytes() == path.read_bytes()
    finally:
        yield swarm.close()
        yield changed.stop()
        yield honest.stop()


class _RecordingClient(portforward.ProxyClient):
    def dataReceived(self, data):
        self.peer.factory.seen += data
        super().dataReceived(data)


class _RecordingClientFactory(portforward.ProxyClientFactory):
    protocol = _RecordingClient


class _RecordingServer(portforward.ProxyServer):
    clientProtocolFactory = _RecordingClientFactory

    def dataReceived(self, data):
        self.factory.seen += data
        super().dataReceived(data)


class RecordingProxy(portforward.ProxyFactory):
    """Forwards to a port on 127.0.0.1 and keeps every byte that crosses,
    both ways: what an observer on the network sees."""

    protocol = _RecordingServer

    def __init__(self, port):
        super().__init__("127.0.0.1", port)
        self.seen = bytearray()


@pytest_twisted.inlineCallbacks
def test_an_observer_on_the_network_never_sees_the_transfer_id(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    proxy = RecordingProxy(seeder.port.getHost().port)
    listening = reactor.listenTCP(0, proxy, interface="127.0.0.1")
    swarm, download, done = downloading(tmp_path, manifest)
    transfer, key = seeder.introduce()
    try:
        yield peer.dial(reactor, "127.0.0.1", listening.getHost().port,
                        lambda: peer.PeerConnection(reactor, True, transfer, key, swarm, "seed"),
                        timeout=5)
        yield finished(done, swarm)
        seen = bytes(proxy.seen)
        assert len(seen) > manifest.size  # the whole transfer went through it
        for form in (transfer.encode(), transfer.upper().encode(), bytes.fromhex(transfer)):
            assert form not in seen
        assert download.finish().read_bytes() == path.read_bytes()
    finally:
        yield swarm.close()
        yield listening.stopListening()
        yield seeder.stop()


class OldDownloader(basic.Int32StringReceiver):
    """A spchat-p2p/1 downloader: it opened with the transfer id in clear."""

    def __init__(self, transfer):
        self.transfer = transfer

    def connectionMade(self):
        self.sendString(self.transfer.encode("ascii"))


@pytest_twisted.inlineCallbacks
def test_a_downloader_of_the_old_peer_wire_is_told_the_versions_differ(tmp_path, shared):
    path, manifest = shared
    seeder = Seeder(path, manifest)
    transfer, _ = seeder.introduce()
    try:
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                 seeder.port.getHost().port),
                              OldDownloader(transfer))
        yield wait_until(lambda: seeder.conns and seeder.conns[0].closing)
        reason = seeder.conns[0].reason
        assert "spchat-p2p/1" in reason and "spchat-p2p/2" in reason and "upgraded" in reason
        assert not seeder.swarm.peers
    finally:
        yield seeder.stop()


def test_the_relay_header_names_the_transfer_without_its_id():
    transfer, key = secrets.token_hex(16), secrets.token_bytes(32)
    header = peer.relay_header(transfer, key, "fetch")
    assert header == f"spchat-relay {relay_name(transfer, key)} fetch\n".encode()
    assert transfer.encode() not in header and bytes.fromhex(transfer) not in header
    # Another key, another name: the relay cannot be asked for it by guessing.
    assert relay_name(transfer, secrets.token_bytes(32)) != relay_name(transfer, key)
