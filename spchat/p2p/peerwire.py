"""The peer protocol's messages: binary, small, and checked against the file.

One message per Noise transport message (each frame is already
authenticated): a type byte, then big-endian fields.

==========  ====  ===============================================
bitfield    1     the pieces the sender has, one bit each (MSB first)
have        2     piece
request     3     piece, offset, length
block       4     piece, offset, data
reject      5     piece, offset, length (will not send it)
cancel      6     piece, offset, length (no longer wanted)
==========  ====  ===============================================

Every field is bounds-checked against the manifest: a piece that does not
exist, a range outside its piece, a length of 0 or over MAX_BLOCK, spare
bits set in a bitfield, or trailing bytes are PeerWireError.  A block
longer than one Noise message cannot be sent, so MAX_BLOCK is 32 KiB
(the issue's "up to 64 KiB": 64 KiB of data plus a header would not fit
in one 65,535-byte Noise message).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from spchat.p2p.manifest import Manifest

MAX_BLOCK = 32 * 1024
_RANGE = struct.Struct(">BIII")  # type, piece, offset, length
_HAVE = struct.Struct(">BI")
_BLOCK_HEAD = struct.Struct(">BII")  # type, piece, offset

BITFIELD, HAVE, REQUEST, BLOCK, REJECT, CANCEL = range(1, 7)


class PeerWireError(ValueError):
    """A peer sent something no honest peer sends: close the connection."""


@dataclass(frozen=True)
class Bitfield:
    have: frozenset[int]


@dataclass(frozen=True)
class Have:
    piece: int


@dataclass(frozen=True)
class Request:
    piece: int
    offset: int
    length: int


@dataclass(frozen=True)
class Block:
    piece: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Reject:
    piece: int
    offset: int
    length: int


@dataclass(frozen=True)
class Cancel:
    piece: int
    offset: int
    length: int


_RANGE_TYPES = {REQUEST: Request, REJECT: Reject, CANCEL: Cancel}
_TYPE_OF = {Request: REQUEST, Reject: REJECT, Cancel: CANCEL}


def encode(msg, pieces: int) -> bytes:
    """Bytes for one message; ``pieces`` is the file's piece count."""
    if isinstance(msg, Bitfield):
        bits = bytearray((pieces + 7) // 8)
        for i in msg.have:
            if not 0 <= i < pieces:
                raise ValueError(f"piece {i} of {pieces}")
            bits[i // 8] |= 0x80 >> (i % 8)
        return bytes([BITFIELD]) + bytes(bits)
    if isinstance(msg, Have):
        return _HAVE.pack(HAVE, msg.piece)
    if isinstance(msg, Block):
        return _BLOCK_HEAD.pack(BLOCK, msg.piece, msg.offset) + msg.data
    kind = _TYPE_OF.get(type(msg))
    if kind is None:
        raise TypeError(f"not a peer message: {msg!r}")
    return _RANGE.pack(kind, msg.piece, msg.offset, msg.length)


def _check_range(manifest: Manifest, piece: int, offset: int, length: int) -> None:
    if not 0 <= piece < len(manifest.pieces):
        raise PeerWireError(f"piece {piece} does not exist (the file has "
                            f"{len(manifest.pieces)})")
    _, piece_length = manifest.piece_range(piece)
    if not 0 < length <= MAX_BLOCK:
        raise PeerWireError(f"a block is 1 to {MAX_BLOCK} bytes, not {length}")
    if offset + length > piece_length:
        raise PeerWireError(f"bytes {offset}-{offset + length} are outside piece {piece} "
                            f"({piece_length} bytes)")


def decode(data: bytes, manifest: Manifest):
    """One message from a peer, checked against ``manifest``."""
    if not data:
        raise PeerWireError("an empty message")
    kind, pieces = data[0], len(manifest.pieces)
    if kind == BITFIELD:
        bits = data[1:]
        if len(bits) != (pieces + 7) // 8:
            raise PeerWireError(f"a bitfield for {pieces} pieces is {(pieces + 7) // 8} bytes")
        have = frozenset(i for i in range(pieces) if bits[i // 8] & (0x80 >> (i % 8)))
        spare = pieces % 8
        if spare and bits[-1] & (0xFF >> spare):
            raise PeerWireError("spare bits of a bitfield must be zero")
        return Bitfield(have)
    if kind == HAVE:
        if len(data) != _HAVE.size:
            raise PeerWireError("a have message is 5 bytes")
        _, piece = _HAVE.unpack(data)
        if not 0 <= piece < pieces:
            raise PeerWireError(f"piece {piece} does not exist (the file has {pieces})")
        return Have(piece)
    if kind == BLOCK:
        if len(data) <= _BLOCK_HEAD.size:
            raise PeerWireError("a block message carries at least one byte")
        _, piece, offset = _BLOCK_HEAD.unpack_from(data)
        block = data[_BLOCK_HEAD.size:]
        _check_range(manifest, piece, offset, len(block))
        return Block(piece, offset, bytes(block))
    cls = _RANGE_TYPES.get(kind)
    if cls is None:
        raise PeerWireError(f"unknown message type {kind}")
    if len(data) != _RANGE.size:
        raise PeerWireError(f"a {cls.__name__.lower()} message is {_RANGE.size} bytes")
    _, piece, offset, length = _RANGE.unpack(data)
    _check_range(manifest, piece, offset, length)
    return cls(piece, offset, length)
