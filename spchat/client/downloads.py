"""Where a client saves the files it downloads.

``CHAT_DOWNLOAD_DIR`` (or ``--download-dir``, or ``get --dir``) if given;
else a folder ``spchat`` in the desktop's download folder: the XDG user
directory (``XDG_DOWNLOAD_DIR``, in the environment or in
``user-dirs.dirs``, as ``xdg-user-dir DOWNLOAD`` reads it), else
``~/Downloads``.  Never the working directory, which is often a checkout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

SUBFOLDER = "spchat"
# A line of user-dirs.dirs: XDG_DOWNLOAD_DIR="$HOME/Downloads"
_USER_DIRS_LINE = re.compile(r'^\s*XDG_DOWNLOAD_DIR\s*=\s*"(.*)"\s*$', re.M)


def download_dir(configured: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder downloads go into, as chosen or by default."""
    if configured is not None:
        return configured
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home())
    return (_xdg_download_dir(environ, home) or home / "Downloads") / SUBFOLDER


def _xdg_download_dir(environ: Mapping[str, str], home: Path) -> Path | None:
    for named in (environ.get("XDG_DOWNLOAD_DIR"), _from_user_dirs(environ, home)):
        path = Path(named.replace("$HOME", str(home))) if named else None
        if path is not None and path.is_absolute():  # relative: ignored, as the spec says
            return path
    return None


def _from_user_dirs(environ: Mapping[str, str], home: Path) -> str | None:
    config = environ.get("XDG_CONFIG_HOME")
    base = Path(config) if config and os.path.isabs(config) else home / ".config"
    try:
        text = (base / "user-dirs.dirs").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = _USER_DIRS_LINE.search(text)
    return match.group(1) if match else None
