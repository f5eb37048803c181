"""One IRC client connection: the core's ``IChatClient`` for IRC.

Sans-IO: it is given a ``write(bytes)`` and a ``hang_up()`` and is fed one
line at a time.  What the client asks becomes the core's own wire messages
(``Login``, ``Join``, ``Say``, ...), so every rule of the chat applies to
IRC users exactly as to spchat's; what the core tells it becomes IRC lines
(``Outbound``).  A refusal comes back as the core's ``error``; the client
message id of each request says which command it answers, and so which
numeric the IRC specifications prescribe.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import secrets
import re
from collections import OrderedDict

from twisted.logger import Logger
from zope.interface import implementer

import spchat
from spchat import wire
from spchat.irc import numerics as N
from spchat.irc.caps import OFFERED, Caps, PlainSasl
from spchat.irc.channels import PREFIX_ISUPPORT, Channels, RoomView, name_key, room_key
from spchat.irc.lines import MAX_LINE_BYTES, encode
from spchat.irc.commands import Commands, Pending
from spchat.irc.labels import Labels
from spchat.irc.history import ChatHistory
from spchat.irc.outbound import Outbound
from spchat.server.events import LineBatch, SharedEvents
from spchat.server.interfaces import IChatClient
from spchat.server.sessions import Session

HOST = "spchat"  # every user's host: the gateway does not tell anyone's address
USERLEN = 16
# Requests whose answers are still to come, at most: a client that never
# reads its answers does not make this grow.
MAX_PENDING = 512
# What a NAMES line may hold besides the names.
_NAMES_OVERHEAD = 64
_USER_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

# A core refusal's code, for a command, as the numeric IRC prescribes;
# the pending request's (channel, nick) fill its parameters.
REFUSALS = {
    "no_such_room": N.ERR_NOSUCHCHANNEL,
    "room_invalid": N.ERR_NOSUCHCHANNEL,
    "unknown_user": N.ERR_NOSUCHNICK,
    "not_allowed": N.ERR_CHANOPRIVSNEEDED,
    "invite_only": N.ERR_INVITEONLYCHAN,
    "room_password": N.ERR_BADCHANNELKEY,
    "room_full": N.ERR_CHANNELISFULL,
    "banned": N.ERR_BANNEDFROMCHAN,
    "too_many_rooms": N.ERR_TOOMANYCHANNELS,
    "muted": N.ERR_CANNOTSENDTOCHAN,
    "moderated": N.ERR_CANNOTSENDTOCHAN,
    "already_in_room": N.ERR_USERONCHANNEL,
}


@implementer(IChatClient)
class IrcConnection:
    log = Logger()
    watches_liveness = True  # its PING watch cuts a silent connection, not the core

    def __init__(self, core, registry, write, hang_up, address: str,
                 server_name: str = "spchat", created: str = "",
                 operator: tuple[str, str] | None = None):
        self.core = core
        self.registry = registry
        self._write = write
        self.labels = Labels(write, server_name)
        # Labeled lines whose answer is their echo (echo-message), by cid.
        self.labels_by_cid: collections.OrderedDict = collections.OrderedDict()
        self._hang_up = hang_up
        self.address = address
        self.server_name = server_name
        self.created = created
        self.nick = "*"
        self.user: str | None = None
        self.realname = ""
        self.password: str | None = None
        self.away: str | None = None
        self.on_logged_in = lambda: None  # the session started (see IrcProtocol)
        self.invisible = False  # user mode +i
        self.wallops = False  # user mode +w
        self.oper = False  # OPER succeeded
        self.operator = operator
        self.quit_reason: str | None = None
        self.caps = Caps()
        self.sasl = PlainSasl()
        self.session: Session | None = None
        self.registered = False  # 001 sent
        self.closed = False
        self.login_via: str | None = None  # how the login in flight was asked for
        self.channels = Channels()
        self.outbound = Outbound(self)
        self.list_asked = 0
        self._held: list = []  # the core's events before registration ends
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        # Client message ids unique to this connection: the server takes a
        # cid it has seen from the same account as a re-sent line, and an
        # account may come back on another connection.
        self._cid_prefix = f"irc-{secrets.token_hex(6)}-"
        self._cids = itertools.count(1)
        self._sync_refusal: wire.Error | None = None
        self._unsaved: set[str] = set()  # our lines not yet saved, by cid
        # Our recent lines' command (PRIVMSG or NOTICE) and client tags, by
        # cid: what IRC shows of them that the chat does not keep.
        self.sent: OrderedDict[str, tuple[str, dict]] = OrderedDict()
        # The same for direct lines, by recipient, in the order sent.
        self.sent_directs: dict[str, collections.deque] = {}
        self._after_saved: list = []  # what waits for them (PONGs, CHATHISTORY)
        self.commands = Commands(self)
        self.history = ChatHistory(self)
        self.link = core.open_link(self, address, agent="irc")

    # --- writing ----------------------------------------------------------------------

    @property
    def own_mask(self) -> str:
        return f"{self.nick}!{self.user or self.nick}@{HOST}"

    def mask(self, name: str) -> str:
        return self.registry.mask(name)

    def is_me(self, name: str) -> bool:
        return self.session is not None and name_key(name) == self.session.key

    def account_name(self, name: str) -> str | None:
        """``name``, if it is a registered account's online now (account-tag)."""
        session = self.core.everyone.get(name_key(name) or "")
        return session.name if session is not None and session.registered else None

    def room_peers(self) -> list[IrcConnection]:
        """The other IRC connections in a room with this one, each once."""
        peers: dict[int, IrcConnection] = {}
        for key in self.session.rooms if self.session is not None else ():
            room = self.core.directory.get(key)
            for member in room.members.values() if room is not None else ():
                conn = member.link.conn if member.link is not None else None
                if isinstance(conn, IrcConnection) and conn is not self:
                    peers[id(conn)] = conn
        return list(peers.values())

    def emit(self, source: str | None, command: str, *params: str, tags=None,
             split: bool = True) -> None:
        self.write(encode(source, command, params, tags, split))

    def write(self, data: bytes) -> None:
        """Lines encoded already (a room's batch, once for its members)."""
        if not self.closed and not self.labels.hold(data):
            self._write(data)

    def numeric(self, code: str, *params: str) -> None:
        self.emit(self.server_name, code, self.nick, *params, split=False)

    def send_names(self, channel: RoomView) -> None:
        entries = channel.members
        multi = "multi-prefix" in self.caps
        if "userhost-in-names" in self.caps:
            names = [channel.prefix(name, role, multi) + self.mask(name)
                     for name, role, _ in entries]
        else:
            names = [channel.prefix(name, role, multi) + name for name, role, _ in entries]
        budget = MAX_LINE_BYTES - _NAMES_OVERHEAD - len(self.server_name) - len(self.nick) \
            - len(channel.irc_name)
        symbol = "@" if channel.private else "="
        line: list[str] = []
        for name in names:
            if line and len(" ".join(line + [name])) > budget:
                self.numeric(N.RPL_NAMREPLY, symbol, channel.irc_name, " ".join(line))
                line = []
            line.append(name)
        if line:
            self.numeric(N.RPL_NAMREPLY, symbol, channel.irc_name, " ".join(line))
        self.numeric(N.RPL_ENDOFNAMES, channel.irc_name, "End of /NAMES list")

    def visible_tags(self, tags: dict[str, str]) -> dict[str, str]:
        """The tags this client takes: none without message-tags; time with
        server-time."""
        if "message-tags" in self.caps:
            return dict(tags) if "server-time" in self.caps else {
                k: v for k, v in tags.items() if k != "time"}
        return {"time": tags["time"]} if "server-time" in self.caps and "time" in tags else {}

    def room_view(self, room) -> RoomView:
        """A room as the core has it now (what this connection has been told
        may lag behind by one batch of the room's events)."""
        return RoomView(room.name, room.private, [
            (name, role, state) for name, state, role in self.core.directory.member_rows(room)],
            frozenset(room.voices) | room.guest_voices)

    def goodbye(self, text: str) -> None:
        """ERROR and close (the core's bye, a failed login, QUIT)."""
        if self.closed:
            return
        self._write(encode(None, "ERROR", (f"Closing link: {text}",)))  # never held
        self.closed = True
        self._hang_up()

    # --- asking the core ---------------------------------------------------------------

    def request(self, msg: wire.Message, pending: Pending) -> bool:
        """Hand ``msg`` to the core with a client message id of ours; False
        if it was refused at once (the refusal has been answered)."""
        cid = f"{self._cid_prefix}{next(self._cids)}"
        if hasattr(msg, "cid"):
            msg = dataclasses.replace(msg, cid=cid)
        self._pending[cid] = pending
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        self._sync_refusal = None
        self.core.receive(self.link, msg)
        refused = self._sync_refusal is not None
        self._sync_refusal = None
        if isinstance(msg, (wire.Say, wire.Direct)):
            if not refused:
                self._unsaved.add(cid)  # answered once it is saved
                if "echo-message" in self.caps and self.labels.current is not None:
                    self.labels_by_cid[cid] = self.labels.later()
                    while len(self.labels_by_cid) > MAX_PENDING:
                        self.labels_by_cid.popitem(last=False)
                self.sent[cid] = (pending.command, pending.client_tags)
                while len(self.sent) > MAX_PENDING:
                    self.sent.popitem(last=False)
                if isinstance(msg, wire.Direct):  # its recipient's copy has no cid
                    key = name_key(msg.to) or ""
                    queue = self.sent_directs.setdefault(key, collections.deque(maxlen=64))
                    queue.append((msg.text, pending.command, pending.client_tags))
        else:
            self._pending.pop(cid, None)  # answered at once, or never
            room = getattr(msg, "room", None)
            if room is not None:
                self._events_now(room)
        return not refused

    def _events_now(self, room_name: str) -> None:
        """An IRC server shows a command's effects before it reads the next
        command: the room's events (a JOIN, a TOPIC) go out now, not with
        the room's next batch."""
        directory = self.core.directory
        room = directory.get(room_key(room_name) or "")
        if room is not None:
            directory.flush(room)

    def answered(self, cid: str) -> None:
        """Our own line came back saved (and was echoed): its request is answered."""
        self._pending.pop(cid, None)
        self._saved(cid)

    def _saved(self, cid: str | None) -> None:
        self._unsaved.discard(cid)
        if not self._unsaved:
            waiting, self._after_saved = self._after_saved, []
            for then in waiting:
                then()

    def when_saved(self, then) -> None:
        """Call ``then()`` once this connection's own lines sent so far are
        saved (at once if they are): a command after a line sees it."""
        if self._unsaved and len(self._after_saved) < MAX_PENDING:
            self._after_saved.append(then)
        else:  # saved, or too much waits (the store is down): no more holding back
            then()

    def hold_pongs(self, reason: str) -> None:
        """Answer PINGs only once ``reason`` is over (an OPER being checked)."""
        self._unsaved.add(reason)

    def release_pongs(self, reason: str) -> None:
        self._saved(reason)

    def pong(self, token: str) -> None:
        """PING's answer comes after the answers to everything before it
        (the echo of a line still being saved, say): a client that pings to
        know it has seen everything then has."""
        def answer():
            self.emit(self.server_name, "PONG", self.server_name, token)

        if self._unsaved:
            held = self.labels.later()
            self.when_saved(lambda: self.labels.answer(held, answer))
            return
        answer()

    def refused(self, error: wire.Error) -> None:
        if not self.registered:
            self.registration_refused(error)
            return
        held = self.labels_by_cid.pop(error.cid, None) if error.cid else None
        if held is not None:  # a labeled line, refused once saving it failed
            self.labels.answer(held, lambda: self.refused(error))
            return
        pending = self._pending.pop(error.cid, None) if error.cid else None
        self._saved(error.cid)
        if pending is not None and pending.command == "NOTICE":
            return  # a NOTICE is never answered, not even with an error
        if pending is None:
            self.emit(self.server_name, "NOTICE", self.nick, error.text)
            return
        self._sync_refusal = error
        self._numeric_for(pending, error)

    def _numeric_for(self, pending: Pending, error: wire.Error) -> None:
        code, command = error.code, pending.command
        if code == "unchanged":
            return
        if code == "not_in_room":
            channel = self.channels.get(pending.channel)
            if command in ("PRIVMSG", "NOTICE"):
                self.numeric(N.ERR_CANNOTSENDTOCHAN, "#" + pending.channel, error.text)
            elif pending.nick and channel is not None:  # we are in it: the other is not
                self.numeric(N.ERR_USERNOTINCHANNEL, pending.nick, "#" + pending.channel,
                             error.text)
            else:
                self.numeric(N.ERR_NOTONCHANNEL, "#" + pending.channel, error.text)
            return
        numeric = REFUSALS.get(code)
        if numeric in (N.ERR_NOSUCHNICK,):
            self.numeric(numeric, pending.nick or pending.channel, error.text)
        elif numeric == N.ERR_USERONCHANNEL:
            self.numeric(numeric, pending.nick, "#" + pending.channel, error.text)
        elif numeric is not None and pending.channel:
            self.numeric(numeric, "#" + pending.channel, error.text)
        else:
            self.emit(self.server_name, "FAIL" if "standard-replies" in self.caps else "NOTICE",
                      *((command, code.upper(), error.text) if "standard-replies" in self.caps
                        else (self.nick, error.text)))

    # --- registration ---------------------------------------------------------------------

    def set_user(self, user: str, realname: str) -> None:
        self.user = (_USER_CHARS.sub("", user) or "user")[:USERLEN]
        self.realname = realname

    def try_register(self) -> None:
        """NICK, USER and the end of CAP negotiation are in: log in (or
        finish, if SASL logged in already)."""
        if self.registered or self.closed or self.user is None or self.caps.negotiating:
            return
        if self.session is not None:
            self._finish_registration()
            return
        if self.nick == "*" or self.link.login_pending:
            return
        self.login_via = "pass" if self.password is not None else "nick"
        self.core.receive(self.link, wire.Login(self.nick, password=self.password))

    def sasl_login(self, account: str, password: str) -> None:
        self.login_via = "sasl"
        self.core.receive(self.link, wire.Login(account, password=password))

    def registration_refused(self, error: wire.Error) -> None:
        via, self.login_via = self.login_via, None
        if via == "sasl":
            self.numeric(N.ERR_SASLFAIL, f"SASL authentication failed: {error.text}")
        elif error.code in ("name_taken", "name_lookalike", "password_required",
                            "name_registered"):
            self.numeric(N.ERR_NICKNAMEINUSE, self.nick, error.text)
        elif error.code == "name_invalid":
            self.numeric(N.ERR_ERRONEUSNICKNAME, self.nick, error.text)
        elif error.code == "login_failed":
            self.numeric(N.ERR_PASSWDMISMATCH, "Password incorrect")
            self.goodbye("Bad password")
        elif error.code == "banned":
            self.numeric(N.ERR_YOUREBANNEDCREEP, error.text)
            self.goodbye(error.text)
        elif via is not None:  # busy, throttled, unavailable: the login is over
            self.goodbye(error.text)
        else:
            self.emit(self.server_name, "NOTICE", self.nick, error.text)

    def _welcomed(self, msg: wire.Welcome) -> None:
        via, self.login_via = self.login_via, None
        if via == "sasl":
            self.numeric(N.RPL_LOGGEDIN, f"{msg.name}!{self.user or msg.name}@{HOST}", msg.name,
                         f"You are now logged in as {msg.name}")
            self.numeric(N.RPL_SASLSUCCESS, "SASL authentication successful")
        self.try_register()

    def _finish_registration(self) -> None:
        assert self.session is not None, "registration ends once logged in"
        self.nick = self.session.name  # the name as the chat spells it
        self.registered = True
        self.registry.add(self)
        self.numeric(N.RPL_WELCOME, f"Welcome to spchat, {self.own_mask}")
        self.numeric(N.RPL_YOURHOST, f"Your host is {self.server_name}, running version "
                     f"spchat-{spchat.__version__}")
        self.numeric(N.RPL_CREATED, f"This server was created {self.created}")
        self.numeric(N.RPL_MYINFO, self.server_name, f"spchat-{spchat.__version__}", "iow",
                     "biklmnotv", "bklov")
        for tokens in _chunks(self.isupport(), 12):
            self.numeric(N.RPL_ISUPPORT, *tokens, "are supported by this server")
        self.commands.lusers()
        self.numeric(N.ERR_NOMOTD, "MOTD File is missing")
        held, self._held = self._held, []
        for item in held:
            self._event(item)

    def isupport(self) -> list[str]:
        return [
            "AWAYLEN=200", "CASEMAPPING=rfc8265", "CHANLIMIT=#:100", "CHANMODES=b,k,l,imnt",
            "CHANNELLEN=33", "CHANTYPES=#", "ELIST=", "KICKLEN=200", "MODES=1",
            f"NETWORK={self.server_name}", "NICKLEN=32", f"PREFIX={PREFIX_ISUPPORT}",
            "TARGMAX=PRIVMSG:1,NOTICE:1,JOIN:,PART:,KICK:1,NAMES:1,WHOIS:1",
            "TOPICLEN=300", f"USERLEN={USERLEN}",
            *(["CHATHISTORY=100", "MSGREFTYPES=msgid,timestamp"]
              if "draft/chathistory" in OFFERED else []),
        ]

    # --- IChatClient --------------------------------------------------------------------

    def started(self, session, resumed):
        self.session = session
        self.on_logged_in()

    def send(self, message):
        if isinstance(message, wire.Welcome):
            self._welcomed(message)
        elif isinstance(message, wire.Error) or self.registered:
            self._event(message)
        else:
            self._held.append(message)

    def send_shared(self, events):
        if not self.registered:
            self._held.append(events)
            return
        self._event(events)

    def deliver(self, lines):
        if not self.registered:
            self._held.append(lines)
            return
        self._event(lines)

    def when_drained(self, then):
        then()  # IRC lines are not paced (and history on JOIN is dropped)

    def close(self, code, text):
        self.goodbye(text)

    def _event(self, item) -> None:
        if isinstance(item, SharedEvents):
            for message in item.messages:
                self.outbound.message(message)
            self.outbound.end_of_events()
        elif isinstance(item, LineBatch):
            self.outbound.room_lines(item)
        else:
            self.outbound.message(item)

    # --- the connection ----------------------------------------------------------------------

    def line_received(self, raw: bytes) -> None:
        self.commands.line(raw)

    def connection_lost(self, reason: str) -> None:
        self.closed = True
        self.registry.remove(self)
        rooms: list[str] = list(self.session.rooms) if self.session is not None else []
        self.core.link_lost(self.link, resumable=False, reason=self.quit_reason or reason)
        for key in rooms:  # the QUIT reaches the others now, as IRC servers send it
            room = self.core.directory.get(key)
            if room is not None:
                self.core.directory.flush(room)


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]
