"""Where downloads go when nothing says where: never the working directory."""

from pathlib import Path

from spchat.client.downloads import download_dir


def test_a_folder_given_is_taken_as_it_is(tmp_path):
    assert download_dir(tmp_path / "here", {"HOME": str(tmp_path)}) == tmp_path / "here"


def test_spchat_in_the_desktops_download_folder(tmp_path):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    assert download_dir(None, {"HOME": str(home)}) == home / "Downloads" / "spchat"
    (home / ".config" / "user-dirs.dirs").write_text(
        '# written by xdg-user-dirs-update\nXDG_DESKTOP_DIR="$HOME/Desktop"\n'
        'XDG_DOWNLOAD_DIR="$HOME/Téléchargements"\n', encoding="utf-8")
    assert download_dir(None, {"HOME": str(home)}) == home / "Téléchargements" / "spchat"
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    (elsewhere / "user-dirs.dirs").write_text('XDG_DOWNLOAD_DIR="/data/dl"\n')
    assert download_dir(None, {"HOME": str(home), "XDG_CONFIG_HOME": str(elsewhere)}) == (
        Path("/data/dl/spchat"))
    # The environment wins; a relative folder is no folder (the XDG rule).
    assert download_dir(None, {"HOME": str(home), "XDG_DOWNLOAD_DIR": "/srv/in"}) == (
        Path("/srv/in/spchat"))
    assert download_dir(None, {"HOME": str(home), "XDG_DOWNLOAD_DIR": "dl"}) == (
        home / "Téléchargements" / "spchat")
