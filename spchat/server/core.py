"""The chat core: the dispatch table, the session lifecycle, and the wiring
of the parts that hold the rules.

Sans-IO: it never imports the reactor and never touches a socket.  It gets a
clock (anything with ``seconds()`` and ``callLater()``: the reactor, or
``task.Clock`` in tests), a store (``spchat.server.interfaces.IStore``) and
talks to each connection through ``IChatClient``, so every rule of the chat
is a plain unit test.

The parts, each with its collaborators given here and none importing this
module: ``SessionTable`` (who is on), ``RoomDirectory`` (rooms and their
events), ``Messaging`` (lines saved, delivered, read back), ``RoomCommands``
(joining, settings, moderation), ``Logins`` (logins, accounts, bans),
``Sharing`` (file offers and introductions), ``Administration`` (admin
connections).
"""

from __future__ import annotations

import hmac
import math
from collections import ChainMap
from dataclasses import replace as dataclass_replace
from typing import Any, Callable, Mapping

from twisted.internet import defer

from spchat import wire
from spchat.beacon import BeaconKeys
from spchat.cluster.acts import ClusterActs
from spchat.cluster.limits import ClusterLimits
from spchat.cluster.moves import MOVED, REPLACED, SessionMoves
from spchat.cluster.remote_members import ClusterRoster
from spchat.cluster.room_news import RoomNews
from spchat.cluster.roster_notices import RemoteSession
from spchat.cluster.seal import Seal
from spchat.cluster.shares import ClusterShares
from spchat.server.administration import Administration
from spchat.server.claims import ClaimRefresher, LocalClaims, token_hash
from spchat.server.flood import FloodControl
from spchat.server.login import Logins
from spchat.server.memory_store import MemoryStore
from spchat.server.messaging import Messaging
from spchat.server.room_commands import RoomCommands
from spchat.server.rooms import ROOM_EVENT_SECONDS, Room, RoomDirectory  # noqa: F401 (tests)
from spchat.server.rules import (Limits, Ports, Refused, TokenBucket, ban_length, normalise_name,
                                 plain)
from spchat.server.sessions import Link, Session, SessionTable, State
from spchat.server.sharing import Sharing

__all__ = ["ChatCore", "Limits", "Refused", "State", "ROOM_EVENT_SECONDS", "normalise_name"]

# What a user does (as opposed to what the client does by itself) counts as
# activity: who is shown idle.  Liveness is another thing: any message.
USER_ACTIONS = (wire.Say, wire.Direct, wire.Who, wire.Join, wire.Part, wire.ListRooms,
                wire.Topic, wire.Mode, wire.Moderate)
# A quiet client sends a keepalive this many times per CHAT_IDLE_TIMEOUT.
KEEPALIVES_PER_TIMEOUT = 3
# Messages of one connection kept until the rooms are loaded (a hello, a
# login or resume, and whatever a client sends before its welcome): more
# is a client that does not wait, cut so that a slow start costs bounded
# memory.
MAX_EARLY_MESSAGES = 16
# Requests that cost the server work count against the flood limit.
FLOOD_LIMITED = USER_ACTIONS + (
    wire.PresenceRequest, wire.HistoryRequest, wire.Register, wire.ChangePassword,
    wire.Share, wire.Fetch, wire.ListFiles,
)


class ImmediateCommitter:
    """Saves each line as it comes (an in-memory store: nothing to batch for)."""

    def __init__(self, log, on_committed):
        self.log = log
        self.on_committed = on_committed

    def add(self, record) -> None:
        self.log.append([record]).addCallback(lambda result: self.on_committed(*result))

    def stop(self) -> defer.Deferred:
        return defer.succeed(None)


class ChatCore:
    """All chat rules; the network adapters only parse and forward."""

    def __init__(
        self,
        clock,
        limits: Limits | None = None,
        store=None,
        passwords=None,
        throttle=None,
        signups=None,
        admin_token: str | None = None,
        audit: Callable[[str], None] = lambda line: None,
        on_shutdown: Callable[[], None] = lambda: None,
        committer_factory=None,
        ports: Ports | None = None,
        bus=None,
        bus_key: bytes | None = None,
        node: str = "local",
        stats: Callable[[], tuple] | None = None,
        names=None,
    ):
        """``store``: an IStore (None: one in memory, ready at once);
        ``passwords``: hashes off the reactor thread (None: no accounts);
        ``throttle``: failed logins; ``signups``: new accounts (a
        ``SignupLimit``; None: no limit); ``committer_factory(log, on_committed)``:
        how lines are saved (None: one at a time, as they come); ``ports``:
        the beacon's and the relay's, once the service has bound them;
        ``bus``: an ``IBus`` to the other nodes on the same database (None:
        this node is alone), its notices sealed with ``bus_key``
        (``spchat.cluster.seal.bus_key``); ``node``: this node's name;
        ``stats()``: the server's figures for ``admin stats`` (rows of
        wire.STAT_FIELDS; None: none); ``names``: the ``INameClaims`` of
        the nodes on one database (None: this node's own)."""
        self.clock = clock
        self.node = node
        self.limits = limits or Limits()
        self.ports = ports or Ports()
        self.stopped = False  # stop() was called: the server is going down
        # Until the rooms are loaded, what arrives waits here, in order, by
        # connection (a start may be tried again for long: see ``receive``).
        self.ready = False
        self._early: dict[Link, list[wire.Message]] = {}
        self.links: set[Link] = set()
        self.presence_listeners: list[Callable[[], None]] = []
        self.roster: ClusterRoster | None = None  # the sessions of the other nodes
        self.table = SessionTable(clock, self._sessions_changed)
        self.directory = RoomDirectory(clock, self.presence_state)
        own_store = store is None
        self.store = MemoryStore() if own_store else store
        make = committer_factory or ImmediateCommitter
        self.messaging = Messaging(clock, self.limits, self.store,
                                   lambda published: make(self.store, published),
                                   self.directory, self.table, bus, self._seal(bus, bus_key))
        if self.cluster is not None:
            self.roster = ClusterRoster(clock, self.cluster, self.table, self.directory,
                                        self.presence_state, self._elsewhere_changed)
        self.room_commands = RoomCommands(clock, self.limits, self.store, self.directory,
                                          self.table, self.messaging, self._presence_changed,
                                          self._sessions_changed)
        self.names = names or LocalClaims(clock, node)
        self.cluster_limits: ClusterLimits | None = None  # (None: alone)
        if self.cluster is not None:  # failed logins and new accounts: every node's
            self.cluster_limits = ClusterLimits(clock, self.cluster, throttle, signups)
            throttle, signups = self.cluster_limits.throttle, self.cluster_limits.signups
        self.logins = Logins(clock, self.store, passwords, throttle, self.table,
                             self._start_session, self._end, signups,
                             self.limits.refusal_log_seconds, self.names)
        self.logins.links = self.links
        self.moves = SessionMoves(clock, self.names, self.table, self.logins.claims,
                                  self._taken, self.logins.release, self.messaging.cluster)
        self.logins.replaced_elsewhere = lambda claim: self.moves.tell(claim, REPLACED)
        self.claim_refresher = ClaimRefresher(clock, self.names)
        self.logins.claim_changed = self.claim_refresher.changed
        self.directory.rooms_changed = self.claim_refresher.changed
        self.logins.adopt_lineage = self.messaging.adopt_lineage
        self.sharing = Sharing(clock, self.limits, self.table, self.directory,
                               self.messaging.room_of, self.ports)
        self.messaging.history_shown = self.sharing.offers_to
        self.shares: ClusterShares | None = None  # the offers of other nodes (None: alone)
        if self.roster is not None:
            self.shares = ClusterShares(clock, self.cluster, self.sharing.tracker, self.table,
                                        self._remote_session, self._offered_elsewhere)
            self.sharing.elsewhere = self.shares
        self.flood = FloodControl(clock, self.limits, self._handle, self._end)
        self.admin = Administration(clock, self.table, self.directory, self.logins,
                                    self.room_commands, admin_token, self._end, self.kick, audit,
                                    on_shutdown, self.limits.refusal_log_seconds,
                                    stats or (lambda: ()))
        self.admin.node = node
        if self.roster is not None:
            self.admin.elsewhere = self.roster.admin_rows
            self.messaging.elsewhere = self.roster.elsewhere
        self.room_news: RoomNews | None = None  # rooms changed on other nodes (None: alone)
        if self.cluster is not None:
            self.admin.acts = ClusterActs(self.cluster, self.admin.act_here, audit)
            self.room_news = RoomNews(clock, self.cluster, self.store, self.room_commands)
        # By message type: (link, msg) before login, (session, msg) after.
        self._handlers: dict[type, Callable[[Any, Any], object]] = {
            wire.Login: self.logins.login,
            wire.Resume: self._resume,
            wire.Say: self.messaging.say,
            wire.Direct: self.messaging.direct,
            wire.HistoryRequest: self.messaging.history,
            wire.Who: self._who,
            wire.PresenceRequest: self._who,
            wire.Keepalive: lambda session, msg: None,  # heard: that is all
            wire.Join: self.room_commands.join,
            wire.Part: self.room_commands.part,
            wire.ListRooms: self.room_commands.list_rooms,
            wire.Topic: self.room_commands.topic,
            wire.Mode: self.room_commands.mode,
            wire.Moderate: self.room_commands.moderate,
            wire.Register: self.logins.register,
            wire.ChangePassword: self.logins.change_password,
            wire.Logout: self._logout,
            wire.Share: self.sharing.share,
            wire.Unshare: self.sharing.unshare,
            wire.ListFiles: self.sharing.list_files,
            wire.Fetch: self.sharing.fetch,
            wire.Holding: self.sharing.holding,
            wire.RelayRequest: self.sharing.relay_request,
        }
        if own_store:
            self.start()

    def _seal(self, bus, bus_key: bytes | None) -> Seal | None:
        if bus is None:
            return None
        if not bus_key:
            raise ValueError("a bus needs the key its notices are sealed with")
        return Seal(bus_key, self.node, self.clock)

    # --- what the service and the tests look at -------------------------------------

    @property
    def sessions(self) -> dict[str, Session]:
        """Every session not offline, by id."""
        return self.table.by_id

    @property
    def by_key(self) -> dict[str, Session]:
        return self.table.by_key

    @property
    def everyone(self) -> Mapping[str, Session | RemoteSession]:
        """Every name online by key: here, or on another node (a
        ``RemoteSession``: a name, rooms, a state), this node's first."""
        if self.roster is None:
            return self.table.by_key
        return ChainMap(self.table.by_key, self.roster.remote.by_key)  # type: ignore[arg-type]

    @property
    def cluster(self):
        """This node on the bus (a ``ClusterNode``), or None: alone."""
        return self.messaging.cluster

    @property
    def tracker(self):
        return self.sharing.tracker

    @property
    def committer(self):
        return self.messaging.committer

    @property
    def admin_token(self) -> str | None:
        return self.admin.admin_token

    def now(self) -> float:
        return self.clock.seconds()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def start(self) -> defer.Deferred:
        """Load the rooms (and make the default ones); then lines may flow."""

        def loaded(records) -> None:
            self.room_commands.loaded(records)
            self.ready = True
            early, self._early = self._early, {}
            for link, messages in early.items():
                for msg in messages:
                    if link in self.links:
                        self.receive(link, msg)

        # This node's claims left from before go first: it has no sessions yet.
        return self.names.open().addCallback(lambda _: self.store.load()).addCallback(loaded)

    def stop(self) -> defer.Deferred:
        """The server is stopping: no flood drain or grace timer may fire
        after the store has closed, and nothing that still arrives is
        handled.  Comings and goings still waiting go out first: the last
        "alice left" is news too.  Fires once every accepted line is saved."""
        self.directory.stop()
        self.stopped = True
        for session in self.table.by_id.values():
            session.cancel_timers()
            session.stop_catching_up(answer=False)  # no read after the store closes
        self.admin.stop()
        self.moves.stop()
        self.claim_refresher.stop()
        if self.cluster is not None:
            self.cluster.stop()
        if self.roster is not None:
            self.roster.stop()
        if self.messaging.directs is not None:
            self.messaging.directs.stop()
        if self.messaging.arrivals is not None:
            self.messaging.arrivals.stop()
        if self.room_news is not None:
            self.room_news.stop()
        if self.shares is not None:
            self.shares.stop()
        return defer.maybeDeferred(self.messaging.committer.stop)

    # --- connection lifecycle, called by the protocol ---------------------------------

    def open_link(self, conn, address: str, beacon_keys: BeaconKeys | None = None,
                  agent: str = "?", local: str = "") -> Link:
        now = self.now()
        link = Link(conn, address, now, beacon_keys, agent=agent, last_heard=now, local=local)
        self.links.add(link)
        return link

    def receive(self, link: Link, msg: wire.Message) -> None:
        """Handle one message from a connection; refusals go back as errors."""
        if self.stopped:
            return  # the server is stopping: its store is closed
        link.last_heard = self.now()  # whatever it says, it is alive
        if not self.ready:
            self._wait_for_rooms(link, msg)
            return
        if link.admin or isinstance(msg, (wire.AdminLogin, wire.AdminRequest)):
            self.admin.receive(link, msg)
            return
        handler = self._handlers.get(type(msg))
        session = link.session
        try:
            if handler is None:
                raise Refused("unexpected", f"a client may not send '{msg.TYPE}'")
            if session is None:
                if not isinstance(msg, (wire.Login, wire.Resume)):
                    raise Refused("not_logged_in", "log in first")
                if link.login_pending:
                    raise Refused("busy", "a login is already in progress")
                handler(link, msg)
                return
            if isinstance(msg, (wire.Login, wire.Resume)):
                raise Refused("already_logged_in", f"already logged in as {session.name}")
            if isinstance(msg, USER_ACTIONS):
                session.last_activity = self.now()
            if isinstance(msg, FLOOD_LIMITED) and not self.flood.admit(session, msg):
                return
            self._handle(session, msg)
        except Refused as refusal:
            link.conn.send(wire.Error(refusal.code, refusal.text, getattr(msg, "cid", None)))

    def _handle(self, session: Session, msg: wire.Message) -> None:
        try:
            self._handlers[type(msg)](session, msg)
        except Refused as refusal:
            self._send(session, wire.Error(refusal.code, refusal.text, getattr(msg, "cid", None)))

    def _wait_for_rooms(self, link: Link, msg: wire.Message) -> None:
        """Keep ``msg`` until the rooms are loaded: at most
        ``MAX_EARLY_MESSAGES`` of one connection (a client waits for its
        welcome before it says more), nothing of one gone (see
        ``link_lost``), no sign of life (heard already)."""
        if isinstance(msg, wire.Keepalive):
            return
        held = self._early.setdefault(link, [])
        if len(held) >= MAX_EARLY_MESSAGES:
            del self._early[link]
            link.conn.close("starting", "the server is starting: log in again in a moment")
            return
        held.append(msg)

    def link_lost(self, link: Link, resumable: bool = True,
                  reason: str = "connection lost") -> None:
        """The connection is gone, for whatever reason.  ``resumable``: its
        session waits CHAT_RESUME_GRACE for the client to resume it; a
        front-end whose clients cannot resume (IRC) ends it at once."""
        self.links.discard(link)
        self.admin.links.discard(link)
        self._early.pop(link, None)
        session = link.session
        link.session = None
        if self.stopped:
            return  # stopping: no grace timers, no notices
        if session is None or session.link is not link:
            return
        session.link = None
        session.endpoint = None
        if self.limits.resume_grace > 0 and resumable:
            self.table.set_state(session, State.RECONNECTING)
            session.grace_call = self.clock.callLater(
                self.limits.resume_grace, self._grace_expired, session
            )
            self._presence_changed()
            session.stop_catching_up()  # a resume gets its own replay
        else:
            self._go_offline(session, reason, f"{session.name} left ({plain(reason)})")

    def traffic(self, link: Link, received: int = 0, sent: int = 0) -> None:
        session = link.session
        if session is not None:
            session.bytes_in += received
            session.bytes_out += sent

    # --- the relay asks ------------------------------------------------------------

    @property
    def relay_tickets(self) -> dict[str, float]:
        return self.sharing.relay_tickets

    def relay_allowed(self, transfer: str) -> bool:
        return self.sharing.relay_allowed(transfer)

    def relay_used(self, transfer: str) -> None:
        self.sharing.relay_used(transfer)

    # --- the lifecycle ----------------------------------------------------------------

    def _send(self, session: Session, message: wire.Message) -> None:
        if session.link is not None:
            session.link.conn.send(message)

    def _welcome(self, session: Session, rooms, resumed: bool,
                 shares_kept: bool = True) -> wire.Welcome:
        return wire.Welcome(
            session.name, session.id, session.token, tuple(room.name for room in rooms),
            self.now_ms(), self.ports.udp, int(self.limits.presence_interval * 1000),
            self.limits.max_in_flight, resumed, self.keepalive_ms, shares_kept,
        )

    @property
    def keepalive_ms(self) -> int:
        """How often a quiet client should send a keepalive: three chances
        to be heard within CHAT_IDLE_TIMEOUT (0: the timeout is off)."""
        return math.ceil(self.limits.idle_timeout * 1000 / KEEPALIVES_PER_TIMEOUT)

    def _start_session(self, link: Link, display: str, key: str, registered: bool,
                       msg: wire.Login, ids: tuple[str, str]) -> defer.Deferred:
        """A user logged in: welcome it, and put it back in its rooms (a
        registered account's, kept by the store) or in the default ones.
        Fires with the session (the name stays claimed until then)."""
        kept = self.store.memberships(key) if registered else defer.succeed([])
        d = kept.addCallback(self._login_rooms, key)
        if self.names.shared:
            d.addCallback(self._rooms_claimed,
                          self.logins.login_claim(ids, display, key, registered, msg))
        return d.addCallback(self._welcomed, link, display, key, registered, msg, ids)

    def _login_rooms(self, keys: list[str], key: str) -> tuple[list[Room], bool]:
        """The rooms a login goes back to, and whether they are the default
        ones (the first login, or every room left: to be remembered)."""
        rooms = [room for room in map(self.directory.get, sorted(keys)) if room is not None]
        if rooms:
            return rooms, False
        return self.room_commands.default_rooms_for(key), True

    def _rooms_claimed(self, found: tuple[list[Room], bool], claim) -> defer.Deferred:
        """The rooms written into the claim before the welcome: a client cut
        at once resumes on another node, which knows them from the claim
        alone (the refresher's later update would come too late)."""
        rooms = tuple(sorted(room.key for room in found[0]))
        return self.claim_refresher.write(dataclass_replace(claim, rooms=rooms)).addCallback(
            lambda _: found)

    def _welcomed(self, found: tuple[list[Room], bool], link: Link, display: str, key: str,
                  registered: bool, msg: wire.Login, ids: tuple[str, str]) -> Session | None:
        if link not in self.links or link.session is not None:
            return None  # gone, or logged in otherwise, while the store looked
        rooms, remember = found
        bucket = TokenBucket(self.limits.flood_rate, self.limits.flood_burst, self.now())
        session = self.table.create(link, display, key, bucket, registered, msg.outbox, ids)
        link.conn.started(session, resumed=False)
        self._send(session, self._welcome(session, rooms, resumed=False))
        returning = msg.positions is not None
        for room in rooms:
            self.room_commands.enter(session, room, history=not returning, remember=remember)
        if returning:
            self.messaging.replay(session, msg.positions, msg.since)
        self.messaging.deliver_waiting(session)
        return session

    def _resume(self, link: Link, msg: wire.Resume) -> None:
        session = self.table.by_id.get(msg.session)
        if session is None and msg.session not in self.table.ended and self.names.shared:
            self._resume_from_elsewhere(link, msg)
            return
        # compare_digest: the time taken says nothing about the token.
        if session is None or not hmac.compare_digest(
            session.token.encode(), msg.token.encode()
        ):
            ended = self.table.ended.get(msg.session)
            if ended is not None and ended[0] == msg.token:
                # Kicked, banned...: the client is told again, so its
                # automatic reconnect cannot undo it.
                link.conn.close(*ended[1:])
                return
            raise Refused("resume_failed", "that session has ended; log in again")
        if self.names.shared:
            self._resume_claimed(link, msg, session)
            return
        self._resume_here(link, msg, session)

    def _resume_claimed(self, link: Link, msg: wire.Resume, session: Session) -> None:
        """With other nodes, the session may have gone on on another one
        without this node hearing of it: its claim comes back here first,
        and the node it was on is told."""
        d = self._moving_here(link, session.id, lambda: self.names.resume(
            session.id, token_hash(msg.token)).addCallback(self._kept_if_linked, link))
        d.addCallback(self._claimed_back, link, msg, session)
        d.addErrback(self.logins.refused, link)
        d.addCallback(lambda _: self.moves.arrived(session.id))  # a move told meanwhile

    def _claimed_back(self, claim, link: Link, msg: wire.Resume, session: Session) -> None:
        if claim is not None and self.table.by_id.get(session.id) is not session:
            self.logins.release(claim.key, claim.session)  # it ended meanwhile
            claim = None
        if claim is None:
            raise Refused("resume_failed", "that session has ended; log in again")
        if claim.node != self.node:
            self.moves.tell(claim, MOVED)
        self.moves.claimed_back(session.id)
        if link in self.links:  # else gone meanwhile (it was here): it waits here
            self._resume_here(link, msg, session)

    def _resume_here(self, link: Link, msg: wire.Resume, session: Session) -> None:
        old = self.table.detach(session)
        if old is not None:  # the client saw the drop before we did
            old.conn.close("replaced", "this session continues on a newer connection")
        # The client sends again whatever was not acknowledged: what waited
        # here for flood control would otherwise count twice.
        session.cancel_timers()
        session.backlog.clear()
        session.stop_catching_up()  # a logout waiting for them may end it here
        if session.state is State.OFFLINE:
            raise Refused("resume_failed", "that session has ended; log in again")
        # The token stays the same for the whole session: a new one could be
        # lost with the connection that carried it.
        self.table.attach(session, link)
        if session.state is State.RECONNECTING:
            self.table.set_state(session, State.CONNECTED)
        link.conn.started(session, resumed=True)
        rooms = [self.directory.rooms[key] for key in sorted(session.rooms)]  # none left empty
        self._send(session, self._welcome(session, rooms, resumed=True))
        seen = self.messaging.room_positions(msg.positions)
        for room in rooms:
            self._send(session, self.messaging.resumed_state(room, seen))
            self.directory.newcomer(room, session)
        self.messaging.replay(session, msg.positions, msg.since)
        self._presence_changed()

    def _resume_from_elsewhere(self, link: Link, msg: wire.Resume) -> None:
        """A session of another node (gone, or left by its client) goes on
        here, if its claim has this token: the claim moves here first."""
        d = self._moving_here(link, msg.session, lambda: self.names.resume(
            msg.session, token_hash(msg.token)).addCallback(self._not_banned).addCallback(
            self._with_rooms).addCallback(self._kept_if_linked, link))
        d.addCallback(self._arrived, link, msg)
        d.addErrback(self.logins.refused, link)
        d.addCallback(lambda _: self.moves.arrived(msg.session))  # a move told meanwhile

    def _moving_here(self, link: Link, session_id: str, work) -> defer.Deferred:
        """``work()``'s Deferred, while a session's claim moves here: no
        other login on the link meanwhile, and no beat gives the claim back."""
        link.login_pending = True
        self.moves.arriving.add(session_id)

        def finished(result):
            link.login_pending = False
            self.moves.arriving.discard(session_id)
            return result

        return work().addBoth(finished)

    def _kept_if_linked(self, claim, link: Link):
        """The claim moved here, if the client that resumed is still here;
        else None, and the claim goes back where it was.  Its client, cut,
        may have resumed on another node meanwhile, faster, and be live
        there: the last move to finish must not end that session for one
        whose connection is already gone.  Given back, the session is as if
        this resume never came: where it was, waiting or live.  Not to a
        dead node: there the name would be anyone's; the session waits
        here instead."""
        if claim is None or link in self.links or claim.node == self.node:
            return claim
        return self.names.hand_back(claim).addCallback(lambda gone: None if gone else claim)

    def _not_banned(self, claim):
        """The claim, if its name is not banned now: a ban made while the
        session was on its way (its notice lost, or not yet heard where the
        session was) holds here too."""
        if claim is None:
            return None

        def banned(failure):
            failure.trap(Refused)
            self.logins.release(claim.key, claim.session)
            return failure

        return self.logins.check_ban(claim.key).addCallbacks(lambda _: claim, banned)

    def _with_rooms(self, claim):
        """The claim, once the rooms it names that were made on another
        node are known here too (as the database has them)."""
        if claim is None or all(self.directory.get(key) is not None for key in claim.rooms):
            return claim

        def loaded(records):
            for record in records:
                if record.key in claim.rooms and self.directory.get(record.key) is None:
                    self.directory.add(Room(record))
                    self.directory.deleted_seqs.pop(record.key, None)
            return claim

        return self.store.load().addCallback(loaded)

    def _arrived(self, claim, link: Link, msg: wire.Resume) -> None:
        if claim is None:
            raise Refused("resume_failed", "that session has ended; log in again")
        if claim.key in self.table.by_key or claim.key in self.logins.claims:
            self.logins.release(claim.key, claim.session)  # someone here has the name now
            raise Refused("resume_failed", "that session has ended; log in again")
        if claim.node != self.node:
            self.moves.tell(claim, MOVED)
        bucket = TokenBucket(self.limits.flood_rate, self.limits.flood_burst, self.now())
        session = self.table.create(link, claim.name, claim.key, bucket, claim.registered,
                                    ids=(claim.session, msg.token))
        session.kept_lineage = claim.lineage  # the same cids, the same lines
        rooms = [room for room in map(self.directory.get, claim.rooms) if room is not None]
        for room in rooms:
            self.directory.arrive(room, session)
        if link not in self.links:  # gone meanwhile (the claim was here): it waits here
            self.link_lost(link)
            return
        link.conn.started(session, resumed=True)
        # What it offered was known where it was only: it offers it again.
        self._send(session, self._welcome(session, rooms, resumed=True, shares_kept=False))
        seen = self.messaging.room_positions(msg.positions)
        for room in rooms:
            self._send(session, self.messaging.resumed_state(room, seen))
        self.messaging.replay(session, msg.positions, msg.since)
        self._presence_changed()

    def _taken(self, session: Session, why: str) -> None:
        """Another node took this session's claim: a login with the name's
        password replaced it, or its client resumed it there."""
        if why == REPLACED:
            self._end(session, "replaced", "you logged in from somewhere else",
                      "logged in elsewhere", f"{session.name} left")
            return
        # It lives on there: no one is told it left.
        link = session.link
        if self.roster is not None:
            self.roster.moved_away(session)
        if self.messaging.directs is not None:
            self.messaging.directs.forget(session)  # where it is now keeps its own
        self.table.remove(session, "moved to another node")
        self.sharing.tracker.forget_session(session.id, withdrawn=False)  # offered there
        for key in sorted(session.rooms):
            self.directory.depart(self.directory.rooms[key], session)
        self._presence_changed()
        if link is not None:
            link.conn.close("replaced", "this session continues on another node")

    def _grace_expired(self, session: Session) -> None:
        session.grace_call = None
        if session.state is State.RECONNECTING:
            self._go_offline(
                session, "did not reconnect", f"{session.name} left (connection lost)"
            )

    def _go_offline(self, session: Session, reason: str, notice: str) -> None:
        self.table.remove(session, reason)
        self.logins.release(session.key, session.id)
        self.sharing.tracker.forget_session(session.id)
        if self.messaging.directs is not None:
            self.messaging.directs.forget(session)
        for key in sorted(session.rooms):
            self.directory.leave(self.directory.rooms[key], session, "quit", notice, reason=reason)
        self._presence_changed()

    def _end(self, session: Session, code: str, text: str, reason: str, notice: str) -> None:
        """Tell the client why, close its connection and take the session offline."""
        self.table.remember_end(session, code, text)
        link = session.link
        self._go_offline(session, reason, notice)
        if link is not None:
            link.conn.close(code, text)

    def kick(self, name: str, reason: str, ban_minutes: float | None = None) -> bool:
        """Take a user off the server at once; the client is told (of the ban
        that goes with it, if any: ``ban_minutes``) and stays away."""
        try:
            _, key = normalise_name(name)
        except Refused:
            return False
        session = self.table.by_key.get(key)
        if session is None:
            return False
        reason = plain(reason)
        banned = "" if ban_minutes is None else f" and banned {ban_length(ban_minutes)}"
        self._end(
            session, "kicked", f"you were kicked{banned}: {reason}",
            f"kicked: {reason}", f"{session.name} was kicked ({reason})",
        )
        return True

    def ban(self, name: str, minutes: float | None, reason: str) -> bool:
        return self.logins.ban(name, minutes, reason)

    def unban(self, name: str) -> defer.Deferred:
        return self.logins.unban(name)

    def session_rows(self) -> tuple[tuple, ...]:
        return self.admin.session_rows()

    def _logout(self, session: Session, msg: wire.Logout) -> None:
        def end() -> None:
            if session.state is not State.OFFLINE:
                self._end(session, "logout", "logged out", "logout", f"{session.name} left")

        # What was asked before the logout is answered before the goodbye.
        self.messaging.when_answered(session, end)

    def sweep(self) -> None:
        """Periodic: close connections silent for CHAT_IDLE_TIMEOUT, publish
        idle presence changes, forget old offline sessions and expired
        introductions and relay tickets, refresh the administrators' table."""
        self.table.forget_old(self.limits.offline_retention)
        self._sessions_changed()
        self.sharing.expire()
        timeout = self.limits.idle_timeout
        if timeout > 0:
            now = self.now()
            for session in list(self.table.by_id.values()):
                link = session.link
                if (link is not None and now - link.last_heard >= timeout
                        and not getattr(link.conn, "watches_liveness", False)):
                    self._time_out(link, timeout)
        self._presence_changed()

    def _time_out(self, link: Link, timeout: float) -> None:
        """Nothing heard for ``timeout``: dead, or frozen (a laptop asleep).
        The connection is freed and its session waits like any dropped one:
        a client that wakes up resumes it, or logs in again, missing nothing."""
        link.conn.close("timeout", f"nothing heard from this connection for {timeout:g} s")
        self.link_lost(link, reason="timed out")

    def _sessions_changed(self) -> None:
        self.admin.sessions_changed()
        if self.roster is not None:
            self.roster.changed()
        self._arrived_somewhere()

    def _remote_session(self, node: str, session_id: str) -> RemoteSession | None:
        """A session of another node, if the roster lists it there."""
        assert self.roster is not None, "only in a cluster"
        listed = self.roster.remote.nodes.get(node)
        return None if listed is None else listed.sessions.get(session_id)

    def _offered_elsewhere(self, shared) -> None:
        """A file offered on another node: news to its room's members here."""
        room = self.directory.get(shared.room_key)
        if room is not None:
            self.directory.broadcast(room, shared.offer())

    def _elsewhere_changed(self) -> None:
        """Someone on another node came, went or changed."""
        self.admin.sessions_changed()
        if self.shares is not None:
            self.shares.roster_changed()
        self._arrived_somewhere()
        for listener in self.presence_listeners:
            listener()

    def _arrived_somewhere(self) -> None:
        if self.messaging.arrivals is not None:  # direct lines may wait for them
            self.messaging.arrivals.changed()

    # --- presence ---------------------------------------------------------------------

    def _who(self, session: Session, msg: wire.Message) -> None:
        link = session.link
        if link is None:
            return  # as _send: nobody to answer
        for key in sorted(session.rooms):
            link.conn.send_shared(self.directory.member_list(self.directory.rooms[key]))

    def presence_state(self, session: Session | RemoteSession, now: float | None = None) -> str:
        if isinstance(session, RemoteSession):
            return session.state  # as its node said
        if session.state is State.RECONNECTING:
            return "reconnecting"
        if (self.now() if now is None else now) - session.last_activity >= self.limits.idle_after:
            return "idle"
        return "online"

    def presence_snapshot(self) -> tuple[tuple[str, str], ...]:
        """Everyone on the server and their state, for the presence beacon."""
        now = self.now()
        everyone = [(s.name, self.presence_state(s, now)) for s in self.table.by_id.values()]
        if self.roster is not None:  # and those connected on the other nodes
            everyone += [(s.name, s.state) for s in self.roster.remote.sessions()
                         if s.key not in self.table.by_key]
        return tuple(sorted(everyone, key=lambda entry: entry[0].casefold()))

    def _presence_changed(self) -> None:
        """Someone came, went or may have changed state: the listeners
        (the beacon) coalesce and compare; building a snapshot here on every
        join would make a join storm quadratic."""
        for listener in self.presence_listeners:
            listener()
        if self.roster is not None:
            self.roster.changed()

    def beacon_peer(self, key_id: bytes) -> Session | None:
        # Linear, but only for hellos (a few per client per minute).
        for session in self.table.by_id.values():
            if session.keys is not None and session.keys.key_id == key_id:
                return session
        return None

    def beacon_peers(self):
        return [s for s in self.table.by_id.values() if s.endpoint is not None]

