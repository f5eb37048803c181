"""Client session: connect, log in, survive dropped connections, lose nothing.

Used by the line-mode client and the desktop client; it knows nothing of
terminals or windows.

* Every message this side sends carries a client message id (cid) and stays
  in the outbox until the server echoes it back with a sequence number (the
  acknowledgement) or refuses it.  At most ``max_in_flight`` (from the
  server) are unacknowledged at a time, so flood control delays a fast
  sender instead of cutting it off.  Each connection starts with a few and
  sends one more per acknowledgement (a slow start), so a link that drops
  after every few kilobytes still gets lines through and acknowledged.
* The client keeps the rooms it is in (``room`` and ``left`` messages), each
  with its member list and roles, and its *position* in every conversation
  ("#room", "@name"): the highest number seen there, since each
  conversation numbers its own messages.  After an unexpected drop it
  reconnects by itself (first after ``reconnect_delay``, then with doubling
  delays, ``max_retries`` attempts), resumes its session with the token from
  the last welcome and its positions, gets what it missed replayed, and
  sends its outbox again; the server de-duplicates by cid, and this side
  drops any number it has already seen in a conversation, so each message
  shows once.
* If the session has expired it logs in again with the same positions.
* It may be given several addresses (the nodes of one server, or a name
  with several A records; see spchat.client.addresses).  Each attempt tries
  them all in turn, starting after the one it was on, and the key pinned
  for one of them is the key of all.  One node shutting down sends it to
  the others.
* After a kick, flooding or a logout it does not come back by itself.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.endpoints import connectProtocol
from twisted.logger import Logger

from spchat import beacon, wire
from spchat.config import MAX_MESSAGE_BYTES_LIMIT
from spchat.client.addresses import Failover, Resolve, endpoint, parse_addresses, system_resolver
from spchat.client.keepalive import Keepalive
from spchat.client.members import Member, MemberList, name_key
from spchat.client.neterrors import dial_error_text, no_answer_text, not_spchat_text
from spchat.client.outgoing import refusal
from spchat.client.pins import PinMismatch, PinStore, UnknownServer
from spchat.client.protocol import ChatClientProtocol

if TYPE_CHECKING:
    from spchat.client.presence import PresenceClient
    from spchat.p2p.node import SharingNode

# What the outbox holds: the lines typed, until the server acknowledges them.
Line = wire.Say | wire.Direct

MAX_RETRY_DELAY = 30.0
# Unacknowledged lines at the start of each connection (see _pump).
FIRST_WINDOW = 8
MAX_WAITING_REQUESTS = 20


def conversation_key(conversation: str) -> str:
    """"#Dev" and "#dev" are one conversation, and so are "@Bob" and "@bob"."""
    return conversation[:1] + name_key(conversation[1:])


def direct_peer(msg: wire.DirectMessage, me: str | None) -> str:
    """The other party of a direct message: whom it went to if I sent it."""
    return msg.to if me is not None and name_key(msg.sender) == name_key(me) else msg.sender


def conversation_of(msg: wire.RoomMessage | wire.DirectMessage, me: str | None) -> str:
    """"#room" or "@name" (the other party), as the server spells it."""
    if isinstance(msg, wire.RoomMessage):
        return "#" + msg.room
    return "@" + direct_peer(msg, me)


@dataclass
class Room:
    """A room the client is in, as the server last described it."""

    name: str  # the server's spelling, without "#"
    topic: str = ""
    private: bool = False
    topic_locked: bool = False
    password: str = ""  # needed to join ("" none); its members know it
    member_limit: int = 0  # most members online (0: no limit)
    moderated: bool = False  # only operators and voices speak
    members: MemberList = field(default_factory=MemberList)
    members_known: bool = False  # a whole member list has come


class Positions:
    """The highest number seen in each conversation, found by its folded
    name and told to the server as it spells it."""

    def __init__(self):
        self._seen: dict[str, tuple[str, int]] = {}  # key -> (conversation, seq)

    def get(self, conversation: str) -> int | None:
        seen = self._seen.get(conversation_key(conversation))
        return None if seen is None else seen[1]

    def set(self, conversation: str, seq: int) -> None:
        key = conversation_key(conversation)
        self._seen.pop(key, None)  # to the end: the most recent last
        self._seen[key] = (conversation, seq)

    def advance(self, conversation: str, seq: int) -> bool:
        """Take ``seq`` as seen; False if it was seen already."""
        spelled, seen = self._seen.get(conversation_key(conversation), (conversation, None))
        if seen is not None and seq <= seen:
            return False
        self.set(spelled, seq)
        return True

    def drop(self, conversation: str) -> None:
        self._seen.pop(conversation_key(conversation), None)

    def as_wire(self) -> tuple[tuple[str, int], ...]:
        """Rooms first, then the most recent direct conversations, as many as
        the server takes (one left out is still de-duplicated here)."""
        rows = list(self._seen.values())  # least recently seen first
        rooms = [row for row in rows if row[0].startswith("#")]
        directs = [row for row in rows if row[0].startswith("@")]
        room_left = wire.MAX_POSITIONS - len(rooms)
        return tuple(rooms[:wire.MAX_POSITIONS] + (directs[-room_left:] if room_left > 0 else []))


class ClientError(Exception):
    """Something the user must be told in one line; the session cannot go on."""

    def __init__(self, text: str, code: str = ""):
        super().__init__(text)
        self.code = code  # the server's refusal code, if it refused the login


@dataclass(frozen=True)
class Status:
    """What the connection is doing, for the status line of a client."""

    state: str  # "connecting", "connected", "reconnecting" or "offline"
    attempt: int = 0  # reconnecting: this is attempt ``attempt`` of ``attempts``
    attempts: int = 0
    retry_in: float = 0.0  # reconnecting: seconds until this attempt starts
    reason: str = ""  # reconnecting, offline: what happened
    resumed: bool = False  # connected: back after a drop
    # connected: the address it is on, when it has several to choose from
    # ("" with a single one).
    address: str = ""
    # offline: "manual" (the user may reconnect), or "never" (kicked, name
    # lost, key changed).
    recovery: str = "manual"


class ChatClient:
    log = Logger()

    def __init__(
        self,
        reactor,
        host: str,
        port: int,
        name: str,
        pins: PinStore,
        on_event: Callable[[wire.Message], None] = lambda msg: None,
        on_status: Callable[[Status], None] = lambda status: None,
        reconnect_delay: float = 3.0,
        max_retries: int = 3,
        connect_timeout: float = 10.0,
        presence: bool = True,
        password: str | None = None,
        register: bool = False,
        accept_new_keys: bool = True,
        resolve: Resolve | None = None,
    ):
        """``host``: one address or several (``a,b:7001``, see
        spchat.client.addresses), each on ``port`` unless it names its own;
        ValueError if it cannot be read.  ``resolve``: how names are looked
        up (the system's resolver by default)."""
        self.reactor = reactor
        self.addresses = parse_addresses(host, port)
        self.failover = Failover(self.addresses, resolve or system_resolver(reactor))
        self.requested_name = name
        self.pins = pins
        self.on_event = on_event
        self.on_status = on_status
        self.reconnect_delay = reconnect_delay
        self.max_retries = max_retries
        self.connect_timeout = connect_timeout
        self.use_presence = presence
        self.password = password
        self.register_on_login = register
        # False: an unknown server key is refused (UnknownServer) so that a
        # window can ask the user first; the line-mode client pins at once.
        self.accept_new_keys = accept_new_keys
        self.trust_problem: Exception | None = None  # UnknownServer or PinMismatch
        self.status = Status("connecting")
        self.name: str | None = None  # display form, from the welcome
        self.server_fingerprint: str | None = None
        self.newly_pinned = False
        self.max_message_bytes: int | None = None  # the server's, once known
        self.rooms: dict[str, Room] = {}  # by name key, in the order entered
        self.positions = Positions()
        # The server time of the first welcome: this run's view began then.
        self.since = 0
        self._entered: set[str] = set()  # rooms the server has re-sent since the welcome
        self._oldest: dict[str, int] = {}  # conversation key -> where /history goes on
        # Rooms whose history on join is still coming (conversation keys),
        # and the pages asked for meanwhile: a page asked for before it
        # would fetch the same lines again.
        self._history_due: set[str] = set()
        self._pages_waiting: dict[str, tuple[str, int]] = {}
        self._joins: dict[str, str] = {}  # join request cid -> conversation key
        self._sent_positions: set[str] | None = None  # None: a first login
        self._member_parts: dict[str, list[Member]] = {}  # lists still coming, by room key
        self.outbox: OrderedDict[str, Line] = OrderedDict()
        self.proto: ChatClientProtocol | None = None
        self.presence: PresenceClient | None = None
        self.keepalive: Keepalive | None = None  # while connected
        self._welcome: wire.Welcome | None = None  # the latest
        self._in_flight: set[str] = set()  # cids sent on this connection
        self._window = FIRST_WINDOW  # how many may be in flight now
        self._to_send: deque[str] = deque()  # outbox cids not yet sent on it
        self._first: defer.Deferred | None = None
        self._closed: defer.Deferred | None = None
        self._attempt = 0
        self._retry_call: IDelayedCall | None = None
        self._logout_timer: IDelayedCall | None = None
        self._bye: wire.Bye | None = None
        self._leaving = False  # a logout was asked for
        self._fatal: str | None = None  # a reason never to retry
        self._answer_timer: IDelayedCall | None = None
        self._dialing = False  # a connection attempt is under way
        self._in_round = False  # trying the addresses, not yet let in
        # (its Deferred, its protocol: None while names are looked up) while dialing
        self._attempt_in_progress: tuple[defer.Deferred, ChatClientProtocol | None] | None = None
        self._new_password: str | None = None  # sent, not yet confirmed
        self._requests: list[wire.Message] = []  # commands typed while not in
        self._udp: IListeningPort | None = None
        self.sharing: SharingNode | None = None  # if files are shared
        self._ack_waiters: list[defer.Deferred] = []
        # Random prefix: ids from two runs of the same user never collide.
        self._cids = (f"{secrets.token_hex(8)}-{n}" for n in itertools.count(1))
        # Named at every login: a guest whose session the server lost (a
        # restart) re-sends its outbox as copies, not as new lines.
        self._outbox_secret = secrets.token_urlsafe(24)

    # --- connecting --------------------------------------------------------

    def connect(self) -> defer.Deferred:
        """First connection: fires with the Welcome or fails with ClientError.

        No retries here: a server that cannot be reached at start is an
        error the user should see at once.
        """
        self._first = defer.Deferred()
        self._set_status(Status("connecting"))
        self._dial()
        return self._first

    def reconnect(self) -> None:
        """The user asks to reconnect now (after giving up, or a shutdown)."""
        if self.status.state in ("connected", "connecting") or self._leaving:
            return
        if self._dialing or self.proto is not None:
            return  # an attempt is under way already
        if self.status.state == "offline" and self.status.recovery == "never":
            return
        self._cancel_retry()
        self._attempt = 0
        self._set_status(Status("connecting"))
        self._dial()

    # Where it is (or is trying to get in), as given; the first address before any.

    @property
    def host(self) -> str:
        return self.failover.address.host

    @property
    def port(self) -> int:
        return self.failover.address.port

    @property
    def where(self) -> str:
        """``host:port``, and the IP dialed if a name was given."""
        return self.failover.where

    @property
    def server_ip(self) -> str:
        """The IP address of the node it is on: that node's relay is there too."""
        return self.failover.ip

    def _dial(self) -> None:
        """A round: each address once, in turn, until one lets us in."""
        self._dialing = True
        self._in_round = True
        resolving = self.failover.new_round()
        self._attempt_in_progress = (resolving, None)
        resolving.addCallbacks(lambda _: self._dial_next(), self._dial_failed)

    def _dial_next(self) -> None:
        if self._leaving:  # logged out while the names were looked up
            self._dialing = False
            self._give_up("logged out", "never")
            return
        candidate = self.failover.next()
        if candidate is None:
            self._dialing = self._in_round = False
            self._connection_failed(self.failover.round_failure())
            return
        self._dialing = True
        proto = ChatClientProtocol(self.reactor, self._verify_server, self)
        connecting = connectProtocol(endpoint(self.reactor, candidate, self.connect_timeout),
                                     proto)
        self._attempt_in_progress = (connecting, proto)
        connecting.addCallbacks(self._dialled, self._dial_failed)

    def _candidate_failed(self, reason: str) -> None:
        """This address did not let us in: the next of the round, if any."""
        self.failover.failed(reason)
        self._dial_next()

    def _dialled(self, proto: ChatClientProtocol) -> None:
        # TCP is up; a server that then says nothing (stopped, or not spchat
        # at all) must not keep us waiting forever.
        self._answer_timer = self.reactor.callLater(
            self.connect_timeout, self._no_answer, proto
        )

    def _no_answer(self, proto: ChatClientProtocol) -> None:
        self._answer_timer = None
        proto.failure = no_answer_text(self.where, self.connect_timeout)
        proto.timed_out = True
        proto.transport.abortConnection()

    def _stop_answer_timer(self) -> None:
        if self._answer_timer is not None and self._answer_timer.active():
            self._answer_timer.cancel()
        self._answer_timer = None

    def _abort_dial(self) -> None:
        """Stop the attempt under way, whether TCP is up yet or not."""
        attempt, self._attempt_in_progress = self._attempt_in_progress, None
        if attempt is None or not self._dialing:
            return
        connecting, proto = attempt
        if not connecting.called:
            connecting.cancel()
        elif proto is not None and proto.transport is not None:
            proto.transport.abortConnection()

    def _dial_failed(self, failure) -> None:
        self._dialing = False
        if self._leaving:  # cancelled (logged out while dialing)
            self._give_up("logged out", "never")
            return
        self._candidate_failed(dial_error_text(failure, self.host, self.port, self.where))

    def _verify_server(self, fingerprint: str) -> None:
        self.server_fingerprint = fingerprint
        address = self.failover.address
        # The addresses given together are one server's nodes: one key.
        others = tuple((a.host, a.port) for a in self.addresses if a != address)
        try:
            self.newly_pinned = self.pins.check(
                address.host, address.port, fingerprint, self.accept_new_keys, others
            )
        except (PinMismatch, UnknownServer) as e:
            self.trust_problem = e
            # Never retried: another key is not a network hiccup.
            self._fatal = str(e)
            raise

    # --- listener interface of ChatClientProtocol --------------------------

    def channel_open(self, proto: ChatClientProtocol) -> None:
        self._dialing = False
        self.proto = proto
        if self._leaving:
            # Logged out while this dial was under way: it must not log in.
            proto.hang_up()
            return
        self._bye = None
        assert proto.server_hello is not None, "the channel opens after the handshake"
        self.max_message_bytes = proto.server_hello.max_message_bytes
        # Typed before the limit was known: refuse here what the server would.
        for cid, msg in list(self.outbox.items()):
            problem = self._too_long(msg.text)
            if problem:
                del self.outbox[cid]
                self.on_event(wire.Error("too_long", problem, cid))
        if self._welcome is not None:
            w = self._welcome
            positions = self.positions.as_wire()
            self._sent_positions = {conversation_key(c) for c, _ in positions}
            proto.send_message(wire.Resume(w.session, w.token, positions, self.since))
        else:
            self._send_login(proto)

    def _send_login(self, proto: ChatClientProtocol) -> None:
        # The first time: register if asked, and no positions (history on
        # join).  Been here before (the session ended): only what came since.
        first = self.name is None
        positions = None if first else self.positions.as_wire()
        self._sent_positions = (None if positions is None
                                else {conversation_key(c) for c, _ in positions})
        proto.send_message(wire.Login(self.requested_name, self.password,
                                      self.register_on_login and first, positions, self.since,
                                      self._outbox_secret))

    def message_received(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Welcome):
            self._welcomed(msg)
            if self.sharing is not None:
                self.sharing.welcomed(msg)
            return
        if self.sharing is not None and isinstance(msg, (wire.Error, *wire.SHARING_MESSAGES)):
            if self.sharing.message_received(msg):
                return  # an answer to the sharing node alone
        if isinstance(msg, (wire.RoomMessage, wire.DirectMessage)):
            self._acknowledged(msg.cid)
            if not self._news(msg):
                return  # already shown: replayed, or acknowledged twice
        elif isinstance(msg, wire.HistoryEnd):
            self._shown_down_to(msg.conversation, msg.oldest)
            self._history_arrived(conversation_key(msg.conversation))
        elif isinstance(msg, wire.RoomState):
            self._room_state(msg)
        elif isinstance(msg, wire.RoomLeft):
            self._left(msg.room)
        elif isinstance(msg, wire.Error):
            if self.status.state != "connected":
                self._refused(msg)
                return
            self._acknowledged(msg.cid)  # refused: it will not be sent again
            if msg.cid in self._joins:  # a refused join brings no history
                self._history_arrived(self._joins.pop(msg.cid))
            if msg.cid is None:
                self._new_password = None  # an account request was refused
        elif isinstance(msg, wire.Members):
            whole = self._member_part(msg)
            if whole is None:
                return  # a long list comes in parts: shown once it is whole
            msg = whole
        elif isinstance(msg, wire.MemberUpdate):
            # One change, made in place: a room of thousands hears of every
            # join, and must not rebuild its list for each.
            room = self.room(msg.room)
            if room is not None:
                room.members.update(msg.name, msg.state, msg.role)
        elif isinstance(msg, wire.Notice) and msg.kind == "account":
            if self._new_password is not None:
                # Confirmed: logging in again after a drop needs it now.
                self.password, self._new_password = self._new_password, None
        elif isinstance(msg, wire.Bye):
            self._bye = msg
        self.on_event(msg)

    # --- conversations: rooms, members, positions ----------------------------

    def room(self, name: str) -> Room | None:
        """The room of that name (with or without "#") if the client is in it."""
        return self.rooms.get(name_key(name.removeprefix("#")))

    def room_members(self, name: str) -> tuple[Member, ...]:
        """A room's members in the server's order (made when asked for)."""
        room = self.room(name)
        return tuple(room.members) if room is not None else ()

    def person(self, name: str) -> tuple[str, str] | None:
        """(name, state) of someone in one of the client's rooms, if anyone."""
        key = name_key(name)
        for room in self.rooms.values():
            member = room.members.get(key)
            if member is not None:
                return member[:2]
        return None

    @property
    def members(self) -> tuple[tuple[str, str], ...]:
        """Everyone in any of the client's rooms, (name, state), by folded name."""
        people, last = [], None
        # Each room's list is in order already: merged, not sorted again.
        for key, (name, state, _) in heapq.merge(*(room.members.keyed()
                                                   for room in self.rooms.values())):
            if key != last:
                people.append((name, state))
                last = key
        return tuple(people)

    def _news(self, msg: wire.RoomMessage | wire.DirectMessage) -> bool:
        """Note a message as seen; False if it is a repeat of one seen before."""
        conversation = conversation_of(msg, self.name)
        self._shown_down_to(conversation, msg.seq)
        if msg.history:
            return True  # asked for (or on join): shown as history, whatever its age
        if isinstance(msg, wire.RoomMessage) and self.room(msg.room) is None:
            return True  # in flight when the client left: not a position to keep
        return self.positions.advance(conversation, msg.seq)

    def _shown_down_to(self, conversation: str, seq: int) -> None:
        key = conversation_key(conversation)
        self._oldest[key] = min(seq, self._oldest.get(key, seq))

    def _room_state(self, msg: wire.RoomState) -> None:
        key = name_key(msg.room)
        room = self.rooms.setdefault(key, Room(msg.room))
        room.name, room.topic = msg.room, msg.topic
        room.private, room.topic_locked = msg.private, msg.topic_locked
        room.password, room.member_limit = msg.password, msg.member_limit
        room.moderated = msg.moderated
        if key in self._entered:
            return  # a change of its settings
        self._entered.add(key)
        conversation = "#" + msg.room
        seen = self.positions.get(conversation)
        # New here: what came before is history, not news.  Or the room's
        # numbers went back (the server lost its data): count from where it
        # is now, or every new message would look seen.
        if seen is None or msg.last_seq < seen:
            self.positions.set(conversation, msg.last_seq)

    def _history_arrived(self, conversation: str) -> None:
        self._history_due.discard(conversation)
        self._joins = {cid: key for cid, key in self._joins.items() if key != conversation}
        waiting = self._pages_waiting.pop(conversation, None)
        if waiting is not None:
            self.history_page(*waiting)

    def _left(self, name: str) -> None:
        key = name_key(name)
        self._history_arrived("#" + key)
        self.rooms.pop(key, None)
        self._entered.discard(key)
        self._member_parts.pop(key, None)
        self.positions.drop("#" + name)
        self._oldest.pop("#" + key, None)  # a new join brings its own history

    def _member_part(self, msg: wire.Members) -> wire.Members | None:
        key = name_key(msg.room)
        parts = self._member_parts.setdefault(key, [])
        parts.extend(msg.members)  # in place: a list in many parts is not copied for each
        if msg.more:
            return None
        del self._member_parts[key]
        return self._set_members(msg.room, tuple(parts))

    def _set_members(self, name: str, members: tuple[Member, ...]) -> wire.Members:
        room = self.room(name)
        if room is not None:
            room.members.replace(members)
            room.members_known = True
        return wire.Members(name, members)

    def connection_lost(self, failure: str | None, proto=None) -> None:
        if proto is not None and self.proto is not None and proto is not self.proto:
            return  # an older connection, already replaced
        self._dialing = False
        self._stop_answer_timer()
        self.proto = None
        self._in_flight.clear()
        self._member_parts = {}  # lists cut off with the connection: the next come whole
        self._stop_presence()
        self._stop_keepalive()
        if self._logout_timer is not None and self._logout_timer.active():
            self._logout_timer.cancel()
        self._logout_timer = None
        bye = self._bye
        if self._leaving:
            self._set_status(Status("offline", reason="logged out", recovery="never"))
        elif bye is not None and bye.code in wire.NO_RECONNECT_CODES and not self._moves_on(bye):
            self._welcome = None  # that session is over: a new one next time
            recovery = "manual" if bye.code == "shutdown" else "never"
            self._set_status(Status("offline", reason=bye.text, recovery=recovery))
        elif self._fatal is not None:
            self._give_up(self._fatal, "never")
        elif self.status.state == "offline":
            pass  # already decided (refused login)
        else:
            reason = bye.text if bye is not None else (failure or "connection lost")
            if bye is None and failure and self._not_spchat(proto):
                reason = not_spchat_text(self.where)
            if self._in_round:
                self._candidate_failed(reason)
            else:
                self._connection_failed(reason)
        self._check_acks()
        if self._closed is not None and not self._closed.called:
            self._closed.callback(None)

    def _moves_on(self, bye: wire.Bye) -> bool:
        """One node of several shutting down: another one takes us in."""
        return bye.code == "shutdown" and self.failover.seen_several

    @staticmethod
    def _not_spchat(proto) -> bool:
        """The connection failed in the handshake, on what the other side
        sent (not on silence, not on its key): not an spchat server."""
        return (proto is not None and proto.server_hello is None
                and not proto.timed_out)

    # --- what happens after a connection or an attempt fails ----------------

    def _connection_failed(self, reason: str) -> None:
        if self._first is not None and not self._first.called:
            # Still the very first connection: fail it, no retries.
            self._give_up(reason, "never")
            return
        if self.status.state == "offline":
            return
        self._attempt += 1
        if self._attempt > self.max_retries:
            self._give_up(
                f"could not reconnect after {self.max_retries} attempts: {reason}", "manual"
            )
            return
        delay = min(MAX_RETRY_DELAY, self.reconnect_delay * 2 ** (self._attempt - 1))
        self._set_status(Status(
            "reconnecting", self._attempt, self.max_retries, delay, reason
        ))
        self._retry_call = self.reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._dial()

    def _cancel_retry(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None

    def _give_up(self, reason: str, recovery: str, code: str = "") -> None:
        self._set_status(Status("offline", reason=reason, recovery=recovery))
        if self._first is not None and not self._first.called:
            self._first.errback(ClientError(reason, code))
        self._check_acks()

    def _refused(self, error: wire.Error) -> None:
        """An error before the welcome: the login or resume was refused."""
        if error.code == "resume_failed" and self.proto is not None:
            # The session expired while we were away: log in anew, asking
            # for everything after what we saw.
            self._welcome = None
            self._send_login(self.proto)
            return
        text = f"login refused: {error.text}"
        if self._first is None or self._first.called:
            text = f"could not log in again: {error.text}"
        self._give_up(text, "never", error.code)
        if self.proto is not None:
            self.proto.hang_up()

    def _welcomed(self, welcome: wire.Welcome) -> None:
        self._stop_answer_timer()
        if self.name is None:
            self.since = welcome.server_time
        self._welcome = welcome
        self.name = welcome.name
        self._attempt = 0
        self._in_round = False
        self._member_parts = {}
        self._entered = set()  # the rooms come again, each with where it is now
        self._expect_rooms(welcome)
        # A new connection: everything unacknowledged goes (again), in order.
        self._in_flight.clear()
        self._window = FIRST_WINDOW
        self._to_send = deque(self.outbox)
        first = self._first is not None and not self._first.called
        shown = self.where if self.failover.seen_several else ""
        self._set_status(Status("connected", resumed=not first, address=shown))
        self._start_presence(welcome)
        self._start_keepalive(welcome)
        if first and self._first is not None:
            self._first.callback(welcome)
        if self.proto is not None:  # the channel the welcome came on
            requests, self._requests = self._requests, []
            for request in requests:
                self.proto.send_message(request)
        self._pump()

    def _expect_rooms(self, welcome: wire.Welcome) -> None:
        """The welcome names the session's rooms: a room the client thought
        it was in and is not (a kick while it was away) is left, and the
        rooms it did not name come with their history on join."""
        keys = {name_key(name) for name in welcome.rooms}
        for key, room in list(self.rooms.items()):
            if key not in keys:
                self._left(room.name)
                self.on_event(wire.RoomLeft(room.name, "gone",
                                            f"you are no longer in #{room.name}"))
        named = self._sent_positions
        self._history_due = {"#" + key for key in keys
                             if named is None or "#" + key not in named}
        self._pages_waiting = {}

    def _set_status(self, status: Status) -> None:
        self.status = status
        self.on_status(status)

    # --- keepalive -----------------------------------------------------------

    def _start_keepalive(self, welcome: wire.Welcome) -> None:
        # A reader says nothing for hours; its connection must still be heard.
        self._stop_keepalive()
        if welcome.keepalive_ms > 0 and self.proto is not None:
            self.keepalive = Keepalive(self.reactor, self.proto, welcome.keepalive_ms / 1000)

    def _stop_keepalive(self) -> None:
        if self.keepalive is not None:
            self.keepalive.stop()
            self.keepalive = None

    # --- presence beacon ---------------------------------------------------

    def _start_presence(self, welcome: wire.Welcome) -> None:
        if not (self.use_presence and welcome.udp_port and self.proto is not None):
            return
        from spchat.client.presence import PresenceClient

        server_ip = self.proto.transport.getPeer().host
        assert self.proto.handshake_hash is not None, "known once the channel is open"
        self.presence = PresenceClient(
            beacon.derive_keys(self.proto.handshake_hash),
            (server_ip, welcome.udp_port),
            self.reactor,
            welcome.presence_ms / 1000,
            on_snapshot=self._presence_snapshot,
            on_silence=self._presence_silent,
        )
        try:
            self._udp = self.reactor.listenUDP(0, self.presence)
        except OSError as e:  # no UDP here: TCP still answers presence requests
            self.log.warn("no presence beacon: {error}", error=e)
            self.presence = None

    def _stop_presence(self) -> None:
        if self.presence is not None:
            self.presence.stop()
            if self._udp is not None:
                self._udp.stopListening()
            self.presence = None

    def _presence_snapshot(self, members) -> None:
        # Everyone online on the server: it updates states in the member
        # lists, and never says who is in a room.
        states = {name_key(name): state for name, state in members}
        for room in list(self.rooms.values()):
            # Whichever is shorter is walked: the room, or the server's list.
            keys = room.members.keys() if len(room.members) < len(states) else states.keys()
            for key in list(keys):
                state = states.get(key)
                changed = room.members.set_state(key, state) if state is not None else None
                if changed is not None:
                    self.on_event(wire.MemberUpdate(room.name, *changed))

    def _presence_silent(self) -> None:
        # UDP blocked or lost: ask over TCP, which always gets through.
        if self.connected and self.proto is not None:
            self.proto.send_message(wire.PresenceRequest())

    # --- sending -----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.proto is not None and self.proto.is_open and self.status.state == "connected"

    def _pump(self) -> None:
        """Send what the outbox holds, keeping the in-flight window."""
        proto, welcome = self.proto, self._welcome
        if not self.connected or proto is None or welcome is None:
            return
        # The whole outbox at once after a reconnect would be cut off again
        # by a link that dies after a few kilobytes, before any of it is
        # acknowledged, for ever.
        window = min(self._window, welcome.max_in_flight)
        while self._to_send and len(self._in_flight) < window:
            cid = self._to_send.popleft()
            msg = self.outbox.get(cid)
            if msg is not None:  # not refused meanwhile
                self._in_flight.add(cid)
                proto.send_message(msg)

    def _acknowledged(self, cid: str | None) -> None:
        if cid is not None and self.outbox.pop(cid, None) is not None:
            self._in_flight.discard(cid)
            if self._welcome is not None:  # doubles each round trip, as TCP's slow start
                self._window = min(self._window + 1, self._welcome.max_in_flight)
            self._pump()
            self._check_acks()

    def _too_long(self, text: str) -> str | None:
        size = len(text.encode("utf-8", errors="surrogatepass"))
        # Before the server has said its limit, the largest any server allows.
        limit = self.max_message_bytes or MAX_MESSAGE_BYTES_LIMIT
        if size > limit:
            return f"the message is {size} bytes; the limit is {limit} bytes (UTF-8); not sent"
        return None

    def _session_over(self) -> str | None:
        """Why nothing can be sent any more (kicked, disconnected, logged out), if so."""
        s = self.status
        if s.state == "offline" and s.recovery == "never":
            return f"not sent: {s.reason}; the session is over, connect again to send it"
        return None

    def unsent(self) -> list[str]:
        """The texts of the lines the server has not acknowledged, in order."""
        return [msg.text for msg in self.outbox.values()]

    def why_unsent(self) -> str:
        """Why what the outbox holds has not gone: said when it is given up."""
        s = self.status
        if s.state == "offline":
            return s.reason
        if s.state == "reconnecting":
            return f"offline: {s.reason}"
        if s.state == "connecting":
            return "not connected yet"
        return "the server had not acknowledged them yet"

    def _queue(self, msg: Line) -> str:
        problem = self._session_over() or self._too_long(msg.text) or refusal(msg)
        if problem:
            raise ValueError(problem)
        self.outbox[msg.cid] = msg
        self._to_send.append(msg.cid)
        self._pump()
        return msg.cid

    def say(self, text: str, room: str = "lobby") -> str:
        """Queue a message to a room (by default the wire's: the room everyone
        starts in); raise ValueError if it is over the limit."""
        return self._queue(wire.Say(text, next(self._cids), room))

    def direct(self, to: str, text: str) -> str:
        return self._queue(wire.Direct(to, text, next(self._cids)))

    @staticmethod
    def _sendable(msg: wire.Message) -> None:
        """Raise ValueError, in a person's words, if the wire cannot carry
        ``msg`` (the server would answer "malformed message")."""
        problem = refusal(msg)
        if problem:
            raise ValueError(problem)

    def _request(self, msg: wire.Message) -> None:
        """Send a command now, or as soon as the client is (back) in."""
        self._sendable(msg)
        if self.connected and self.proto is not None:
            self.proto.send_message(msg)
        elif len(self._requests) < MAX_WAITING_REQUESTS:
            self._requests.append(msg)
        else:
            raise ValueError("not connected; too many commands waiting")

    def request(self, msg: wire.Message) -> None:
        """Send a request that has no acknowledgement of its own (sharing)."""
        self._request(msg)

    def next_cid(self) -> str:
        return next(self._cids)

    def history_page(self, conversation: str, limit: int = 50) -> None:
        """Ask for the page of a conversation ("#room", "@name") before the
        oldest message shown in it (the newest page if none was)."""
        key = conversation_key(conversation)
        if key in self._history_due:  # asked again once the history on join is in
            self._pages_waiting[key] = (conversation, limit)
            return
        seen = self.positions.get(conversation)
        before = self._oldest.get(key, wire.MAX_INT if seen is None else seen + 1)
        self._request(wire.HistoryRequest(before, limit, conversation))

    def forget_shown(self, conversation: str) -> None:
        """What was shown of a conversation is gone (its tab was closed): its
        next page of history is the newest again."""
        self._oldest.pop(conversation_key(conversation), None)

    def join(self, room: str, private: bool = False, password: str | None = None) -> str | None:
        """Join a room, creating it (``private``: invited people only) if new;
        ``password``: the room's, if it has one.  Returns the request's cid
        (a refusal names it), None for a room the client is in already."""
        new = self.room(room) is None  # a room joined anew brings its history
        msg = wire.Join(room, private, self.next_cid() if new else None, password)
        self._sendable(msg)  # refused here: no history is waited for
        if msg.cid is not None:
            key = "#" + name_key(room.removeprefix("#"))
            self._history_due.add(key)
            self._joins[msg.cid] = key  # a refusal names it, and no history comes
        self._request(msg)
        return msg.cid

    def part(self, room: str, reason: str | None = None) -> None:
        self._request(wire.Part(room, reason))

    def list_rooms(self) -> None:
        """Ask for the public rooms; they come as a ``room_list``."""
        self._request(wire.ListRooms())

    def topic(self, room: str, text: str | None = None) -> None:
        """Set a room's topic ("" clears it), or ask for it (None)."""
        self._request(wire.Topic(room, text))

    def mode(self, room: str, flag: str, on: bool) -> None:
        """Turn a room's flag (``wire.ROOM_FLAGS``) on or off."""
        if flag not in wire.ROOM_FLAGS:
            raise ValueError(f"a room flag is one of {', '.join(wire.ROOM_FLAGS)}")
        self._request(wire.Mode(room, flag, on))

    def set_password(self, room: str, password: str | None) -> None:
        """Set the password to join a room (None: none)."""
        self._request(wire.Mode(room, "password", password is not None, password=password))

    def set_member_limit(self, room: str, limit: int | None) -> None:
        """Set the most members a room takes online (None: no limit)."""
        self._request(wire.Mode(room, "member_limit", limit is not None, limit=limit))

    def moderate(self, room: str, op: str, name: str, reason: str | None = None,
                 minutes: float | None = None) -> None:
        """A room operation (``wire.MODERATION_OPS``) on the user ``name``."""
        if op not in wire.MODERATION_OPS:
            raise ValueError(f"a room operation is one of {', '.join(wire.MODERATION_OPS)}")
        self._request(wire.Moderate(room, op, name, reason, minutes))

    def register(self, password: str) -> None:
        self._request(wire.Register(password))
        self._new_password = password  # used once the server confirms

    def change_password(self, old: str, new: str) -> None:
        self._request(wire.ChangePassword(old, new))
        self._new_password = new

    @property
    def account_request_pending(self) -> bool:
        return self._new_password is not None

    def wait_acked(self, timeout: float) -> defer.Deferred:
        """Fire with True once the outbox is empty, or False after ``timeout``
        or as soon as the client has given up reconnecting."""
        if not self.outbox or self._hopeless():
            return defer.succeed(not self.outbox)
        d: defer.Deferred = defer.Deferred()
        self._ack_waiters.append(d)
        timer = self.reactor.callLater(timeout, self._ack_timeout, d)
        d.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return d

    @defer.inlineCallbacks
    def drain(self, quiet: float):
        """Fire with True once the outbox is empty, waiting as long as
        acknowledgements keep coming (flood control may pace a long paste);
        False after ``quiet`` seconds without one, or once offline."""
        while True:
            before = len(self.outbox)
            if (yield self.wait_acked(quiet)):
                return True
            if len(self.outbox) >= before:
                return False

    def _hopeless(self) -> bool:
        return self.status.state == "offline"

    def _ack_timeout(self, d: defer.Deferred) -> None:
        if d in self._ack_waiters:
            self._ack_waiters.remove(d)
            d.callback(False)

    def _check_acks(self) -> None:
        if self.outbox and not self._hopeless():
            return
        waiters, self._ack_waiters = self._ack_waiters, []
        for d in waiters:
            d.callback(not self.outbox)

    def logout(self) -> defer.Deferred:
        """Log out; fires when the connection has closed."""
        self._leaving = True
        self._cancel_retry()
        if self.proto is None:
            self._abort_dial()  # a server that does not answer must not hold the leaving
            if self.status.state != "offline":
                self._set_status(Status("offline", reason="logged out", recovery="never"))
            return defer.succeed(None)
        self._closed = defer.Deferred()
        if self.connected:
            self.proto.send_message(wire.Logout())
            # The server answers with bye and closes; hang up ourselves if not.
            self._logout_timer = self.reactor.callLater(5.0, self.proto.hang_up)
        else:
            self.proto.hang_up()
        return self._closed
