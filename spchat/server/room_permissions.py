"""Who may do what in a room: the one who asks (a member, or the
administrator), and the ranks each operation needs.  Every refusal names
the role it needs and the one the asker has."""

from __future__ import annotations

from spchat.server.rooms import ADMIN_RANK, RANKS, Room
from spchat.server.rules import Refused
from spchat.server.sessions import Session

OPERATOR = RANKS["operator"]
OWNER = RANKS["owner"]
MEMBER = RANKS["member"]


class Actor:
    """Who asks: a member of the room, or the administrator (session None)."""

    __slots__ = ("session", "name")

    def __init__(self, session: Session | None):
        self.session = session
        self.name = session.name if session is not None else "the administrator"

    def rank(self, room: Room) -> int:
        return ADMIN_RANK if self.session is None else room.rank_of(self.session.key)


def need(actor: Actor, room: Room, rank: int, what: str) -> None:
    if actor.rank(room) < rank:
        role = {MEMBER: "an unmuted member", OPERATOR: "an operator or owner",
                OWNER: "an owner"}[rank]
        raise Refused("not_allowed", f"to {what} in #{room.name} you must be {role} "
                      f"of it (you are {role_words(actor_role(actor, room))})")


def outrank(actor: Actor, room: Room, key: str, display: str, op: str) -> None:
    if actor.rank(room) <= room.rank_of(key):
        raise Refused("not_allowed", f"you cannot {op} {display}: they are "
                      f"{role_words(room.role_of(key))} of #{room.name}, as high as you "
                      "or higher")


def role_words(role: str) -> str:
    return {"owner": "an owner", "operator": "an operator", "member": "a member",
            "muted": "a muted member", "admin": "the administrator"}[role]


def actor_role(actor: Actor, room: Room) -> str:
    return "admin" if actor.session is None else room.role_of(actor.session.key)
