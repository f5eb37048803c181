"""File sharing across nodes: every node knows the offers of the others
and who holds them there, and introduces its downloaders to holders on
other nodes.  Sans-IO: a clock, the cluster node (``on``, ``send``,
``on_connected``, ``name``), this node's tracker and session table, the
roster's ``remote_session(node, id)`` and ``on_offer(shared)`` (an offer
new to this node, for its room's members here).

- Each node says its offers and holders (``shares``) when they change
  (at most once a second; a holder's progress short of the whole file
  waits for the next notice),
  when it (re)joins the bus (asking the others for theirs) and every
  ``RESEND_SECONDS`` (for a notice the bus lost).  Whether a holder on
  another node is there is the roster's to say: one it does not list
  (gone, or its node is) is no holder, one reconnecting is not picked.
- A fetch here of a file held elsewhere: the holder's node is asked to
  give its session the ``PeerRequest`` (``introduce``) and says when it
  has, with the manifest (``introduced``); the ``Swarm`` answer waits for
  that (the downloader must not use a key its peer has not heard of),
  up to ``INTRODUCE_SECONDS``, and lists the holders whose node answered.
- The relay of a transfer across nodes is the downloader's node's: its
  ticket is kept there, and the holder is told that relay's host and port.
- An offer made again soon after its node was lost (its sharer resumed
  elsewhere) is the same offer: no news (``spchat.cluster.recent_offers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall

from spchat import wire
from spchat.cluster.recent_offers import RecentOffers
from spchat.cluster.roster_notices import RemoteSession
from spchat.cluster.share_notices import (
    INTRODUCE, INTRODUCED, SHARES, Introduced, Introduction, Shares, introduce, introduced, read_introduce,
    read_introduced, read_shares, shares,
)
from spchat.p2p.manifest import Manifest, ManifestError
from spchat.server.sessions import Session, SessionTable
from spchat.server.tracker import Holder, SharedFile, Tracker, host_of

RESEND_SECONDS = 30.0
# Changes that come together go out in one notice.
TELL_DELAY = 0.05
# And at most one such notice a second: each carries all of the node's
# offers, and a client may change what it holds as often as it likes.
TELL_SPACING = 1.0
# A holder's node that has not said it told its holder within this long
# is left out of the answer to the fetch.
INTRODUCE_SECONDS = 3.0


@dataclass(slots=True)
class _Fetch:
    """A fetch here waiting for other nodes to tell their holders."""

    session: Session
    cid: str
    file: SharedFile
    manifest: str
    rows: list = field(default_factory=list)  # wire.Swarm's, of the holders told
    waiting: dict = field(default_factory=dict)  # transfer id -> its row
    timer: IDelayedCall | None = None
    answered: bool = False


class ClusterShares:
    def __init__(self, clock, cluster, tracker: Tracker, sessions: SessionTable,
                 remote_session: Callable[[str, str], RemoteSession | None],
                 on_offer: Callable[[SharedFile], None]):
        self.clock = clock
        self.cluster = cluster
        self.tracker = tracker
        self.sessions = sessions
        self.remote_session = remote_session
        self.on_offer = on_offer
        self.boot = cluster.run
        self.nodes: dict[str, tuple[str, dict[str, SharedFile]]] = {}  # name -> (boot, files)
        self.holder_nodes: dict[str, str] = {}  # a holder's session id -> its node
        self.manifests: dict[str, str] = {}  # of files offered elsewhere, as introduced
        self.fetches: dict[str, _Fetch] = {}  # by transfer id
        self.recent = RecentOffers(clock)  # the offers of every node, lately
        self._unlisted = False  # offers elsewhere whose holders the roster does not list
        self.ignored = 0
        self._tell_call = None
        self._told_at = float("-inf")
        self._resend_call = clock.callLater(RESEND_SECONDS, self._resend)
        tracker.on_change = self.changed
        tracker.on_gone = self._gone
        cluster.on(SHARES, self._parsed(read_shares, self._heard_shares))
        cluster.on(INTRODUCE, self._parsed(read_introduce, self._heard_introduce))
        cluster.on(INTRODUCED, self._parsed(read_introduced, self._heard_introduced))
        cluster.on_connected.append(lambda: self._tell(ask=True))

    def _parsed(self, read: Callable[[dict], Any], handle: Callable[[str, Any], None]):
        """A handler of bodies that ``read`` parses; one it cannot is counted."""

        def heard(node: str, body: dict) -> None:
            parsed = read(body)
            if parsed is None:
                self.ignored += 1
                self.cluster.drop("a file-sharing notice that does not parse")
            else:
                handle(node, parsed)

        return heard

    # --- what this node says -------------------------------------------------------

    def changed(self) -> None:
        """An offer or a holder here came or went."""
        if self._tell_call is None:
            wait = max(TELL_DELAY, self._told_at + TELL_SPACING - self.clock.seconds())
            self._tell_call = self.clock.callLater(wait, self._tell)

    def _tell(self, ask: bool = False) -> None:
        if self._tell_call is not None and self._tell_call.active():
            self._tell_call.cancel()
        self._tell_call = None
        self._told_at = self.clock.seconds()
        for shared in self.tracker.files.values():
            self.recent.seen(shared)
        self.cluster.send(SHARES, shares(self.boot, ask, self.tracker.files.values()))

    def _gone(self, shared: SharedFile) -> None:
        """An offer here is withdrawn: unless another node has it too, made
        again it is news."""
        if shared.file_id not in self.files():
            self.recent.withdrawn(shared)

    def made_at(self, file_id: str, room_key: str, sharer: str) -> int | None:
        """When an offer known lately on some node was first made (ms): made
        again now, it is the same offer; None if it is new."""
        return self.recent.made_at(room_key, file_id, sharer)

    def _resend(self) -> None:
        self._tell()
        # A node none of whose holders the roster lists is gone (or holds
        # nothing any more): what it said is forgotten.
        for node in [name for name, (_, files) in self.nodes.items()
                     if not any(self.remote_session(name, sid) is not None
                                for shared in files.values() for sid in shared.holders)]:
            self._forget_node(node)
        self._forget_manifests()
        self._resend_call = self.clock.callLater(RESEND_SECONDS, self._resend)

    def _forget_node(self, node: str) -> None:
        _, files = self.nodes.pop(node, ("", {}))
        for shared in files.values():
            for sid in shared.holders:
                if self.holder_nodes.get(sid) == node:
                    del self.holder_nodes[sid]

    def _forget_manifests(self) -> None:
        """Those of files offered on no other node any more."""
        for file_id in set(self.manifests) - {f for _, fs in self.nodes.values() for f in fs}:
            del self.manifests[file_id]

    def stop(self) -> None:
        for call in (self._tell_call, self._resend_call):
            if call is not None and call.active():
                call.cancel()
        for fetch in set(self.fetches.values()):
            if fetch.timer is not None and fetch.timer.active():
                fetch.timer.cancel()
        self.fetches.clear()

    # --- what the others have ------------------------------------------------------

    def holder(self, session_id: str) -> RemoteSession | None:
        """The session on another node that holds files, if the roster lists it."""
        node = self.holder_nodes.get(session_id)
        return None if node is None else self.remote_session(node, session_id)

    def live(self, session_id: str) -> bool:
        """A holder elsewhere, connected there now (not reconnecting)."""
        remote = self.holder(session_id)
        return remote is not None and remote.state != "reconnecting"

    def files(self) -> dict[str, SharedFile]:
        """Every offer, here and elsewhere, oldest first, each with its
        holders on every node (those of other nodes the roster lists).  A
        file offered in two rooms is the offer of one (here first): the
        holders of the other are not its holders, nor shown to its room."""
        merged: dict[str, SharedFile] = {}
        for shared in self.tracker.files.values():
            merged[shared.file_id] = _copy(shared, shared.manifest)
        for name, (_, files) in self.nodes.items():
            for file_id, shared in files.items():
                holders = {sid: h for sid, h in shared.holders.items()
                           if self.remote_session(name, sid) is not None}
                if not holders:
                    continue
                into = merged.get(file_id)
                if into is None:
                    into = merged[file_id] = _copy(shared, self.manifests.get(file_id, ""), {})
                elif into.room_key != shared.room_key:
                    continue
                into.holders.update(holders)
        return dict(sorted(merged.items(), key=lambda item: item[1].ts))

    def _heard_shares(self, node: str, heard: Shares) -> None:
        if node == self.cluster.name:
            return
        before = self.nodes.get(node)
        self._forget_node(node)
        self.nodes[node] = (heard.boot, heard.files)
        for shared in heard.files.values():
            self.holder_nodes.update(dict.fromkeys(shared.holders, node))
        self._forget_manifests()
        if before is not None and before[0] == heard.boot:
            # Withdrawn there: the node (the same run) has it no more, though
            # its holder is still there (one that moved away offers it again
            # where it went), and no other node has it.
            offered = self.files()
            for file_id, shared in before[1].items():
                if (file_id not in heard.files and file_id not in offered
                        and any(self.remote_session(node, sid) is not None
                                for sid in shared.holders)):
                    self.recent.withdrawn(shared)
        news = self._news()
        if heard.ask or before is None or before[0] != heard.boot:
            self._tell()  # it did not know ours (its answer may come back at once)
        for shared in news:
            self.on_offer(shared)

    def roster_changed(self) -> None:
        """Someone on another node came or went: an offer heard before the
        roster listed its holder is shown now."""
        if self._unlisted:
            for shared in self._news():
                self.on_offer(shared)

    def _news(self) -> list[SharedFile]:
        """The offers of other nodes shown now (a holder listed) that this
        node's rooms were not told of lately; from now on they have been."""
        offered = self.files()
        news = [shared for file_id, shared in offered.items()
                if file_id not in self.tracker.files  # (told when made here)
                and self.made_at(file_id, shared.room_key, shared.sharer) is None]
        for shared in offered.values():
            self.recent.seen(shared)
        self._unlisted = any(file_id not in offered
                             for _, files in self.nodes.values() for file_id in files)
        return news

    # --- introductions -------------------------------------------------------------

    def fetch(self, session: Session, cid: str, shared: SharedFile, rows: list,
              remote: list[tuple[str, Holder]]) -> None:
        """Introduce ``session`` to holders elsewhere, then answer with
        ``rows`` (of holders here, told already) and theirs."""
        fetch = _Fetch(session, cid, shared, shared.manifest, list(rows))
        asks = []
        for holder_id, holder in remote:
            peer = self.holder(holder_id)
            if peer is None:
                continue
            transfer = self.tracker.introduce(shared.file_id, session.id, holder_id,
                                              self.clock.seconds())
            fetch.waiting[transfer.id] = (peer.name, host_of(peer.address), holder.port,
                                          transfer.id, transfer.key)
            self.fetches[transfer.id] = fetch
            asks.append(Introduction(peer.node, holder_id, transfer.id, transfer.key,
                                     shared.file_id, session.name, 0, "", True))
        if not fetch.waiting:
            self._answer(fetch)
            return
        fetch.timer = self.clock.callLater(INTRODUCE_SECONDS, self._answer, fetch)
        for ask in asks:  # the last (or the timer) answers: each is waited for by now
            self.cluster.send(INTRODUCE, introduce(ask))

    def relay(self, session: Session, holder_id: str, transfer: str, key: str, file_id: str,
              relay_port: int, relay_host: str) -> None:
        """Tell a holder elsewhere to dial this node's relay."""
        peer = self.holder(holder_id)
        if peer is not None:
            self.cluster.send(INTRODUCE, introduce(Introduction(
                peer.node, holder_id, transfer, key, file_id, session.name, relay_port,
                relay_host, False)))

    def _heard_introduce(self, node: str, intro: Introduction) -> None:
        if intro.to != self.cluster.name:
            return
        session = self.sessions.by_id.get(intro.holder)
        shared = self.tracker.files.get(intro.file)
        if (session is None or session.link is None or shared is None
                or not self.tracker.holds(intro.holder, intro.file)):
            return  # gone meanwhile: the fetch there goes on without it
        session.link.conn.send(wire.PeerRequest(intro.transfer, intro.key, intro.file,
                                                intro.name, intro.relay_port, intro.relay_host))
        if intro.answer:
            self.cluster.send(INTRODUCED, introduced(node, intro.transfer, shared.manifest))

    def _heard_introduced(self, node: str, said: Introduced) -> None:
        if said.to != self.cluster.name or said.transfer not in self.fetches:
            return
        fetch = self.fetches.pop(said.transfer)
        row = fetch.waiting.pop(said.transfer, None)
        if row is None or not _manifest_of(said.manifest, fetch.file.file_id):
            return
        fetch.rows.append(row)
        fetch.manifest = fetch.manifest or said.manifest
        self.manifests[fetch.file.file_id] = said.manifest
        if not fetch.waiting:
            self._answer(fetch)

    def _answer(self, fetch: _Fetch) -> None:
        if fetch.answered:
            return
        fetch.answered = True
        if fetch.timer is not None and fetch.timer.active():
            fetch.timer.cancel()
        fetch.timer = None
        for transfer in fetch.waiting:
            self.fetches.pop(transfer, None)
        fetch.waiting.clear()
        session = fetch.session
        if self.sessions.by_id.get(session.id) is not session or session.link is None:
            return
        if fetch.rows and fetch.manifest:
            message: wire.Message = wire.Swarm(fetch.file.file_id, fetch.manifest, fetch.cid,
                                               tuple(fetch.rows))
        else:
            message = wire.Error("no_peers", f"nobody who has {fetch.file.name} is online now",
                                 fetch.cid)
        session.link.conn.send(message)


def _copy(shared: SharedFile, manifest: str, holders: dict | None = None) -> SharedFile:
    return SharedFile(shared.file_id, manifest, shared.name, shared.size, shared.piece_count,
                      shared.sharer, shared.room, shared.ts,
                      dict(shared.holders) if holders is None else holders,
                      room_key=shared.room_key)


def _manifest_of(text: str, file_id: str) -> bool:
    """Is ``text`` the manifest of ``file_id`` (whose id is its hash)?"""
    try:
        return Manifest.parse(text.encode(), wire.MAX_INT).file_id == file_id
    except ManifestError:
        return False
