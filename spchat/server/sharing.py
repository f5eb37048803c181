"""File sharing: the server only keeps track of offers and introduces peers.

An offer belongs to the room it was made in: only that room's members see
it, list it and fetch it.  The pieces travel between the peers (or through
the relay, spchat.server.relay), never through the chat connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spchat import wire
from spchat.p2p.manifest import Manifest, ManifestError
from spchat.p2p.tags import relay_name
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.rules import Limits, Ports, Refused, quoted
from spchat.server.sessions import Session, SessionTable
from spchat.server.tracker import (
    HEX_DIGITS, MAX_FILES_PER_SESSION, MIN_PREFIX, RELAY_TICKET_SECONDS, SharedFile, Tracker,
    host_of,
)

if TYPE_CHECKING:
    from spchat.cluster.shares import ClusterShares


# A newcomer to a room is shown this many of its newest offers (the
# others are in the list of files).
MAX_OFFERS_ON_JOIN = 20


class Sharing:
    def __init__(self, clock, limits: Limits, sessions: SessionTable, directory: RoomDirectory,
                 room_of, ports: Ports):
        """``room_of(session, name)``: the room a session names, which it
        must be in (or Refused)."""
        self.clock = clock
        self.limits = limits
        self.sessions = sessions
        self.directory = directory
        self.room_of = room_of
        self.ports = ports  # the relay's port, once bound (0: no relay)
        # Transfers the relay may carry, by relay name (never the id: that
        # does not cross the network in clear), each until an expiry time.
        self.relay_tickets: dict[str, float] = {}
        self.tracker = Tracker()
        # The offers of the other nodes (spchat.cluster.shares.ClusterShares;
        # None: this node is alone).
        self.elsewhere: ClusterShares | None = None

    def now(self) -> float:
        return self.clock.seconds()

    # --- the relay asks ---------------------------------------------------------

    def relay_allowed(self, name: str) -> bool:
        """May the relay carry the transfer of this relay name (opened for
        it, not expired)?"""
        expiry = self.relay_tickets.get(name)
        return expiry is not None and self.now() < expiry

    def relay_used(self, name: str) -> None:
        """Both sides are connected through the relay: the ticket is spent."""
        self.relay_tickets.pop(name, None)

    def expire(self) -> None:
        now = self.now()
        self.tracker.expire(now)
        for transfer, expiry in list(self.relay_tickets.items()):
            if expiry <= now:
                del self.relay_tickets[transfer]

    # --- requests ---------------------------------------------------------------

    def _need_sharing(self) -> int:
        limit = self.limits.max_share_bytes
        if limit <= 0:
            raise Refused("sharing_off", "file sharing is off on this server")
        return limit

    def _linked(self, session_id: str) -> bool:
        """Online now, with a connection to reach it on (not reconnecting),
        here or on another node."""
        session = self.sessions.by_id.get(session_id)
        if session is None:
            return self.elsewhere is not None and self.elsewhere.live(session_id)
        return session.link is not None

    def _files(self) -> dict[str, SharedFile]:
        """The offers of every node, with their holders on every node."""
        return self.tracker.files if self.elsewhere is None else self.elsewhere.files()

    def _may_hold(self, session: Session, file_id: str) -> None:
        if not self.tracker.may_hold(session.id, file_id):
            raise Refused("too_many_shares", f"you already share {MAX_FILES_PER_SESSION} "
                          "files; unshare one first")

    @staticmethod
    def _send(session: Session, message: wire.Message) -> None:
        if session.link is not None:
            session.link.conn.send(message)

    def share(self, session: Session, msg: wire.Share) -> None:
        limit = self._need_sharing()
        room = self.room_of(session, msg.room)
        data = msg.manifest.encode()
        try:
            manifest = Manifest.parse(data, limit)
        except ManifestError as e:
            raise self._manifest_refusal(data, e, limit) from None
        # The file id is the hash of the canonical text: any other spelling
        # would give one file two ids.
        if manifest.canonical() != data:
            raise Refused("bad_manifest", "the manifest is not in canonical form (sorted "
                          "keys, no spaces, a safe file name)")
        file_id = manifest.file_id
        self._may_hold(session, file_id)
        shared = self.tracker.files.get(file_id)
        if shared is None:
            # Made again, its node lost (the sharer resumed here): the
            # room was told of it, and it is the same offer.
            made = (None if self.elsewhere is None
                    else self.elsewhere.made_at(file_id, room.key, session.name))
            shared = self.tracker.add(file_id, msg.manifest, manifest.name, manifest.size,
                                      len(manifest.pieces), session.name, room.name,
                                      int(self.now() * 1000) if made is None else made,
                                      room_key=room.key)
            self.tracker.hold(shared, session.id, msg.port, shared.piece_count)
            if made is None:
                self.directory.broadcast(room, shared.offer())
            else:
                self._send(session, shared.offer())
            return
        if shared.room_key != room.key:
            raise self._offered_in_another_room(session, shared)
        # Offered already (by this user before a reconnect, or by another):
        # one more source, and the offer again as this sharer's confirmation.
        self.tracker.hold(shared, session.id, msg.port, shared.piece_count)
        self._send(session, shared.offer())

    @staticmethod
    def _offered_in_another_room(session: Session, shared: SharedFile) -> Refused:
        """A file is offered in one room at a time.  Its offer (room,
        sharer, time) is not for who is not in that room to see."""
        where = (f"in #{shared.room}" if shared.room_key in session.rooms
                 else "in a room you are not in")
        return Refused("offered_elsewhere", f"this file is offered {where} already; a file "
                       "is offered in one room at a time")

    @staticmethod
    def _manifest_refusal(data: bytes, error: ManifestError, limit: int) -> Refused:
        try:  # is the size all that is wrong with it?
            size = Manifest.parse(data, wire.MAX_INT).size
        except ManifestError:
            return Refused("bad_manifest", str(error))
        return Refused("too_big", f"the file is {size} bytes; the limit on this server is "
                       f"{limit} bytes")

    def unshare(self, session: Session, msg: wire.Unshare) -> None:
        # Not held (any more): nothing to do, and nothing worth an error.
        self.tracker.release(session.id, msg.file.lower())

    def holding(self, session: Session, msg: wire.Holding) -> None:
        shared = self._visible(session, self._offer_to_hold(msg.file.lower()), msg.file)
        if msg.pieces == 0:
            self.tracker.release(session.id, shared.file_id)
            return
        if msg.pieces > shared.piece_count:
            raise Refused("bad_request", f"{shared.name} has only {shared.piece_count} pieces")
        self._may_hold(session, shared.file_id)
        if shared.file_id not in self.tracker.files:
            shared = self._adopted(shared)
        self.tracker.hold(shared, session.id, msg.port, msg.pieces)

    def _offer_to_hold(self, file_id: str) -> SharedFile | None:
        """The offer here, or one of another node whose manifest this node
        has (from an introduction): a downloader here may come to hold it."""
        shared = self.tracker.files.get(file_id)
        if shared is None and self.elsewhere is not None:
            shared = self._files().get(file_id)
            if shared is not None and not shared.manifest:
                return None
        return shared

    def _adopted(self, offer: SharedFile) -> SharedFile:
        """An offer of another node, offered here too now that a downloader
        here holds pieces of it (only then: one nobody holds is none)."""
        return self.tracker.add(offer.file_id, offer.manifest, offer.name, offer.size,
                                offer.piece_count, offer.sharer, offer.room, offer.ts,
                                room_key=offer.room_key)

    @staticmethod
    def _visible(session: Session, shared: SharedFile | None, ref: str) -> SharedFile:
        if shared is None or shared.room_key not in session.rooms:
            raise Refused("no_such_file", f"no file {quoted(ref)} is offered in your rooms")
        return shared

    def offers_to(self, session: Session, room: Room) -> None:
        """The files offered in a room now, to a member who just joined it
        (the offers it was not there to see), oldest first."""
        if session.link is None or room.key not in session.rooms:
            return
        offers = [f for f in self._files().values()
                  if f.room_key == room.key and any(map(self._linked, f.holders))]
        for shared in offers[-MAX_OFFERS_ON_JOIN:]:
            session.link.conn.send(shared.offer())

    def list_files(self, session: Session, msg: wire.ListFiles) -> None:
        self._send(session, wire.FileList(self.tracker.listing(self._linked, session.rooms,
                                                                self._files())))

    def _find_file(self, session: Session, ref: str) -> SharedFile:
        ref = ref.lower()
        if not set(ref) <= HEX_DIGITS:
            raise Refused("no_such_file", f"no file {quoted(ref)} is offered here")
        if len(ref) < MIN_PREFIX:
            raise Refused("no_such_file", f"give at least {MIN_PREFIX} hex digits of the "
                          "file's id")
        found = [f for f in self.tracker.find(ref, self._files()) if f.room_key in session.rooms]
        if not found:
            raise Refused("no_such_file", f"no file {ref} is offered in your rooms")
        if len(found) > 1:
            raise Refused("ambiguous", f"{ref} matches {len(found)} files; give more of its id")
        return found[0]

    def fetch(self, session: Session, msg: wire.Fetch) -> None:
        self._need_sharing()
        shared = self._find_file(session, msg.file)
        peers = self.tracker.pick(
            shared, lambda sid: sid != session.id and self._linked(sid)
        )
        if not peers:
            raise Refused("no_peers", f"nobody who has {shared.name} is online now")
        rows, elsewhere = [], []
        for holder_id, holder in peers:
            peer = self.sessions.by_id.get(holder_id)
            if peer is None:  # on another node: introduced by it
                elsewhere.append((holder_id, holder))
                continue
            transfer = self.tracker.introduce(shared.file_id, session.id, holder_id, self.now())
            # The holder hears of the key before the downloader can use it.
            self._send(peer, wire.PeerRequest(
                transfer.id, transfer.key, shared.file_id, session.name, relay_port=0
            ))
            assert peer.link is not None, "picked as _linked"
            rows.append((peer.name, host_of(peer.link.address), holder.port,
                         transfer.id, transfer.key))
        if elsewhere and self.elsewhere is not None:
            self.elsewhere.fetch(session, msg.cid, shared, rows, elsewhere)
            return
        self._send(session, wire.Swarm(shared.file_id, shared.manifest, msg.cid, tuple(rows)))

    def relay_request(self, session: Session, msg: wire.RelayRequest) -> None:
        transfer = self.tracker.transfer(session.id, msg.transfer, self.now())
        if transfer is None:
            raise Refused("no_such_transfer", "no such transfer (it may have expired); "
                          "fetch the file again")
        if self.ports.relay == 0:
            raise Refused("no_relay", "this server has no relay: peers must connect directly")
        holder = self.sessions.by_id.get(transfer.holder)
        offer = self._files().get(transfer.file)
        if not (self._linked(transfer.holder) and offer is not None
                and transfer.holder in offer.holders):
            raise Refused("no_peers", "the peer of this transfer is not online now")
        relay_host = "" if holder is not None else self._relay_host(session)
        name = relay_name(transfer.id, bytes.fromhex(transfer.key))
        if not self.relay_allowed(name):
            # One call to the relay per live ticket: asking again must not
            # make the holder dial the relay again and again.
            self.relay_tickets[name] = self.now() + RELAY_TICKET_SECONDS
            if holder is not None:
                self._send(holder, wire.PeerRequest(
                    transfer.id, transfer.key, transfer.file, session.name, self.ports.relay
                ))
            elif self.elsewhere is not None:
                self.elsewhere.relay(session, transfer.holder, transfer.id, transfer.key,
                                     transfer.file, self.ports.relay, relay_host)
        self._send(session, wire.RelayOpen(transfer.id, self.ports.relay))

    def _relay_host(self, session: Session) -> str:
        """Where a holder on another node dials this node's relay: the
        configured ``relay_host``, else the address the downloader reached
        this node at.  None known (a Unix socket behind a proxy): refused,
        or the holder would dial its own node's address instead."""
        if self.ports.relay_host:
            return self.ports.relay_host
        assert session.link is not None, "it asked on it"
        host = host_of(session.link.local)
        if not host:
            raise Refused("no_relay", "the peer is connected to another node, which cannot be "
                          "told where this server's relay is (this connection does not come "
                          "over TCP, and no relay host is set): only a direct connection can "
                          "reach it")
        return host
