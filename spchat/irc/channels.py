"""What an IRC connection knows of the rooms it is in: members with their
roles, topic and modes, kept from the core's events (IRC answers NAMES,
WHO and MODE queries from it, and needs the old state to say what changed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spchat.server.rules import Refused, normalise_name, normalise_room

# Role -> (mode letter, NAMES prefix); a member has neither.  An owner is
# an operator to IRC (IRC's channel creators are operators): WHOIS and the
# room's notices say who owns it.
ROLE_MODES = {"owner": ("o", "@"), "operator": ("o", "@")}
PREFIX_ISUPPORT = "(o)@"


def name_key(name: str) -> str | None:
    try:
        return normalise_name(name)[1]
    except Refused:
        return None


def room_key(name: str) -> str | None:
    try:
        return normalise_room(name)[1]
    except Refused:
        return None


def prefix_of(role: str) -> str:
    return ROLE_MODES.get(role, ("", ""))[1]


@dataclass
class Channel:
    name: str  # the room's display form, without '#'
    topic: str = ""
    private: bool = False
    topic_locked: bool = False
    # name key -> (display name, role, state)
    members: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    listing: bool = False  # a member list in parts is coming in
    incoming: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def irc_name(self) -> str:
        return "#" + self.name

    def modes(self) -> str:
        return "+" + ("i" if self.private else "") + ("t" if self.topic_locked else "") + "n"

    def set_member(self, name: str, state: str, role: str) -> tuple[str, str, str] | None:
        """Update one member; returns what it was (None: new)."""
        key = name_key(name) or name
        old = self.members.get(key)
        self.members[key] = (name, role, state)
        return old

    def remove(self, name: str) -> bool:
        return self.members.pop(name_key(name) or name, None) is not None

    def has(self, name: str) -> bool:
        return (name_key(name) or name) in self.members

    def role_of(self, name: str) -> str | None:
        entry = self.members.get(name_key(name) or name)
        return entry[1] if entry else None


class Channels:
    """The rooms this connection is in, by room key."""

    def __init__(self):
        self.by_key: dict[str, Channel] = {}

    def get(self, name: str) -> Channel | None:
        key = room_key(name)
        return self.by_key.get(key) if key is not None else None

    def add(self, name: str) -> Channel:
        key = room_key(name) or name
        channel = self.by_key.get(key)
        if channel is None:
            channel = self.by_key[key] = Channel(name)
        return channel

    def drop(self, name: str) -> Channel | None:
        key = room_key(name)
        return self.by_key.pop(key, None) if key is not None else None

    def with_member(self, name: str) -> list[Channel]:
        return [c for c in self.by_key.values() if c.has(name)]

    def __iter__(self):
        return iter(list(self.by_key.values()))
