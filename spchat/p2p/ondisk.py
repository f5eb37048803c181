"""The reactor's side of a shared file: what the swarm asks of the disk.

``SeedFile`` and ``Download`` block; these run their calls on the file's
``DiskQueue`` and answer with Deferreds.  Each keeps its own set of the
pieces it holds, touched on the reactor thread only (the blocking objects
keep theirs, touched in the worker only), so no set is shared by two
threads.
"""

from __future__ import annotations

from twisted.internet import defer

from spchat.p2p.diskqueue import DiskQueue
from spchat.p2p.storage import Download


class SeedOnDisk:
    """A whole file we serve (a ``SeedFile``)."""

    def __init__(self, disk: DiskQueue, seed):
        self.disk = disk
        self.seed = seed
        self.have = set(seed.have)

    def read_block(self, index: int, offset: int, length: int) -> defer.Deferred:
        """Bytes of a piece, or None if we cannot give it (anymore)."""
        if index not in self.have:
            return defer.succeed(None)
        d = self.disk.run(self.seed.read_block, index, offset, length)
        d.addCallback(self._read, index)
        return d

    def _read(self, block: bytes | None, index: int) -> bytes | None:
        if block is None:
            self.have.discard(index)  # changed on disk: no longer ours to give
        return block

    def shut(self) -> None:
        """Blocking: run as the queue's last job."""
        self.seed.close()


def _store(download: Download, index: int, data: bytes) -> bool:
    """In the worker: hash the piece, and write it only if it is the one."""
    if not download.manifest.verify(index, data):
        return False
    download.write_piece(index, data, verified=True)
    return True


class DownloadOnDisk:
    """A download under way (a ``Download``): what it holds is served too."""

    def __init__(self, disk: DiskQueue, download: Download):
        self.disk = disk
        self.download = download
        self.manifest = download.manifest
        self.have = set(download.have)

    def missing(self) -> set[int]:
        return set(range(len(self.manifest.pieces))) - self.have

    @property
    def complete(self) -> bool:
        return len(self.have) == len(self.manifest.pieces)

    def write_piece(self, index: int, data: bytes) -> defer.Deferred:
        """Hash and write a piece: True once it is written, False if it was
        not the right one (not written); StorageError if the disk failed."""
        d = self.disk.run(_store, self.download, index, data)
        d.addCallback(self._stored, index)
        return d

    def _stored(self, written: bool, index: int) -> bool:
        if written:
            self.have.add(index)
        return written

    def read_block(self, index: int, offset: int, length: int) -> defer.Deferred:
        if index not in self.have:
            return defer.succeed(None)
        return self.disk.run(self.download.read_block, index, offset, length)

    def save_state(self) -> defer.Deferred:
        return self.disk.run(self.download.save_state)

    def finish(self) -> defer.Deferred:
        """The file under its own name: a Deferred of its Path."""
        return self.disk.run(self.download.finish)

    def shut(self) -> None:
        """Blocking: run as the queue's last job (saves the state)."""
        self.download.close()
