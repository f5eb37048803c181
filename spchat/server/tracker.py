"""The file-sharing tracker's state: the files offered, who holds them, and
the introductions made between peers.

Plain data for the chat core (spchat.server.core), which checks each
request, answers it and does the sending; nothing here does I/O.  Holders
and transfers are named by session id, not by user name: a guest's name is
free for anyone once its session has ended, and whoever takes it next must
not inherit the downloads or the relay tickets of the one before.
"""

from __future__ import annotations

import itertools
import json
import random
import secrets
from dataclasses import dataclass, field
from typing import Callable

from spchat import wire

# Files one session may offer or serve pieces of at a time: every one costs
# memory here and a line in everybody's list.
MAX_FILES_PER_SESSION = 50
# ListFiles answers with the newest offers only, and in one message (one
# Noise message is 64 KiB; a long name can take 500 bytes of JSON).
MAX_LISTED = 200
LIST_BYTES = 48_000
# An introduction is good for this long; a downloader asks for the relay
# soon after, if at all.
TRANSFER_SECONDS = 600.0
# A relay ticket waits this long for both peers to connect.
RELAY_TICKET_SECONDS = 60.0
# A downloader's oldest introductions make way beyond this many, so that a
# session fetching in a loop cannot fill memory for ten minutes.
MAX_TRANSFERS_PER_SESSION = 4 * wire.MAX_PEERS
# A shorter prefix of a file id would match too much by chance.
MIN_PREFIX = 6
HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(slots=True)
class Holder:
    port: int  # where it takes peer connections (0: through the relay only)
    pieces: int


@dataclass(eq=False, slots=True)
class SharedFile:
    """One offer.  Newest last in ``Tracker.files``: the dict's order is
    the order of offering."""

    file_id: str
    manifest: str  # canonical JSON, as the sharer sent it
    name: str
    size: int
    piece_count: int
    sharer: str  # display name
    room: str
    ts: int  # ms
    holders: dict[str, Holder] = field(default_factory=dict)  # by session id
    room_key: str = ""  # who may see it: the members of this room

    def offer(self) -> wire.Offer:
        return wire.Offer(self.room, self.ts, self.file_id, self.name, self.size, self.sharer)


@dataclass(frozen=True, slots=True)
class Transfer:
    """An introduction: ``downloader`` may connect to ``holder`` for
    ``file`` and prove ``key``."""

    id: str
    file: str
    downloader: str  # session ids
    holder: str
    key: str
    created: float


def host_of(address: str) -> str:
    """The IP of a link's address ("host:port"; IPv6 hosts come without
    brackets, so the port is what follows the last colon)."""
    host, colon, _ = address.rpartition(":")
    return (host if colon else address)[:64]


class Tracker:
    def __init__(self):
        self.files: dict[str, SharedFile] = {}
        self.held: dict[str, set[str]] = {}  # session id -> file ids it holds
        # By downloader session id, each oldest first: a relay request comes
        # from the downloader, so only its own transfers are looked at.
        self.transfers: dict[str, dict[str, Transfer]] = {}
        # An offer or a holder came or went (the other nodes are told).
        self.on_change: Callable[[], None] = lambda: None
        # An offer whose last holder here let it go (not one moved away).
        self.on_gone: Callable[[SharedFile], None] = lambda shared: None

    # --- offers and holders ----------------------------------------------------

    def add(self, file_id: str, manifest: str, name: str, size: int, piece_count: int,
            sharer: str, room: str, ts: int, room_key: str = "") -> SharedFile:
        shared = SharedFile(file_id, manifest, name, size, piece_count, sharer, room, ts,
                            room_key=room_key or room)
        self.files[file_id] = shared
        return shared

    def may_hold(self, session: str, file_id: str) -> bool:
        held = self.held.get(session, ())
        return file_id in held or len(held) < MAX_FILES_PER_SESSION

    def hold(self, shared: SharedFile, session: str, port: int, pieces: int) -> None:
        before = shared.holders.get(session)
        shared.holders[session] = Holder(port, pieces)
        self.held.setdefault(session, set()).add(shared.file_id)
        # A downloader's progress (said every few seconds, or as often as a
        # client likes) is no change worth telling at once: a holder that
        # came, moved or became complete is (holders are picked by that).
        complete = pieces >= shared.piece_count
        if (before is None or before.port != port
                or (before.pieces >= shared.piece_count) != complete):
            self.on_change()

    def holds(self, session: str, file_id: str) -> bool:
        return file_id in self.held.get(session, ())

    def release(self, session: str, file_id: str, withdrawn: bool = True) -> None:
        """``session`` no longer serves the file; an offer nobody holds is gone
        (``withdrawn`` False: it goes on elsewhere, its session moved)."""
        shared = self.files.get(file_id)
        if shared is None or shared.holders.pop(session, None) is None:
            return
        held = self.held[session]
        held.discard(file_id)
        if not held:
            del self.held[session]
        if not shared.holders:
            del self.files[file_id]
            if withdrawn:
                self.on_gone(shared)
        self.on_change()

    def forget_session(self, session: str, withdrawn: bool = True) -> None:
        """The session went offline (or, ``withdrawn`` False, moved to
        another node): out of every swarm, its introductions void."""
        for file_id in list(self.held.get(session, ())):
            self.release(session, file_id, withdrawn)
        self.transfers.pop(session, None)

    # --- finding and listing ----------------------------------------------------

    def find(self, ref: str, files: dict[str, SharedFile] | None = None) -> list[SharedFile]:
        """The offers whose id is ``ref`` or starts with it (a linear scan:
        fetches are flood-limited, and offers at most 50 a session), of
        ``files`` (None: those here)."""
        files = self.files if files is None else files
        shared = files.get(ref)
        if shared is not None:
            return [shared]
        return [f for file_id, f in files.items() if file_id.startswith(ref)]

    def listing(self, linked: Callable[[str], bool], rooms: set[str] | None = None,
                files: dict[str, SharedFile] | None = None) -> tuple[tuple, ...]:
        """Rows for wire.FileList, newest first, of the offers made in
        ``rooms`` (room keys; None: all) of ``files`` (None: those here);
        holders counted if ``linked``."""
        rows, size = [], 0
        files = self.files if files is None else files
        offers = (f for f in reversed(files.values()) if rooms is None or f.room_key in rooms)
        for shared in itertools.islice(offers, MAX_LISTED):
            row = (shared.file_id, shared.name, shared.size, shared.sharer,
                   sum(map(linked, shared.holders)))
            size += len(json.dumps(row, ensure_ascii=False).encode()) + 1
            if size > LIST_BYTES:
                break
            rows.append(row)
        return tuple(rows)

    @staticmethod
    def pick(shared: SharedFile, usable: Callable[[str], bool]) -> list[tuple[str, Holder]]:
        """Up to wire.MAX_PEERS usable holders: complete ones first, at
        random within each kind (so no one peer serves every newcomer)."""
        found = [(sid, h) for sid, h in shared.holders.items() if usable(sid)]
        random.shuffle(found)
        found.sort(key=lambda item: item[1].pieces < shared.piece_count)  # stable
        return found[:wire.MAX_PEERS]

    # --- introductions --------------------------------------------------------

    def introduce(self, file_id: str, downloader: str, holder: str, now: float) -> Transfer:
        """A fresh transfer id and key for this pair only."""
        transfer = Transfer(secrets.token_hex(16), file_id, downloader, holder,
                            secrets.token_hex(32), now)
        mine = self.transfers.setdefault(downloader, {})
        mine[transfer.id] = transfer
        while len(mine) > MAX_TRANSFERS_PER_SESSION:
            del mine[next(iter(mine))]
        return transfer

    def transfer(self, downloader: str, transfer_id: str, now: float) -> Transfer | None:
        """The downloader's own transfer, if it has not expired."""
        transfer = self.transfers.get(downloader, {}).get(transfer_id)
        if transfer is None or now - transfer.created >= TRANSFER_SECONDS:
            return None
        return transfer

    def expire(self, now: float) -> None:
        for downloader, mine in list(self.transfers.items()):
            while mine:
                oldest = next(iter(mine.values()))
                if now - oldest.created < TRANSFER_SECONDS:
                    break
                del mine[oldest.id]
            if not mine:
                del self.transfers[downloader]
