"""The seams of the server: what the core needs from a connection and from
its stores.

A connection is told chat events, never frames: the spchat protocol
(Noise, JSON batches), the in-memory client of the tests and any other
front-end (IRC) each choose their own encoding.  Events shared by many
recipients come as one object that remembers its encoding per format, so a
room's line is still encoded once for all its members.

Stores return Deferreds, so an implementation may do its I/O on other
threads (SQLite) or over the network (PostgreSQL) without the core knowing.
A *conversation* is a room (``"#" + room key``) or a direct conversation
(``"@" + the two name keys, sorted, joined by a space``); each numbers its
messages 1, 2, 3, ... with no gaps, inside the transaction that saves them.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """A connection as the core sees it.

    A connection is alive while it sends messages; one silent for
    CHAT_IDLE_TIMEOUT is closed, unless it has ``watches_liveness`` true
    (a front-end with a watch of its own: IRC's PING).
    """

    def started(session, resumed):
        """A session (None for an administrator) now runs on this connection."""

    def send(message):
        """One wire message for this client alone (a welcome, an error, a
        history line, ...), after everything sent before it."""

    def send_shared(events):
        """A ``spchat.server.events.SharedEvents``: the same messages for many
        clients (a room's comings and goings, a member list, a broadcast)."""

    def deliver(lines):
        """A ``spchat.server.events.LineBatch``: saved lines of one room, in
        the room's order; the lines this client's session sent are its
        acknowledgements and carry their client message ids."""

    def when_drained(then):
        """Call ``then()`` once, when the client has taken what was sent to
        it so far, or enough of it that more may follow (history and replays
        go at this pace, a part at a time).  A connection that queues
        nothing may call it at once; one that closes never calls it."""

    def close(code, text):
        """Say goodbye (a wire ``bye``) and close the connection."""


class IMessageLog(Interface):
    """Every room and direct message, numbered per conversation."""

    def append(records):
        """Save new records (``seq`` 0) in one transaction, numbering each in
        its conversation.  Fires with ``(saved, again)``: the saved records,
        numbered, in the given order, and ``(record, saved_before)`` pairs
        for records whose cid was saved before in the same lineage, within
        numbering.RESEND_WINDOW_MS (re-sent after a reconnect), which are
        not saved again."""

    def after(conversation, seq, limit, reader=None):
        """Fires with up to ``limit`` records numbered above ``seq``, oldest
        first.  ``reader``: a lineage; of a direct conversation, only the
        records it may read (``Record.readable_by``)."""

    def before(conversation, seq, limit, reader=None):
        """Fires with up to ``limit`` records numbered below ``seq`` (the
        newest of them), oldest first; ``reader`` as for ``after``."""

    def last_before_time(conversation, ts_ms):
        """Fires with the number of the conversation's last record stamped
        before ``ts_ms`` (0 if none): where a time falls among its numbers."""

    def direct_since(key, since_ms, limit, reader=None):
        """Fires with up to ``limit`` direct messages to or from ``key``
        stamped at or after ``since_ms``, oldest first; ``reader`` as for
        ``after``."""

    def find_cid(lineage, cid, since_ms):
        """Fires with the newest record saved with this cid in this lineage
        (``Record.sent_as``) stamped at or after ``since_ms``, or None."""

    def waiting_for(key, conversation):
        """Fires with (the account's name, how many direct messages wait
        for its next login: ``Record.waiting``, how many of those are of
        ``conversation``: from one sender), or None if ``key`` is no
        account."""

    def waiting_directs(key, limit):
        """Fires with up to ``limit`` of the direct messages that wait for
        ``key``, by conversation and number."""

    def directs_had(numbers):
        """The direct messages numbered ``(conversation, seq)`` wait no more."""

    def adopt_lineage(old, new):
        """A guest registered its name: the messages its session sent and
        received (lineage ``old``) are its account's (``new``) from now on."""

    def delete_conversation(conversation):
        """Forget a conversation's messages (a deleted room)."""

    def prune(older_than_ms):
        """Delete messages older than this; fires with how many.  Numbers
        are never given twice, pruned or not."""


class IAccounts(Interface):
    def account(key):
        """Fires with (display name, encoded password hash) or None."""

    def set_account(key, name, password, now_ms):
        """Create the account, or change its password (its name stays as
        it was registered)."""

    def lookalike_account(looks, key):
        """Fires with the name of an account (not ``key``'s) that has one of
        these looks (``spchat.server.lookalikes.looks``), or None."""


class IBans(Interface):
    """Server-wide bans, by name key."""

    def ban(key):
        """Fires with (name, until or None for ever, reason) or None."""

    def set_ban(key, name, until, reason, now_ms):
        """Ban (or ban again, replacing the old terms)."""

    def delete_ban(key):
        """Fires with True if there was a ban."""

    def bans():
        """Fires with [(key, name, until, reason), ...]."""


class IRoomStore(Interface):
    """Rooms, their roles, bans and mutes, and registered accounts' rooms."""

    def load():
        """Fires with every room: a list of ``spchat.server.records.RoomRecord``,
        each with its roles, bans, mutes and newest message number."""

    def room(key):
        """Fires with the room as kept now (a ``RoomRecord``), or None; it
        sees every change asked for before it (another node's change is
        read so)."""

    def create_room(room):
        """Make a room (a ``RoomRecord``'s settings) unless one with its key
        is there (another node may have made it first: it stays as it is);
        fires with (the room as kept, True if this call made it)."""

    def save_room(room):
        """Create or update a room's settings (a ``RoomRecord``; its roles,
        bans and mutes are saved by the calls below)."""

    def delete_room(key):
        """Forget the room, its roles, bans, mutes and memberships."""

    def set_role(room, key, name, role):
        """A registered account's role in a room (owner, operator), or None
        for a plain member."""

    def set_room_ban(room, key, name, until, reason, now_ms):
        """Ban a name from a room (``until`` None: for ever)."""

    def delete_room_ban(room, key):
        """Lift a room ban; fires with True if there was one."""

    def set_voice(room, key, name, voiced):
        """Give a name a voice in a room (True), or take it (False)."""

    def set_mute(room, key, name, muted):
        """Mute (True) or unmute a name in a room."""

    def memberships(key):
        """Fires with the room keys a registered account is in."""

    def add_membership(key, room):
        """A registered account joined a room."""

    def remove_membership(key, room):
        """A registered account left a room (or was kicked or banned)."""


class IBus(Interface):
    """What carries notices between the nodes that share one database: lossy
    (a notice may be lost or late), so nothing relies on it for order."""

    def listen(heard, connected):
        """``heard(data)`` for each notice from any node (this one's too);
        ``connected()`` each time the bus is (re)joined: what was said
        while it was away is lost."""

    def publish(data):
        """Send ``data`` (bytes) to every node, if the bus is there now."""


class INameClaims(Interface):
    """Which session holds each name, across the nodes sharing one database
    (``spchat.server.claims``).  Every call is made for this node, and
    changes only claims it holds, but for a claim taken over."""

    shared = Attribute("True if other nodes' sessions are here too (a resume may find one).")
    node = Attribute("This node's name.")
    node_timeout = Attribute("Seconds without a beat after which a node is taken for dead.")

    def open():
        """Drop this node's claims left from before (it has no sessions yet),
        and say it is alive; fires when done."""

    def close():
        """Fires when the claims' connection is closed."""

    def claim(claim, takeover):
        """Claim a name (a ``Claim``) for a new session of this node, if
        ``spchat.server.claims.may_take`` allows; fires with a ``Claimed``."""

    def update(claim):
        """What a session of this node is now (its rooms, registered)."""

    def release(key, session):
        """The session ended: its name is free, if the claim is still its own."""

    def resume(session, token_hash):
        """The claim of ``session`` with that token hash, moved to this node;
        fires with the claim as it was (its old node), or None."""

    def hand_back(claim):
        """A resume here whose client went while its claim moved: the claim
        (as ``resume`` gave it) goes back to ``claim.node``, if it is still
        this node's and that session's (it may have moved on since) and its
        old node is alive (a dead node's claim is any login's to take: it
        stays here); fires with whether it is this node's no more."""

    def lookalike(looks, key):
        """Fires with the name of a session of another live node (not
        ``key``'s) whose name has one of these looks, or None."""

    def beat():
        """This node is alive; fires with {session id: name key} of the
        claims it holds (a session missing was taken, the bus lost saying so)."""


class IStore(IMessageLog, IAccounts, IBans, IRoomStore):
    """One engine holding all of it (SQLite, memory, PostgreSQL)."""

    path = Attribute("Where the data lives, for messages that name it (or None).")

    def open():
        """Open (migrate, check); fires when ready.  No I/O before this."""

    def close():
        """Finish what is being written, then close; fires when closed."""
