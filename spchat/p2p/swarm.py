"""One file's swarm on this peer: serving what we have, fetching what we lack.

Every peer connection of a file reports here (``peer_open``,
``peer_message``, ``peer_closed``).  Serving: a request for a piece we have
is answered with its block (an optional upload cap paces the answers); any
other is rejected.  Fetching (when a ``Download`` is given): the picker says
which piece to ask each peer for; a piece is asked of one peer, block by
block, ``PIPELINE`` blocks in flight per peer; a piece that is complete is
hashed before it is written or announced; a bad one is a strike against the
one peer that sent it and is asked for again, elsewhere if possible.  A
copy that comes while another is being hashed is kept until that one is
known good (then it is dropped) or bad (then it is tried).  A
peer that sends a block nobody asked for, or does not answer for
``REQUEST_TIMEOUT`` seconds, is dropped and its pieces go to the others.

The disk work (reading blocks to serve, hashing and writing pieces) runs on
the file's ``DiskQueue``, off the reactor thread; the swarm goes on when it
is done.  A peer has at most ``READS_IN_FLIGHT`` blocks being read for it:
then its requests wait unread, as they do while our sends to it are stuck,
so a peer that asks much and reads nothing costs a few blocks of memory.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall

from spchat.p2p import peerwire
from spchat.p2p.diskqueue import DiskClosed, DiskQueue
from spchat.p2p.manifest import Manifest
from spchat.p2p.peer import PeerConnection
from spchat.p2p.ondisk import DownloadOnDisk, SeedOnDisk
from spchat.p2p.picker import PiecePicker
from spchat.p2p.storage import Download, StorageError

BLOCK = peerwire.MAX_BLOCK
PIPELINE = 16  # blocks asked of one peer at a time (512 KiB)
REQUEST_TIMEOUT = 15.0
MAX_STRIKES = 3  # bad pieces before a peer is dropped
MAX_QUEUED_REQUESTS = 512  # unanswered requests one peer may pile up (upload cap)
TICK_SECONDS = 1.0
READS_IN_FLIGHT = 4  # blocks being read for one peer before its requests wait


class SeedFile:
    """A whole file on disk, offered to others (blocking: its calls run on
    the file's DiskQueue, see ``ondisk.SeedOnDisk``).  Each piece is hashed again
    before its first block is served, and again after the file changes on
    disk: a file changed since it was shared must not spread bad data.  A
    block of a checked piece is read alone, so asking for one block of many
    pieces costs a seeder one hash per piece, not one per block."""

    def __init__(self, path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self.have = set(range(len(manifest.pieces)))
        self._checked: set[int] = set()
        self._stamp = self._now_stamp()

    def _now_stamp(self) -> tuple[int, int]:
        assert self._fd is not None, "read after close"
        st = os.fstat(self._fd)
        return st.st_size, st.st_mtime_ns

    def read_piece(self, index: int) -> bytes | None:
        offset, length = self.manifest.piece_range(index)
        assert self._fd is not None, "read after close"
        data = os.pread(self._fd, length, offset)
        if not self.manifest.verify(index, data):
            self.have.discard(index)  # changed on disk: no longer ours to give
            return None
        self._checked.add(index)
        return data

    def read_block(self, index: int, offset: int, length: int) -> bytes | None:
        stamp = self._now_stamp()
        if stamp != self._stamp:  # written to since: check every piece again
            self._stamp = stamp
            self._checked.clear()
        if index not in self._checked and self.read_piece(index) is None:
            return None
        assert self._fd is not None, "read after close"
        return os.pread(self._fd, length, self.manifest.piece_range(index)[0] + offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(eq=False)
class PeerState:
    conn: PeerConnection
    have: set = field(default_factory=set)
    asked: dict = field(default_factory=dict)  # (piece, offset) -> (length, when)
    cancelled: set = field(default_factory=set)  # asked, then cancelled: may still come
    todo: dict = field(default_factory=dict)  # piece -> offsets not yet asked (a stack)
    buffers: dict = field(default_factory=dict)  # piece -> bytearray being filled
    filled: dict = field(default_factory=dict)  # piece -> bytes received so far
    queued: int = 0  # its requests waiting for the upload cap
    reading: int = 0  # blocks being read from disk for it
    strikes: int = 0


@dataclass
class PeerStats:
    """What one peer (by chat name) did for us, for progress and summaries."""

    path: str = "direct"
    received: int = 0
    sent: int = 0
    bad_pieces: int = 0
    connected: bool = False
    dropped: str = ""


class Swarm:
    """Serves ``source`` (a SeedFile), or, given a ``download``, fetches
    it and serves what it has so far."""

    def __init__(self, clock, manifest: Manifest, source=None,
                 download: Download | None = None, upload_bps: int = 0,
                 on_piece=lambda index: None, on_complete=lambda: None,
                 on_failed=lambda reason: None, disk: DiskQueue | None = None):
        self.clock = clock
        self.manifest = manifest
        # The one file's, reads and writes in order.
        self.disk = disk if disk is not None else DiskQueue(clock)
        self.download = DownloadOnDisk(self.disk, download) if download is not None else None
        self.source: SeedOnDisk | DownloadOnDisk
        if source is not None:
            self.source = SeedOnDisk(self.disk, source)
        elif self.download is not None:
            self.source = self.download
        else:
            raise TypeError("a swarm serves a source, or a download")
        self.upload_bps = upload_bps
        self.on_piece = on_piece
        self.on_complete = on_complete
        self.on_failed = on_failed
        self.peers: dict[PeerConnection, PeerState] = {}
        self.stats: dict[str, PeerStats] = {}
        self.banned: set[str] = set()  # names dropped for bad data
        self.failed: str | None = None
        self.closed = False  # closed: late peers are turned away
        self.picker: PiecePicker | None = None
        self._serve_queue: deque = deque()
        # Pieces being hashed and written -> the copies other peers sent
        # meanwhile, (peer, data): tried in turn if that one is bad.
        self._storing: dict[int, deque] = {}
        self._tokens = float(upload_bps)
        self._refill_at = clock.seconds()
        self._serve_call: IDelayedCall | None = None
        self._ticker: task.LoopingCall | None = None
        if download is not None and not download.complete:
            self.picker = PiecePicker(len(manifest.pieces), download.have)
            self._ticker = task.LoopingCall(self._tick)
            self._ticker.clock = clock
            self._ticker.start(TICK_SECONDS, now=False)

    # --- progress -------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.picker is None or self.picker.complete

    def bytes_done(self) -> int:
        have = self.picker.have if self.picker is not None else self.source.have
        return sum(self.manifest.piece_range(i)[1] for i in have)

    @property
    def fetching(self) -> bool:
        """A block is asked of a peer (it answers, or is dropped in time),
        or a piece is being hashed and written: the download moves."""
        return bool(self._storing) or any(peer.asked for peer in self.peers.values())

    def why_idle(self, seconds: float) -> str:
        """Why nothing was fetched for ``seconds``, though pieces are missing."""
        if not self.peers:
            return f"no peer could be reached for {seconds:.0f} s (directly or through the relay)"
        missing = self.picker.wanted() if self.picker is not None else set()
        if any(peer.have & missing for peer in self.peers.values()):
            return f"nothing came from the connected peers ({len(self.peers)}) for {seconds:.0f} s"
        what = "the piece" if len(missing) == 1 else f"the {len(missing)} pieces"
        return (f"none of the connected peers ({len(self.peers)}) has had {what} still "
                f"missing for {seconds:.0f} s")

    def stats_for(self, conn) -> PeerStats:
        return self.stats.setdefault(conn.name, PeerStats(path=conn.path))

    def unreachable(self, name: str, path: str, reason: str) -> None:
        """A peer we could not connect to, for the summary."""
        stats = self.stats.setdefault(name, PeerStats(path=path))
        if not stats.connected:
            stats.path, stats.dropped = path, reason

    # --- the connection's handler interface ------------------------------------

    def peer_open(self, conn: PeerConnection) -> None:
        if self.closed or self.failed:
            conn.fail("no longer sharing this file")
            return
        if conn.name in self.banned:
            conn.fail("dropped earlier for sending bad data")
            return
        self.peers[conn] = PeerState(conn)
        stats = self.stats_for(conn)
        stats.connected, stats.path, stats.dropped = True, conn.path, ""
        conn.send(peerwire.Bitfield(frozenset(self.source.have)))

    def peer_closed(self, conn: PeerConnection, reason: str) -> None:
        peer = self.peers.pop(conn, None)
        if peer is None:
            return
        stats = self.stats_for(conn)
        stats.connected = False
        stats.dropped = stats.dropped or reason
        self._serve_queue = deque(item for item in self._serve_queue if item[0] is not conn)
        if self.picker is not None:
            for piece in peer.buffers:
                self.picker.failed(piece, conn)
            self.picker.peer_gone(conn)
            self._fill_all()

    def peer_message(self, conn: PeerConnection, msg) -> None:
        peer = self.peers.get(conn)
        if peer is None or self.closed or self.failed:
            return  # closing: its files may be gone
        if isinstance(msg, peerwire.Block):
            self._block(peer, msg)
        elif isinstance(msg, peerwire.Request):
            self._requested(peer, msg)
        elif isinstance(msg, peerwire.Have):
            peer.have.add(msg.piece)
            if self.picker is not None:
                self.picker.peer_have(conn, msg.piece)
                self._fill(peer)
        elif isinstance(msg, peerwire.Bitfield):
            peer.have = set(msg.have)
            if self.picker is not None:
                self.picker.peer_has(conn, peer.have)
                self._fill(peer)
        elif isinstance(msg, peerwire.Reject):
            self._rejected(peer, msg)
        elif isinstance(msg, peerwire.Cancel):
            before = len(self._serve_queue)
            self._serve_queue = deque(
                item for item in self._serve_queue
                if not (item[0] is conn and (item[1].piece, item[1].offset)
                        == (msg.piece, msg.offset)))
            peer.queued -= before - len(self._serve_queue)
        self._close_if_useless(peer)

    # --- serving ------------------------------------------------------------------

    def _requested(self, peer: PeerState, req: peerwire.Request) -> None:
        if self.upload_bps:
            if peer.queued >= MAX_QUEUED_REQUESTS:
                peer.conn.fail("too many requests waiting")
                return
            peer.queued += 1
            self._serve_queue.append((peer.conn, req))
            self._serve_due()
        else:
            self._serve(peer, req)

    def _serve(self, peer: PeerState, req: peerwire.Request) -> None:
        if req.piece not in self.source.have:
            peer.conn.send(peerwire.Reject(req.piece, req.offset, req.length))
            return
        peer.reading += 1
        d = self.source.read_block(req.piece, req.offset, req.length)
        d.addBoth(self._read_for, peer, req)
        if peer.reading >= READS_IN_FLIGHT:
            peer.conn.hold("disk")  # released as each read is done

    def _read_for(self, block, peer: PeerState, req: peerwire.Request) -> None:
        peer.reading -= 1
        peer.conn.release("disk")
        if self.peers.get(peer.conn) is not peer or self.closed:
            return  # gone meanwhile
        if not isinstance(block, bytes):  # None, or the disk failed: we cannot give it
            peer.conn.send(peerwire.Reject(req.piece, req.offset, req.length))
            return
        peer.conn.send(peerwire.Block(req.piece, req.offset, block))
        self.stats_for(peer.conn).sent += len(block)

    def _serve_due(self) -> None:
        """Answer queued requests as the upload cap allows."""
        self._serve_call = None
        now = self.clock.seconds()
        self._tokens = min(float(self.upload_bps),
                           self._tokens + (now - self._refill_at) * self.upload_bps)
        self._refill_at = now
        while self._serve_queue and self._tokens > 0:
            conn, req = self._serve_queue.popleft()
            peer = self.peers.get(conn)
            if peer is None:
                continue
            peer.queued -= 1
            self._tokens -= req.length
            self._serve(peer, req)
        if self._serve_queue:
            wait = max(0.001, -self._tokens / self.upload_bps)
            self._serve_call = self.clock.callLater(wait, self._serve_due)

    # --- fetching -----------------------------------------------------------------

    def _fill_all(self) -> None:
        for peer in list(self.peers.values()):
            self._fill(peer)

    def _fill(self, peer: PeerState) -> None:
        """Keep PIPELINE blocks asked of this peer."""
        if self.picker is None or self.failed or peer.conn.closing:
            return
        now = self.clock.seconds()
        while len(peer.asked) < PIPELINE:
            piece = next((p for p, offsets in peer.todo.items() if offsets), None)
            if piece is None:
                piece = self.picker.next_piece(peer.conn)
                if piece is None:
                    return
                _, length = self.manifest.piece_range(piece)
                peer.todo[piece] = list(range(0, length, BLOCK))[::-1]
                peer.buffers[piece] = bytearray(length)
                peer.filled[piece] = 0
            offset = peer.todo[piece].pop()
            length = min(BLOCK, self.manifest.piece_range(piece)[1] - offset)
            peer.asked[(piece, offset)] = (length, now)
            peer.conn.send(peerwire.Request(piece, offset, length))

    def _block(self, peer: PeerState, block: peerwire.Block) -> None:
        key = (block.piece, block.offset)
        asked = peer.asked.pop(key, None)
        if asked is None:
            if key in peer.cancelled:  # crossed our cancel: fine
                peer.cancelled.discard(key)
                return
            peer.conn.fail(f"sent a block nobody asked for (piece {block.piece})")
            return
        if len(block.data) != asked[0]:
            peer.conn.fail(f"sent {len(block.data)} bytes for a request of {asked[0]}")
            return
        self.stats_for(peer.conn).received += len(block.data)
        buffer = peer.buffers[block.piece]
        buffer[block.offset:block.offset + len(block.data)] = block.data
        peer.filled[block.piece] += len(block.data)
        if peer.filled[block.piece] == len(buffer):
            self._piece_in(peer, block.piece)
        self._fill(peer)

    def _forget(self, peer: PeerState, piece: int, cancel: bool) -> None:
        """Stop fetching ``piece`` from this peer."""
        peer.todo.pop(piece, None)
        peer.buffers.pop(piece, None)
        peer.filled.pop(piece, None)
        for key in [k for k in peer.asked if k[0] == piece]:
            length, _ = peer.asked.pop(key)
            if cancel:
                peer.cancelled.add(key)
                peer.conn.send(peerwire.Cancel(piece, key[1], length))

    def _piece_in(self, peer: PeerState, piece: int) -> None:
        """A piece's last block is in: hash it and write it, off the reactor
        thread (it stays this peer's in the picker until then)."""
        data = bytes(peer.buffers[piece])
        self._forget(peer, piece, cancel=False)
        # Blocks come only when asked for, and only a download asks.
        assert self.picker is not None and self.download is not None
        if piece in self.picker.have:
            return  # the endgame: another peer's copy came first
        if piece in self._storing:
            # Another copy is being hashed (the endgame, or a dropped peer's
            # piece asked again): keep this one in case that one is bad.
            self._storing[piece].append((peer, data))
            return
        self._storing[piece] = deque()
        self._store(peer, piece, data)

    def _store(self, peer: PeerState, piece: int, data: bytes) -> None:
        assert self.download is not None, "only a download stores pieces"
        d = self.download.write_piece(piece, data)
        d.addCallbacks(self._piece_stored, self._piece_not_stored,
                       callbackArgs=(peer, piece), errbackArgs=(piece,))

    def _piece_not_stored(self, failure, piece: int) -> None:
        self._storing.pop(piece, None)
        if not failure.check(DiskClosed):  # closed: nothing more to do
            self.fail(failure.getErrorMessage() if failure.check(StorageError)
                      else f"cannot write the download: {failure.getErrorMessage()}")

    def _piece_stored(self, written: bool, peer: PeerState, piece: int) -> None:
        if self.closed or self.failed:
            return
        assert self.picker is not None, "only a download stores pieces"
        if not written:
            self._bad_copy(peer, piece)
            spares = self._storing[piece]
            if spares:
                spare_peer, data = spares.popleft()
                self._store(spare_peer, piece, data)
            else:
                del self._storing[piece]
            self._fill_all()
            return
        del self._storing[piece]  # and the other copies with it
        for other in self.picker.done(piece):
            if other is not peer.conn and other in self.peers:
                self._forget(self.peers[other], piece, cancel=True)
        for conn in list(self.peers):
            conn.send(peerwire.Have(piece))
        self.on_piece(piece)
        if self.picker.complete:
            self._completed()
        else:
            self._fill_all()

    def _bad_copy(self, peer: PeerState, piece: int) -> None:
        """``peer``'s copy of ``piece`` did not match its hash."""
        assert self.picker is not None, "only a download stores pieces"
        self.picker.failed(piece, peer.conn)
        if self.peers.get(peer.conn) is not peer or peer.conn.closing:
            return  # it left, or is being dropped, meanwhile: no more strikes
        peer.strikes += 1
        stats = self.stats_for(peer.conn)
        stats.bad_pieces += 1
        if peer.strikes >= MAX_STRIKES:
            self.banned.add(peer.conn.name)
            stats.dropped = f"dropped: {peer.strikes} pieces did not match their hashes"
            peer.conn.fail(stats.dropped)

    def _rejected(self, peer: PeerState, reject: peerwire.Reject) -> None:
        if peer.asked.pop((reject.piece, reject.offset), None) is None:
            return
        self._forget(peer, reject.piece, cancel=True)
        assert self.picker is not None, "only a download asks for pieces"
        # It said it had the piece, but will not give it: ask others.
        peer.have.discard(reject.piece)
        self.picker.failed(reject.piece, peer.conn)
        self.picker.peer_has(peer.conn, peer.have)
        self._fill_all()

    def _tick(self) -> None:
        """Drop peers that stopped answering; their pieces go elsewhere."""
        deadline = self.clock.seconds() - REQUEST_TIMEOUT
        for peer in list(self.peers.values()):
            if peer.asked and min(when for _, when in peer.asked.values()) < deadline:
                peer.conn.fail(f"no answer for {REQUEST_TIMEOUT:g} s")

    def _completed(self) -> None:
        self._stop_ticker()
        for peer in list(self.peers.values()):
            for piece in list(peer.buffers):
                self._forget(peer, piece, cancel=True)
        self.on_complete()
        for peer in list(self.peers.values()):
            self._close_if_useless(peer)

    def _close_if_useless(self, peer: PeerState) -> None:
        """Two peers with the whole file have nothing to give each other."""
        pieces = len(self.manifest.pieces)
        if self.complete and len(peer.have) == pieces and len(self.source.have) == pieces:
            peer.conn.close("both have the whole file")

    # --- the end ------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """The download cannot go on (the disk is full...): stop it."""
        if self.failed:
            return
        self.failed = reason
        self._stop_ticker()
        self._stop_serving()
        for conn in list(self.peers):
            conn.close(reason)
        self.on_failed(reason)

    def _stop_ticker(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None

    def become_seed(self, seed) -> None:
        """The download is finished and renamed: serve the file (a
        SeedFile) from there."""
        if self.closed:
            seed.close()  # closed meanwhile: nothing may use it now
            return
        self.source = SeedOnDisk(self.disk, seed)

    def _stop_serving(self) -> None:
        if self._serve_call is not None and self._serve_call.active():
            self._serve_call.cancel()
        self._serve_call = None
        self._serve_queue.clear()

    def close(self) -> defer.Deferred:
        """Hang up; the file is closed (a download's state saved) after the
        disk job under way, and the jobs not started are dropped.  Fires
        once it is closed."""
        self.closed = True
        self._stop_ticker()
        self._stop_serving()
        for conn in list(self.peers):
            conn.close("no longer sharing")
        files = {id(f): f for f in (self.source, self.download) if f is not None}
        return self.disk.close(lambda: [f.shut() for f in files.values()])
