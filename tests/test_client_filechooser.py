"""The window's file picker's model: a folder's listing, Up, and where a
name picked or typed leads (real files in a temporary folder)."""

import os

import pytest

from spchat.client.filechooser import FileChooser, Item


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "b notes.txt").write_bytes(b"x" * 70)
    (tmp_path / "A.bin").write_bytes(b"")
    (tmp_path / ".hidden").write_text("h")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"meow")
    (tmp_path / "Zebra").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    return tmp_path


def test_folders_first_then_files_by_name_hidden_and_broken_left_out(tree):
    chooser = FileChooser(tree)
    assert chooser.items == [Item("photos", True), Item("Zebra", True),
                             Item("A.bin", False, 0), Item("b notes.txt", False, 70)]
    assert chooser.problem == ""


def test_a_folder_picked_is_opened_and_up_comes_back(tree):
    chooser = FileChooser(tree)
    assert chooser.choose("photos") is None
    assert chooser.folder == tree / "photos" and chooser.items == [Item("cat.png", False, 4)]
    assert chooser.choose("cat.png") == tree / "photos" / "cat.png"
    chooser.up()
    assert chooser.folder == tree
    assert chooser.choose("photos/..") is None and chooser.folder == tree


def test_a_typed_path_or_hidden_name_is_found_and_a_wrong_one_said(tree):
    chooser = FileChooser(tree / "photos")
    assert chooser.choose(str(tree / "b notes.txt")) == tree / "b notes.txt"
    assert chooser.choose("../.hidden") == tree / "photos" / ".." / ".hidden"
    assert chooser.choose("dog.png") is None
    assert chooser.problem == f"no file dog.png in {tree / 'photos'}"
    assert chooser.choose("  ") is None and chooser.problem == "pick a file, or type its name"


def test_a_folder_that_cannot_be_listed_is_said_and_the_listing_stays(tree):
    chooser = FileChooser(tree)
    chooser.go(tree / "A.bin")  # gone, or no folder: as one that cannot be read
    assert chooser.folder == tree
    assert chooser.problem == f"cannot open {tree / 'A.bin'}: Not a directory"
    assert Item("photos", True) in chooser.items
