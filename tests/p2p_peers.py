"""Peers of a swarm over real loopback connections, as the peer tests
start them: a seeder of a file of random bytes, a downloader, and the
connection the server would have introduced."""

import os
import secrets

from twisted.internet import defer, reactor

from spchat.p2p import peer
from spchat.p2p.manifest import MIN_PIECE_SIZE, build_manifest
from spchat.p2p.storage import Download
from spchat.p2p.swarm import SeedFile, Swarm

PIECE = MIN_PIECE_SIZE * 4  # 64 KiB: two blocks a piece


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


def downloading(tmp_path, manifest):
    download = Download(tmp_path / "downloads", manifest)
    done = defer.Deferred()
    swarm = Swarm(reactor, manifest, download=download,
                  on_complete=lambda: done.callback(None))
    return swarm, download, done
