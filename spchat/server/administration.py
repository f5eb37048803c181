"""The administrator's side: admin connections, their operations, and the
table of sessions pushed to them as it changes.

An admin connection proves the admin token instead of logging in; from
then on it sends admin requests only.  Every operation is one audit line.
A connection that sends an admin request without the token, or a wrong
token, is closed; such refusals are counted per address and logged at most
once per CHAT_REFUSAL_LOG_SECONDS for each (see ``spchat.server.refusals``).
"""

from __future__ import annotations

import hmac
import math
from typing import Callable

from twisted.internet import defer

from spchat import wire
from spchat.cluster.acts import Act, ClusterActs
from spchat.server.refusals import REFUSAL_LOG_SECONDS, Refusals
from spchat.server.rooms import RoomDirectory
from spchat.server.rules import Refused, ban_length, counted, normalise_name, plain, quoted
from spchat.server.sessions import Link, SessionTable


# Operations that change nothing: no audit line.
READ_ONLY_OPS = ("list", "rooms", "room_info", "stats", "bans")


class Administration:
    # With other nodes: ``spchat.cluster.acts.ClusterActs``, and this node's name.
    acts: ClusterActs | None = None
    node = "local"

    def __init__(self, clock, sessions: SessionTable, directory: RoomDirectory, logins,
                 room_commands, admin_token: str | None, end_session: Callable, kick: Callable,
                 audit: Callable[[str], None] = lambda line: None,
                 on_shutdown: Callable[[], None] = lambda: None,
                 refusal_log_seconds: float = REFUSAL_LOG_SECONDS,
                 stats: Callable[[], tuple] = lambda: ()):
        """``stats()``: the server's figures, rows of wire.STAT_FIELDS."""
        self.clock = clock
        self.sessions = sessions
        self.directory = directory
        self.logins = logins
        self.room_commands = room_commands
        self.admin_token = admin_token
        self.end_session = end_session
        self.kick = kick
        self.audit = audit
        self.on_shutdown = on_shutdown
        self.stats = stats
        self.links: set[Link] = set()
        self._push = None  # a pending push of the session table
        self.refused = Refusals(clock, refusal_log_seconds)  # by address, for the audit lines
        # With other nodes: this node's name, and the rows of their sessions
        # (``ClusterRoster.admin_rows``); every row then says its node.
        self.node = ""
        self.elsewhere: Callable[[float], list[tuple]] | None = None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def receive(self, link: Link, msg: wire.Message) -> None:
        if isinstance(msg, wire.AdminLogin):
            self._login(link, msg)
            return
        if not link.admin:
            op = getattr(msg, "op", msg.TYPE)
            self._refuse(link, f"{op} without the admin token",
                         f"{op} is an admin operation; it needs the admin token")
            return
        if not isinstance(msg, wire.AdminRequest):
            link.conn.send(wire.Error("unexpected", f"an admin connection may not send {msg.TYPE}"))
            return
        defer.maybeDeferred(self._operation, msg).addCallbacks(
            self._done, self._refused, callbackArgs=(link, msg), errbackArgs=(link, msg))

    def _done(self, result: tuple, link: Link, msg: wire.AdminRequest) -> None:
        text, rows, *more = result
        if msg.op not in READ_ONLY_OPS:
            self.audit(f"admin {link.address}: {msg.op} {self._subject(msg)}: {text}")
        rooms, members, stats, bans = (*more, (), (), (), ())[:4]
        parts = wire.table_parts({"sessions": rows, "rooms": rooms, "members": members,
                                  "stats": stats, "bans": bans})
        for i, part in enumerate(parts):
            link.conn.send(wire.AdminReply(msg.rid, True, text, **part,
                                           more=i < len(parts) - 1))
        if self.stops_here(msg):
            self.on_shutdown()

    def _refused(self, failure, link: Link, msg: wire.AdminRequest) -> None:
        text = failure.value.text if failure.check(Refused) else failure.getErrorMessage()
        self.audit(f"admin {link.address}: {msg.op} {self._subject(msg)}: {text}")
        link.conn.send(wire.AdminReply(msg.rid, False, wire.clip(text)))

    def _login(self, link: Link, msg: wire.AdminLogin) -> None:
        ok = (
            link.session is None
            and self.admin_token is not None
            and hmac.compare_digest(msg.token.encode(), self.admin_token.encode())
        )
        if not ok:
            self._refuse(link, "wrong admin token", "that is not the admin token")
            return
        link.admin = True
        self.links.add(link)
        link.conn.started(None, resumed=False)
        link.conn.send(wire.AdminReply("login", True, "admin"))

    def _refuse(self, link: Link, what: str, text: str) -> None:
        """Not an administrator: the connection goes (a session with it),
        and the refusal is counted, in the log at a bounded rate per address."""
        host = link.address.rpartition(":")[0] or link.address
        if self.refused.count(host):
            who = f" ({link.session.name})" if link.session is not None else ""
            self.audit(f"{link.address}{who}: refused: {what} "
                       f"({self.refused[host]} admin refusals from {host} so far)")
        session = link.session
        if session is None:
            link.conn.close("not_admin", text)
        else:
            self.end_session(session, "not_admin", text, "not_admin",
                             f"{session.name} left (not_admin)")

    @staticmethod
    def _subject(msg: wire.AdminRequest) -> str:
        return " ".join(part for part in (f"#{msg.room}" if msg.room else "", msg.action or "",
                                          msg.name or "") if part)

    def _room_operation(self, msg: wire.AdminRequest) -> tuple:
        """The rooms' operations: (text, (), rooms rows, members rows)."""
        rooms = self.room_commands
        if msg.op == "rooms":
            rows = self.directory.rows()
            return f"{len(rows)} rooms", (), rows, ()
        if not msg.room:
            raise Refused("bad_request", f"{msg.op} needs a room")
        room, _ = rooms.room_for(None, msg.room)
        if msg.op == "room_info":
            members = self.directory.member_rows(room)
            return (f"#{room.name}: {len(members)} members online", (),
                    tuple(r for r in self.directory.rows() if r[0] == room.name), members)
        if msg.op == "room_delete":
            return rooms.delete(msg.room), (), (), ()
        if msg.op == "room_topic":
            return rooms.topic(None, wire.Topic(msg.room, msg.reason)), (), (), ()
        if msg.op == "room_mode":
            if msg.action not in wire.ROOM_FLAGS or msg.on is None:
                raise Refused("bad_request", "room_mode needs a flag (private, topic_locked) "
                              "and on or off")
            return rooms.mode(None, wire.Mode(msg.room, msg.action, msg.on)), (), (), ()
        # room_moderate
        if msg.action not in wire.MODERATION_OPS or not msg.name:
            raise Refused("bad_request", "room_moderate needs an action ("
                          f"{', '.join(wire.MODERATION_OPS)}) and a name")
        text = rooms.moderate(None, wire.Moderate(msg.room, msg.action, msg.name, msg.reason,
                                                  msg.minutes))
        return text, (), (), ()

    def _operation(self, msg: wire.AdminRequest) -> tuple:
        reason = msg.reason or "no reason given"
        if msg.op == "rooms" or msg.op.startswith("room_"):
            return self._room_operation(msg)
        if msg.op == "list":
            rows = self.session_rows()
            return counted(len(rows), "session"), rows
        if msg.op == "stats":
            figures = self.stats()
            return counted(len(figures), "figure"), (), (), (), figures
        if msg.op == "bans":
            return self.logins.bans().addCallback(self._ban_rows)
        if msg.op in ("kick", "ban", "unban") and not msg.name:
            raise Refused("bad_request", f"{msg.op} needs a name")
        if msg.op == "kick":
            name = msg.name or ""
            # The one kicked is told of the ban too, and for how long.
            kicked = self.kick(name, reason, msg.minutes)
            if not kicked and self.acts is None:
                raise Refused("unknown_user", f"nobody called {quoted(name)} is here")
            banned, until = "", None
            if msg.minutes is not None:
                self.logins.ban(name, msg.minutes, reason)
                banned = f" and banned {ban_length(msg.minutes)}"
                until = self.clock.seconds() + msg.minutes * 60
            self._tell_nodes(Act("kick", name, reason, until))
            return self._where(f"kicked {name}{banned}", kicked,
                               f"the kick of {name}{banned} was sent to every node"), ()
        if msg.op == "ban":
            name = msg.name or ""
            here = self.sessions.by_key.get(self._key(name) or "") is not None
            if not self.logins.ban(name, msg.minutes, reason):
                raise Refused("bad_request", f"cannot ban {quoted(name)}")
            how_long = ban_length(msg.minutes)
            until = None if msg.minutes is None else self.clock.seconds() + msg.minutes * 60
            self._tell_nodes(Act("ban", name, reason, until))
            return self._where(f"banned {name} {how_long}", here,
                               f"banned {name} {how_long}; sent to every node"), ()
        if msg.op == "unban":
            def unbanned(found: bool) -> tuple[str, tuple]:
                if not found:
                    raise Refused("unknown_user", f"{quoted(msg.name or '')} is not banned")
                return f"unbanned {msg.name}", ()

            return self.logins.unban(msg.name).addCallback(unbanned)
        if msg.op == "broadcast":
            if not msg.reason:
                raise Refused("bad_request", "broadcast needs a text")
            self._broadcast(msg.reason)
            self._tell_nodes(Act("broadcast", reason=msg.reason))
            return self._counted("broadcast to", len(self.sessions)), ()
        # disconnect_all, shutdown
        if msg.op == "shutdown" and not self.stops_here(msg):
            if self.acts is None:
                raise Refused("unknown_node", f"this server is node {quoted(self.node)}, "
                              f"not {quoted(msg.node or '')}")
            self._tell_nodes(Act("shutdown", reason=reason, node=msg.node or ""))
            return f"shutdown sent to node {msg.node}; this node ({self.node}) stays up", ()
        count = self._disconnect_all(msg.op, reason)
        if not msg.node:  # a shutdown of one node is that node's only
            self._tell_nodes(Act(msg.op, reason=reason))
        return self._counted("disconnected", count), ()

    def stops_here(self, msg: wire.AdminRequest) -> bool:
        """A shutdown without a node stops every node; with one, that node."""
        return msg.op == "shutdown" and msg.node in (None, "", self.node)

    # --- acts that every node does (spchat.cluster.acts) --------------------------------

    def act_here(self, act: Act) -> str:
        """Another node's act, done to this node's sessions."""
        if act.op == "kick":
            # A kick's ``until``: the ban that goes with it, told as it was asked.
            minutes = (None if act.until is None
                       else max(1, math.ceil((act.until - self.clock.seconds()) / 60)))
            kicked = self.kick(act.name, act.reason, minutes)
            return "kicked here" if kicked else "not on this node"
        if act.op == "ban":
            ended = self.logins.end_banned(act.name, act.until, act.reason)
            return "its session here ended" if ended else "not on this node"
        if act.op == "broadcast":
            self._broadcast(act.reason)
            return f"broadcast to {counted(len(self.sessions), 'session')} here"
        count = self._disconnect_all(act.op, act.reason)
        if act.op == "shutdown":
            self.clock.callLater(0, self.on_shutdown)  # after the goodbyes are written
        return f"disconnected {counted(count, 'session')} here"

    def _tell_nodes(self, act: Act) -> None:
        if self.acts is not None:
            self.acts.send(act)

    def _where(self, done: str, here: bool, elsewhere: str) -> str:
        """What the reply can honestly say: done on this node, or sent."""
        if self.acts is None:
            return done
        return f"{done} (on node {self.node})" if here else elsewhere

    def _counted(self, done: str, count: int) -> str:
        if self.acts is None:
            return f"{done} {counted(count, 'session')}"
        return f"{done} {counted(count, 'session')} on node {self.node}; sent to every node"

    @staticmethod
    def _key(name: str) -> str | None:
        try:
            return normalise_name(name)[1]
        except Refused:
            return None

    def _broadcast(self, text: str) -> None:
        text = f"server: {plain(text, 400)}"
        for room in self.directory.rooms.values():
            self.directory.broadcast(room, wire.Notice(room.name, self.now_ms(),
                                                       "broadcast", text))

    def _disconnect_all(self, op: str, reason: str) -> int:
        code, text = (
            ("shutdown", f"the server is shutting down: {reason}")
            if op == "shutdown"
            else ("disconnected", f"the server disconnected everyone: {reason}")
        )
        count = len(self.sessions)
        for session in list(self.sessions.by_id.values()):
            self.end_session(session, code, text, code, f"{session.name} left ({code})")
        return count

    @staticmethod
    def _ban_rows(bans: list) -> tuple:
        rows = tuple((name, None if until is None else int(until * 1000), reason)
                     for name, until, reason in bans)
        return counted(len(rows), "ban"), (), (), (), (), rows

    def session_rows(self) -> tuple[tuple, ...]:
        """The admin's table: one row per session, offline ones last (see
        wire.SESSION_FIELDS)."""
        now = self.clock.seconds()
        live = sorted(self.sessions.by_id.values(), key=lambda s: s.name.casefold())
        gone = sorted(self.sessions.offline.values(), key=lambda s: -s.state_since)
        node = () if self.elsewhere is None else (self.node,)

        def row(s) -> tuple:
            return (s.name, s.address, s.state.value, s.agent, round(now - s.state_since, 3),
                    int(s.first_connected_at * 1000), int(s.last_activity * 1000),
                    s.messages_sent, s.bytes_in, s.bytes_out, *node)

        rows = [row(s) for s in live]
        if self.elsewhere is not None:
            rows = sorted(rows + self.elsewhere(now), key=lambda r: r[0].casefold())
        return tuple(rows + [row(s) for s in gone])

    def sessions_changed(self) -> None:
        """Push the table to administrators, once per reactor turn at most."""
        if self._push is None and self.links:
            self._push = self.clock.callLater(0, self._push_sessions)

    def _push_sessions(self) -> None:
        self._push = None
        parts = wire.table_parts({"sessions": self.session_rows(),
                                  "rooms": self.directory.rows()})
        for i, part in enumerate(parts):
            event = wire.AdminEvent(part.get("sessions", ()), more=i < len(parts) - 1,
                                    rooms=part.get("rooms", ()))
            for link in self.links:
                link.conn.send(event)

    def stop(self) -> None:
        if self._push is not None and self._push.active():
            self._push.cancel()
        self._push = None
