"""The rule for a name new to the server (a guest's, a new account's, a new
room's): letters of one script, and no look-alike of a name it has.

"Look-alike" is ``spchat.server.lookalikes``: the same TR39 skeleton.  A
user name is refused if it looks like the name of someone online (on
this node or, by its claim, on another: ``spchat.server.claims``), of a
login taking a new name right now, or of a registered account; the refusal
names the name it looks like (a registered name is no secret: logging in
with it says that it is registered).  Names the server has already, a
registered account's or a room's, are not checked again, so an account
made before the rule keeps working.
"""

from __future__ import annotations

from twisted.internet import defer

from spchat.server.lookalikes import looks, mixed_scripts
from spchat.server.rules import Refused
from spchat.server.sessions import SessionTable


def check_one_script(display: str, code: str, noun: str) -> None:
    mixed = mixed_scripts(display)
    if mixed:
        raise Refused(code, f"{noun} must not mix letters of different scripts "
                      f"({' and '.join(sorted(s.title() for s in mixed))} in {display!r})")


class NewNames:
    """New user names: checks them, and holds their looks while a login
    takes one, so that two look-alikes cannot both get through."""

    def __init__(self, sessions: SessionTable, store, names=None):
        """``names``: the ``INameClaims`` of the nodes, whose sessions'
        names count as online (None: this node's alone)."""
        self.sessions = sessions
        self.store = store
        self.names = names
        self.claims: dict[str, str] = {}  # look -> name key of the login holding it

    def check(self, display: str, key: str) -> defer.Deferred:
        """Fires when ``display`` may be taken, or fails with ``Refused``.
        Its looks stay claimed (whatever the outcome) until ``release``."""
        name_looks = looks(display, key)
        online = self.sessions.lookalike(name_looks, key)
        if online is not None:
            raise Refused("name_lookalike", f"the name {display!r} looks like {online.name!r}, "
                          "who is online; choose another")
        if any(self.claims.get(look, key) != key for look in name_looks):
            raise Refused("name_lookalike", f"someone is logging in with a name like {display!r} "
                          "right now; choose another")
        for look in name_looks:
            self.claims[look] = key

        def online_elsewhere(name):
            if name is not None:
                raise Refused("name_lookalike", f"the name {display!r} looks like {name!r}, "
                              "who is online; choose another")

        def looked_up(registered):
            if registered is not None:
                raise Refused("name_lookalike", f"the name {display!r} looks like {registered!r}, "
                              "a registered name; choose another")
            # After the look-alikes: "аlice" is better told whom it looks like.
            check_one_script(display, "name_invalid", "a name")

        d = defer.succeed(None) if self.names is None else \
            self.names.lookalike(name_looks, key).addCallback(online_elsewhere)
        d.addCallback(lambda _: self.store.lookalike_account(name_looks, key))
        return d.addCallback(looked_up)

    def release(self, display: str, key: str) -> None:
        for look in looks(display, key):
            if self.claims.get(look) == key:
                del self.claims[look]
