"""``IStore`` in memory: the store of the core's unit tests and of
``CHAT_STORE=memory``.  Same rules as the SQLite store (numbers per
conversation, gapless, never given twice), every method's Deferred fired
already; each conversation keeps its newest ``limit`` messages."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from bisect import bisect_left, bisect_right
from operator import itemgetter

from twisted.internet import defer
from zope.interface import implementer

from spchat.server import lookalikes
from spchat.server.interfaces import IStore
from spchat.server.numbering import RESEND_WINDOW_MS, number
from spchat.server.records import Record, RoomRecord, room_conversation

_seq = itemgetter(0)


def _readable(records, reader: str):
    return (r for r in records if r.readable_by(reader))


def _fired(method):
    """The method's result, or its exception, as a Deferred fired already."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return defer.maybeDeferred(method, self, *args, **kwargs)

    return call


class _Since:
    """The records saved by ``sent_as`` stamped at or after ``since_ms``."""

    __slots__ = ("records", "since_ms")

    def __init__(self, records: dict, since_ms: int):
        self.records, self.since_ms = records, since_ms

    def get(self, key):
        record = self.records.get(key)
        return record if record is not None and record.ts >= self.since_ms else None


@implementer(IStore)
class MemoryStore:
    path = None

    def __init__(self, limit: int = 10000):
        self.limit = limit
        self._messages: dict[str, list[Record]] = {}  # conversation -> by number
        self._last_seq: dict[str, int] = {}  # outlives pruning, as in SQLite
        self._by_cid: dict[tuple[str, str], Record] = {}
        self._directs: dict[str, set[str]] = {}  # name key -> its direct conversations
        self._accounts: dict[str, tuple[str, str]] = {}
        self._account_looks: dict[str, set[str]] = {}  # look -> account keys
        self._bans: dict[str, tuple[str, float | None, str]] = {}
        self._rooms: dict[str, RoomRecord] = {}  # settings and standing; no last_seq
        self._memberships: dict[str, set[str]] = {}

    @_fired
    def open(self):
        pass

    @_fired
    def close(self):
        pass

    # --- IMessageLog -----------------------------------------------------------

    @_fired
    def append(self, records):
        conversations = [record.conversation for record in records]
        since = min((r.ts for r in records), default=0) - RESEND_WINDOW_MS
        fresh, fresh_conversations, again, newest = number(
            records, conversations, _Since(self._by_cid, since), self._last_seq)
        self._last_seq.update(newest)
        touched = set()
        for record, conversation in zip(fresh, fresh_conversations):
            self._messages.setdefault(conversation, []).append(record)
            self._by_cid[record.sent_as] = record
            touched.add(conversation)
            if record.room is None:
                for key in (record.sender_key, record.to_key):
                    self._directs.setdefault(key, set()).add(conversation)
        for conversation in touched:
            kept = self._messages[conversation]
            if len(kept) > self.limit:
                self._forget(kept[:len(kept) - self.limit])
                del kept[:len(kept) - self.limit]
        return fresh, again

    def _forget(self, records):
        for record in records:
            if self._by_cid.get(record.sent_as) is record:  # not a newer one's
                del self._by_cid[record.sent_as]

    @_fired
    def after(self, conversation, seq, limit, reader=None):
        kept = self._messages.get(conversation, [])
        start = bisect_right(kept, seq, key=_seq)
        if reader is None:
            return kept[start:start + limit]
        return list(itertools.islice(_readable(kept[start:], reader), limit))

    @_fired
    def before(self, conversation, seq, limit, reader=None):
        kept = self._messages.get(conversation, [])
        end = bisect_left(kept, seq, key=_seq)
        if reader is None:
            return kept[max(0, end - limit):end]
        newest = itertools.islice(_readable(reversed(kept[:end]), reader), limit)
        return list(newest)[::-1]

    @_fired
    def last_before_time(self, conversation, ts_ms):
        for record in reversed(self._messages.get(conversation, [])):
            if record.ts < ts_ms:
                return record.seq
        return 0

    @_fired
    def direct_since(self, key, since_ms, limit, reader=None):
        found = [r for conversation in self._directs.get(key, ())
                 for r in self._messages.get(conversation, ())
                 if r.ts >= since_ms and (reader is None or r.readable_by(reader))]
        found.sort(key=lambda r: (r.ts, r.conversation, r.seq))
        return found[:limit]

    @_fired
    def find_cid(self, lineage, cid, since_ms):
        return _Since(self._by_cid, since_ms).get((lineage, cid))

    def _waiting(self, key):
        return sorted((r for conversation in self._directs.get(key, ())
                       for r in self._messages.get(conversation, ())
                       if r.waiting and r.to_key == key),
                      key=lambda r: (r.conversation, r.seq))

    @_fired
    def waiting_for(self, key, conversation):
        account = self._accounts.get(key)
        if account is None:
            return None
        waiting = self._waiting(key)
        return (account[0], len(waiting), sum(r.conversation == conversation for r in waiting))

    @_fired
    def waiting_directs(self, key, limit):
        return self._waiting(key)[:limit]

    @_fired
    def directs_had(self, numbers):
        for conversation, seq in numbers:
            kept = self._messages.get(conversation, [])
            i = bisect_left(kept, seq, key=_seq)
            if i < len(kept) and kept[i].seq == seq:
                self._forget([kept[i]])
                kept[i] = record = kept[i]._replace(waiting=False)
                self._by_cid[record.sent_as] = record

    @_fired
    def adopt_lineage(self, old, new):
        for kept in self._messages.values():
            for i, record in enumerate(kept):
                if old in (record.lineage, record.to_lineage):
                    self._forget([record])
                    kept[i] = record = record._replace(
                        lineage=new if record.lineage == old else record.lineage,
                        to_lineage=new if record.to_lineage == old else record.to_lineage)
                    self._by_cid[record.sent_as] = record

    @_fired
    def delete_conversation(self, conversation):
        self._delete_conversation(conversation)

    def _delete_conversation(self, conversation):
        # Its newest number stays: a room made again under the same name
        # goes on from there, so no client's old position hides new lines.
        self._forget(self._messages.pop(conversation, ()))
        for conversations in self._directs.values():
            conversations.discard(conversation)

    @_fired
    def prune(self, older_than_ms):
        removed = 0
        for conversation, kept in self._messages.items():
            old = [r for r in kept if r.ts < older_than_ms]
            if old:
                self._forget(old)
                kept[:] = [r for r in kept if r.ts >= older_than_ms]
                removed += len(old)
        return removed

    # --- IAccounts, IBans --------------------------------------------------------

    @_fired
    def account(self, key):
        return self._accounts.get(key)

    @_fired
    def set_account(self, key, name, password, now_ms):
        # As in SQLite: a new password keeps the name it was registered with.
        name = self._accounts.get(key, (name,))[0]
        self._accounts[key] = (name, password)
        for look in lookalikes.looks(name, key):
            self._account_looks.setdefault(look, set()).add(key)

    @_fired
    def lookalike_account(self, looks, key):
        alike = sorted(k for look in looks for k in self._account_looks.get(look, ()) if k != key)
        return self._accounts[alike[0]][0] if alike else None

    @_fired
    def ban(self, key):
        return self._bans.get(key)

    @_fired
    def set_ban(self, key, name, until, reason, now_ms):
        self._bans[key] = (name, until, reason)

    @_fired
    def delete_ban(self, key):
        return self._bans.pop(key, None) is not None

    @_fired
    def bans(self):
        return [(key, *self._bans[key]) for key in sorted(self._bans)]

    # --- IRoomStore ----------------------------------------------------------------

    @_fired
    def load(self):
        return [self._copy(key) for key in sorted(self._rooms)]

    @_fired
    def room(self, key):
        return self._copy(key) if key in self._rooms else None

    def _copy(self, key) -> RoomRecord:
        # A copy: a caller changing what it got must not change what is kept.
        room = self._rooms[key]
        return dataclasses.replace(
            room, roles=dict(room.roles), bans=dict(room.bans), mutes=dict(room.mutes),
            voices=dict(room.voices), last_seq=self._last_seq.get(room_conversation(key), 0))

    @_fired
    def create_room(self, room):
        created = room.key not in self._rooms
        if created:
            self._rooms[room.key] = dataclasses.replace(room, roles={}, bans={}, mutes={},
                                                        voices={}, last_seq=0)
        return self._copy(room.key), created

    @_fired
    def save_room(self, room):
        old = self._rooms.get(room.key)
        settings = dict(key=room.key, name=room.name, topic=room.topic, private=room.private,
                        topic_locked=room.topic_locked, password=room.password,
                        member_limit=room.member_limit, moderated=room.moderated)
        if old is None:
            self._rooms[room.key] = RoomRecord(**settings, created=room.created)
        else:
            self._rooms[room.key] = dataclasses.replace(old, **settings)

    @_fired
    def delete_room(self, key):
        self._rooms.pop(key, None)
        for rooms in self._memberships.values():
            rooms.discard(key)
        self._delete_conversation(room_conversation(key))

    # Writes about a room that does not exist fail (KeyError), as SQLite's
    # foreign keys make them fail there; removals of nothing do not.

    @_fired
    def set_role(self, room, key, name, role):
        if role is None:
            self._room_if_any(room).roles.pop(key, None)
        else:
            self._rooms[room].roles[key] = (name, role)

    @_fired
    def set_room_ban(self, room, key, name, until, reason, now_ms):
        self._rooms[room].bans[key] = (name, until, reason)

    @_fired
    def delete_room_ban(self, room, key):
        return self._room_if_any(room).bans.pop(key, None) is not None

    @_fired
    def set_mute(self, room, key, name, muted):
        if muted:
            self._rooms[room].mutes[key] = name
        else:
            self._room_if_any(room).mutes.pop(key, None)

    @_fired
    def set_voice(self, room, key, name, voiced):
        if voiced:
            self._rooms[room].voices[key] = name
        else:
            self._room_if_any(room).voices.pop(key, None)

    def _room_if_any(self, key) -> RoomRecord:
        """The room, or an empty stand-in: removing from it removes nothing."""
        return self._rooms.get(key) or RoomRecord(key, key)

    @_fired
    def memberships(self, key):
        return sorted(self._memberships.get(key, ()))

    @_fired
    def add_membership(self, key, room):
        if room not in self._rooms:
            raise KeyError(room)
        self._memberships.setdefault(key, set()).add(room)

    @_fired
    def remove_membership(self, key, room):
        self._memberships.get(key, set()).discard(room)
