"""The core's chat events as IRC lines, for one connection.

The core speaks of rooms, members, roles and saved lines; IRC of JOIN,
PART, QUIT, KICK, MODE, TOPIC and PRIVMSG.  A room's events come in a
fixed order (a notice, then the member update it caused), so this class
keeps each room's state (``Channels``) and emits the IRC line at the event
that says who did it."""

from __future__ import annotations

import datetime
import re
from collections import OrderedDict
from typing import Any, Callable

from spchat import wire
from spchat.irc import numerics as N
from spchat.irc.channels import ROLE_MODES, Channel, name_key, room_key
from spchat.irc.lines import encode
from spchat.server.records import account_of, direct_conversation

# Quits remembered, at most (a name that comes back is forgotten at once).
MAX_QUITS = 1024
# What a spchat client sends for "/me waves" (line mode and IRC alike).
ACTION_PREFIX = "/me "
# The mark of a multi-line message's later lines, as spchat's line mode
# shows them: nobody can make a line that looks like someone else's.
CONTINUATION = "| "
# A nick may be a spchat name; anything else (the administrator) speaks as the server.
_NICK = re.compile(r"[^\s!@:,*?#][^\s!@:,*?]*")


def irc_time(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def msgid(conversation: str, seq: int) -> str:
    """A message's id for IRC: its conversation and number (no spaces)."""
    return f"{conversation.replace(' ', '~')}/{seq}"


def text_lines(text: str) -> list[str]:
    """A spchat message as IRC lines: one per line, the later ones marked."""
    lines = text.split("\n")
    return [lines[0]] + [CONTINUATION + line for line in lines[1:]]


class Outbound:
    def __init__(self, conn):
        self.conn = conn
        self.channels = conn.channels
        # Changes seen in a room's state or a member's role, waiting for the
        # notice that says who made them: room key -> mode changes.
        self._modes: dict[str, list[tuple[str, str]]] = {}
        # Bans in this batch of events, for the member update that follows.
        self._kicks: dict[str, tuple[str, str]] = {}
        # Those told of as quitting: one QUIT, whatever the rooms we shared.
        self._quits: OrderedDict[str, None] = OrderedDict()

    # --- one wire message ----------------------------------------------------------

    def message(self, msg: wire.Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(self, msg)

    def end_of_events(self) -> None:
        """After a batch of a room's events: changes no notice claimed are the server's."""
        for room in list(self._modes):
            channel = self.channels.by_key.get(room)
            if channel is not None:
                self._flush_modes(channel, self.conn.server_name)
        self._modes.clear()
        self._kicks.clear()

    # --- rooms --------------------------------------------------------------------

    def _room_state(self, msg: wire.RoomState) -> None:
        conn = self.conn
        channel = self.channels.get(msg.room)
        if channel is None:  # a room we are in now: JOIN, then its topic
            channel = self.channels.add(msg.room)
            channel.settings_from(msg)
            conn.emit(conn.own_mask, "JOIN", channel.irc_name)
            if channel.topic:  # RPL_NOTOPIC only answers a TOPIC query
                self.send_topic(channel)
            # IRC's NAMES comes right after the JOIN: the room as it is now.
            # The room's later events say what changes after it.
            room = conn.core.directory.get(room_key(msg.room) or msg.room)
            if room is not None:
                view = conn.room_view(room)
                for name, role, _ in view.members:
                    channel.set_role(name, role)
                    self._quits.pop(name_key(name) or name, None)
                conn.send_names(view)
            return
        changes = self._modes.setdefault(room_key(msg.room) or msg.room, [])
        for letter, old, new in (("i", channel.private, msg.private),
                                 ("t", channel.topic_locked, msg.topic_locked),
                                 ("m", channel.moderated, msg.moderated)):
            if old != new:
                changes.append((("+" if new else "-") + letter, ""))
        if msg.password != channel.password:
            changes.append(("+k", msg.password) if msg.password else ("-k", "*"))
        if msg.member_limit != channel.member_limit:
            changes.append(("+l", str(msg.member_limit)) if msg.member_limit else ("-l", ""))
        channel.settings_from(msg)

    def send_topic(self, channel: Channel) -> None:
        if channel.topic:
            self.conn.numeric(N.RPL_TOPIC, channel.irc_name, channel.topic)
        else:
            self.conn.numeric(N.RPL_NOTOPIC, channel.irc_name, "No topic is set")

    def _members(self, msg: wire.Members) -> None:
        pass  # NAMES went with the JOIN; the room's events say what changed since

    def _member(self, msg: wire.MemberUpdate) -> None:
        conn = self.conn
        channel = self.channels.get(msg.room)
        if channel is None:
            return
        if msg.state == "gone":
            channel.forget(msg.name)
            kick = self._kicks.pop(name_key(msg.name) or msg.name, None)
            if kick is not None:  # banned while in the room
                conn.emit(kick[0], "KICK", channel.irc_name, msg.name, kick[1])
            return
        old = channel.set_role(msg.name, msg.role)
        if old != msg.role:
            changes = self._modes.setdefault(room_key(msg.room) or msg.room, [])
            before, after = ROLE_MODES.get(old), ROLE_MODES.get(msg.role)
            if before != after:  # owner and operator are both +o to IRC
                if before:
                    changes.append(("-" + before[0], msg.name))
                if after:
                    changes.append(("+" + after[0], msg.name))

    def _flush_modes(self, channel: Channel, source: str) -> None:
        changes = self._modes.pop(room_key(channel.name) or channel.name, [])
        for mode, target in changes:
            self.conn.emit(source, "MODE", channel.irc_name, mode, *([target] if target else []))

    def _notice(self, msg: wire.Notice) -> None:
        conn = self.conn
        if not msg.room:
            conn.emit(conn.server_name, "NOTICE", conn.nick, msg.text)
            return
        channel = self.channels.get(msg.room)
        kind = msg.kind
        if kind == "invite" and conn.is_me(msg.name or "") or channel is None:
            if kind == "invite":  # an invitation to a room we are not in
                conn.emit(self._source(msg.by), "INVITE", conn.nick, "#" + msg.room)
            return
        by = self._source(msg.by)
        if kind == "join":
            self._quits.pop(name_key(msg.name) or msg.name, None)
            if not conn.is_me(msg.name):
                conn.emit(conn.mask(msg.name), "JOIN", channel.irc_name)
                joiner = conn.registry.get(msg.name)
                if "away-notify" in conn.caps and joiner is not None and joiner.away:
                    conn.emit(conn.mask(msg.name), "AWAY", joiner.away)
        elif kind == "leave":
            conn.emit(conn.mask(msg.name), "PART", channel.irc_name,
                      *([msg.reason] if msg.reason else []))
        elif kind == "quit":  # one QUIT, whatever the rooms we shared
            key = name_key(msg.name) or msg.name
            if key not in self._quits:
                self._quits[key] = None
                while len(self._quits) > MAX_QUITS:
                    self._quits.popitem(last=False)
                conn.emit(conn.mask(msg.name), "QUIT", msg.reason or "Quit")
        elif kind == "kick":
            conn.emit(by, "KICK", channel.irc_name, msg.name, msg.reason or msg.text)
        elif kind == "ban":  # a KICK too if the member update says it was in the room
            conn.emit(by, "MODE", channel.irc_name, "+b", f"{msg.name}!*@*")
            self._kicks[name_key(msg.name) or msg.name] = (by, msg.reason or msg.text)
        elif kind == "unban":
            conn.emit(by, "MODE", channel.irc_name, "-b", f"{msg.name}!*@*")
        elif kind == "invite":
            pass  # IRC tells only the one invited (and the inviter, with 341)
        elif kind == "topic":
            conn.emit(by, "TOPIC", channel.irc_name, channel.topic)
        elif kind in ("mode", "role"):
            self._flush_modes(channel, by)
        elif kind in ("voice", "devoice"):
            conn.emit(by, "MODE", channel.irc_name, "+v" if kind == "voice" else "-v", msg.name)
        else:  # mute, invite, broadcasts, gaps: in words
            conn.emit(conn.server_name, "NOTICE", channel.irc_name, msg.text)

    def _source(self, name: str) -> str:
        if name and _NICK.fullmatch(name):
            return self.conn.mask(name)
        return self.conn.server_name

    def _left(self, msg: wire.RoomLeft) -> None:
        conn = self.conn
        channel = self.channels.drop(msg.room)
        if channel is None:
            return
        if msg.code == "part":
            conn.emit(conn.own_mask, "PART", channel.irc_name, *([msg.reason] if msg.reason else []))
        else:  # kicked, banned, deleted
            conn.emit(self._source(msg.by), "KICK", channel.irc_name, conn.nick,
                      msg.reason or msg.text)

    def _room_list(self, msg: wire.RoomList) -> None:
        conn = self.conn
        if not conn.list_asked:
            return
        conn.list_asked -= 1
        conn.numeric(N.RPL_LISTSTART, "Channel", "Users  Name")
        for name, members, topic in msg.rooms:
            conn.numeric(N.RPL_LIST, "#" + name, str(members), topic)
        conn.numeric(N.RPL_LISTEND, "End of /LIST")

    # --- lines -----------------------------------------------------------------------

    def _room_message(self, msg: wire.RoomMessage) -> None:
        if msg.history:
            return  # history comes through CHATHISTORY, not on JOIN
        self.line(msg.sender, "#" + msg.room, msg.text, msg.ts, msgid("#" + msg.room, msg.seq),
                  msg.cid)

    def _direct_message(self, msg: wire.DirectMessage) -> None:
        conn = self.conn
        if msg.history:
            return
        own = conn.is_me(msg.sender)
        conversation = wire_direct(msg.sender, msg.to)
        mid = msgid(conversation, msg.seq)
        if own:
            self.line(msg.sender, msg.to, msg.text, msg.ts, mid, msg.cid)  # the echo, if asked
            if conn.is_me(msg.to):  # to oneself: it arrives as well
                self._line(msg.sender, conn.nick, msg.text, msg.ts, mid, conn.sent.get(msg.cid))
            return
        sent = conn.registry.sent_direct(name_key(msg.sender) or "", conn.session.key, msg.text)
        self._line(msg.sender, conn.nick, msg.text, msg.ts, mid, sent)

    def line(self, sender: str, target: str, text: str, ts: int, mid: str,
             cid: str | None) -> None:
        if cid is None:
            self._line(sender, target, text, ts, mid, None)
            return
        # Our own line, saved: its echo if asked for, then what waited for it.
        conn = self.conn
        if "echo-message" in conn.caps:
            conn.labels.answer(conn.labels_by_cid.pop(cid, None), lambda: self._line(
                sender, target, text, ts, mid, conn.sent.get(cid)))
        conn.answered(cid)

    def _line(self, sender: str, target: str, text: str, ts: int, mid: str,
              sent: tuple[str, dict] | None = None) -> None:
        conn = self.conn
        caps = conn.caps
        command, extra = sent or ("PRIVMSG", {})
        account = conn.account_name(sender) if "account-tag" in caps else None
        tags = line_tags(ts, mid, "server-time" in caps, "message-tags" in caps, extra, account)
        conn.write(privmsg(conn.mask(sender), target, text, tags, command))

    def room_lines(self, lines) -> None:
        """A room's saved lines (``LineBatch``): those of others encoded
        once for every member whose capabilities ask for the same tags,
        this client's own as its echo."""
        conn = self.conn
        caps = conn.caps
        with_time, with_id = "server-time" in caps, "message-tags" in caps
        with_account = "account-tag" in caps
        shared = lines.cached(f"irc{int(with_time)}{int(with_id)}{int(with_account)}",
                              _encode_room_lines, lines, conn.registry, with_time, with_id,
                              with_account)
        own = conn.session.key
        out = []
        for record, data in zip(lines.records, shared):
            if record.sender_key != own:
                out.append(data)
                continue
            if out:
                conn.write(b"".join(out))
                out = []
            self.line(record.sender, "#" + lines.room, record.text, record.ts,
                      msgid("#" + lines.room, record.seq), record.cid)
        if out:
            conn.write(b"".join(out))

    # --- the rest ---------------------------------------------------------------------

    def _error(self, msg: wire.Error) -> None:
        self.conn.refused(msg)

    def _bye(self, msg: wire.Bye) -> None:
        self.conn.goodbye(msg.text)

    def _offer(self, msg: wire.Offer) -> None:
        channel = self.channels.get(msg.room)
        if channel is not None:
            self.conn.emit(self.conn.server_name, "NOTICE", channel.irc_name,
                           f"{msg.sharer} shares {msg.name!r} ({msg.size} bytes); "
                           "fetch it with a spchat client")

    _handlers: dict[type, Callable[[Outbound, Any], None]] = {
        wire.RoomState: _room_state,
        wire.Members: _members,
        wire.MemberUpdate: _member,
        wire.Notice: _notice,
        wire.RoomLeft: _left,
        wire.RoomList: _room_list,
        wire.RoomMessage: _room_message,
        wire.DirectMessage: _direct_message,
        wire.Error: _error,
        wire.Bye: _bye,
        wire.Offer: _offer,
    }


def line_tags(ts: int, mid: str, with_time: bool, with_id: bool,
              client_tags: dict[str, str] | None = None,
              account: str | None = None) -> dict[str, str]:
    """A line's tags for a client: its time (server-time), its msgid and
    the sender's client-only tags (message-tags), its account (account-tag,
    given only to those who asked for it)."""
    tags = {}
    if with_id and client_tags:
        tags.update(client_tags)
    if with_time:
        tags["time"] = irc_time(ts)
    if with_id:
        tags["msgid"] = mid
    if account:
        tags["account"] = account
    return tags


def account_of_record(record) -> str | None:
    """The account a saved line was sent from (its sender, registered), or None."""
    return record.sender if record.lineage and account_of(record.lineage) else None


def privmsg(source: str, target: str, text: str, tags: dict[str, str],
            command: str = "PRIVMSG") -> bytes:
    """A spchat message as PRIVMSG (or NOTICE) lines: /me as an ACTION,
    later lines marked."""
    if text.startswith(ACTION_PREFIX) and "\n" not in text:
        body = f"\x01ACTION {text[len(ACTION_PREFIX):]}\x01"
        return encode(source, command, (target, body), tags, split=False)
    return b"".join(encode(source, command, (target, line or " "), tags)
                    for line in text_lines(text))


def _encode_room_lines(lines, registry, with_time: bool, with_id: bool,
                       with_account: bool) -> list[bytes]:
    target = "#" + lines.room
    out = []
    for r in lines.records:  # the records know their senders' keys: no folding per line
        command, extra = registry.sent(r.sender_key, r.cid) or ("PRIVMSG", {})
        account = account_of_record(r) if with_account else None
        out.append(privmsg(registry.mask(r.sender, r.sender_key), target, r.text,
                           line_tags(r.ts, msgid(target, r.seq), with_time, with_id, extra,
                                     account),
                           command))
    return out


def wire_direct(a: str, b: str) -> str:
    return direct_conversation(name_key(a) or a, name_key(b) or b)
