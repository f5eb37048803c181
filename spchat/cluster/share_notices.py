"""What the nodes tell each other about file sharing: the bodies of the
``shares``, ``introduce`` and ``introduced`` notices (sealed and sent by
``spchat.cluster.seal``).

- ``shares``: a node's offers and who holds them there, all of them (no
  manifests: those go with ``introduced``), named by the node's run
  (``boot``); ``ask``: the sender lost track (it started, or was cut from
  the bus), and every node answers with its own.
- ``introduce``: to the node ``to``, whose session ``holder`` is to get a
  ``wire.PeerRequest`` for a downloader on the sender; ``answer``: say
  ``introduced`` once it has (a fetch waits for that; a relay does not).
- ``introduced``: to the node ``to``: the holder of ``transfer`` was told,
  and the file's manifest.

Even a sealed notice is trusted no further than its shape: a body that
does not parse is dropped (the readers return None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from spchat import wire
from spchat.server.tracker import Holder, SharedFile

SHARES = "shares"
INTRODUCE = "introduce"
INTRODUCED = "introduced"
_TEXT_MAX = 1000


@dataclass(frozen=True)
class Shares:
    boot: str
    ask: bool
    files: dict[str, SharedFile]  # by file id, holders by session id


@dataclass(frozen=True)
class Introduction:
    to: str  # the holder's node
    holder: str  # session id
    transfer: str
    key: str
    file: str
    name: str  # the downloader's
    relay_port: int  # 0: a direct connection
    relay_host: str
    answer: bool


@dataclass(frozen=True)
class Introduced:
    to: str  # the downloader's node
    transfer: str
    manifest: str


def shares(boot: str, ask: bool, files) -> dict:
    return {"boot": boot, "ask": ask, "files": [
        [f.file_id, f.name, f.size, f.piece_count, f.sharer, f.room, f.room_key, f.ts,
         [[sid, h.port, h.pieces] for sid, h in f.holders.items()]] for f in files]}


def read_shares(body: dict) -> Shares | None:
    boot, ask, rows = body.get("boot"), body.get("ask"), body.get("files")
    if not (_text(boot) and isinstance(ask, bool) and isinstance(rows, list)):
        return None
    files = {}
    for row in rows:
        shared = _file(row)
        if shared is None:
            return None
        files[shared.file_id] = shared
    return Shares(boot, ask, files)


def _file(row) -> SharedFile | None:
    if not (isinstance(row, list) and len(row) == 9):
        return None
    file_id, name, size, pieces, sharer, room, room_key, ts, holders = row
    if not (_file_id(file_id) and all(map(_text, (name, sharer, room, room_key)))
            and all(map(_count, (size, pieces, ts))) and isinstance(holders, list)):
        return None
    shared = SharedFile(file_id, "", name, size, pieces, sharer, room, ts, room_key=room_key)
    for holder in holders:
        if not (isinstance(holder, list) and len(holder) == 3 and _text(holder[0])
                and _count(holder[1]) and holder[1] <= 65535 and _count(holder[2])):
            return None
        shared.holders[holder[0]] = Holder(holder[1], holder[2])
    return shared


def introduce(intro: Introduction) -> dict:
    return {"to": intro.to, "holder": intro.holder, "transfer": intro.transfer,
            "key": intro.key, "file": intro.file, "name": intro.name,
            "relay_port": intro.relay_port, "relay_host": intro.relay_host,
            "answer": intro.answer}


def read_introduce(body: dict) -> Introduction | None:
    to, holder, transfer, key, name = (body.get(field) for field in (
        "to", "holder", "transfer", "key", "name"))
    file_id, port, host = body.get("file"), body.get("relay_port"), body.get("relay_host")
    answer = body.get("answer")
    if not (_text(to) and _text(holder) and _text(transfer) and _text(key) and _text(name)
            and _file_id(file_id) and _count(port) and port <= 65535
            and isinstance(host, str) and len(host) <= _TEXT_MAX
            and isinstance(answer, bool)):
        return None
    return Introduction(to, holder, transfer, key, file_id, name, port, host, answer)


def introduced(to: str, transfer: str, manifest: str) -> dict:
    return {"to": to, "transfer": transfer, "manifest": manifest}


def read_introduced(body: dict) -> Introduced | None:
    to, transfer, manifest = body.get("to"), body.get("transfer"), body.get("manifest")
    if not (_text(to) and _text(transfer) and isinstance(manifest, str)
            and len(manifest.encode()) <= wire.MAX_MANIFEST_BYTES):
        return None
    return Introduced(to, transfer, manifest)


def _text(value) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= _TEXT_MAX


def _count(value) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _file_id(value) -> TypeGuard[str]:
    return (isinstance(value, str) and len(value) == 64
            and set(value) <= set("0123456789abcdef"))
