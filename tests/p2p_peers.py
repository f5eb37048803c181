"""Peers of a swarm over real loopback connections, as the peer tests
start them: a seeder of a file of random bytes, a downloader, and the
connection the server would have introduced."""

import os
import secrets

from twisted.internet import defer, reactor

from spchat.p2p import peer
from spchat.p2p.diskqueue import DiskQueue
from spchat.p2p.manifest import MIN_PIECE_SIZE, build_manifest
from spchat.p2p.storage import Download
from spchat.p2p.swarm import SeedFile, Swarm

PIECE = MIN_PIECE_SIZE * 4  # 64 KiB: two blocks a piece
DOWNLOAD_SECONDS = 30.0  # a download of the tests' files that takes longer is stuck


class Seeder:
    """A peer that holds the whole file and takes connections."""

    def __init__(self, path, manifest, source=None, upload_bps=0):
        self.swarm = Swarm(reactor, manifest, source or SeedFile(path, manifest),
                           upload_bps=upload_bps)
        self.intros = peer.Introductions(reactor, wait=0.5)
        self.factory = peer.ListenFactory(reactor, self.intros)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.conns = []  # its side of each peer connection
        build = self.factory.buildProtocol
        self.factory.buildProtocol = lambda addr: self._kept(build(addr))

    def _kept(self, conn):
        self.conns.append(conn)
        return conn

    def introduce(self, name="downloader"):
        transfer, key = secrets.token_hex(16), secrets.token_bytes(32)
        self.intros.add(transfer, key, self.swarm, name)
        return transfer, key

    def stop(self):
        return defer.gatherResults([self.swarm.close(), self.port.stopListening()])


def shared_file(tmp_path, size=40 * PIECE + 1234, piece_size=PIECE):
    """A file of random bytes and its manifest."""
    path = tmp_path / "shared.bin"
    path.write_bytes(os.urandom(size))
    return path, build_manifest(path, piece_size)


def connect(downloader: Swarm, seeder: Seeder, name: str, key=None):
    transfer, real_key = seeder.introduce()
    return peer.dial(reactor, "127.0.0.1", seeder.port.getHost().port,
                     lambda: peer.PeerConnection(reactor, True, transfer, key or real_key,
                                                 downloader, name),
                     timeout=5)


def downloading(tmp_path, manifest, disk=None):
    """A downloader's swarm, its Download, and a Deferred fired when it is
    complete (see ``finished``)."""
    download = Download(tmp_path / "downloads", manifest)
    done = defer.Deferred()
    swarm = Swarm(reactor, manifest, download=download, disk=disk,
                  on_complete=lambda: done.called or done.callback(None))
    return swarm, download, done


def finished(done, swarm: Swarm, seconds=DOWNLOAD_SECONDS):
    """``done`` (of ``downloading``), failing with what it was waiting for if the
    download is not complete within ``seconds``: a stuck download fails
    the test instead of hanging it."""

    def stuck(result, timeout):
        have = len(swarm.picker.have) if swarm.picker else len(swarm.manifest.pieces)
        peers = {conn.name: sorted(state.asked) for conn, state in swarm.peers.items()}
        raise AssertionError(
            f"the download is not complete after {timeout:g} s: {have} of "
            f"{len(swarm.manifest.pieces)} pieces, blocks asked of each peer {peers}, "
            f"stats {swarm.stats}")

    return done.addTimeout(seconds, reactor, onTimeoutCancel=stuck)


class HeldDisk(DiskQueue):
    """A file's disk queue whose jobs wait until ``release()``: a disk (or
    a machine) slow at the worst moment."""

    def __init__(self, reactor):
        super().__init__(reactor)
        self.held = True

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def release(self) -> None:
        self.held = False
        self._next()

    def _next(self) -> None:
        if not self.held:
            super()._next()

    def close(self, last=None):
        self.held = False  # closing runs the last job
        return super().close(last)
