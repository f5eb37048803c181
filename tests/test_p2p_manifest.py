"""Shared files: manifests, file ids, piece checks and safe names."""

import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from spchat.p2p.manifest import (MIN_PIECE_SIZE, PIECE_SIZE, Manifest, ManifestError, build_manifest,
                                 hash_file, safe_name)

PIECE = MIN_PIECE_SIZE


@pytest.fixture
def shared(tmp_path):
    path = tmp_path / "holiday photos.tar"
    path.write_bytes(os.urandom(3 * PIECE + 1234))  # the last piece is short
    return path


def test_a_manifest_names_sizes_and_hashes_every_piece(shared):
    m = build_manifest(shared, PIECE)
    assert (m.name, m.size, m.piece_size, len(m.pieces)) == (
        "holiday photos.tar", 3 * PIECE + 1234, PIECE, 4)
    data = shared.read_bytes()
    for i in range(4):
        offset, length = m.piece_range(i)
        assert m.verify(i, data[offset:offset + length])
    assert m.piece_range(3) == (3 * PIECE, 1234)
    assert not m.verify(1, data[PIECE:2 * PIECE - 1] + b"X")  # one byte flipped
    assert not m.verify(3, data[3 * PIECE:] + b"\0")  # a byte too many
    with pytest.raises(IndexError):
        m.piece_range(4)


def test_the_file_id_follows_the_content_and_survives_the_network(shared):
    m = build_manifest(shared, PIECE)
    again = Manifest.parse(m.canonical())
    assert again == m and again.file_id == m.file_id and len(m.file_id) == 64
    data = bytearray(shared.read_bytes())
    data[5] ^= 1
    shared.write_bytes(bytes(data))
    assert build_manifest(shared, PIECE).file_id != m.file_id


def test_an_empty_file_has_no_pieces(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    m = build_manifest(tmp_path / "empty", PIECE)
    assert m.size == 0 and m.pieces == ()
    assert Manifest.parse(m.canonical()) == m


def body(**changes):
    good = {"name": "a.bin", "size": PIECE + 1, "piece_size": PIECE,
            "pieces": ["00" * 32, "11" * 32]}
    good.update(changes)
    return json.dumps(good).encode()


@pytest.mark.parametrize("data, says", [
    (b"\xff", "not a JSON manifest"),
    (b"[]", "a manifest is a JSON object"),
    (body(size=-1), "size must be a whole number"),
    (body(size=True), "size must be a whole number"),
    (body(size=5 * 1024 ** 3), "shares are limited to"),
    (body(piece_size=PIECE + 1), "piece_size must be a power of two"),
    (body(piece_size=1024), "piece_size must be a power of two"),
    (body(pieces=["00" * 32]), "has 2 piece hashes"),
    (body(pieces=["00" * 32, "zz" * 32]), "64 hex digits"),
    (body(pieces=["00" * 32, "00" * 31]), "64 hex digits"),
    (body(name=7), "name must be a text"),
    (body(name="a\ud800.bin"), "not valid Unicode"),  # json.dumps writes it as \ud800
])
def test_a_bad_manifest_says_what_is_wrong(data, says):
    with pytest.raises(ManifestError, match=says):
        Manifest.parse(data)


@pytest.mark.parametrize("name, safe", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", ".._.._etc_passwd"),  # one name, in the directory
    ("..", "download"),
    ("...", "download"),
    ("", "download"),
    ("a\\b\\c.txt", "a_b_c.txt"),
    ("nul\0byte", "nul_byte"),
    ("bell\x07 and \u202eoverride", "bell and override"),
    ("  spaced  ", "spaced"),
])
def test_hostile_names_stay_one_plain_file_name(name, safe):
    assert safe_name(name) == safe
    assert "/" not in safe_name(name) and "\\" not in safe_name(name)


def test_a_long_name_is_cut_to_255_bytes_keeping_its_extension():
    cut = safe_name("é" * 300 + ".tar.gz")
    assert len(cut.encode()) <= 255 and cut.endswith(".gz") and cut.startswith("é")
    assert safe_name("x" * 1000) == "x" * 255


@pytest_twisted.inlineCallbacks
def test_hashing_runs_off_the_reactor_thread(shared, monkeypatch):
    import hashlib
    import threading

    seen = []
    real = hashlib.sha256

    def spy(data=b""):
        seen.append(threading.current_thread() is threading.main_thread())
        return real(data)

    monkeypatch.setattr("spchat.p2p.manifest.hashlib.sha256", spy)
    m = yield hash_file(reactor, shared, PIECE)
    assert len(m.pieces) == 4 and seen and not any(seen)


def test_big_files_get_bigger_pieces_so_the_manifest_fits_one_message():
    from spchat import wire
    from spchat.p2p.manifest import MAX_PIECES, piece_size_for

    assert piece_size_for(0) == PIECE_SIZE
    assert piece_size_for(64 << 20) == PIECE_SIZE  # 256 pieces
    assert piece_size_for(200 << 20) == 512 * 1024
    for size in (1, 128 << 20, (128 << 20) + 1, 4 << 30):
        piece_size = piece_size_for(size)
        pieces = -(-size // piece_size)
        assert pieces <= MAX_PIECES
        manifest = Manifest("n" * 200, size, piece_size, (b"\xff" * 32,) * pieces)
        assert len(manifest.canonical()) <= wire.MAX_MANIFEST_BYTES
