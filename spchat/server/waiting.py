"""Direct messages to a registered name nobody is logged in as.

Such a message is saved with ``Record.waiting`` set and acknowledged to its
sender like any other; the account's next login (on any node: the nodes
share one store) is sent what waits for it, conversation by conversation
in their order, each message once: a message sent is marked had (one that
reached it otherwise first, live or in a returning login's replay, too;
what waits is read once those marks are written).  A guest's name is
refused as before, since nobody can ever log in as that guest again.  At most ``Limits.max_waiting_directs`` messages wait for one
account, so that an inbox cannot be used to fill the disk, and at most
``Limits.max_waiting_from_one`` of those from one sender, so that one
sender cannot fill it and keep everyone else's out.  A message to an
account whose connection dropped (here or on another node) waits too, in
case it logs in afresh instead of resuming, within the same limits; over
them it is saved and acknowledged all the same, for a resume to bring, and
does not wait.
"""

from __future__ import annotations

from typing import Callable

from spchat import wire
from spchat.server.records import Record, account_lineage, direct_conversation
from spchat.server.rules import Limits, Refused, quoted
from spchat.server.sessions import Session


class WaitingDirects:
    """What may wait for whom, and what the sender is told."""

    def __init__(self, limits: Limits, now_ms: Callable[[], int],
                 unsaved_for: Callable[[str, str], tuple[int, int]]):
        """``unsaved_for(key, conversation)``: waiting messages to ``key``
        accepted but not saved yet (the store does not count them yet), all
        and of that conversation."""
        self.limits = limits
        self.now_ms = now_ms
        self.unsaved_for = unsaved_for

    def refusal(self, typed: str, key: str, account: tuple[str, int, int] | None,
                sender_key: str) -> Refused | None:
        """Why a message from ``sender_key`` to ``key`` (``typed`` so) cannot
        wait for it, or None if it can; ``account``: its name, how many
        messages wait for it and how many of those from this sender (the
        store's ``waiting_for``), None for a guest's name."""
        most = self.limits.max_waiting_directs
        if account is None or most == 0:
            # Said in full: the sender must not think it will wait for them.
            kept = "only for registered names" if most else "for nobody away"
            return Refused("unknown_user", f"nobody called {quoted(typed)} is online, and "
                           f"direct messages are kept {kept}: send it again when they are back")
        name, count, from_sender = account
        unsaved, unsaved_from_sender = self.unsaved_for(key, direct_conversation(sender_key, key))
        if count + unsaved >= most:
            return Refused("inbox_full", f"{name} is offline and has {most} messages waiting "
                           "already: send it again when they are back")
        share = self.limits.max_waiting_from_one
        if share < most and from_sender + unsaved_from_sender >= share:
            return Refused("inbox_full", f"{name} is offline and has {share} messages from you "
                           "waiting already: send it again when they are back")
        return None

    def record(self, session: Session, msg: wire.Direct, key: str, name: str) -> Record:
        """The message as saved, to wait for the account ``key`` (``name``)."""
        return Record(0, self.now_ms(), session.name, session.key, msg.text, msg.cid, to=name,
                      to_key=key, lineage=session.lineage, to_lineage=account_lineage(key),
                      waiting=True)

    def notice(self, session: Session, key: str, name: str) -> wire.Notice | None:
        """What the sender is told the first time a message of theirs waits
        for ``name`` (None after that, in this session)."""
        if key in session.told_waiting:
            return None
        session.told_waiting.add(key)
        return wire.Notice("", self.now_ms(), "waiting",
                           f"{name} is offline: they will get your messages when they log in",
                           name=name)
