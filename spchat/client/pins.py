"""Trust on first use: remember each server's key fingerprint.

Like SSH's ``accept-new``: the first key seen for a host:port is recorded in
``known_servers`` in the client's config dir; a different key later is refused
with both fingerprints and the way to reset the pin.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PIN_FILE = "known_servers"


class PinMismatch(Exception):
    """The server presented a key other than the pinned one.

    ``where`` is the pin it disagrees with; ``presented_at`` the address
    that presented it, when that is another node of the same server.
    """

    def __init__(self, text: str, where: str = "", pinned: str = "", presented: str = "",
                 presented_at: str = ""):
        super().__init__(text)
        self.where, self.pinned, self.presented = where, pinned, presented
        self.presented_at = presented_at or where


class UnknownServer(Exception):
    """A first contact, and the caller wants to ask before trusting it."""

    def __init__(self, host: str, port: int, fingerprint: str):
        super().__init__(
            f"{host}:{port} is a server not seen before; its key fingerprint is {fingerprint}"
        )
        self.host, self.port, self.fingerprint = host, port, fingerprint


class PinStore:
    def __init__(self, config_dir: Path):
        self.config_dir = Path(config_dir)
        self.path = self.config_dir / PIN_FILE

    def _load(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        pins = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                pins[parts[0]] = parts[1]
        return pins

    def _save(self, pins: dict[str, str]) -> None:
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = "".join(f"{where} {fp}\n" for where, fp in sorted(pins.items()))
        # Write a temporary file and rename it, so a crash never leaves a
        # half-written pin file that would trust nothing (or anything).
        fd, tmp = tempfile.mkstemp(dir=self.config_dir, prefix=".known_servers.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(lines)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def check(self, host: str, port: int, fingerprint: str, accept_new: bool = True,
              same_server: tuple[tuple[str, int], ...] = ()) -> bool:
        """Accept a known or new key; return True if it was new to us.

        ``same_server``: the other addresses given with this one (the nodes
        of one server, which all present its key).  A key pinned for any of
        them is this address's key too: it is accepted and pinned here, and
        any other key is refused as a changed key.

        With ``accept_new=False`` a first contact raises UnknownServer
        instead, so a window can show the fingerprint and ask.
        """
        where = f"{host}:{port}"
        pins = self._load()
        for other in [where, *(f"{h}:{p}" for h, p in same_server)]:
            pinned = pins.get(other)
            if pinned is not None and pinned != fingerprint:
                raise self._mismatch(where, other, pinned, fingerprint)
        if where in pins:
            return False
        known = any(f"{h}:{p}" in pins for h, p in same_server)
        if not known and not accept_new:
            raise UnknownServer(host, port, fingerprint)
        pins[where] = fingerprint
        self._save(pins)
        return not known

    def _mismatch(self, where: str, pinned_at: str, pinned: str, presented: str) -> PinMismatch:
        of = (f"the server key of {where} has CHANGED: pinned {pinned}" if pinned_at == where
              else f"{where} presents another key than {pinned_at} of the same server: "
                   f"pinned {pinned}")
        return PinMismatch(
            f"{of}, presented {presented}. This may be an attack. If the server's "
            f"key was really replaced, reset the pin with: "
            f"python -m spchat.client --forget-server {pinned_at} "
            f"(pins are in {self.path})",
            pinned_at, pinned, presented, where,
        )

    def trust(self, host: str, port: int, fingerprint: str) -> None:
        """Pin this key for host:port (the user said yes to it)."""
        pins = self._load()
        pins[f"{host}:{port}"] = fingerprint
        self._save(pins)

    def forget(self, host: str, port: int) -> bool:
        pins = self._load()
        if pins.pop(f"{host}:{port}", None) is None:
            return False
        self._save(pins)
        return True
