"""A download on disk: only verified pieces, resumable, never outside its folder."""

import hashlib
import os

import pytest

from spchat.p2p.manifest import MIN_PIECE_SIZE, Manifest, build_manifest
from spchat.p2p.storage import Download, StorageError, inside

PIECE = MIN_PIECE_SIZE


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src" / "report.pdf"
    path.parent.mkdir()
    path.write_bytes(os.urandom(5 * PIECE + 777))
    return path


def pieces_of(path, manifest):
    data = path.read_bytes()
    return [data[o:o + n] for o, n in map(manifest.piece_range, range(len(manifest.pieces)))]


def test_pieces_in_any_order_make_the_same_file(source, tmp_path):
    manifest = build_manifest(source, PIECE)
    parts = pieces_of(source, manifest)
    d = Download(tmp_path / "dl", manifest)
    for i in (5, 0, 3, 1, 4, 2):
        d.write_piece(i, parts[i])
    final = d.finish()
    assert final == (tmp_path / "dl" / "report.pdf").resolve()
    assert hashlib.sha256(final.read_bytes()).digest() == hashlib.sha256(
        source.read_bytes()).digest()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["report.pdf"]


def test_a_wrong_piece_is_never_written(source, tmp_path):
    manifest = build_manifest(source, PIECE)
    parts = pieces_of(source, manifest)
    d = Download(tmp_path / "dl", manifest)
    bad = bytearray(parts[1])
    bad[7] ^= 0xFF
    with pytest.raises(StorageError, match="piece 1 does not match its hash"):
        d.write_piece(1, bytes(bad))
    assert d.have == set()
    assert (tmp_path / "dl" / "report.pdf.part").read_bytes()[PIECE:2 * PIECE] == b"\0" * PIECE
    with pytest.raises(StorageError, match="6 pieces are still missing"):
        d.finish()
    with pytest.raises(StorageError, match="piece 1 is not here yet"):
        d.read_block(1, 0, 10)


def test_a_restart_fetches_only_what_is_missing(source, tmp_path):
    manifest = build_manifest(source, PIECE)
    parts = pieces_of(source, manifest)
    d = Download(tmp_path / "dl", manifest)
    for i in (0, 2, 4):
        d.write_piece(i, parts[i])
    d.close()  # the state is saved
    again = Download(tmp_path / "dl", manifest)
    assert again.have == {0, 2, 4} and again.missing() == {1, 3, 5}
    assert again.read_block(2, 0, len(parts[2])) == parts[2]


@pytest.mark.parametrize("damage", ["missing", "garbage", "other file", "lies"])
def test_in_doubt_the_pieces_on_disk_are_hashed_again(source, tmp_path, damage):
    manifest = build_manifest(source, PIECE)
    parts = pieces_of(source, manifest)
    d = Download(tmp_path / "dl", manifest)
    for i in (1, 3):
        d.write_piece(i, parts[i])
    d.close()
    state = tmp_path / "dl" / "report.pdf.part.state"
    if damage == "missing":
        state.unlink()
    elif damage == "garbage":
        state.write_text("{not json")
    elif damage == "other file":
        state.write_text('{"file_id": "00", "have": [0, 1, 2, 3, 4, 5]}')
    else:  # claims a piece whose bytes on disk are not right
        state.write_text(f'{{"file_id": "{manifest.file_id}", "have": [0, 1, 3]}}')
    assert Download(tmp_path / "dl", manifest).have == {1, 3}


def test_a_hostile_name_stays_inside_the_download_folder(tmp_path):
    manifest = Manifest.parse(
        b'{"name": "../../evil.sh", "size": 0, "piece_size": 16384, "pieces": []}')
    d = Download(tmp_path / "dl", manifest)
    final = d.finish()
    assert final.parent == (tmp_path / "dl").resolve()
    assert not (tmp_path / "evil.sh").exists()
    with pytest.raises(StorageError, match="not a plain file name"):
        inside(tmp_path, "../x")


def test_a_name_already_taken_gets_a_number(source, tmp_path):
    manifest = build_manifest(source, PIECE)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "report.pdf").write_text("mine, keep it")
    d = Download(tmp_path / "dl", manifest)
    for i, piece in enumerate(pieces_of(source, manifest)):
        d.write_piece(i, piece)
    assert d.finish().name == "report (1).pdf"
    assert (tmp_path / "dl" / "report.pdf").read_text() == "mine, keep it"


def test_two_downloads_never_write_one_part_file(source, tmp_path):
    manifest = build_manifest(source, PIECE)
    first = Download(tmp_path / "dl", manifest)
    with pytest.raises(StorageError, match="being written by another download"):
        Download(tmp_path / "dl", manifest)
    first.close()
    Download(tmp_path / "dl", manifest).close()  # free again once the first is closed
