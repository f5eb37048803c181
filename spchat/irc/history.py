"""CHATHISTORY (IRCv3 draft/chathistory): a conversation's saved lines in
one batch, read from the store by number (a ``msgid``) or by time (a
``timestamp``), so a client that comes back fetches exactly what it missed.

Only what the connection may read: the rooms it is in, and its own direct
conversations.  Numbers are the room's (a msgid is the conversation and the
number); a time is turned into the number of the last line before it."""

from __future__ import annotations

import datetime
import itertools

from twisted.internet import defer

from spchat.irc.channels import name_key, room_key
from spchat.irc.outbound import account_of_record, line_tags, msgid, privmsg
from spchat.server.records import direct_conversation, reader_of

MAX_LIMIT = 100
NEWEST = 2**53  # above every number
# The subcommands and how many references each takes.
SUBCOMMANDS = {"LATEST": 1, "BEFORE": 1, "AFTER": 1, "AROUND": 1, "BETWEEN": 2}


class BadRequest(Exception):
    def __init__(self, code: str, *context: str):
        super().__init__(context[-1])
        self.code, self.context = code, context


def parse_time(text: str) -> int:
    """An IRCv3 server-time timestamp (YYYY-MM-DDThh:mm:ss.sssZ) in ms."""
    try:
        stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return int(stamp.timestamp() * 1000)


class Reference:
    """A point in a conversation, by number or by time; resolved to the
    numbers just above and just below it."""

    def __init__(self, text: str, conversation: str):
        kind, _, value = text.partition("=")
        self.seq: int | None = None
        self.ts: int | None = None
        if kind == "msgid":
            head, _, number = value.rpartition("/")
            if head != conversation.replace(" ", "~") or not number.isdigit():
                raise BadRequest("INVALID_MSGREFTYPE", text, "not a message of this conversation")
            self.seq = int(number)
        elif kind == "timestamp":
            try:
                self.ts = parse_time(value)
            except ValueError:
                raise BadRequest("INVALID_PARAMS", text, "not a timestamp") from None
        else:
            raise BadRequest("INVALID_PARAMS", text, "a reference is msgid=... or timestamp=...")

    @defer.inlineCallbacks
    def bounds(self, store, conversation: str):
        """(lower, upper): the lines after it are numbered above ``lower``,
        those before it below ``upper``."""
        if self.seq is not None:
            return self.seq, self.seq
        assert self.ts is not None, "a reference is by number or by time"
        up_to = yield store.last_before_time(conversation, self.ts + 1)  # stamped <= ts
        before = yield store.last_before_time(conversation, self.ts)  # stamped < ts
        return up_to, before + 1


class ChatHistory:
    def __init__(self, conn):
        self.conn = conn
        self._ids = itertools.count(1)

    def command(self, line) -> None:
        conn = self.conn
        params = line.params
        sub = params[0].upper() if params else ""
        try:
            if sub not in SUBCOMMANDS:
                raise BadRequest("INVALID_PARAMS", sub or "*", "unknown subcommand")
            if len(params) != SUBCOMMANDS[sub] + 3:
                raise BadRequest("INVALID_PARAMS", sub, "wrong number of parameters")
            target, refs, limit = params[1], params[2:-1], params[-1]
            conversation = self._conversation(target)
            if not limit.isdigit():
                raise BadRequest("INVALID_PARAMS", sub, limit, "the limit is a number")
            limit_n = min(int(limit), MAX_LIMIT)
            if sub == "LATEST" and refs[0] == "*":
                references = None
            else:
                references = [Reference(r, conversation) for r in refs]
        except BadRequest as e:
            conn.emit(conn.server_name, "FAIL", "CHATHISTORY", e.code, *e.context)
            return
        shown = target if not target.startswith("#") else conn.channels.get(target).irc_name
        held = conn.labels.later()  # the store answers later

        def read():  # once our own lines sent before are saved: they are history too
            d = self._read(sub, conversation, references, limit_n)
            d.addCallbacks(
                lambda records: conn.labels.answer(held, lambda: self._batch(shown, records)),
                lambda failure: conn.labels.answer(held, lambda: conn.emit(
                    conn.server_name, "FAIL", "CHATHISTORY", "MESSAGE_ERROR", sub, target,
                    "the history cannot be read now")))

        conn.when_saved(read)

    def _conversation(self, target: str) -> str:
        conn = self.conn
        if target.startswith("#"):
            channel = conn.channels.get(target)
            if channel is None:
                raise BadRequest("INVALID_TARGET", "CHATHISTORY", target, "not a room you are in")
            room = conn.core.directory.get(room_key(channel.name) or "")
            if room is None:
                raise BadRequest("INVALID_TARGET", "CHATHISTORY", target, "no such room")
            return "#" + room.key
        key = name_key(target)
        if key is None:
            raise BadRequest("INVALID_TARGET", "CHATHISTORY", target, "not a nick or a room")
        return direct_conversation(conn.session.key, key)

    @defer.inlineCallbacks
    def _read(self, sub, conversation, references, limit):
        store = self.conn.core.store
        reader = reader_of(conversation, self.conn.session.lineage)
        if sub == "LATEST":
            records = yield store.before(conversation, NEWEST, limit, reader)
            if references is not None:
                lower, _ = yield references[0].bounds(store, conversation)
                records = [r for r in records if r.seq > lower]
            return records
        lower, upper = yield references[0].bounds(store, conversation)
        if sub == "BEFORE":
            return (yield store.before(conversation, upper, limit, reader))
        if sub == "AFTER":
            return (yield store.after(conversation, lower, limit, reader))
        if sub == "AROUND":
            older = yield store.before(conversation, upper, limit // 2, reader)
            newer = yield store.after(conversation, upper - 1, limit - len(older), reader)
            return older + newer
        other_lower, other_upper = yield references[1].bounds(store, conversation)
        if lower < other_lower:  # BETWEEN, forwards
            records = yield store.after(conversation, lower, limit, reader)
            return [r for r in records if r.seq < other_upper]
        records = yield store.before(conversation, upper, limit, reader)  # backwards
        return [r for r in records if r.seq > other_lower]

    def _batch(self, target: str, records) -> None:
        conn = self.conn
        batch = None
        if "batch" in conn.caps:
            batch = f"h{next(self._ids)}"
            conn.emit(conn.server_name, "BATCH", "+" + batch, "chathistory", target)
        caps = conn.caps
        for r in records:
            if r.room is not None:
                to = target
            else:  # a direct line: to the other one, or to us
                to = r.to if conn.is_me(r.sender) else conn.nick
            tags = line_tags(r.ts, msgid(r.conversation, r.seq), True, "message-tags" in caps,
                             account=account_of_record(r) if "account-tag" in caps else None)
            if batch is not None:
                tags = {"batch": batch, **tags}
            conn.write(privmsg(conn.mask(r.sender), to, r.text, tags))
        if batch is not None:
            conn.emit(conn.server_name, "BATCH", "-" + batch)

