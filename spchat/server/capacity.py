"""How many connections the server takes at once, and whom it lets go first.

Each connection is a file descriptor.  At start the server raises its soft
descriptor limit as far as the hard limit allows (``raise_descriptor_limit``);
the chat then takes at most that many connections, less
``DESCRIPTOR_MARGIN`` for its own files (the store, the log, the listeners,
the relay's and the IRC gateway's connections), unless CHAT_MAX_CONNECTIONS
says otherwise.

``Slots`` keeps the count.  When the server is full, a new connection takes
the place of the oldest one that has not logged in yet (half-open ones that
hold a slot until their handshake timeout would otherwise lock everyone
out); only when every connection is logged in is the newcomer refused.  The
last ``reserve`` places are for addresses that have a session on the
server (a client coming back after a drop, from where it was): guests from
anywhere cannot take them all.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

try:
    import resource
except ImportError:  # Windows: no descriptor limit of this kind
    resource = None  # type: ignore[assignment]  # checked before each use

# Descriptors kept for the server's own files and its other listeners.
DESCRIPTOR_MARGIN = 64
# The soft limit is raised to the hard one, but not past this.
MAX_DESCRIPTORS = 1 << 16


def raise_descriptor_limit(ceiling: int = MAX_DESCRIPTORS) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit (at most
    ``ceiling``); the soft limit now in force (0 if there is none to read)."""
    if resource is None:
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # not allowed here: keep what we have
            pass
    return ceiling if soft == resource.RLIM_INFINITY else soft


def connections_for(descriptors: int) -> int:
    """The connection cap that leaves the server its own descriptors."""
    if descriptors <= 0:
        return MAX_DESCRIPTORS - DESCRIPTOR_MARGIN
    return max(1, descriptors - DESCRIPTOR_MARGIN)


class Slots:
    """Connections held, the ones not logged in oldest first.

    ``shed(conn)`` cuts a connection to make room; it is then no longer
    counted, whenever its end is reported (``release``)."""

    def __init__(self, limit: int, reserve: int, shed: Callable[[Any], None]):
        self.limit = limit
        # At least one place is for anyone.
        self.reserve = min(reserve, limit - 1)
        self.shed = shed
        self.held: set = set()
        self.waiting: dict = {}  # not logged in yet, oldest first
        self.shed_count = 0
        self.refused = 0  # newcomers refused: full, and nobody to shed

    def __len__(self) -> int:
        return len(self.held)

    def room_for(self, known: Callable[[], bool]) -> bool:
        """Make room for one more if it can be made; ``known()``: whether the
        newcomer's address has a session (asked only when it matters)."""
        open_to_all = self.limit - self.reserve
        if len(self.held) < open_to_all:
            return True
        if len(self.held) < self.limit and known():
            return True
        if not self.waiting:
            self.refused += 1
            return False
        oldest = next(iter(self.waiting))
        self.release(oldest)
        self.shed_count += 1
        self.shed(oldest)
        return True

    def take(self, conn: Hashable) -> None:
        self.held.add(conn)
        self.waiting[conn] = None

    def logged_in(self, conn: Hashable) -> None:
        self.waiting.pop(conn, None)

    def release(self, conn: Hashable) -> None:
        self.held.discard(conn)
        self.waiting.pop(conn, None)
