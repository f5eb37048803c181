"""A download on disk: verified pieces only, resumable after a restart.

The file grows as ``NAME.part`` inside the download directory, next to
``NAME.part.state`` (which pieces are in, for which file id).  A piece is
checked against the manifest before it is written; the state is replaced
atomically (temporary file, fsync, rename), so a crash leaves the old state
or the new one, never half of one.  When the state is missing, damaged, or
for another file, the pieces already on disk are hashed again instead of
trusted.  When every piece is in, the file is renamed to its own name (or
``NAME (1)``, ... if that is taken).

Every call blocks on the disk: the swarm makes them in a worker thread,
one at a time, through ``ondisk.DownloadOnDisk``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path

from spchat.p2p.manifest import Manifest

PART_SUFFIX = ".part"
STATE_SUFFIX = ".part.state"


class StorageError(Exception):
    """Something the user must be told in one line (disk full, bad piece)."""


def inside(directory: Path, name: str) -> Path:
    """``directory / name``, refusing anything that would land elsewhere."""
    directory = Path(directory).resolve()
    path = (directory / name).resolve()
    if path.parent != directory:
        raise StorageError(f"{name!r} is not a plain file name inside {directory}")
    return path


class Download:
    def __init__(self, directory: Path, manifest: Manifest):
        self.manifest = manifest
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory.resolve()
        self.part = inside(self.directory, manifest.name + PART_SUFFIX)
        self.state_path = inside(self.directory, manifest.name + STATE_SUFFIX)
        fresh = not self.part.exists()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o600)
        self._fd: int | None = fd
        try:  # two downloads of one name (another file, or a second run) must not mix
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._fd = None
            raise StorageError(f"{self.part} is being written by another download") from None
        if os.fstat(fd).st_size != manifest.size:
            os.ftruncate(fd, manifest.size)
        self.have: set[int] = set() if fresh else self._recover()

    # --- what is on disk ----------------------------------------------------------

    def _recover(self) -> set[int]:
        """The pieces of an earlier run: those the state lists, if it is for
        this file and every one still verifies, plus any unlisted piece that
        hashes right (written after the last save, before a crash); in doubt,
        whatever hashes right."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
            listed = set(state["have"]) if state.get("file_id") == self.manifest.file_id else None
        except (OSError, ValueError, KeyError, TypeError):
            listed = None
        pieces = range(len(self.manifest.pieces))
        if listed is not None and all(isinstance(i, int) for i in listed):
            if all(0 <= i < len(pieces) and self._verifies(i) for i in listed):
                return listed | {i for i in pieces if i not in listed and self._verifies(i)}
        return {i for i in pieces if self._verifies(i)}

    @property
    def _file(self) -> int:
        """The part file's descriptor: a closed download is used no more."""
        if self._fd is None:
            raise StorageError(f"{self.part} is closed")
        return self._fd

    def _verifies(self, index: int) -> bool:
        offset, length = self.manifest.piece_range(index)
        return self.manifest.verify(index, os.pread(self._file, length, offset))

    def missing(self) -> set[int]:
        return set(range(len(self.manifest.pieces))) - self.have

    @property
    def complete(self) -> bool:
        return not self.missing()

    # --- writing and reading ----------------------------------------------------------

    def write_piece(self, index: int, data: bytes, verified: bool = False) -> None:
        """Store a whole piece, if and only if it is the right one
        (``verified``: the caller has just hashed it)."""
        if not verified and not self.manifest.verify(index, data):
            raise StorageError(f"piece {index} does not match its hash: not written")
        offset, _ = self.manifest.piece_range(index)
        try:
            written = os.pwrite(self._file, data, offset)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageError(f"the disk is full writing {self.part}; the partial "
                                   f"file is kept, free some space and start again") from None
            raise StorageError(f"cannot write {self.part}: {e.strerror or e}") from None
        self.have.add(index)

    def read_block(self, index: int, offset: int, length: int) -> bytes:
        """Part of a piece we have (checked when it was written)."""
        if index not in self.have:
            raise StorageError(f"piece {index} is not here yet")
        return os.pread(self._file, length, self.manifest.piece_range(index)[0] + offset)

    def save_state(self) -> None:
        """Which pieces are in: replaced atomically (temp, fsync, rename)."""
        os.fsync(self._file)  # the pieces first, then the state that lists them
        body = json.dumps({"file_id": self.manifest.file_id, "have": sorted(self.have)})
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def finish(self) -> Path:
        """Every piece is in: the file gets its own name; returns it."""
        if not self.complete:
            raise StorageError(f"{len(self.missing())} pieces are still missing")
        os.fsync(self._file)
        os.close(self._file)
        self._fd = None
        stem, dot, ext = self.manifest.name.rpartition(".")
        if not stem:
            stem, dot, ext = self.manifest.name, "", ""
        final, n = inside(self.directory, self.manifest.name), 0
        while final.exists():
            n += 1
            final = inside(self.directory, f"{stem} ({n}){dot}{ext}")
        os.replace(self.part, final)
        self.state_path.unlink(missing_ok=True)
        return final

    def close(self) -> None:
        """Save the state and close; on a full disk the state stays as it
        was (a resume then hashes what is on disk)."""
        if self._fd is not None:
            try:
                self.save_state()
            except OSError:
                pass
            finally:
                os.close(self._fd)
                self._fd = None
