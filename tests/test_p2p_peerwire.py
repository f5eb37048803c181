"""The peer protocol's messages: round trips, and every bound enforced."""

import struct

import pytest

from spchat import noise
from spchat.p2p.manifest import MIN_PIECE_SIZE, Manifest
from spchat.p2p.peerwire import (MAX_BLOCK, Bitfield, Block, Cancel, Have, PeerWireError,
                                 Reject, Request, decode, encode)

PIECE = MIN_PIECE_SIZE * 4  # 64 KiB pieces
# 10 pieces, the last one 1,000 bytes long.
MANIFEST = Manifest("f.bin", 9 * PIECE + 1000, PIECE, tuple(bytes([i]) * 32 for i in range(10)))


@pytest.mark.parametrize("msg", [
    Bitfield(frozenset()),
    Bitfield(frozenset({0, 3, 9})),
    Bitfield(frozenset(range(10))),
    Have(9),
    Request(0, 0, MAX_BLOCK),
    Request(9, 0, 1000),
    Reject(4, PIECE - 10, 10),
    Cancel(1, MAX_BLOCK, MAX_BLOCK),
    Block(2, 0, b"x" * MAX_BLOCK),
    Block(9, 999, b"z"),
])
def test_round_trip(msg):
    data = encode(msg, len(MANIFEST.pieces))
    assert decode(data, MANIFEST) == msg
    # Every message fits one Noise transport message.
    assert len(data) <= noise.MAX_PAYLOAD_LEN


def range_msg(kind, piece, offset, length):
    return struct.pack(">BIII", kind, piece, offset, length)


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (b"\x09", "unknown message type 9"),
    (b"\x01\xff", "a bitfield for 10 pieces is 2 bytes"),
    (b"\x01\xff\xff", "spare bits"),
    (b"\x02\x00\x00\x00", "a have message is 5 bytes"),
    (struct.pack(">BI", 2, 10), "piece 10 does not exist"),
    (range_msg(3, 10, 0, 10), "piece 10 does not exist"),
    (range_msg(3, 0, 0, 0), "a block is 1 to"),
    (range_msg(3, 0, 0, MAX_BLOCK + 1), "a block is 1 to"),
    (range_msg(3, 0, PIECE - 10, 11), "outside piece 0"),
    (range_msg(3, 9, 0, 1001), "outside piece 9"),
    (range_msg(3, 0, 2 ** 32 - 1, 10), "outside piece 0"),
    (range_msg(5, 0, 0, 10) + b"!", "a reject message is 13 bytes"),
    (range_msg(6, 0, 0, 10)[:-1], "a cancel message is 13 bytes"),
    (struct.pack(">BII", 4, 0, 0), "at least one byte"),
    (struct.pack(">BII", 4, 9, 990) + b"x" * 11, "outside piece 9"),
    (struct.pack(">BII", 4, 0, 0) + b"x" * (MAX_BLOCK + 1), "a block is 1 to"),
])
def test_anything_out_of_bounds_is_refused_with_the_reason(data, says):
    with pytest.raises(PeerWireError, match=says):
        decode(data, MANIFEST)


def test_a_bitfield_cannot_claim_pieces_that_do_not_exist():
    with pytest.raises(ValueError, match="piece 10 of 10"):
        encode(Bitfield(frozenset({10})), 10)
