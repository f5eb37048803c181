"""What users (and the administrator) do with rooms: join, part, list,
and moderation by role (the settings are ``spchat.server.room_settings``'s,
the permissions ``spchat.server.room_permissions``').

Owners and operators moderate their room; the administrator (an admin
connection) may do all of it in every room.  Every refusal says which role
it needs.  Changes are kept by the store as they are made.
"""

from __future__ import annotations

import hmac
from typing import Callable

from twisted.internet import defer

from spchat import wire
from spchat.server.records import RoomRecord
from spchat.server.new_names import check_one_script
from spchat.server.room_permissions import (
    MEMBER, OPERATOR, OWNER, Actor, need, outrank, role_words,
)
from spchat.server.room_settings import RoomSettings, room_password_form
from spchat.server.room_sync import RoomSync
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.rules import (
    Limits, Refused, ban_length, ban_text, normalise_name, normalise_room, plain, quoted,
)
from spchat.server.sessions import Session, SessionTable
from spchat.terminal import SafeLogger

# Rooms one session may be in: each costs it a member list and its lines,
# and a welcome names them all.
MAX_ROOMS_PER_SESSION = 100


class RoomCommands:
    log = SafeLogger()

    def __init__(self, clock, limits: Limits, store, directory: RoomDirectory,
                 sessions: SessionTable, messaging, on_presence=lambda: None,
                 on_change=lambda: None):
        """``on_presence``: someone came or went; ``on_change``: a room's
        settings or someone's standing in it changed (the admin tools show it)."""
        self.clock = clock
        self.limits = limits
        self.store = store
        self.directory = directory
        self.sessions = sessions
        self.messaging = messaging
        self.on_presence = on_presence
        self.on_change = on_change
        # With other nodes, writes of each room's state asked for: a read of
        # it begun before one of them may be stale (spchat.cluster.room_news
        # compares them, and lets them go when no read is under way).
        self.writes: dict[str, int] = {}
        self._last_write = defer.succeed(None)
        # With other nodes: ``tell_nodes(key, notice, leave, invite)``, once
        # a change here is saved (spchat.cluster.room_news).
        self.tell_nodes: Callable | None = None
        self.settings = RoomSettings(clock, store, directory, self.room_for, self._saved,
                                     on_change, self._told)
        self.sync = RoomSync(clock, directory, sessions.by_key.get, self._remove,
                             self.close_room, on_change)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _saved(self, d, room: str | None = None) -> None:
        """A store write (of the state of ``room``, if given): its failure
        is logged, never lost in silence."""
        if room is not None and self.tell_nodes is not None:
            self.writes[room] = self.writes.get(room, 0) + 1
        d.addErrback(lambda f: self.log.error("cannot save a room change: {error}",
                                              error=f.getErrorMessage()))
        self._last_write = d

    def after_writes(self, then: Callable[[], None]) -> None:
        """``then()`` once every write asked for so far is done (the store
        writes in order)."""
        self._last_write.addBoth(lambda result: then())

    @property
    def writing(self) -> bool:
        """A write asked for is not done yet."""
        return not self._last_write.called

    def _told(self, room: Room, notice: wire.Notice | None = None,
              leave: tuple[str, str, str] | None = None,
              invite: tuple[str, str] | None = None) -> None:
        """A change here: once it is saved, the other nodes read the room
        again, tell their members ``notice``, put ``leave`` (a key, and the
        code and text it is told) out of it and let ``invite`` (a key, and
        what it is told) in."""
        tell = self.tell_nodes
        if tell is not None:
            self.after_writes(lambda: tell(room.key, notice, leave, invite))

    # --- the directory at start -------------------------------------------------

    def loaded(self, records: list[RoomRecord]) -> None:
        for record in records:
            self.directory.add(Room(record))
        for name in self.limits.default_rooms:
            display, key = normalise_room(name)
            if self.directory.get(key) is None:
                self._create(display, key, private=False, creator=None)

    def _create(self, display: str, key: str, private: bool, creator: Session | None) -> Room:
        room = self.directory.add(Room(RoomRecord(
            key, display, private=private, created=self.now_ms(),
            # Made again after a delete: its numbers go on (the store's do).
            last_seq=self.directory.deleted_seqs.pop(key, 0))))
        made = self.store.create_room(room.record())
        if creator is not None:
            # Its owner, as far as this node knows: kept once the store says
            # this node made the room (another may have made it a moment
            # before, and that one's owner stands).
            if creator.registered:
                room.roles[creator.key] = (creator.name, "owner")
            else:
                room.guest_roles[creator.key] = "owner"
            self.enter(creator, room)
        made.addCallback(self._created, room, creator)
        self._saved(made, key)
        return room

    def _created(self, result: tuple[RoomRecord | None, bool], room: Room,
                 creator: Session | None) -> None:
        record, created = result
        if record is None or self.directory.get(room.key) is not room:
            return  # deleted meanwhile
        if created:
            if creator is not None and creator.registered and (
                    room.roles.get(creator.key) == (creator.name, "owner")):
                self._saved(self.store.set_role(room.key, creator.key, creator.name, "owner"),
                            room.key)
            self.on_change()
            self._told(room)
            return
        # Another node made it first: its settings and roles, not ours.
        room.created = record.created
        if creator is not None:
            room.guest_roles.pop(creator.key, None)
        self.sync.adopt(room, record)
        if creator is not None and room.members.get(creator.key) is creator:
            self.directory.member_changed(room, creator)
            self._after_race(room, creator)

    def _after_race(self, room: Room, session: Session) -> None:
        """``session`` made a room that another node had made first: it
        stays in it if it could have joined it."""
        if room.rank_of(session.key) >= OPERATOR or not (room.private or room.password):
            return
        why = "is private" if room.private else "needs its password"
        self._remove(room, session, "leave", f"{session.name} left",
                     "invite_only" if room.private else "room_password",
                     f"#{room.name} was made a moment before, elsewhere, and {why}")

    # --- entering and leaving -----------------------------------------------------

    def join(self, session: Session, msg: wire.Join) -> None:
        display, key = normalise_room(msg.room)
        if key not in session.rooms and len(session.rooms) >= MAX_ROOMS_PER_SESSION:
            raise Refused("too_many_rooms", f"you are in {MAX_ROOMS_PER_SESSION} rooms; "
                          "/part one first")
        room = self.directory.get(key)
        if room is None:
            self._check_new_room(display, key)
            self._create(display, key, msg.private, session)
            return
        if key in session.rooms:  # again: the state again, nothing new
            assert session.link is not None, "asked over its link"
            session.link.conn.send(room.state())
            session.link.conn.send_shared(self.directory.member_list(room))
            return
        self._check_room_ban(room, session.key)
        # An invitation, or a standing as operator, opens every door.
        let_in = session.key in room.invited or room.rank_of(session.key) >= OPERATOR
        if room.private and not let_in:
            raise Refused("invite_only", f"#{room.name} is private: an operator of it must "
                          "/invite you first")
        if room.password and not let_in and not hmac.compare_digest(
                room_password_form(msg.password or "").encode(), room.password.encode()):
            raise Refused("room_password", f"#{room.name} needs its password: "
                          f"/join #{room.name} PASSWORD" if msg.password is None
                          else f"wrong password for #{room.name}")
        if self.directory.full(room) and not let_in:
            raise Refused("room_full", f"#{room.name} is full ({room.member_limit} members); "
                          "an operator of it may /invite you")
        room.invited.discard(session.key)
        self.enter(session, room)

    def _check_new_room(self, display: str, key: str) -> None:
        """The rule of new names, for rooms: a look-alike room would pass
        for the room it looks like."""
        like = self.directory.lookalike(display, key)
        if like is not None:
            raise Refused("room_lookalike", f"#{display} looks like #{like.name}; join that "
                          "or choose another name")
        check_one_script(display, "room_invalid", "a room name")

    def enter(self, session: Session, room: Room, history: bool = True,
              remember: bool = True) -> None:
        """Into the room: its state now, the member list with its next events,
        and (``history``) its recent lines.  ``remember``: a registered
        account's membership is new (not one the store gave back)."""
        self.directory.join(room, session)
        if session.link is not None:
            session.link.conn.send(room.state())
        if session.registered and remember:
            self._saved(self.store.add_membership(session.key, room.key))
        if history:
            self.messaging.join_history(session, room)
        self.on_presence()

    def default_rooms_for(self, key: str) -> list[Room]:
        """The default rooms a newcomer is put in (those it is not banned from)."""
        rooms = [self.directory.get(normalise_room(name)[1]) for name in self.limits.default_rooms]
        # Not past a door an operator closed: a ban, an invitation or a
        # password needed, a full room (a join is refused them too).
        return [room for room in rooms if room is not None and not self._banned(room, key)
                and not (room.private or room.password or self.directory.full(room))]

    def part(self, session: Session, msg: wire.Part) -> None:
        room = self.messaging.room_of(session, msg.room)
        reason = plain(msg.reason or "")
        why = f": {reason}" if reason else ""
        self._remove(room, session, "leave", f"{session.name} left{why}", "part",
                     f"you left #{room.name}", reason=reason)

    def _remove(self, room: Room, session: Session, kind: str, notice: str, code: str,
                text: str, by: str = "", reason: str = "") -> None:
        self.directory.leave(room, session, kind, notice, by, reason)
        if session.link is not None:
            session.link.conn.send(wire.RoomLeft(room.name, code, text, by, reason))
        if session.registered:
            self._saved(self.store.remove_membership(session.key, room.key))
        self.on_presence()

    def delete(self, name: str) -> str:
        """The administrator deletes a room: its members are told, its lines,
        roles and bans are forgotten."""
        room, _ = self.room_for(None, name)
        self.close_room(room, f"#{room.name} was deleted by the administrator")
        self._saved(self.store.delete_room(room.key), room.key)
        self._told(room)
        return f"deleted #{room.name}"

    def close_room(self, room: Room, text: str) -> None:
        """The room's members here told ``text``; the room gone from here."""
        for member in list(room.members.values()):
            self._remove(room, member, "leave", f"{member.name} left", "deleted", text)
        self.directory.flush(room)
        self.directory.remove(room)

    def list_rooms(self, session: Session, msg: wire.ListRooms) -> None:
        assert session.link is not None, "asked over its link"
        session.link.conn.send(wire.RoomList(self.directory.listing(session.rooms)))

    def _banned(self, room: Room, key: str) -> tuple | None:
        ban = room.bans.get(key)
        if ban is not None and ban[1] is not None and ban[1] <= self.clock.seconds():
            del room.bans[key]  # served its time
            self._saved(self.store.delete_room_ban(room.key, key), room.key)
            return None
        return ban

    def _check_room_ban(self, room: Room, key: str) -> None:
        ban = self._banned(room, key)
        if ban is not None:
            raise Refused("banned", ban_text(ban[2], ban[1], self.clock.seconds(),
                                             f" from #{room.name}"))

    # --- settings (spchat.server.room_settings) ---------------------------------------

    def topic(self, session: Session | None, msg: wire.Topic) -> str:
        return self.settings.topic(session, msg)

    def mode(self, session: Session | None, msg: wire.Mode) -> str:
        return self.settings.mode(session, msg)

    # --- moderation -------------------------------------------------------------------

    def moderate(self, session: Session | None, msg: wire.Moderate) -> str:
        """Carry out a room operation; returns what was done, in words."""
        room, actor = self.room_for(session, msg.room)
        display, key = normalise_name(msg.name)
        target = self.sessions.by_key.get(key)
        if target is not None:
            display = target.name
        op = msg.op
        reason = plain(msg.reason or "") or "no reason given"
        if op == "invite":
            return self._invite(room, actor, display, key, target)
        if op in ("op", "deop", "owner"):
            return self._set_role_by(room, actor, op, display, key, target)
        need(actor, room, OPERATOR, f"{op} someone")
        if op in ("kick", "ban", "mute"):
            outrank(actor, room, key, display, op)
        if op in ("voice", "devoice"):
            return self._voice(room, actor, display, key, target, op == "voice")
        if op == "kick":
            return self._kick(room, actor, display, key, target, reason)
        if op == "ban":
            return self._ban(room, actor, display, key, target, msg.minutes, reason)
        if op == "unban":
            if room.bans.pop(key, None) is None:
                raise Refused("not_banned", f"{display} is not banned from #{room.name}")
            self._saved(self.store.delete_room_ban(room.key, key), room.key)
            notice = wire.Notice(room.name, self.now_ms(), "unban",
                                 f"{actor.name} lifted the ban on {display}", display,
                                 actor.name)
            self.directory.event(room, notice)
            self._told(room, notice)
            return f"unbanned {display} from #{room.name}"
        if op == "mute":
            if room.rank_of(key) > MEMBER:
                raise Refused("not_allowed", f"{display} is an {room.role_of(key)} of "
                              f"#{room.name}: /deop them first")
            room.mutes[key] = display
            self._saved(self.store.set_mute(room.key, key, display, True), room.key)
            self._standing_changed(room, key, display, actor, "mute",
                                   f"{actor.name} muted {display} ({reason})", reason)
            return f"muted {display} in #{room.name}"
        # unmute
        if room.mutes.pop(key, None) is None:
            raise Refused("not_muted", f"{display} is not muted in #{room.name}")
        self._saved(self.store.set_mute(room.key, key, display, False), room.key)
        self._standing_changed(room, key, display, actor, "unmute",
                               f"{actor.name} unmuted {display}")
        return f"unmuted {display} in #{room.name}"

    def _voice(self, room: Room, actor: Actor, display: str, key: str,
               target: Session | None, on: bool) -> str:
        """A voice lets a member speak while the room is moderated: a
        guest's while it is in the room, anyone else's kept by name (as a
        mute is)."""
        if target is None and (on or key not in room.voices):
            self._not_a_guest_elsewhere(display, key, "voice")
        if on == room.has_voice(key):
            raise Refused("unchanged", f"{display} {'has' if on else 'has no'} voice in "
                          f"#{room.name} already")
        guest = target is not None and not target.registered
        if not on:
            room.guest_voices.discard(key)
            if room.voices.pop(key, None) is not None:
                self._saved(self.store.set_voice(room.key, key, display, False), room.key)
        elif guest:
            room.guest_voices.add(key)
        else:
            room.voices[key] = display
            self._saved(self.store.set_voice(room.key, key, display, True), room.key)
        self._standing_changed(room, key, display, actor, "voice" if on else "devoice",
                               f"{actor.name} gave {display} a voice" if on
                               else f"{actor.name} took {display}'s voice")
        return f"{display} {'has a' if on else 'has no'} voice in #{room.name} now"

    def _ban(self, room, actor, display, key, target, minutes, reason) -> str:
        until = None if minutes is None else self.clock.seconds() + minutes * 60
        room.bans[key] = (display, until, reason)
        self._saved(self.store.set_room_ban(room.key, key, display, until, reason,
                                            self.now_ms()), room.key)
        if room.roles.pop(key, None) is not None:
            self._saved(self.store.set_role(room.key, key, display, None), room.key)
        self._saved(self.store.remove_membership(key, room.key))
        how_long = ban_length(minutes)
        notice = wire.Notice(room.name, self.now_ms(), "ban",
                             f"{display} was banned by {actor.name} {how_long} ({reason})",
                             display, actor.name, reason)
        told = ban_text(reason, until, self.clock.seconds(), f" from #{room.name}")
        if target is not None and key in room.members:
            self._remove(room, target, "ban", notice.text, "banned", told, actor.name, reason)
        else:
            self.directory.event(room, notice)
        self._told(room, notice, (key, "banned", told))
        return f"banned {display} from #{room.name} {how_long}"

    def _kick(self, room: Room, actor: Actor, display: str, key: str, target: Session | None,
              reason: str) -> str:
        notice = wire.Notice(room.name, self.now_ms(), "kick",
                             f"{display} was kicked by {actor.name} ({reason})", display,
                             actor.name, reason)
        told = f"you were kicked from #{room.name} by {actor.name}: {reason}"
        if target is None and self.tell_nodes is not None:
            # Not on this node: on another, maybe (the node it is on puts it out).
            if key in self.directory.remote(room.key):
                self.directory.event(room, notice)
            self._told(room, notice, (key, "kicked", told))
            return f"the kick of {display} from #{room.name} was sent to every node"
        if target is None or key not in room.members:
            raise Refused("not_in_room", f"{display} is not in #{room.name}")
        self._remove(room, target, "kick", notice.text, "kicked", told, actor.name, reason)
        self._told(room, notice)
        return f"kicked {display} from #{room.name}"

    def _invite(self, room: Room, actor: Actor, display: str, key: str,
                target: Session | None) -> str:
        # An invitation opens every door, so where there is one it is an
        # operator's to give.
        closed = room.private or room.password or room.member_limit
        need(actor, room, OPERATOR if closed else MEMBER, "invite someone"
             + (" to a room that is private, has a password or a member limit"
                if closed else ""))
        if target is None and self.tell_nodes is None:
            raise Refused("unknown_user", f"nobody called {quoted(display)} is here")
        if key in room.members:
            raise Refused("already_in_room", f"{display} is in #{room.name} already")
        room.invited.add(key)
        told = f"{actor.name} invited you to #{room.name}; /join #{room.name} to accept"
        if target is not None and target.link is not None:
            target.link.conn.send(wire.Notice(room.name, self.now_ms(), "invite", told, display,
                                              actor.name))
        notice = wire.Notice(room.name, self.now_ms(), "invite",
                             f"{actor.name} invited {display}", display, actor.name)
        self.directory.event(room, notice)
        # Invitations are kept by each node: the node the invitee is on lets it in.
        self._told(room, notice, invite=(key, told))
        if target is None:
            return f"the invitation of {display} to #{room.name} was sent to every node"
        return f"invited {display} to #{room.name}"

    def _set_role_by(self, room: Room, actor: Actor, op: str, display: str, key: str,
                     target: Session | None) -> str:
        role = {"op": "operator", "deop": "member", "owner": "owner"}[op]
        own = actor.session is not None and actor.session.key == key
        if op == "owner":
            need(actor, room, OWNER, "make owners")
        elif op == "op":
            need(actor, room, OPERATOR, "make operators")
        elif not own:  # anyone may step down
            need(actor, room, OPERATOR, "deop someone")
        if not own and room.role_of(key) != role:
            # Never on someone as high: /op on an owner would demote them.
            outrank(actor, room, key, display, op)
        registered = self._registered_target(display, key, target)
        if room.role_of(key) == role:
            raise Refused("unchanged", f"{display} is {role_words(role)} of #{room.name} already")
        room.mutes.pop(key, None)
        self._set_role(room, key, display, registered, role)
        self._standing_changed(room, key, display, actor, "role",
                               f"{actor.name} made {display} {role_words(role)}")
        return f"made {display} {role_words(role)} of #{room.name}"

    def _registered_target(self, display: str, key: str, target: Session | None) -> bool:
        """Whether the one given a role is registered: here, or on another
        node (a registered account's role is saved, and read there)."""
        if target is not None:
            return target.registered
        if self.messaging.elsewhere(key) is None:
            raise Refused("unknown_user", f"nobody called {quoted(display)} is here")
        self._not_a_guest_elsewhere(display, key, "role")
        return True

    def _not_a_guest_elsewhere(self, display: str, key: str, what: str) -> None:
        """A guest's role and voice are kept by the node it is on, which a
        change here would not reach: refused, in words."""
        remote = self.messaging.elsewhere(key)
        if remote is not None and not remote.registered:
            raise Refused("guest_elsewhere", f"{display} is a guest connected to another "
                          f"node: a guest's {what} is kept there and can only be changed "
                          "there (or once they register)")

    def _set_role(self, room: Room, key: str, display: str, registered: bool,
                  role: str) -> None:
        keep = None if role == "member" else role
        if registered:
            if keep is None:
                room.roles.pop(key, None)
            else:
                room.roles[key] = (display, keep)
            self._saved(self.store.set_role(room.key, key, display, keep), room.key)
        elif keep is None:
            room.guest_roles.pop(key, None)
        else:
            room.guest_roles[key] = keep

    def _standing_changed(self, room: Room, key: str, display: str, actor: Actor, kind: str,
                          text: str, reason: str = "") -> None:
        self.on_change()
        member = room.members.get(key)
        if member is not None:
            self.directory.member_changed(room, member)
        else:
            self.directory.remote_changed(room, key)
        notice = wire.Notice(room.name, self.now_ms(), kind, text, display, actor.name, reason)
        self.directory.event(room, notice)
        self._told(room, notice)

    # --- permissions -------------------------------------------------------------------

    def room_for(self, session: Session | None, name: str) -> tuple[Room, Actor]:
        """The room an operation is about: one the user is in, or any for
        the administrator."""
        if session is not None:
            return self.messaging.room_of(session, name), Actor(session)
        try:
            room = self.directory.get(normalise_room(name)[1])
        except Refused:
            room = None
        if room is None:
            raise Refused("no_such_room", f"there is no room {quoted(name)}")
        return room, Actor(None)
