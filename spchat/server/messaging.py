"""Lines and their way: accepted, saved and numbered, then delivered; and
read back as history and as the replay after a reconnect.

A line goes out only once the store has saved it (acknowledged means
saved).  Reads are Deferreds (the store may read on another thread) and go
at the pace the client reads (``spchat.server.catch_up``); while a session
catches up on a conversation, its live lines there are read back after
what it waits for, so nothing newer overtakes it and nothing comes twice.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger

from spchat import wire
from spchat.cluster.arrivals import Arrivals
from spchat.cluster.directs import DirectCarrier
from spchat.cluster.node import ClusterNode
from spchat.cluster.roster_notices import RemoteSession
from spchat.cluster.seal import Seal
from spchat.server.catch_up import MAX_WAITING_JOBS, CatchUp, Reader
from spchat.server.events import LineBatch
from spchat.server.metrics import MessageCounts
from spchat.server.numbering import RESEND_WINDOW_MS
from spchat.server.records import Record, direct_conversation
from spchat.server.rooms import Room, RoomDirectory
from spchat.server.rules import Limits, Refused, check_text, normalise_name, normalise_room, quoted
from spchat.server.sessions import Session, SessionTable
from spchat.server.waiting import WaitingDirects

HISTORY_PAGE_MAX = 200
# Most messages replayed per conversation after a reconnect; older ones are
# left to /history.
MAX_REPLAY = 10000
# The hold on direct conversations the client did not name in its resume.
ANY_DIRECT = "@"


class Messaging:
    log = Logger()

    def __init__(self, clock, limits: Limits, store, committer_factory,
                 directory: RoomDirectory, sessions: SessionTable, bus=None,
                 seal: Seal | None = None):
        """``committer_factory(on_committed)``: the group committer that saves
        accepted records and reports them numbered; ``bus``: an ``IBus`` to
        the other nodes on the same database (None: this node is alone),
        and this node's ``Seal`` on it."""
        self.clock = clock
        self.limits = limits
        self.store = store
        self.directory = directory
        self.sessions = sessions
        self.committer = committer_factory(self.published)
        # With other nodes, a room's lines go out in its order whoever saved them.
        assert bus is None or seal is not None, "a bus comes with its seal (ChatCore._seal)"
        self.cluster = None if bus is None or seal is None else ClusterNode(
            clock, bus, seal, store.after, directory, self._fan_out)
        # With other nodes, direct lines to their sessions go by the bus.
        self.directs = None if bus is None else DirectCarrier(
            clock, self.cluster, sessions, store.after, store.last_before_time,
            lambda session, since: store.direct_since(session.key, since, HISTORY_PAGE_MAX,
                                                      session.lineage),
            self._send_direct)
        # The session of a name on another node (``ClusterRoster.elsewhere``).
        self.elsewhere: Callable[[str], RemoteSession | None] = lambda key: None
        # After a joined room's history: what else a newcomer is shown (the
        # files offered there now).
        self.history_shown: Callable[[Session, Room], None] = lambda session, room: None
        # With other nodes, a direct line to a name not known yet waits for
        # the roster a moment (a login there is heard of a little later).
        self.arrivals = None if self.cluster is None else Arrivals(clock, self._recipient)
        self.counts = MessageCounts()
        self.waiting = WaitingDirects(limits, self.now_ms, self._unsaved_waiting_for)
        # Accepted but not yet saved, by Record.sent_as: a copy re-sent
        # meanwhile is not a new message.
        self._unsaved: dict[tuple[str, str], Record] = {}
        # Lineages handed to an account (old -> new) while lines of theirs
        # were still being saved: handed over again once those are.
        self._adopting: dict[str, str] = {}

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # --- accepting ------------------------------------------------------------

    def say(self, session: Session, msg: wire.Say) -> None:
        room = self.room_of(session, msg.room)
        if not room.may_speak(session.key):
            if room.role_of(session.key) == "muted":
                raise Refused("muted", f"you are muted in #{room.name}: an operator can unmute you")
            raise Refused("moderated", f"#{room.name} is moderated: only its operators and "
                          "those an operator gave a voice may speak")
        check_text(msg.text, self.limits.max_message_bytes)
        if (session.lineage, msg.cid) not in self._unsaved:  # else its ack is on its way
            self._accept(Record(0, self.now_ms(), session.name, session.key, msg.text,
                                msg.cid, room=room.key, lineage=session.lineage))

    def direct(self, session: Session, msg: wire.Direct) -> None:
        if session.directs_queued is not None:  # after the earlier one, in order
            session.directs_queued.append(msg)
            return
        if (session.lineage, msg.cid) in self._unsaved:
            return  # its acknowledgement follows when it is saved
        try:
            _, key = normalise_name(msg.to)
        except Refused:
            key = None
        target = self._recipient(key) if key is not None else None
        if self.arrivals is not None and key is not None and (
                target is None or self.arrivals.waits(session.id, key)):
            check_text(msg.text, self.limits.max_message_bytes)
            session.reads += 1  # answered before a logout's goodbye, as a read is

            def decided(found) -> None:
                self._direct_to(session, msg, key, found)
                self._answered(session)

            self.arrivals.hold(session.id, key, decided)
            return
        self._direct_to(session, msg, key, target)

    def _in_turn(self, session: Session, reading: defer.Deferred) -> None:
        """A read one of the session's direct lines needs: its later direct
        lines wait for it, and then go on in order (one needing no read
        would otherwise be numbered before it).  They are taken before the
        read is counted answered, so a logout waits for them too."""
        if session.directs_queued is None:
            session.directs_queued = []
        session.direct_reads += 1

        def done(result):
            session.direct_reads -= 1
            if session.direct_reads == 0:
                queued, session.directs_queued = session.directs_queued or [], None
                for later in queued:
                    self._direct_in_turn(session, later)
            return result

        self._answering(session, reading.addBoth(done))

    def _direct_in_turn(self, session: Session, msg: wire.Direct) -> None:
        try:
            self.direct(session, msg)
        except Refused as refusal:
            self._tell(session, wire.Error(refusal.code, refusal.text, msg.cid))

    def _recipient(self, key: str) -> Session | RemoteSession | None:
        return self.sessions.by_key.get(key) or self.elsewhere(key)

    def _direct_to(self, session: Session, msg: wire.Direct, key: str | None,
                   target: Session | RemoteSession | None) -> None:
        if target is None:
            if key is not None:
                check_text(msg.text, self.limits.max_message_bytes)
            # Kept for an account, if it is one (spchat.server.waiting).
            looking = (self.store.waiting_for(key, direct_conversation(session.key, key))
                       if key is not None else defer.succeed(None))
            self._in_turn(session, looking.addCallback(
                self._to_absent, session, msg, key).addErrback(self._read_failed, session))
            return
        check_text(msg.text, self.limits.max_message_bytes)
        # An account whose connection dropped (here, or on another node as
        # its roster says) may not resume but log in afresh: then the line
        # waits for it, as for one away, within the same limits.
        dropped = target.registered and (target.link is None if isinstance(target, Session)
                                         else target.state == "reconnecting")
        if dropped:
            looking = self.store.waiting_for(target.key,
                                             direct_conversation(session.key, target.key))
            self._in_turn(session, looking.addCallback(
                self._to_dropped, session, msg, target).addErrback(self._read_failed, session))
            return
        self._to_session(session, msg, target, waiting=False)

    def _to_dropped(self, account, session: Session, msg: wire.Direct,
                    target: Session | RemoteSession) -> None:
        if (session.lineage, msg.cid) in self._unsaved:
            return  # a copy, re-sent while the store looked
        # Over the limits it is saved all the same, for a resume to bring.
        refusal = self.waiting.refusal(msg.to, target.key, account, session.key)
        self._to_session(session, msg, target, waiting=refusal is None)

    def _to_session(self, session: Session, msg: wire.Direct,
                    target: Session | RemoteSession, waiting: bool) -> None:
        self._accept(Record(0, self.now_ms(), session.name, session.key, msg.text, msg.cid,
                            to=target.name, to_key=target.key, lineage=session.lineage,
                            to_lineage=target.lineage, waiting=waiting))

    def _to_absent(self, account, session: Session, msg: wire.Direct, key: str | None) -> None:
        if (session.lineage, msg.cid) in self._unsaved:
            return  # a copy, re-sent while the store looked
        refusal = self.waiting.refusal(msg.to, key or "", account, session.key)
        if refusal is not None:
            # Sent before a drop, maybe, and saved then.
            since = self.now_ms() - RESEND_WINDOW_MS
            reading = self.store.find_cid(session.lineage, msg.cid, since)
            self._in_turn(session, reading.addCallback(
                self._direct_to_nobody, session, msg, refusal).addErrback(
                    self._read_failed, session))
            return
        assert key is not None, "an account was found: by its key"
        name = account[0]
        self._accept(self.waiting.record(session, msg, key, name))
        notice = self.waiting.notice(session, key, name)
        if notice is not None:
            self._tell(session, notice)

    def _direct_to_nobody(self, record, session: Session, msg: wire.Direct,
                          refusal: Refused) -> None:
        if record is not None:
            self._acknowledge_again(session, record)
            return
        self._tell(session, wire.Error(refusal.code, refusal.text, msg.cid))

    def _unsaved_waiting_for(self, key: str, conversation: str) -> tuple[int, int]:
        """Waiting messages to ``key`` accepted, not saved yet: all, and of
        ``conversation``."""
        waiting = [r for r in self._unsaved.values() if r.waiting and r.to_key == key]
        return len(waiting), sum(1 for r in waiting if r.conversation == conversation)

    def _accept(self, record: Record) -> None:
        self._unsaved[record.sent_as] = record
        self.committer.add(record)

    def room_of(self, session: Session, name: str) -> Room:
        """The room ``name`` names, which the session must be in."""
        room = self.directory.named(name)
        if room is None or room.key not in session.rooms:
            raise Refused("not_in_room", f"you are not in the room {quoted(name)}")
        return room

    def adopt_lineage(self, old: str, new: str) -> defer.Deferred:
        """A guest registered: what its lineage sent and was sent is the
        account's, those lines still being saved included.  Fires once
        the saved ones are (a failure is logged, not passed on)."""
        if any(old in (r.lineage, r.to_lineage) for r in self._unsaved.values()):
            self._adopting[old] = new
        return self._adopt(old, new)

    def _adopt(self, old: str, new: str) -> defer.Deferred:
        return self.store.adopt_lineage(old, new).addErrback(
            lambda f: self.log.error("cannot give {old}'s messages to {new}: {error}",
                                     old=old, new=new, error=f.getErrorMessage()))

    def _adoptions_due(self) -> None:
        for old, new in list(self._adopting.items()):
            if not any(old in (r.lineage, r.to_lineage) for r in self._unsaved.values()):
                del self._adopting[old]
                self._adopt(old, new)

    # --- delivering -------------------------------------------------------------

    def published(self, saved: list[Record],
                  again: Iterable[tuple[Record, Record]] = ()) -> None:
        """Records are saved and numbered: now they go out, and the senders'
        copies acknowledge them.  ``again``: messages re-sent after a
        reconnect, each with its copy saved before, which acknowledges it
        once more (with other nodes, in its conversation's order).  Consecutive
        lines of one room go out together."""
        for resent, old in again:
            self._unsaved.pop(resent.sent_as, None)
            session = self.sessions.by_key.get(old.sender_key)
            if session is not None:
                self._acknowledge_again(session, old)
        self.counts.received += len(saved)
        run: list[Record] = []
        for record in saved:
            self._unsaved.pop(record.sent_as, None)
            sender = self.sessions.by_key.get(record.sender_key)
            if sender is not None:
                sender.messages_sent += 1
            if run and record.room != run[0].room:
                self._room_saved(run)
                run = []
            if record.room is not None:
                run.append(record)
                continue
            # A direct line must not overtake its sender's (or anyone's) join.
            self.directory.flush_all()
            for key in {record.to_key, record.sender_key}:
                session = self.sessions.by_key.get(key) if key is not None else None
                # Its two's, not their names': the name may be someone
                # else's since the line was sent (Record.readable_by).
                if session is not None and record.readable_by(session.lineage):
                    self._had_live(session, record)
                    self._send_line(session, record)
                elif key == record.to_key and self.directs is not None:
                    self.directs.saved(record)  # to the node that has the recipient
        if run:
            self._room_saved(run)
        if self._adopting:
            self._adoptions_due()

    def _acknowledge_again(self, session: Session, record: Record) -> None:
        """A line saved before, sent again by its client: its copy once
        more, whatever came since, but never ahead of a line before it that
        this node has not delivered yet (with other nodes): in its room's
        order, or its direct conversation's (the carrier's)."""
        if record.room is None and self.directs is not None:
            self.directs.again(session, record)
        elif not self._in_order_later(session, record):
            self._send_now(session, record)

    def _in_order_later(self, session: Session, record: Record) -> bool:
        """Whether a room line saved before, sent again by its sender, is
        one this node's delivery has not reached yet (with other nodes):
        the room's order brings it to its sender, as its acknowledgement,
        after the lines before it, which it must not overtake (a client
        takes nothing older than its newest line as news)."""
        room = self.directory.get(record.room) if record.room is not None else None
        return (self.cluster is not None and room is not None
                and session.key in room.members and record.seq > room.last_seq)

    def _room_saved(self, records: list[Record]) -> None:
        room_key = records[0].room
        assert room_key is not None, "a run of one room's lines"
        if self.cluster is None or self.directory.get(room_key) is None:
            self._fan_out(records)
        else:
            self.cluster.saved_here(room_key, records)

    def _fan_out(self, records: list[Record]) -> None:
        """Saved lines of one room, in order, to every member online."""
        room_key = records[0].room
        assert room_key is not None, "a run of one room's lines"
        room = self.directory.get(room_key)
        if room is None:  # deleted meanwhile: only the senders hear back
            for record in records:
                sender = self.sessions.by_key.get(record.sender_key)
                if sender is not None:
                    self._send_line(sender, record)
            return
        room.last_seq = max(room.last_seq, records[-1].seq)
        self.directory.flush(room)  # a join before the line it says
        lines = LineBatch(room.name, records)
        conversation = "#" + room.key
        # Counted by who is skipped (few), not by who is given the lines:
        # nothing added per recipient.
        members, skipped = room.members.values(), 0
        for member in members:
            link = member.link
            if link is None:
                skipped += 1
                continue
            if member.catching_up:
                hold = member.catching_up.get(conversation)
                if hold is not None:  # read back later, after what it waits for
                    hold.noted += 1
                    skipped += 1
                    continue
            link.conn.deliver(lines)
        self.counts.delivered += len(records) * (len(members) - skipped)
        for record in records:  # a sender who left before it was saved still hears back
            if record.sender_key not in room.members:
                sender = self.sessions.by_key.get(record.sender_key)
                if sender is not None and sender.lineage == record.lineage:
                    self._send_line(sender, record)

    def _send_line(self, session: Session, record: Record) -> None:
        """One saved line to one session (a direct line, an acknowledgement)."""
        if record.room is None and self.directs is not None:
            self.directs.send(session, record)  # in order with those from other nodes
        else:
            self._send_now(session, record)

    def _send_direct(self, session: Session, record: Record) -> None:
        """A direct line from another node's bus (or read back after it)."""
        self._had_live(session, record)
        self._send_now(session, record)

    def _had_live(self, session: Session, record: Record) -> None:
        """A line kept for an account reaches it otherwise than by what waited
        for its login (live: it logged in meanwhile on a node that had not
        heard of it yet; or in a resume's replay): it waits no more."""
        if record.waiting and session.key == record.to_key and session.link is not None:
            marking = self.store.directs_had([(record.conversation, record.seq)]).addErrback(
                lambda f: self.log.error("cannot mark a direct message had: {error}",
                                         error=f.getErrorMessage()))
            if not marking.called:  # what waits for a login is read after it (deliver_waiting)
                session.marking.add(marking)
                marking.addBoth(lambda result: session.marking.discard(marking))

    def _send_now(self, session: Session, record: Record) -> None:
        if session.catching_up:
            hold = session.catching_up.get(record.conversation)
            if hold is None and record.room is None:
                hold = session.catching_up.get(ANY_DIRECT)
            if hold is not None:
                hold.note(record)
                return
        if session.link is not None:
            self.counts.delivered += 1
        self._tell(session, record.for_recipient(session.key, self._room_name(record)))

    def _room_name(self, record: Record) -> str | None:
        if record.room is None:
            return None
        room = self.directory.get(record.room)
        return room.name if room is not None else record.room

    @staticmethod
    def _tell(session: Session, message: wire.Message) -> None:
        if session.link is not None:
            session.link.conn.send(message)

    # --- reading back (paced by the reader: see spchat.server.catch_up) ---------

    def catch_up(self, session: Session) -> CatchUp:
        """The session's queue of reads, on its current connection."""
        pager = session.catch_up
        if pager is None or pager.stopped or pager.link is not session.link:
            if pager is not None:
                pager.stop()
            pager = session.catch_up = CatchUp(session, session.link, self.clock,
                                               lambda: self._answered(session))
        return pager

    def _queue(self, session: Session, job, holding: str | None = None) -> None:
        """Queue a read for ``session``; counted until it is answered (see
        ``when_answered``).  ``holding``: the conversation it holds back."""
        if session.link is None:
            job.close()
            return
        pager = self.catch_up(session)
        session.reads += 1
        pager.add(job, holding)

    def _reader(self, session: Session, replay: bool = True) -> Reader:
        """``replay`` False: for what waited for a login, marked had by its job."""
        def shown(record: Record, history: bool) -> wire.Message:
            if record.room is None and not history:
                if self.directs is not None:
                    self.directs.reached(session, record)  # a replay: not again from the bus
                if replay:
                    self._had_live(session, record)
            return record.for_recipient(session.key, self._room_name(record), history)

        return Reader(
            self.store, session.lineage, shown,
            lambda message: self._tell(session, message),
            lambda failure: self._read_failed(failure, session))

    def _held(self, session: Session, conversation: str):
        pager = self.catch_up(session)
        return pager.hold(conversation)

    def _answering(self, session: Session, reading):
        """Count a read for ``session`` until it is answered (see ``when_answered``)."""
        session.reads += 1
        return reading.addBoth(lambda result: self._answered(session, result))

    @staticmethod
    def _answered(session: Session, result=None):
        session.reads -= 1
        if session.reads == 0:
            waiting, session.after_reads = session.after_reads, []
            for then in waiting:
                then()
        return result

    @staticmethod
    def when_answered(session: Session, then: Callable[[], None]) -> None:
        """Run ``then`` once every read asked for so far is answered: a
        request is never left unanswered by the one after it."""
        if session.reads == 0:
            then()
        else:
            session.after_reads.append(then)

    def _read_failed(self, failure, session: Session) -> None:
        self.log.error("cannot read messages: {error}", error=failure.getErrorMessage())
        self._tell(session, wire.Error("unavailable", "the server cannot read its history now"))

    def join_history(self, session: Session, room: Room) -> None:
        """The recent history of a room just joined (or rejoined at login)."""
        if session.link is None:
            return
        limit = self.limits.history_on_join
        conversation = "#" + room.key
        before = room.last_seq + 1
        hold = self._held(session, conversation)

        def end(records: list[Record]) -> None:
            self._history_end(session, "#" + room.name, records, limit, before)
            self.history_shown(session, room)

        self._queue(session, self._reader(session).join(
            conversation, before, limit, hold, end, lambda: room.key in session.rooms),
            holding=conversation)

    def _history_end(self, session: Session, conversation: str, records: list[Record],
                     limit: int, before: int) -> None:
        oldest = records[0].seq if records else before
        self._tell(session, wire.HistoryEnd(oldest, len(records) == limit and oldest > 1,
                                            conversation))

    def history(self, session: Session, msg: wire.HistoryRequest) -> None:
        """A page of one conversation's history, asked for."""
        limit = max(1, min(msg.limit, HISTORY_PAGE_MAX))
        shown, conversation = self._named_conversation(session, msg.conversation)
        if session.link is not None and len(self.catch_up(session)) >= MAX_WAITING_JOBS:
            raise Refused("flood", f"more than {MAX_WAITING_JOBS} requests wait for you "
                          "to read what was sent")
        self._queue(session, self._reader(session).page(
            conversation, msg.before, limit,
            lambda records: self._history_end(session, shown, records, limit, msg.before)))

    def _named_conversation(self, session: Session, name: str) -> tuple[str, str]:
        """(as shown, as stored) for "#room" or "@name" as a client names it."""
        if name.startswith("#"):
            room = self.room_of(session, name)
            return "#" + room.name, "#" + room.key
        if name.startswith("@"):
            display, key = normalise_name(name[1:])
            return "@" + display, direct_conversation(session.key, key)
        raise Refused("bad_request", "a conversation is '#room' or '@name'")

    def replay(self, session: Session, positions, since: int) -> None:
        """What a returning client missed: per room it names, the lines after
        its position; rooms it does not name get their recent history;
        direct conversations it names from their position, the others from
        ``since``."""
        if session.link is None:
            return
        rooms = self.room_positions(positions)
        directs: dict[str, int] = {}
        for name, seq in positions:
            if name.startswith("#"):
                continue
            try:
                key = direct_conversation(session.key, normalise_name(name[1:])[1])
            except Refused:
                continue  # a name that cannot exist: nothing to replay
            directs[key] = max(seq, directs.get(key, 0))
        session.replayed_from, session.replayed_since = dict(directs), since
        for key in sorted(session.rooms):
            room = self.directory.get(key)
            if room is None:
                continue
            if key in rooms:
                self._replay_room(session, room, rooms[key])
            else:
                self.join_history(session, room)
        reader = self._reader(session)
        for conversation, seq in directs.items():
            self._queue(session, reader.forward(conversation, seq,
                                                self._held(session, conversation)),
                        holding=conversation)
        self._queue(session, reader.directs(session.key, since, set(directs),
                                            self._held(session, ANY_DIRECT)),
                    holding=ANY_DIRECT)

    def deliver_waiting(self, session: Session) -> None:
        """An account logged in: what waited for it (spchat.server.waiting),
        before any direct line that comes live meanwhile."""
        if session.link is None or not session.registered:
            return
        self._queue(session, self._reader(session, replay=False).waiting(
            session.key, self.now_ms(), self._held(session, ANY_DIRECT), self.store.directs_had,
            lambda: defer.DeferredList(list(session.marking))), holding=ANY_DIRECT)

    @staticmethod
    def room_positions(positions) -> dict[str, int]:
        """The newest number a returning client names for each room, by
        room key (a name that cannot be a room's is left out)."""
        rooms: dict[str, int] = {}
        for name, seq in positions:
            if not name.startswith("#"):
                continue
            try:
                key = normalise_room(name)[1]
            except Refused:
                continue
            rooms[key] = max(seq, rooms.get(key, 0))
        return rooms

    @staticmethod
    def resumed_state(room: Room, seen: dict[str, int]) -> wire.RoomState:
        """The room's state for a session that goes on, never behind the
        number its client named (``seen``: ``room_positions``): with other
        nodes, the replay may have sent it lines from the database that
        this node's delivery has not reached yet, and a lower number would
        look to the client like a server that lost its data (it would take
        those lines as new when they come)."""
        state = room.state()
        if seen.get(room.key, 0) > state.last_seq:
            state = dataclasses.replace(state, last_seq=seen[room.key])
        return state

    def _replay_room(self, session: Session, room: Room, seen: int) -> None:
        # A client gone for long gets at most the newest MAX_REPLAY (older
        # ones are in /history).
        start = max(seen, room.last_seq - MAX_REPLAY)
        if start > seen:
            self._tell(session, wire.Notice(
                room.name, self.now_ms(), "gap",
                f"{start - seen} older messages are not replayed; /history shows what is kept",
            ))
        conversation = "#" + room.key
        self._queue(session, self._reader(session).forward(
            conversation, start, self._held(session, conversation),
            lambda: room.key in session.rooms), holding=conversation)
