"""What an IRC connection knows of the rooms it is in: topic, modes and the
members with a role (operators, owners, the muted), kept from the core's
events, to say what changed (a MODE line needs the old state).  Not the
members themselves: a room of thousands would cost each of its IRC
connections thousands of entries; NAMES and WHO read the room from the
core (``RoomView``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spchat.server.rules import Refused, normalise_name, normalise_room

# Role -> (mode letter, NAMES prefix); a member has neither.  An owner is
# an operator to IRC (IRC's channel creators are operators): WHOIS and the
# room's notices say who owns it.
ROLE_MODES = {"owner": ("o", "@"), "operator": ("o", "@")}
# A voice (may speak while the room is moderated) stands beside the role.
PREFIX_ISUPPORT = "(ov)@+"


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


def prefix_of(role: str, voiced: bool = False, multi: bool = False) -> str:
    """A member's NAMES and WHO prefixes, highest first: all of them for a
    client with multi-prefix, the highest for the others."""
    marks = ROLE_MODES.get(role, ("", ""))[1] + ("+" if voiced else "")
    return marks if multi else marks[:1]


@dataclass
class Channel:
    name: str  # the room's display form, without '#'
    topic: str = ""
    private: bool = False
    topic_locked: bool = False
    password: str = ""  # +k
    member_limit: int = 0  # +l
    moderated: bool = False  # +m
    # name key -> role, for the members whose role is not "member"
    ranked: dict[str, str] = field(default_factory=dict)

    @property
    def irc_name(self) -> str:
        return "#" + self.name

    def settings_from(self, state) -> None:
        """Take a room's settings from its ``wire.RoomState``."""
        self.topic, self.private, self.topic_locked = state.topic, state.private, state.topic_locked
        self.password, self.member_limit = state.password, state.member_limit
        self.moderated = state.moderated

    def modes(self, member: bool = True) -> list[str]:
        """RPL_CHANNELMODEIS's mode string and its parameters (the password
        shown to members only, as IRC servers do)."""
        letters = "+" + ("i" if self.private else "") + ("m" if self.moderated else "") \
            + ("t" if self.topic_locked else "") + "n"
        params = []
        if self.password:
            letters += "k"
            params.append(self.password if member else "*")
        if self.member_limit:
            letters += "l"
            params.append(str(self.member_limit))
        return [letters, *params]

    def set_role(self, name: str, role: str) -> str:
        """A member's role now; returns the one it had."""
        key = name_key(name) or name
        old = self.ranked.pop(key, "member")
        if role != "member":
            self.ranked[key] = role
        return old

    def forget(self, name: str) -> None:
        self.ranked.pop(name_key(name) or name, None)


@dataclass
class RoomView:
    """A room as the core has it now, for one answer (NAMES, WHO)."""

    name: str
    private: bool
    members: list[tuple[str, str, str]]  # (display name, role, state), by name
    voices: frozenset[str] = frozenset()  # the keys of those with a voice

    def prefix(self, name: str, role: str, multi: bool) -> str:
        return prefix_of(role, name_key(name) in self.voices, multi)

    @property
    def irc_name(self) -> str:
        return "#" + self.name


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

    def __iter__(self):
        return iter(list(self.by_key.values()))
