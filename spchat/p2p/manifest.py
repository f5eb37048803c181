"""What a shared file is: its manifest, its id, and its pieces' hashes.

The manifest names the file, gives its size and piece size, and the SHA-256
of every piece.  The file id is the SHA-256 of the manifest's canonical JSON,
so a peer that claims a piece of file X can be checked against X's hashes
and nothing else.  A manifest from the network is checked field by field
before anything is derived from it, and the name it carries is made safe to
use as one file name inside a download directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from spchat import wire

PIECE_SIZE = 256 * 1024
MIN_PIECE_SIZE = 16 * 1024
MAX_PIECE_SIZE = 16 * 1024 * 1024
MAX_NAME_BYTES = 255
MAX_SHARE_BYTES = 4 * 1024 ** 3  # the default of CHAT_MAX_SHARE_BYTES
FALLBACK_NAME = "download"
# A manifest travels in one chat message (wire.MAX_MANIFEST_BYTES): a big
# file gets bigger pieces rather than more hashes.
MAX_PIECES = 512


class ManifestError(ValueError):
    """A manifest that cannot be trusted as it is; says what is wrong."""


def safe_name(name: str) -> str:
    """One file name that stays inside the download directory.

    Path separators (``/``, ``\\``) and NUL become ``_``; control characters
    are dropped; a name that is only dots (``.``, ``..``) or empty becomes
    ``download``; more than 255 bytes of UTF-8 is cut (keeping the
    extension when it is short).
    """
    name = unicodedata.normalize("NFC", str(name))
    name = "".join("_" if ch in "/\\\0" else ch for ch in name
                   if ch in "/\\\0" or unicodedata.category(ch)[0] != "C")
    name = name.strip().strip(".") if set(name.strip()) <= {"."} else name.strip()
    if not name:
        return FALLBACK_NAME
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        keep = f".{ext}" if dot and stem and len(ext.encode()) <= 16 else ""
        budget = MAX_NAME_BYTES - len(keep.encode())
        cut = name[: len(name) - len(keep)] if keep else name
        while len(cut.encode("utf-8")) > budget:
            cut = cut[:-1]
        name = cut + keep
    return name


def _count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ManifestError(f"{field} must be a whole number, 0 or more")
    return value


@dataclass(frozen=True)
class Manifest:
    name: str
    size: int
    piece_size: int
    pieces: tuple[bytes, ...]  # SHA-256 of each piece, in order

    def canonical(self) -> bytes:
        """The bytes the file id is the hash of: fixed key order, no spaces."""
        return json.dumps(
            {"name": self.name, "piece_size": self.piece_size,
             "pieces": [p.hex() for p in self.pieces], "size": self.size},
            ensure_ascii=False, separators=(",", ":"), sort_keys=True,
        ).encode("utf-8")

    @property
    def file_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def piece_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of piece ``index`` in the file."""
        if not 0 <= index < len(self.pieces):
            raise IndexError(f"piece {index} of {len(self.pieces)}")
        offset = index * self.piece_size
        return offset, min(self.piece_size, self.size - offset)

    def verify(self, index: int, data: bytes) -> bool:
        """Is ``data`` exactly piece ``index``?"""
        offset, length = self.piece_range(index)
        return len(data) == length and hashlib.sha256(data).digest() == self.pieces[index]

    @classmethod
    def parse(cls, data: bytes, max_share_bytes: int = MAX_SHARE_BYTES) -> Manifest:
        """A manifest from the network, checked; its name made safe."""
        try:
            body = wire.loads(data, "manifest")
        except wire.WireError as e:
            raise ManifestError(str(e)) from None
        if not isinstance(body, dict):
            raise ManifestError("a manifest is a JSON object")
        name, size = body.get("name"), body.get("size")
        piece_size, pieces = body.get("piece_size"), body.get("pieces")
        if not isinstance(name, str) or len(name) > 4 * MAX_NAME_BYTES:
            raise ManifestError("name must be a text of reasonable length")
        size, piece_size = _count("size", size), _count("piece_size", piece_size)
        if size > max_share_bytes:
            raise ManifestError(f"the file is {size} bytes; shares are limited to "
                                f"{max_share_bytes} bytes")
        if not (MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE
                and piece_size & (piece_size - 1) == 0):
            raise ManifestError(f"piece_size must be a power of two from {MIN_PIECE_SIZE} "
                                f"to {MAX_PIECE_SIZE}")
        expected = math.ceil(size / piece_size)
        if not isinstance(pieces, list) or len(pieces) != expected:
            raise ManifestError(f"a file of {size} bytes in pieces of {piece_size} has "
                                f"{expected} piece hashes")
        hashes = []
        for piece in pieces:
            if not (isinstance(piece, str) and len(piece) == 64):
                raise ManifestError("each piece hash is 64 hex digits")
            try:
                hashes.append(bytes.fromhex(piece))
            except ValueError:
                raise ManifestError("each piece hash is 64 hex digits") from None
        return cls(safe_name(name), size, piece_size, tuple(hashes))


def piece_size_for(size: int) -> int:
    """PIECE_SIZE, doubled until the file has at most MAX_PIECES pieces."""
    piece_size = PIECE_SIZE
    while piece_size < MAX_PIECE_SIZE and math.ceil(size / piece_size) > MAX_PIECES:
        piece_size *= 2
    return piece_size


def build_manifest(path: Path, piece_size: int | None = None,
                   name: str | None = None) -> Manifest:
    """Hash a file piece by piece (blocking: run it off the reactor thread,
    see ``hash_file``).  The piece size is ``piece_size_for`` the file's
    size unless given."""
    path = Path(path)
    if piece_size is None:
        piece_size = piece_size_for(path.stat().st_size)
    if not MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE or piece_size & (piece_size - 1):
        raise ValueError(f"piece size {piece_size} is not a power of two from "
                         f"{MIN_PIECE_SIZE} to {MAX_PIECE_SIZE}")
    pieces, size = [], 0
    with path.open("rb") as f:
        while True:
            block = f.read(piece_size)
            if not block:
                break
            size += len(block)
            pieces.append(hashlib.sha256(block).digest())
    return Manifest(safe_name(name if name is not None else path.name), size, piece_size,
                    tuple(pieces))


def hash_file(reactor, path: Path, piece_size: int | None = None):
    """``build_manifest`` in the reactor's thread pool: a Deferred Manifest."""
    from twisted.internet import threads

    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), build_manifest,
                                     path, piece_size)
