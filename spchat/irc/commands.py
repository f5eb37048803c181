"""What an IRC client may send, and what each command becomes: a wire
message to the core, or an answer from what the connection knows."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import time

import spchat
from spchat import wire
from spchat.irc import numerics as N
from spchat.irc.channels import Channel, name_key, prefix_of, room_key
from spchat.irc.lines import IrcParseError, parse
from spchat.irc.outbound import ACTION_PREFIX, irc_time
from spchat.server.room_settings import check_room_password, parse_member_limit
from spchat.server.rules import Refused

# IRC's text formatting (bold, colours, italics, ...): spchat's texts are
# plain, so it goes (colour codes with their numbers).
_FORMATTING = re.compile(r"\x03(\d{1,2}(,\d{1,2})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
_ACTION = re.compile(r"\x01ACTION(?: (.*?))?\x01?$", re.S)
# Commands a client may send before it is registered.
BEFORE_REGISTRATION = {"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT"}
_MODE_OPS = {("+", "o"): "op", ("-", "o"): "deop", ("+", "b"): "ban", ("-", "b"): "unban",
             ("+", "v"): "voice", ("-", "v"): "devoice"}
_ROOM_FLAGS = {"i": "private", "t": "topic_locked", "m": "moderated"}
_USER_MODES = {"i": "invisible", "w": "wallops"}


def plain_text(text: str) -> str | None:
    """An IRC message's text for spchat (None: a CTCP request, not chat)."""
    action = _ACTION.match(text)
    if action is not None:
        return ACTION_PREFIX + _FORMATTING.sub("", action.group(1) or "")
    if text.startswith("\x01"):
        return None
    return _FORMATTING.sub("", text)


class Commands:
    def __init__(self, conn):
        self.conn = conn

    def line(self, raw: bytes) -> None:
        conn = self.conn
        if conn.closed:
            return
        try:
            line = parse(raw)
        except IrcParseError:
            return  # an empty line: ignored, as the specifications ask
        label = line.tags.get("label")
        # Labeled answers of several lines are batches: both capabilities, or neither.
        if conn.registered and {"labeled-response", "batch"} <= conn.caps.enabled \
                and conn.labels.usable(label):
            conn.labels.run(label, lambda: self._run(line))
        else:
            self._run(line)

    def _run(self, line) -> None:
        conn = self.conn
        handler = self._handlers.get(line.command)
        if not conn.registered and line.command not in BEFORE_REGISTRATION:
            if handler is None:
                conn.numeric(N.ERR_UNKNOWNCOMMAND, line.command, "Unknown command")
            else:
                conn.numeric(N.ERR_NOTREGISTERED, "You have not registered")
            return
        if handler is None:
            conn.numeric(N.ERR_UNKNOWNCOMMAND, line.command, "Unknown command")
            return
        if len(line.params) < self._needs.get(line.command, 0):
            conn.numeric(N.ERR_NEEDMOREPARAMS, line.command, "Not enough parameters")
            return
        handler(self, line)

    # --- registration ---------------------------------------------------------------

    def cap(self, line) -> None:
        conn, caps = self.conn, self.conn.caps
        sub = line.params[0].upper() if line.params else ""
        if sub == "LS":
            offered = caps.ls(line.params[1] if len(line.params) > 1 else None)
            conn.emit(conn.server_name, "CAP", conn.nick, "LS", " ".join(offered))
        elif sub == "REQ":
            asked = line.params[1] if len(line.params) > 1 else ""
            verdict = "ACK" if caps.request(asked) else "NAK"
            conn.emit(conn.server_name, "CAP", conn.nick, verdict, asked)
        elif sub == "LIST":
            conn.emit(conn.server_name, "CAP", conn.nick, "LIST", " ".join(sorted(caps.enabled)))
        elif sub == "END":
            if caps.negotiating:
                caps.negotiating = False
                conn.try_register()
        else:
            conn.numeric("410", sub or "*", "Invalid CAP command")

    def nick(self, line) -> None:
        conn = self.conn
        if not line.params or not line.params[0]:
            conn.numeric(N.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = line.params[0]
        if conn.registered:
            if name_key(nick) != conn.session.key:
                conn.numeric(N.ERR_ERRONEUSNICKNAME, nick,
                             "a spchat name cannot change while you are logged in")
            return
        if name_key(nick) is None or nick.startswith(("#", ":")):
            conn.numeric(N.ERR_ERRONEUSNICKNAME, nick, "Erroneous nickname: a name is 1-32 "
                         "letters, digits, '_', '-' or '.'")
            return
        conn.nick = nick
        conn.try_register()

    def user(self, line) -> None:
        conn = self.conn
        if conn.registered or conn.user is not None:
            conn.numeric(N.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        if not line.params[3]:
            conn.numeric(N.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters (a real name)")
            return
        conn.set_user(line.params[0], line.params[3])
        conn.try_register()

    def pass_(self, line) -> None:
        conn = self.conn
        if conn.registered:
            conn.numeric(N.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        conn.password = line.params[0]

    def authenticate(self, line) -> None:
        conn, sasl = self.conn, self.conn.sasl
        arg = line.params[0]
        if conn.session is not None:
            conn.numeric(N.ERR_SASLALREADY, "You are logged in already")
            return
        if arg == "*":
            sasl.abort()
            conn.numeric(N.ERR_SASLABORTED, "SASL authentication aborted")
            return
        if not sasl.started:
            if arg.upper() != "PLAIN":
                conn.numeric(N.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                conn.numeric(N.ERR_SASLFAIL, "SASL authentication failed")
                return
            sasl.start()
            conn.emit(None, "AUTHENTICATE", "+")
            return
        result = sasl.add(arg)
        if result is None:
            return
        if isinstance(result, str):
            code = N.ERR_SASLTOOLONG if result == "too long" else N.ERR_SASLFAIL
            conn.numeric(code, f"SASL authentication failed: {result}")
            return
        conn.sasl_login(*result)

    def ping(self, line) -> None:
        self.conn.pong(line.params[0])

    def pong(self, line) -> None:
        pass  # the protocol counts any line as a sign of life

    def quit(self, line) -> None:
        conn = self.conn
        reason = line.params[0] if line.params else ""
        conn.quit_reason = f"Quit: {reason}" if reason else "Quit"
        conn.goodbye(conn.quit_reason)

    # --- rooms ---------------------------------------------------------------------------

    def join(self, line) -> None:
        conn = self.conn
        if line.params[0] == "0":
            for channel in conn.channels:
                conn.request(wire.Part(channel.name), Pending("PART", channel.name))
            return
        keys = line.params[1].split(",") if len(line.params) > 1 else []
        for i, name in enumerate(line.params[0].split(",")):
            if not name.startswith("#") or room_key(name) is None:
                conn.numeric(N.ERR_NOSUCHCHANNEL, name, "No such channel: a room name is "
                             "'#' and 1-32 letters, digits, '_', '-' or '.'")
                continue
            if conn.channels.get(name) is not None:
                continue  # in it already: IRC says nothing
            # The n-th key is the n-th channel's password.
            password = keys[i] if i < len(keys) and keys[i] else None
            conn.request(wire.Join(name[1:], password=password), Pending("JOIN", name[1:]))

    def part(self, line) -> None:
        conn = self.conn
        reason = line.params[1] if len(line.params) > 1 else None
        for name in line.params[0].split(","):
            if conn.channels.get(name) is None:
                if room_key(name) is not None and self._room(name) is not None:
                    conn.numeric(N.ERR_NOTONCHANNEL, name, "You're not on that channel")
                else:
                    conn.numeric(N.ERR_NOSUCHCHANNEL, name, "No such channel")
                continue
            conn.request(wire.Part(name[1:], reason), Pending("PART", name[1:]))

    def topic(self, line) -> None:
        conn = self.conn
        name = line.params[0]
        channel = conn.channels.get(name)
        if channel is None:
            if self._room(name) is None:
                conn.numeric(N.ERR_NOSUCHCHANNEL, name, "No such channel")
            else:
                conn.numeric(N.ERR_NOTONCHANNEL, name, "You're not on that channel")
            return
        if len(line.params) < 2:
            conn.outbound.send_topic(channel)
            return
        conn.request(wire.Topic(channel.name, line.params[1]), Pending("TOPIC", channel.name))

    def names(self, line) -> None:
        conn = self.conn
        if not line.params:
            conn.numeric(N.RPL_ENDOFNAMES, "*", "End of /NAMES list")
            return
        for name in line.params[0].split(","):
            room = self._room(name)
            if room is not None and (not room.private or conn.channels.get(name) is not None):
                conn.send_names(conn.room_view(room))
            else:
                conn.numeric(N.RPL_ENDOFNAMES, name, "End of /NAMES list")

    def list_(self, line) -> None:
        self.conn.list_asked += 1
        self.conn.request(wire.ListRooms(), Pending("LIST"))

    def kick(self, line) -> None:
        conn = self.conn
        name = line.params[0]
        # Without a comment, the kicker's nick, as IRC servers do.
        reason = line.params[2] if len(line.params) > 2 and line.params[2] else conn.nick
        if conn.channels.get(name) is None:
            self._not_on(name)
            return
        for nick in line.params[1].split(","):
            conn.request(wire.Moderate(name[1:], "kick", nick, reason),
                         Pending("KICK", name[1:], nick))

    def invite(self, line) -> None:
        conn = self.conn
        nick, name = line.params[0], line.params[1]
        if conn.channels.get(name) is None:
            self._not_on(name)
            return
        if conn.request(wire.Moderate(name[1:], "invite", nick), Pending("INVITE", name[1:], nick)):
            conn.numeric(N.RPL_INVITING, nick, name)

    def mode(self, line) -> None:
        conn = self.conn
        target = line.params[0]
        if not target.startswith("#"):
            self._user_mode(line)
            return
        channel = conn.channels.get(target)
        if channel is None:
            room = self._room(target)
            if room is None:
                conn.numeric(N.ERR_NOSUCHCHANNEL, target, "No such channel")
            else:
                outside = Channel(room.name)
                outside.settings_from(room.state())
                conn.numeric(N.RPL_CHANNELMODEIS, outside.irc_name, *outside.modes(member=False))
            return
        if len(line.params) == 1:
            conn.numeric(N.RPL_CHANNELMODEIS, channel.irc_name, *channel.modes())
            return
        args = list(line.params[2:])
        sign, listed = "+", False
        for letter in line.params[1]:
            if letter in "+-":
                sign = letter
                continue
            if letter in _ROOM_FLAGS:
                conn.request(wire.Mode(channel.name, _ROOM_FLAGS[letter], sign == "+"),
                             Pending("MODE", channel.name))
            elif letter in "kl":
                self._room_setting(channel, sign, letter, args)
            elif letter == "n":
                pass  # always on: only members speak in a room
            elif (sign, letter) in _MODE_OPS:
                if not args:
                    if letter != "b":
                        conn.numeric(N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                    elif not listed:  # the (empty) ban list, once per MODE
                        listed = True
                        conn.numeric(N.RPL_ENDOFBANLIST, channel.irc_name, "End of channel ban list")
                    continue
                nick = args.pop(0).split("!", 1)[0]
                conn.request(wire.Moderate(channel.name, _MODE_OPS[(sign, letter)], nick),
                             Pending("MODE", channel.name, nick))
            else:
                conn.numeric(N.ERR_UNKNOWNMODE, letter, "is an unknown mode char to me")

    def _room_setting(self, channel: Channel, sign: str, letter: str, args: list[str]) -> None:
        """+k PASSWORD, -k [PASSWORD], +l LIMIT, -l: the room's password and
        member limit, checked here so a bad value gets IRC's own numeric."""
        conn = self.conn
        flag = "password" if letter == "k" else "member_limit"
        if sign == "-":
            if letter == "k" and args:
                args.pop(0)  # -k takes the old key, which it does not need
            conn.request(wire.Mode(channel.name, flag, False), Pending("MODE", channel.name))
            return
        if not args:
            conn.numeric(N.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
            return
        value = args.pop(0)
        try:
            if letter == "k":
                mode = wire.Mode(channel.name, flag, True, password=check_room_password(value))
            else:
                mode = wire.Mode(channel.name, flag, True, limit=parse_member_limit(value))
        except Refused as refusal:
            conn.numeric(N.ERR_INVALIDMODEPARAM, channel.irc_name, letter,
                         "*" if letter == "k" or not value.strip() else value, refusal.text)
            return
        conn.request(mode, Pending("MODE", channel.name))

    def _user_mode(self, line) -> None:
        conn = self.conn
        if name_key(line.params[0]) != conn.session.key:
            if name_key(line.params[0]) in conn.core.everyone:
                conn.numeric(N.ERR_USERSDONTMATCH, "Cant change mode for other users")
            else:
                conn.numeric(N.ERR_NOSUCHNICK, line.params[0], "No such nick")
            return
        if len(line.params) == 1:
            conn.numeric(N.RPL_UMODEIS, "+" + "i" * conn.invisible + "o" * conn.oper
                         + "w" * conn.wallops)
            return
        sign, changed = "+", []
        for letter in line.params[1]:
            if letter in "+-":
                sign = letter
            elif letter == "o" and sign == "-" and conn.oper:
                conn.oper = False  # anyone may stop being an operator
                changed.append("-o")
            elif letter not in "iw":
                conn.numeric(N.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
                return
            elif getattr(conn, _USER_MODES[letter]) != (sign == "+"):
                setattr(conn, _USER_MODES[letter], sign == "+")
                changed.append(sign + letter)
        if changed:
            conn.emit(conn.own_mask, "MODE", conn.nick, "".join(changed))

    # --- messages -----------------------------------------------------------------------

    def privmsg(self, line) -> None:
        conn = self.conn
        if not line.params:
            conn.numeric(N.ERR_NORECIPIENT, f"No recipient given ({line.command})")
            return
        if len(line.params) < 2 or not line.params[1]:
            conn.numeric(N.ERR_NOTEXTTOSEND, "No text to send")
            return
        text = plain_text(line.params[1])
        if text is None or not text.strip():
            return  # CTCP, or nothing left once formatting went
        tags = client_tags(line)
        quiet = line.command == "NOTICE"  # a NOTICE is never answered, not even with an error
        for target in line.params[0].split(","):
            if target.startswith("#"):
                if not self._may_send_to(target, quiet):
                    continue
                conn.request(wire.Say(text, "", room=target[1:]),
                             Pending(line.command, target[1:], client_tags=tags))
            elif name_key(target) is None or name_key(target) not in conn.core.everyone:
                if not quiet:
                    conn.numeric(N.ERR_NOSUCHNICK, target, "No such nick/channel")
            else:
                conn.request(wire.Direct(target, text, ""),
                             Pending(line.command, nick=target, client_tags=tags))
                away = conn.registry.get(target)
                if away is not None and away.away and line.command == "PRIVMSG":
                    conn.numeric(N.RPL_AWAY, away.nick, away.away)

    def _may_send_to(self, target: str, quiet: bool = False) -> bool:
        conn = self.conn
        if conn.channels.get(target) is not None:
            return True
        if quiet:
            return False
        if self._room(target) is None:
            conn.numeric(N.ERR_NOSUCHCHANNEL, target, "No such channel")
        else:
            conn.numeric(N.ERR_CANNOTSENDTOCHAN, target, "Cannot send to channel: join it first")
        return False

    def tagmsg(self, line) -> None:
        """Tags alone (typing, reactions): relayed at once to the IRC members
        who take message-tags, never saved (there is no text to save)."""
        conn = self.conn
        tags = client_tags(line)
        target = line.params[0]
        if target.startswith("#"):
            if not self._may_send_to(target):
                return
            room = self._room(target)
            if not room.may_speak(conn.session.key):  # muted, or moderated without a voice
                conn.numeric(N.ERR_CANNOTSENDTOCHAN, target, "Cannot send to channel")
                return
            keys = list(room.members)
            shown = "#" + room.name
        else:
            session = conn.core.by_key.get(name_key(target) or "")
            if session is None:
                conn.numeric(N.ERR_NOSUCHNICK, target, "No such nick/channel")
                return
            keys, shown = [session.key], session.name
        tags["msgid"] = conn.registry.next_tagmsg_id()
        tags["time"] = irc_time(int(conn.core.now() * 1000))
        for key in keys:
            other = conn.registry.by_key(key)
            if other is None or "message-tags" not in other.caps:
                continue
            if other is conn:  # a room's line is not sent back, but to oneself it arrives
                if not target.startswith("#"):
                    conn.labels.aside(lambda: conn.emit(conn.own_mask, "TAGMSG", shown,
                                                        tags=conn.visible_tags(tags)))
                continue
            other.emit(conn.own_mask, "TAGMSG", shown, tags=other.visible_tags(tags))
        if "echo-message" in conn.caps and "message-tags" in conn.caps:
            conn.emit(conn.own_mask, "TAGMSG", shown, tags=conn.visible_tags(tags))

    # --- questions ----------------------------------------------------------------------

    def who(self, line) -> None:
        conn = self.conn
        mask = line.params[0] if line.params else "*"
        if mask.startswith("#"):
            room = self._room(mask)
            if room is not None and (not room.private or conn.channels.get(mask) is not None):
                view = conn.room_view(room)
                multi = "multi-prefix" in conn.caps
                for name, role, state in view.members:
                    self._who_reply(view.irc_name, name, state, view.prefix(name, role, multi))
        else:
            for session in self._matching(mask):
                room = self._first_visible_room(session)
                self._who_reply("#" + room.name if room else "*", session.name,
                                conn.core.presence_state(session),
                                self._prefix_in(room, session.key) if room else "")
        conn.numeric(N.RPL_ENDOFWHO, mask, "End of WHO list")

    def _matching(self, mask: str) -> list:
        """The users a WHO mask names: one nick, or a glob (* and ?) over nicks."""
        sessions = self.conn.core.everyone
        if not any(c in mask for c in "*?"):
            session = sessions.get(name_key(mask) or "")
            return [session] if session is not None else []
        pattern = mask.casefold()
        return [s for key, s in sorted(sessions.items())
                if fnmatch.fnmatchcase(key, pattern) and not self._hidden(s)]

    def _hidden(self, session) -> bool:
        """An invisible (+i) IRC user is found by a mask only by those who
        share a room with it."""
        other = self.conn.registry.get(session.name)
        return (other is not None and other.invisible and other is not self.conn
                and not session.rooms & self.conn.session.rooms)

    def _first_visible_room(self, session):
        """The first room of ``session`` this connection may know it is in."""
        conn = self.conn
        for key in sorted(session.rooms):
            room = conn.core.directory.get(key)
            if room is not None and (not room.private or key in conn.session.rooms):
                return room
        return None

    def _prefix_in(self, room, key: str) -> str:
        return prefix_of(room.role_of(key), room.has_voice(key), "multi-prefix" in self.conn.caps)

    def _who_reply(self, channel: str, name: str, state: str, prefix: str) -> None:
        conn = self.conn
        other = conn.registry.get(name)
        user = other.user if other is not None and other.user else name
        realname = other.realname if other is not None else name
        here = "G" if (other is not None and other.away) or state != "online" else "H"
        oper = "*" if other is not None and other.oper else ""
        conn.numeric(N.RPL_WHOREPLY, channel, user, "spchat", conn.server_name, name,
                     here + oper + prefix, f"0 {realname}")

    def whois(self, line) -> None:
        conn = self.conn
        nick = line.params[-1]
        session = conn.core.everyone.get(name_key(nick) or "")
        if session is None:
            conn.numeric(N.ERR_NOSUCHNICK, nick, "No such nick/channel")
            conn.numeric(N.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
            return
        other = conn.registry.get(session.name)
        user = other.user if other is not None and other.user else session.name
        realname = other.realname if other is not None else session.name
        conn.numeric(N.RPL_WHOISUSER, session.name, user, "spchat", "*", realname)
        rooms = []
        for key in sorted(session.rooms):
            room = conn.core.directory.get(key)
            if room is not None and (not room.private or key in conn.session.rooms):
                rooms.append(self._prefix_in(room, session.key) + "#" + room.name)
        if rooms:
            conn.numeric(N.RPL_WHOISCHANNELS, session.name, " ".join(rooms))
        conn.numeric(N.RPL_WHOISSERVER, session.name, conn.server_name, "spchat")
        if other is not None and other.away:
            conn.numeric(N.RPL_AWAY, session.name, other.away)
        if other is not None and other.oper:
            conn.numeric(N.RPL_WHOISOPERATOR, session.name, "is an IRC operator")
        if session.registered:
            conn.numeric(N.RPL_WHOISACCOUNT, session.name, session.name, "is logged in as")
        conn.numeric(N.RPL_ENDOFWHOIS, session.name, "End of /WHOIS list")

    def whowas(self, line) -> None:
        conn = self.conn
        if not line.params or not line.params[0]:
            conn.numeric(N.ERR_NEEDMOREPARAMS, "WHOWAS", "Not enough parameters")
            return
        nick = line.params[0]
        count = line.params[1] if len(line.params) > 1 else "0"
        entries = conn.registry.was(nick)
        limit = int(count) if count.lstrip("-").isdigit() else 0
        if limit > 0:  # 0 or less: all of them
            entries = entries[:limit]
        if not entries:
            conn.numeric(N.ERR_WASNOSUCHNICK, nick, "There was no such nickname")
        for was_nick, user, realname in entries:
            conn.numeric(N.RPL_WHOWASUSER, was_nick, user, "spchat", "*", realname)
            conn.numeric(N.RPL_WHOISSERVER, was_nick, conn.server_name, "spchat")
        conn.numeric(N.RPL_ENDOFWHOWAS, nick, "End of WHOWAS")

    # --- IRC operators: the administrator's powers, on IRC -------------------------

    def oper(self, line) -> None:
        conn = self.conn
        operator = conn.operator  # (name, hash) from CHAT_IRC_OPERATOR, or None
        if operator is None or line.params[0] != operator[0]:
            conn.numeric(N.ERR_NOOPERHOST, "No O-lines for your host")
            return
        passwords = conn.core.logins.passwords
        if passwords is None:
            conn.numeric(N.ERR_NOOPERHOST, "No O-lines for your host")
            return
        conn.hold_pongs("oper")  # a PING after OPER is answered after it

        def checked(ok):
            if ok:
                conn.oper = True
                conn.numeric(N.RPL_YOUREOPER, "You are now an IRC operator")
                conn.emit(conn.own_mask, "MODE", conn.nick, "+o")
            else:
                conn.numeric(N.ERR_PASSWDMISMATCH, "Password incorrect")

        held = conn.labels.later()  # the password check answers later
        d = passwords.verify(line.params[1], operator[1])
        d.addErrback(lambda _: False)
        d.addCallback(lambda ok: conn.labels.answer(held, lambda: checked(ok)))
        d.addBoth(lambda _: conn.release_pongs("oper"))

    def kill(self, line) -> None:
        conn = self.conn
        if not conn.oper:
            conn.numeric(N.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
            return
        nick = line.params[0]
        reason = line.params[1] if len(line.params) > 1 else "no reason given"
        if not conn.core.kick(nick, f"killed by {conn.nick}: {reason}"):
            conn.numeric(N.ERR_NOSUCHNICK, nick, "No such nick/channel")

    def wallops(self, line) -> None:
        conn = self.conn
        if not conn.oper:
            conn.numeric(N.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
            return
        for other in conn.registry.all():
            if other.wallops:
                other.emit(conn.own_mask, "WALLOPS", line.params[0])

    def away(self, line) -> None:
        conn = self.conn
        text = line.params[0] if line.params else ""
        before, conn.away = conn.away, text[:200] or None
        if conn.away:
            conn.numeric(N.RPL_NOWAWAY, "You have been marked as being away")
        else:
            conn.numeric(N.RPL_UNAWAY, "You are no longer marked as being away")
        if conn.away != before:  # the same again tells nobody anything
            for other in conn.room_peers():
                if "away-notify" in other.caps:
                    other.emit(conn.own_mask, "AWAY", *([conn.away] if conn.away else []))

    def lusers(self, line=None) -> None:
        conn = self.conn
        users, here = len(conn.core.everyone), len(conn.core.by_key)  # all nodes', this one's
        rooms = len(conn.core.directory.rooms)
        conn.numeric(N.RPL_LUSERCLIENT, f"There are {users} users and 0 invisible on 1 servers")
        conn.numeric(N.RPL_LUSEROP, "0", "operator(s) online")
        conn.numeric(N.RPL_LUSERCHANNELS, str(rooms), "channels formed")
        conn.numeric(N.RPL_LUSERME, f"I have {here} clients and 0 servers")
        conn.numeric(N.RPL_LOCALUSERS, str(here), str(here),
                     f"Current local users {here}, max {here}")
        conn.numeric(N.RPL_GLOBALUSERS, str(users), str(users),
                     f"Current global users {users}, max {users}")

    def motd(self, line) -> None:
        self.conn.numeric(N.ERR_NOMOTD, "MOTD File is missing")

    def version(self, line) -> None:
        conn = self.conn
        conn.numeric(N.RPL_VERSION, f"spchat-{spchat.__version__}", conn.server_name,
                     "an IRC gateway to spchat")
        for tokens in [conn.isupport()]:
            conn.numeric(N.RPL_ISUPPORT, *tokens, "are supported by this server")

    def time_(self, line) -> None:
        conn = self.conn
        conn.numeric(N.RPL_TIME, conn.server_name, time.strftime(
            "%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime(conn.core.now())))

    def ison(self, line) -> None:
        conn = self.conn
        online = [conn.core.everyone[k].name for k in (name_key(n) for n in " ".join(
            line.params).split()) if k is not None and k in conn.core.everyone]
        conn.numeric(N.RPL_ISON, " ".join(online))

    def chathistory(self, line) -> None:
        self.conn.history.command(line)

    def userhost(self, line) -> None:
        conn = self.conn
        replies = []
        for nick in line.params[:5]:
            session = conn.core.everyone.get(name_key(nick) or "")
            if session is not None:
                other = conn.registry.get(session.name)
                away = "-" if other is not None and other.away else "+"
                user = other.user if other is not None and other.user else session.name
                replies.append(f"{session.name}={away}{user}@spchat")
        conn.numeric(N.RPL_USERHOST, " ".join(replies))

    # --- helpers ---------------------------------------------------------------------------

    def _room(self, name: str):
        key = room_key(name)
        return self.conn.core.directory.rooms.get(key) if key is not None else None

    def _not_on(self, name: str) -> None:
        if self._room(name) is None:
            self.conn.numeric(N.ERR_NOSUCHCHANNEL, name, "No such channel")
        else:
            self.conn.numeric(N.ERR_NOTONCHANNEL, name, "You're not on that channel")

    _handlers = {
        "CAP": cap, "NICK": nick, "USER": user, "PASS": pass_, "AUTHENTICATE": authenticate,
        "PING": ping, "PONG": pong, "QUIT": quit, "JOIN": join, "PART": part, "TOPIC": topic,
        "NAMES": names, "LIST": list_, "KICK": kick, "INVITE": invite, "MODE": mode,
        "PRIVMSG": privmsg, "NOTICE": privmsg, "WHO": who, "WHOIS": whois, "AWAY": away,
        "LUSERS": lusers, "MOTD": motd, "VERSION": version, "TIME": time_, "ISON": ison,
        "USERHOST": userhost, "CHATHISTORY": chathistory, "WHOWAS": whowas,
        "TAGMSG": tagmsg, "OPER": oper, "KILL": kill, "WALLOPS": wallops,
    }
    _needs = {"OPER": 2, "KILL": 1, "WALLOPS": 1, "TAGMSG": 1, "USER": 4, "PASS": 1, "AUTHENTICATE": 1, "PING": 1, "JOIN": 1, "PART": 1,
              "TOPIC": 1, "KICK": 2, "INVITE": 2, "MODE": 1, "WHOIS": 1, "ISON": 1,
              "USERHOST": 1}


@dataclasses.dataclass
class Pending:
    """A request sent to the core, by its client message id: the command
    (and channel, nick) an error for it answers; for a line, the client's
    own tags (+name), which go to the IRC members with it."""

    command: str
    channel: str = ""
    nick: str = ""
    client_tags: dict[str, str] = dataclasses.field(default_factory=dict)


def client_tags(line) -> dict[str, str]:
    """The client-only tags of a line (IRCv3 message-tags: those named +...)."""
    return {k: v for k, v in line.tags.items() if k.startswith("+")}
