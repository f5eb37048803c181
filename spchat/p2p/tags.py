"""Names for a transfer that only those who hold its key can tell apart.

The server gives the two peers of a transfer an id and a fresh key over
their encrypted chat channels.  What crosses the network in clear before
the peers' handshake (the downloader's opening, the relay's header line)
names the transfer by an HMAC of its id under that key instead: the holder
and the server's relay can find the transfer by it, an observer cannot
link it to the id, the file, or any other connection.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_BYTES = 16


def _mac(key: bytes, label: bytes, transfer: str) -> bytes:
    message = label + b" " + transfer.encode("ascii")
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def lookup_tag(transfer: str, key: bytes) -> bytes:
    """What the downloader opens a peer connection with."""
    return _mac(key, b"lookup", transfer)


def relay_name(transfer: str, key: bytes) -> str:
    """What both peers name the transfer by to the relay (32 hex digits)."""
    return _mac(key, b"relay", transfer).hex()
