"""A client's file sharing: the files it offers, the downloads it runs, and
its port for peers.

It rides on a logged-in ``ChatClient``: the server (the tracker) hears our
offers and holdings and introduces peers; the bytes go peer to peer, or
through the server's relay when no direct connection opens within
``DIRECT_TIMEOUT`` seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Generator

from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from spchat import wire
from spchat.p2p import peer
from spchat.p2p.diskqueue import DiskClosed
from spchat.p2p.manifest import Manifest, ManifestError, hash_file
from spchat.p2p.storage import Download, StorageError
from spchat.p2p.swarm import SeedFile, Swarm

DIRECT_TIMEOUT = 3.0  # then the relay
RELAY_TIMEOUT = 15.0
HOLDING_EVERY = 2.0  # seconds between "I have N pieces" reports
SAVE_EVERY = 2.0  # seconds between saves of a download's state
ASK_AGAIN_AFTER = 3.0  # seconds with no peer before asking the server for others
GIVE_UP_AFTER = 60.0  # seconds with nothing fetched from anyone: the download fails


class SharingError(Exception):
    """A share or a download that cannot be done; says why in one line."""


def _key(text: str) -> bytes | None:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        return None
    return key if len(key) == 32 else None


class Fetch:
    """One download under way: its swarm, its peers, its progress."""

    def __init__(self, node: SharingNode, answer: wire.Swarm, manifest: Manifest,
                 download: Download):
        self.node = node
        self.manifest = manifest
        self.file_id = answer.file
        self.started = time.monotonic()
        self.start_bytes = 0
        self.result: defer.Deferred = defer.Deferred()  # fires with the saved file's Path
        self.path: Path | None = None
        self._rows = {row[3]: row for row in answer.peers}  # transfer -> row
        self._last_holding = 0.0
        self._last_progress = time.monotonic()
        self._last_asked = time.monotonic()
        self.swarm = Swarm(node.reactor, manifest, download=download,
                           upload_bps=node.upload_bps, on_piece=self._piece,
                           on_complete=self._complete, on_failed=self._failed)
        assert self.swarm.download is not None, "a swarm given a download"
        self.download = self.swarm.download  # its reactor side: the disk work is queued
        self.start_bytes = self.swarm.bytes_done()
        self._saver = task.LoopingCall(self._save)
        self._saver.clock = node.reactor

    def start(self) -> None:
        if self.swarm.complete:
            self._complete()
            return
        self._saver.start(SAVE_EVERY, now=False)
        for row in self._rows.values():
            self._connect(row)

    def more_peers(self, answer: wire.Swarm) -> None:
        """The server's fresh introductions: connect to those not with us."""
        with_us = {conn.name for conn in self.swarm.peers}
        for row in answer.peers:
            if row[0] not in with_us:
                self._rows[row[3]] = row
                self._connect(row)

    def _connect(self, row) -> None:
        name, host, port, transfer, key_text = row
        key = _key(key_text)
        if key is None or name in self.swarm.banned:
            return
        if port == 0:  # it takes no direct connections
            self.node.ask_relay(self, transfer)
            return
        d = peer.dial(self.node.reactor, host, port,
                      lambda: peer.PeerConnection(self.node.reactor, True, transfer, key,
                                                  self.swarm, name, path="direct"),
                      DIRECT_TIMEOUT)
        d.addErrback(lambda _: self.node.ask_relay(self, transfer))

    def relay_open(self, transfer: str, port: int) -> None:
        row = self._rows.get(transfer)
        if row is None or self.swarm.complete:
            return
        name, _, _, _, key_text = row
        key = _key(key_text)
        if key is None:  # never dialled directly either (see _connect)
            return
        make = lambda: peer.PeerConnection(  # noqa: E731
            self.node.reactor, True, transfer, key, self.swarm, name,
            preamble=peer.relay_header(transfer, key, "fetch"), path="relay")
        d = peer.dial(self.node.reactor, self.node.client.server_ip, port, make, RELAY_TIMEOUT)
        d.addErrback(lambda f: self.swarm.unreachable(name, "relay", f.getErrorMessage()))

    # --- progress ---------------------------------------------------------------

    def progress(self) -> dict:
        done = self.swarm.bytes_done()
        elapsed = time.monotonic() - self.started
        # Over at least a second: the first burst is not a rate.
        rate = (done - self.start_bytes) / max(1.0, elapsed)
        left = self.manifest.size - done
        return {
            "name": self.manifest.name, "file": self.file_id, "done": done,
            "size": self.manifest.size, "rate": rate,
            "peers": sum(1 for s in self.swarm.stats.values() if s.connected),
            "relayed": sum(1 for s in self.swarm.stats.values()
                           if s.connected and s.path == "relay"),
            "eta": left / rate if rate > 0 else None, "seconds": elapsed,
        }

    def summary(self) -> dict:
        report = self.progress()
        report["path"] = str(self.path) if self.path else None
        report["fetched"] = sum(s.received for s in self.swarm.stats.values())
        report["from"] = {
            name: {"path": s.path, "received": s.received, "bad_pieces": s.bad_pieces,
                   "dropped": s.dropped}
            for name, s in sorted(self.swarm.stats.items())
        }
        return report

    # --- the swarm tells ------------------------------------------------------------

    def _piece(self, index: int) -> None:
        now = time.monotonic()
        if now - self._last_holding >= HOLDING_EVERY:
            self._last_holding = now
            self.node.holding(self.file_id, len(self.download.have))

    def _save(self) -> None:
        """Every SAVE_EVERY seconds: save the state, and look for peers if
        nothing is being fetched (none is left, or those left lack what
        is missing): a download finishes, or says why it stopped."""
        self.download.save_state().addErrback(self._not_saved)
        now = time.monotonic()
        if self.swarm.fetching:
            self._last_progress = now
            return
        if now - self._last_progress > GIVE_UP_AFTER:
            self.swarm.fail(f"{self.swarm.why_idle(GIVE_UP_AFTER)}; run it again to resume")
        elif now - self._last_asked >= ASK_AGAIN_AFTER:
            self._last_asked = now
            self.node.ask_again(self)

    def _not_saved(self, failure) -> None:
        if not failure.check(DiskClosed):
            self.swarm.fail(f"cannot save the download's state: {failure.getErrorMessage()}")

    def _complete(self) -> None:
        """Every piece is in: rename it (after the writes queued before),
        then serve it from there."""
        self._stop_saver()
        d = self.download.finish()
        d.addCallback(lambda path: self.swarm.disk.run(SeedFile, path, self.manifest))
        d.addCallbacks(self._finished, self._not_finished)

    def _finished(self, seed: SeedFile) -> None:
        self.path = seed.path
        self.swarm.become_seed(seed)
        self.node.holding(self.file_id, len(self.manifest.pieces))
        if not self.result.called:
            self.result.callback(self.path)

    def _not_finished(self, failure) -> None:
        if not failure.check(DiskClosed):  # closed: stopped meanwhile
            self._failed(f"cannot finish {self.manifest.name}: {failure.getErrorMessage()}")

    def _failed(self, reason: str) -> None:
        self._stop_saver()
        self.swarm.close()  # the file is closed after the disk job under way
        self.node.forget(self.file_id)
        if not self.result.called:
            self.result.errback(SharingError(reason))

    def _stop_saver(self) -> None:
        if self._saver.running:
            self._saver.stop()

    def stop(self) -> defer.Deferred:
        """Interrupted: keep what we have, resumable.  Fires once the file
        is closed and its state saved."""
        self._stop_saver()
        closed = self.swarm.close()
        self._interrupted()
        return closed

    def cancel(self) -> defer.Deferred:
        """Stopped by its user: as ``stop``, but ``result`` fails only once
        the file is closed, so a fetch of it again can take it up at once."""
        self._stop_saver()
        closed = self.swarm.close()
        closed.addBoth(self._interrupted)
        return closed

    def _interrupted(self, passed=None):
        """The result fails (if it has not fired); ``passed`` goes on."""
        if not self.result.called:
            self.result.errback(SharingError("interrupted; run it again to resume"))
        return passed


class SharingNode:
    log = Logger()

    def __init__(self, reactor, client, port: int = 0, direct: bool = True,
                 upload_bps: int = 0, max_per_ip: int = peer.MAX_PEERS_PER_IP):
        self.reactor = reactor
        self.max_per_ip = max_per_ip  # connections from one address to our port
        self.client = client
        self.requested_port = port
        self.direct = direct
        self.upload_bps = upload_bps
        self.port = 0  # ours for peers; 0: only through the relay
        self.introductions = peer.Introductions(reactor)
        self.seeds: dict[str, tuple[Swarm, Manifest]] = {}  # file id -> ours whole
        self.fetches: dict[str, Fetch] = {}
        # Requests waiting for the server's answer: cid -> (kind, Deferred,
        # file id, the connection it went out on or None while queued).
        self._waiting: dict[str, list] = {}
        self._starting: set[str] = set()  # fetches between answer and start
        self._relay_for: dict[str, Fetch] = {}
        self._listener: IListeningPort | None = None
        client.sharing = self

    def start(self) -> None:
        """Take peer connections (unless CHAT_P2P_DIRECT is no)."""
        if self.direct and self._listener is None:
            self._listener = self.reactor.listenTCP(
                self.requested_port,
                peer.ListenFactory(self.reactor, self.introductions, self.max_per_ip))
            self.port = self._listener.getHost().port  # type: ignore[union-attr]  # a TCP address

    def stop(self) -> defer.Deferred:
        """Fires once every file is closed (after the disk job under way on
        each; those not started are dropped) and the port is shut."""
        self._lost_answers(everything=True)
        closing = [fetch.stop() for fetch in list(self.fetches.values())]
        closing += [swarm.close() for swarm, _ in self.seeds.values()]
        self.fetches.clear()
        self.seeds.clear()
        listener, self._listener = self._listener, None
        if listener:
            closing.append(defer.maybeDeferred(listener.stopListening))
        return defer.gatherResults(closing)

    # --- what the user does ------------------------------------------------------

    @defer.inlineCallbacks
    def share(self, path, room: str = "lobby") -> Generator[defer.Deferred, Any,
                                                            tuple[str, Manifest]]:
        """Hash a file and offer it to ``room``'s members: fires with (file
        id, manifest)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise SharingError(f"{path} is not a file")
        try:
            manifest = yield hash_file(self.reactor, path)
            source = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), SeedFile, path, manifest)
        except OSError as e:
            raise SharingError(f"cannot read {path}: {e.strerror or e}") from None
        swarm = Swarm(self.reactor, manifest, source, upload_bps=self.upload_bps)
        self.seeds[manifest.file_id] = (swarm, manifest)
        try:
            yield self._ask("share", wire.Share(manifest.canonical().decode("utf-8"),
                                                self.port, self._cid(), room), manifest.file_id)
        except SharingError:
            self.seeds.pop(manifest.file_id, None)
            swarm.close()
            raise
        return manifest.file_id, manifest

    def unshare(self, ref: str) -> str | None:
        """Stop offering the file we share whose id is or starts with
        ``ref``; returns its id, or None if that is not exactly one."""
        matches = [f for f in self.seeds if f.startswith(ref.strip().lower())]
        if len(matches) != 1:
            return None
        file_id = matches[0]
        self.seeds.pop(file_id)[0].close()
        self.client.request(wire.Unshare(file_id))
        return file_id

    def cancel(self, file_id: str) -> defer.Deferred:
        """Stop a download under way: its peers are hung up, what it has is
        kept (a fetch of it again resumes).  Fires once its file is closed."""
        fetch = self.fetches.get(file_id)
        if fetch is None or fetch.path is not None:  # none, or saved (and seeding)
            return defer.succeed(None)
        del self.fetches[file_id]
        return fetch.cancel()

    def list_files(self) -> None:
        self.client.request(wire.ListFiles())

    @defer.inlineCallbacks
    def fetch(self, ref: str, directory) -> Generator[defer.Deferred, Any, Fetch]:
        """Ask the server for a file's swarm and start downloading: fires
        with the running Fetch (its ``result`` fires with the saved path)."""
        answer = yield self._ask("fetch", wire.Fetch(ref.strip().lower(), self._cid()), "")
        if answer.file in self.fetches or answer.file in self._starting:
            raise SharingError(f"{answer.file[:12]} is already being downloaded")
        self._starting.add(answer.file)
        try:
            fetch = yield self._start_fetch(answer, directory)
        finally:
            self._starting.discard(answer.file)
        return fetch

    @defer.inlineCallbacks
    def _start_fetch(self, answer: wire.Swarm, directory) -> Generator[defer.Deferred, Any, Fetch]:
        try:
            manifest = Manifest.parse(answer.manifest.encode("utf-8"), 2**53)
        except ManifestError as e:
            raise SharingError(f"the server sent a bad manifest: {e}") from None
        if manifest.file_id != answer.file:
            raise SharingError("the server's manifest does not match the file id")
        try:
            download = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), Download, Path(directory), manifest)
        except (StorageError, OSError) as e:
            raise SharingError(f"cannot save into {directory}: {e}") from None
        fetch = Fetch(self, answer, manifest, download)
        self.fetches[answer.file] = fetch
        fetch.start()
        return fetch

    def ask_again(self, fetch: Fetch) -> None:
        """Who else has it now?  (Errors, e.g. nobody online, are just waited out.)"""
        if not self.client.connected:
            return
        d = self._ask("again", wire.Fetch(fetch.file_id, self._cid()), fetch.file_id)
        d.addCallbacks(fetch.more_peers, lambda _: None)

    def _lost_answers(self, everything: bool = False) -> None:
        """Requests sent on a connection that is gone get no answer: they
        fail (those queued meanwhile went out on the new one)."""
        current = self.client.proto
        for cid, entry in list(self._waiting.items()):
            if entry[3] is None and not everything:
                entry[3] = current
            elif everything or entry[3] is not current:
                del self._waiting[cid]
                entry[1].errback(SharingError("the connection to the server was lost before "
                                              "it answered; try again"))

    def forget(self, file_id: str) -> None:
        self.fetches.pop(file_id, None)

    # --- talking to the server ---------------------------------------------------

    def _cid(self) -> str:
        return self.client.next_cid()

    def _ask(self, kind: str, msg, file_id: str) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting[msg.cid] = [kind, d, file_id,
                                  self.client.proto if self.client.connected else None]
        try:
            self.client.request(msg)
        except ValueError as e:
            del self._waiting[msg.cid]
            raise SharingError(str(e)) from None
        return d

    def holding(self, file_id: str, pieces: int) -> None:
        if self.client.connected:
            self.client.request(wire.Holding(file_id, pieces, self.port))

    def ask_relay(self, fetch: Fetch, transfer: str) -> None:
        self._relay_for[transfer] = fetch
        if self.client.connected:
            self.client.request(wire.RelayRequest(transfer))

    def message_received(self, msg) -> bool:
        """A sharing message from the server; True if it was only for us
        (an answer to our request, an introduction), False if the user
        should see it too (offers, the file list, other errors)."""
        if isinstance(msg, wire.Error):
            if msg.cid is None and msg.code == "no_such_file":
                # The answer to a holding (the one file request without an
                # id): that file is offered no more. Nothing the user asked.
                return True
            if msg.cid not in self._waiting:
                return False
            self._waiting.pop(msg.cid)[1].errback(SharingError(msg.text))
        elif isinstance(msg, wire.Offer):
            # Our share, confirmed (the offer goes to the whole room).
            waiting = next((cid for cid, (kind, _, file_id, _) in self._waiting.items()
                            if kind == "share" and file_id == msg.file), None)
            if waiting is not None:
                self._waiting.pop(waiting)[1].callback(msg)
            return False
        elif isinstance(msg, wire.Swarm):
            if msg.cid in self._waiting:
                self._waiting.pop(msg.cid)[1].callback(msg)
        elif isinstance(msg, wire.PeerRequest):
            self._peer_request(msg)
        elif isinstance(msg, wire.RelayOpen):
            fetch = self._relay_for.pop(msg.transfer, None)
            if fetch is not None:
                fetch.relay_open(msg.transfer, msg.port)
        else:
            return False
        return True

    def _peer_request(self, msg: wire.PeerRequest) -> None:
        key = _key(msg.key)
        entry = self.seeds.get(msg.file)
        swarm = entry[0] if entry else None
        if swarm is None and msg.file in self.fetches:
            swarm = self.fetches[msg.file].swarm
        if key is None or swarm is None:
            return  # no longer ours to give
        if msg.relay_port == 0:
            self.introductions.add(msg.transfer, key, swarm, msg.name)
            return
        make = lambda: peer.PeerConnection(  # noqa: E731
            self.reactor, False, msg.transfer, key, swarm, msg.name,
            preamble=peer.relay_header(msg.transfer, key, "serve"), path="relay")
        host = msg.relay_host or self.client.server_ip  # the relay of the downloader's node
        peer.dial(self.reactor, host, msg.relay_port, make,
                  RELAY_TIMEOUT).addErrback(lambda _: None)

    def welcomed(self, welcome: wire.Welcome) -> None:
        """Logged in again as a new session, or resumed where our files are
        not known: the server forgot them."""
        self._lost_answers()
        if welcome.resumed and welcome.shares_kept:
            return
        asking = {file_id for kind, _, file_id, _ in self._waiting.values() if kind == "share"}
        for file_id, (swarm, manifest) in self.seeds.items():
            if file_id in asking:
                continue  # its share is about to go out anyway
            self.client.request(wire.Share(manifest.canonical().decode("utf-8"), self.port,
                                            self._cid()))
        for file_id, fetch in self.fetches.items():
            if fetch.download.have:
                self.holding(file_id, len(fetch.download.have))
