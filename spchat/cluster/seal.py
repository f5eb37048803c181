"""Notices on the bus, sealed with a key only the nodes have.

Anyone who can reach Redis can publish on it, so nothing heard there is
believed unless it carries a MAC under the bus key, which every node
derives from the server key it must share anyway (``server_key``, copied
to each node).  A sealed notice also names its node, its time and a
random id: one older than ``MAX_AGE_SECONDS`` (or as far in the future:
the nodes' clocks may differ a little) or heard twice is dropped, so an
old "kick" or "shutdown" recorded off the bus cannot be played again.

A notice names the run of its node too (a random id for each start), so
that a node hearing its own name from another run knows that two
processes were given one name.

On the wire: ``spc1.`` MAC (hex) ``.`` JSON ``{"k": kind, "n": node,
"t": ms, "i": id, "r": run, "b": body}`` (``r`` may be missing, from a
node of an earlier version).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from typing import NamedTuple

PREFIX = b"spc1."
MAC_BYTES = 16
MAX_AGE_SECONDS = 120.0
# Ids remembered for telling a replay from a new notice (older ones are
# refused by age anyway).
MAX_REMEMBERED = 100_000


def bus_key(server_key: bytes) -> bytes:
    """The key that seals notices, from the server's private key: the same
    on every node of one cluster, and telling nothing about the key."""
    return hashlib.blake2b(b"spchat bus notices", key=server_key, digest_size=32).digest()


class Notice(NamedTuple):
    kind: str
    node: str  # the node that sent it
    body: dict
    run: str = ""  # its node's run ("": not said)


class Seal:
    def __init__(self, key: bytes, node: str, clock):
        self.key = key
        self.node = node
        self.clock = clock
        self.run = secrets.token_hex(8)  # this start of the node
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> time heard

    def seal(self, kind: str, body: dict) -> bytes:
        notice = {"k": kind, "n": self.node, "t": int(self.clock.seconds() * 1000),
                  "i": secrets.token_hex(8), "r": self.run, "b": body}
        text = json.dumps(notice, separators=(",", ":")).encode()
        return PREFIX + self._mac(text).encode() + b"." + text

    def open(self, data: bytes | str) -> Notice | None:
        """The notice in ``data``, or None if it is not a fresh one sealed
        with our key."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if not data.startswith(PREFIX):
            return None
        mac, dot, text = data[len(PREFIX):].partition(b".")
        if not dot or not hmac.compare_digest(mac, self._mac(text).encode()):
            return None
        try:
            notice = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(notice, dict):
            return None
        kind, node, ms, nonce, body = (notice.get(f) for f in ("k", "n", "t", "i", "b"))
        run = notice.get("r", "")
        if not (isinstance(kind, str) and isinstance(node, str) and isinstance(nonce, str)
                and isinstance(ms, int) and isinstance(body, dict) and isinstance(run, str)):
            return None
        now = self.clock.seconds()
        if abs(now - ms / 1000) > MAX_AGE_SECONDS or nonce in self._seen:
            return None
        self._remember(nonce, now)
        return Notice(kind, node, body, run)

    def _mac(self, text: bytes) -> str:
        return hashlib.blake2b(text, key=self.key, digest_size=MAC_BYTES).hexdigest()

    def _remember(self, nonce: str, now: float) -> None:
        self._seen[nonce] = now
        while self._seen and (len(self._seen) > MAX_REMEMBERED
                              or now - next(iter(self._seen.values())) > 2 * MAX_AGE_SECONDS):
            self._seen.popitem(last=False)
