"""The server's static X25519 key: created once, kept private, reused.

Clients pin its fingerprint, so losing or replacing this file makes every
client refuse the server until its users reset their pin.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from spchat import noise

KEY_FILE = "server_key"


class IdentityError(Exception):
    """The key file cannot be used; the message names the file."""


def prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise IdentityError(f"cannot create data directory {data_dir}: {e.strerror}") from None
    if not data_dir.is_dir():
        raise IdentityError(f"data directory {data_dir} is not a directory")


def load_or_create_server_key(data_dir: Path) -> bytes:
    """Return the raw private key, creating it (mode 0600) on first start."""
    prepare_data_dir(data_dir)
    path = data_dir / KEY_FILE
    try:
        # O_EXCL: never overwrite a key that appeared meanwhile.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as e:
        raise IdentityError(f"cannot create server key {path}: {e.strerror}") from None
    private, _ = noise.generate_keypair()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(private)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        path.unlink(missing_ok=True)
        raise IdentityError(f"cannot write server key {path}: {e.strerror}") from None
    return private


def share_server_key(data_dirs: list[Path]) -> None:
    """The first data directory's server key (made there if it has none)
    copied into the others (made if need be): the nodes of one cluster
    present one key, and seal their notices to each other with it."""
    key = load_or_create_server_key(data_dirs[0])
    for data_dir in data_dirs[1:]:
        prepare_data_dir(data_dir)
        path = data_dir / KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a key that was there keeps no wider mode
        with os.fdopen(fd, "wb") as f:
            f.write(key)


def _read_key(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read server key {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"server key {path} is readable by other users; run: chmod 600 {path}"
        )
    if len(data) != 32:
        raise IdentityError(
            f"server key {path} is damaged ({len(data)} bytes, expected 32); "
            "restore it from a backup, or delete it to make a new key "
            "(every client will then have to reset its pin)"
        )
    return data


ADMIN_TOKEN_FILE = "admin_token"


def load_or_create_admin_token(data_dir: Path) -> str:
    """The secret that makes a connection an administrator's (mode 0600).

    The admin tools on the same machine read it from the data directory;
    from elsewhere, copy the file and pass ``--token-file``.
    """
    prepare_data_dir(data_dir)
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            token = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise IdentityError(f"cannot read admin token {path}: {e}") from None
        if len(token) < 32:
            raise IdentityError(f"admin token {path} is damaged; delete it to make a new one")
        return token
    except OSError as e:
        raise IdentityError(f"cannot create admin token {path}: {e.strerror}") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token
