"""Logging in, accounts and server-wide bans.

Password hashes and checks run off the reactor thread (the password
worker); account and ban lookups are the store's Deferreds.  While a login
is under way its name is claimed, so two logins cannot race for it, and its
link may not start another.  A name new to the server must pass the rule
of new names (``spchat.server.new_names``); a new account must fit the
limits on new accounts (``SignupLimit``), and waits for the password
worker behind every login of an existing account.

Before its welcome a login claims its name in the claims of the nodes
(``spchat.server.claims``): a name another node's session holds is taken
there too, and the owner of a registered name replaces its session
wherever it is.
"""

from __future__ import annotations

import math
from typing import Callable

from twisted.internet import defer

from spchat import wire
from spchat.server.claims import Claim, token_hash
from spchat.server.password_worker import ACCOUNTS, SIGNUPS
from spchat.server.passwords import normalise_password
from spchat.server.lookalikes import looks
from spchat.server.new_names import NewNames
from spchat.server.refusals import REFUSAL_LOG_SECONDS, ThrottledLog
from spchat.server.rules import Refused, ban_text, counted, normalise_name, plain
from spchat.server.sessions import Link, Session, SessionTable, lineage_of, new_ids
from spchat.terminal import SafeLogger

# Password hashes and checks waiting for a worker, beyond which logins are
# turned away for a moment: per lane, so new accounts (at most
# MAX_SIGNUP_QUEUE waiting) never fill the room that logins have.
MAX_PASSWORD_QUEUE = 64
MAX_SIGNUP_QUEUE = 16
_QUEUE_ROOM = {ACCOUNTS: MAX_PASSWORD_QUEUE, SIGNUPS: MAX_SIGNUP_QUEUE}


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


class Logins:
    log = SafeLogger()

    def __init__(self, clock, store, passwords, throttle, sessions: SessionTable,
                 start_session: Callable, end_session: Callable, signups=None,
                 refusal_log_seconds: float = REFUSAL_LOG_SECONDS, names=None):
        """``start_session(link, display, key, registered, msg, ids)`` puts a
        logged-in user on the server with the id and token its name was
        claimed for (a Deferred firing with its session, or None);
        ``end_session(session, code, text,
        reason, notice)`` takes one off (a replaced or banned user);
        ``signups``: a ``SignupLimit`` (None: no limit on new accounts);
        its refusals are logged once per address per ``refusal_log_seconds``;
        ``names``: the ``INameClaims`` of the nodes (None: none, in tests
        of the logins alone)."""
        self.clock = clock
        self.store = store
        # Bans being saved: reads go on another thread and could overtake them.
        self._bans_saving: set[defer.Deferred] = set()
        # (old, new): a lineage becomes an account's (set by the core to
        # the messaging's, which knows the lines still being saved).
        self.adopt_lineage = store.adopt_lineage
        self.passwords = passwords
        self.throttle = throttle
        self.signups = signups
        self.signups_refused = ThrottledLog(self.log, clock, refusal_log_seconds)
        self.sessions = sessions
        self.new_names = NewNames(sessions, store, names)
        self.start_session = start_session
        self.end_session = end_session
        self.claims: set[str] = set()  # names with a login or password change under way
        self.links: set[Link] = set()  # links still open (set by the core)
        self.names = names
        # A claim taken over from another node's session (set by the core,
        # which tells that node).
        self.replaced_elsewhere: Callable[[Claim], None] = lambda claim: None
        # A session's claim is out of date: it registered (set by the core).
        self.claim_changed: Callable[[Session], None] = lambda session: None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def accounts_on(self) -> bool:
        return self.passwords is not None

    def _need_accounts(self) -> None:
        if not self.accounts_on:
            raise Refused("no_accounts", "this server does not keep accounts")

    @staticmethod
    def _check_password(password: str | None) -> None:
        try:
            normalise_password(password or "")
        except ValueError as e:
            raise Refused("bad_password", str(e)) from None

    def _check_throttle(self, key: str, ip: str, what: str) -> None:
        wait = self.throttle.retry_after(key, ip) if self.throttle is not None else None
        if wait:
            raise Refused("throttled", f"too many {what}; try again in {math.ceil(wait)} s")

    def _queue_has_room(self, lane: str = ACCOUNTS) -> None:
        if self.passwords is not None and self.passwords.waiting_in(lane) >= _QUEUE_ROOM[lane]:
            raise Refused("busy", "the server is busy; try again in a moment")

    def _check_signups(self, ip: str) -> None:
        wait = self.signups.retry_after(ip) if self.signups is not None else None
        if wait is None:
            return
        seconds, which = wait
        self.signups_refused(ip, "{host}: refused a new account: the {which} limit is reached "
                             "({count} refused so far)", host=ip, which=which)
        minutes = math.ceil(seconds / 60)
        later = f"try again in {counted(minutes, 'minute')}"
        if which == "address":
            raise Refused("throttled", f"too many new accounts from your address (at most "
                          f"{self.signups.per_address} an hour); {later}")
        raise Refused("throttled", f"this server takes no more new accounts for now (at most "
                      f"{self.signups.total} an hour); {later}")

    def _signup_hash(self, ip: str, password: str) -> defer.Deferred:
        """A new account's password hashed, if the limits on new accounts
        allow one more now: then it counts."""
        self._check_signups(ip)
        d = self._password_work(self.passwords.hash, password, SIGNUPS, lane=SIGNUPS)
        if self.signups is not None:
            self.signups.counted(ip)
        return d

    # --- logging in ---------------------------------------------------------------

    def login(self, link: Link, msg: wire.Login) -> None:
        display, key = normalise_name(msg.name)
        ip = host_of(link.address)
        self._check_throttle(key, ip, "failed logins")
        if key in self.claims:
            raise Refused("name_taken", f"someone is logging in as {display!r} right now")
        if msg.register:
            self._need_accounts()
            self._check_password(msg.password)
            self._check_signups(ip)
        self._queue_has_room(SIGNUPS if msg.register else ACCOUNTS)
        self.claims.add(key)
        link.login_pending = True
        d = self.check_ban(key)
        d.addCallback(lambda _: self.store.account(key))
        d.addCallback(self._with_account, link, msg, display, key, ip)

        def finished(result):
            self.claims.discard(key)
            self.new_names.release(display, key)
            link.login_pending = False
            return result

        d.addBoth(finished)
        d.addErrback(self.refused, link)

    def _with_account(self, account, link: Link, msg: wire.Login, display: str, key: str,
                      ip: str):
        if msg.register:
            if account is not None:
                raise Refused("name_registered", f"the name {display!r} is already registered; "
                              "log in with its password")
            self._check_free(display, key)
            password = msg.password or ""  # checked in login()
            d = self.new_names.check(display, key)
            d.addCallback(lambda _: self._signup_hash(ip, password))
            return d.addCallback(self._registered, link, msg, display, key)
        if account is not None:
            if msg.password is None:
                raise Refused("password_required", f"the name {display!r} is registered; "
                              "log in with its password")
            # Shown as registered, whatever case or width it was typed in.
            return self._password_work(self.passwords.verify, msg.password, account[1]) \
                .addCallback(self._verified, link, msg, account[0], key, ip)
        if msg.password is not None:
            # The same words as a wrong password: no hint which names exist.
            raise Refused("login_failed", "wrong name or password")
        self._check_free(display, key)
        return self.new_names.check(display, key).addCallback(
            self._guest_checked, link, msg, display, key)

    def _guest_checked(self, _, link: Link, msg: wire.Login, display: str, key: str):
        if self._still_waiting(link):
            self._check_free(display, key)  # a registered owner may have come meanwhile
            return self._claim_name(display, key, False, msg, takeover=False).addCallback(
                self._start, link, display, key, False, msg)
        return None

    def _claim_name(self, display: str, key: str, registered: bool, msg: wire.Login,
                    takeover: bool) -> defer.Deferred:
        """Claim the name for a new session; fires with its (id, token), or
        fails with ``Refused`` if another node's session holds the name."""
        ids = new_ids()
        if self.names is None:
            return defer.succeed(ids)
        wanted = self.login_claim(ids, display, key, registered, msg)

        def judged(claimed):
            if not claimed.granted:
                raise Refused("name_taken", f"the name {display!r} is taken")
            if claimed.replaced is not None and claimed.replaced.node != self.names.node:
                self.replaced_elsewhere(claimed.replaced)
            return ids

        return self.names.claim(wanted, takeover).addCallback(judged)

    def login_claim(self, ids: tuple[str, str], display: str, key: str, registered: bool,
                    msg: wire.Login, rooms: tuple[str, ...] = ()) -> Claim:
        """The claim of the session a login starts, in ``rooms`` (keys)."""
        return Claim(key, ids[0], self.names.node, token_hash(ids[1]), display, registered,
                     lineage_of(key, registered, msg.outbox, ids[0]), rooms,
                     tuple(sorted(looks(display, key))))

    def _start(self, ids: tuple[str, str], link: Link, display: str, key: str,
               registered: bool, msg: wire.Login) -> defer.Deferred:
        """Start the session the name was claimed for; if none starts (the
        link went meanwhile), give the name back."""
        if self._still_waiting(link):
            d = self.start_session(link, display, key, registered, msg, ids)
        else:
            d = defer.succeed(None)

        def started(session):
            if session is None:
                self.release(key, ids[0])
            return session

        def failed(failure):
            self.release(key, ids[0])
            return failure

        return d.addCallbacks(started, failed)

    def release(self, key: str, session_id: str) -> None:
        """The session ``session_id`` holds the name no more."""
        if self.names is not None:
            self.names.release(key, session_id).addErrback(
                lambda f: self.log.error("cannot give back the name {key}: {error}", key=key,
                                         error=f.getErrorMessage()))

    def _still_waiting(self, link: Link) -> bool:
        """The link is open and not logged in otherwise meanwhile."""
        return link in self.links and link.session is None

    def _password_work(self, work, *args, lane: str = ACCOUNTS) -> defer.Deferred:
        self._queue_has_room(lane)

        def stopped(failure):
            if failure.check(Refused):
                return failure
            # The password workers are stopping (shutdown): say so, no traceback.
            raise Refused("unavailable", "the server is busy; try again")

        return work(*args).addErrback(stopped)

    def _registered(self, encoded: str, link: Link, msg, display: str, key: str):
        if not self._still_waiting(link):
            return None
        self._check_free(display, key)

        def started(session):
            if session is not None:
                self.account_notice(session, f"the name {display} is now registered to you")

        def claimed(ids):
            # Claimed first: a guest of another node holding the name keeps it.
            def unsaved(failure):
                self.release(key, ids[0])
                return failure

            return self.store.set_account(key, display, encoded, self.now_ms()).addCallbacks(
                lambda _: self._start(ids, link, display, key, True, msg), unsaved) \
                .addCallback(started)

        return self._claim_name(display, key, True, msg, takeover=False).addCallback(claimed)

    def _verified(self, ok: bool, link: Link, msg, display: str, key: str, ip: str):
        if not ok:
            if self.throttle is not None:
                self.throttle.failed(key, ip)
            raise Refused("login_failed", "wrong name or password")
        if self.throttle is not None:
            self.throttle.succeeded(key, ip)
        if not self._still_waiting(link):
            return None

        def claimed(ids):
            old = self.sessions.by_key.get(key)
            if old is not None and self._still_waiting(link):
                # The owner of the name, proven by its password, wins over a
                # session left behind (a crashed client, another device).
                self.end_session(old, "replaced", "you logged in from somewhere else",
                                 "logged in elsewhere", f"{old.name} left")
            return ids

        return self._claim_name(display, key, True, msg, takeover=True).addCallback(claimed) \
            .addCallback(self._start, link, display, key, True, msg)

    def _check_free(self, display: str, key: str) -> None:
        if key in self.sessions.by_key:
            raise Refused("name_taken", f"the name {display!r} is taken")

    def refused(self, failure, link: Link) -> None:
        """A login (or resume) failed: the client is told why, in one line."""
        if failure.check(Refused):
            error = wire.Error(failure.value.code, failure.value.text)
        else:
            # The details (a database's address, a driver's words) are for
            # the log, not for whoever connects.
            self.log.error("login failed: {error}", error=failure.getErrorMessage())
            error = wire.Error("unavailable", "the server cannot log you in now (its store "
                               "is unavailable); try again in a while")
        if link in self.links:
            link.conn.send(error)

    # --- accounts -------------------------------------------------------------------

    def account_notice(self, session: Session, text: str) -> None:
        if session.link is not None:
            session.link.conn.send(wire.Notice("", self.now_ms(), "account", text))

    def register(self, session: Session, msg: wire.Register) -> None:
        self._need_accounts()
        self._check_password(msg.password)
        ip = host_of(session.address)
        self._check_signups(ip)
        self._claim(session, SIGNUPS)

        def looked_up(account):
            if account is not None:
                raise Refused("name_registered",
                              f"the name {session.name!r} is already registered")
            return self.new_names.check(session.name, session.key).addCallback(
                lambda _: self._signup_hash(ip, msg.password))

        def hashed(encoded):
            return self.store.set_account(session.key, session.name, encoded, self.now_ms())

        def saved(_):
            guest = session.lineage
            session.registered = True
            # What it said and was told as a guest stays its own (its
            # direct conversations, its cids), now as the account's; told
            # once it is, so that what it reads next is all there.
            self.claim_changed(session)
            return self.adopt_lineage(guest, session.lineage).addCallback(told)

        def told(_):
            self.account_notice(session, f"the name {session.name} is now registered to you; "
                                "log in with its password from now on")

        self._account_change(session, self.store.account(session.key).addCallback(looked_up)
                             .addCallback(hashed).addCallback(saved))

    def change_password(self, session: Session, msg: wire.ChangePassword) -> None:
        self._need_accounts()
        self._check_password(msg.new)
        ip = host_of(session.address)
        self._check_throttle(session.key, ip, "wrong passwords")
        self._claim(session)

        def looked_up(account):
            if account is None:
                raise Refused("not_registered", "this name is not registered; use /register")
            return self._password_work(self.passwords.verify, msg.old, account[1])

        def verified(ok):
            if not ok:
                if self.throttle is not None:
                    self.throttle.failed(session.key, ip)
                raise Refused("login_failed", "wrong password")
            return self._password_work(self.passwords.hash, msg.new)

        def hashed(encoded):
            return self.store.set_account(session.key, session.name, encoded, self.now_ms())

        self._account_change(session, self.store.account(session.key).addCallback(looked_up)
                             .addCallback(verified).addCallback(hashed).addCallback(
                                 lambda _: self.account_notice(session, "your password is changed")))

    def _claim(self, session: Session, lane: str = ACCOUNTS) -> None:
        if session.key in self.claims:
            raise Refused("busy", "a password change is already in progress")
        self._queue_has_room(lane)
        self.claims.add(session.key)

    def _account_change(self, session: Session, d: defer.Deferred) -> None:
        def finished(result):
            self.claims.discard(session.key)
            self.new_names.release(session.name, session.key)
            return result

        def refused(failure):
            if failure.check(Refused):
                error = wire.Error(failure.value.code, failure.value.text)
            else:
                self.log.error("account change failed: {error}", error=failure.getErrorMessage())
                error = wire.Error("unavailable", "the server cannot save your account now "
                                   "(its store is unavailable); try again in a while")
            if session.link is not None:
                session.link.conn.send(error)

        d.addBoth(finished).addErrback(refused)

    # --- server-wide bans ---------------------------------------------------------------

    def check_ban(self, key: str) -> defer.Deferred:
        """Fires if ``key`` may log in; fails with ``Refused`` if banned."""

        def looked_up(ban):
            if ban is None:
                return None
            _, until, reason = ban
            now = self.clock.seconds()
            if until is not None and until <= now:
                return self.store.delete_ban(key)  # served its time
            raise Refused("banned", ban_text(reason, until, now))

        return self.store.ban(key).addCallback(looked_up)

    def ban(self, name: str, minutes: float | None, reason: str) -> bool:
        """Ban a name (for ``minutes``, or for ever); a user online goes at once."""
        try:
            display, key = normalise_name(name)
        except Refused:
            return False
        reason = plain(reason)
        until = None if minutes is None else self.clock.seconds() + minutes * 60
        saving = self.store.set_ban(key, display, until, reason, self.now_ms()).addErrback(
            lambda f: self.log.error("cannot save a ban: {error}", error=f.getErrorMessage()))
        if not saving.called:
            self._bans_saving.add(saving)

            def saved(result):
                self._bans_saving.discard(saving)
                return result

            saving.addBoth(saved)
        self.end_banned(name, until, reason)
        return True

    def end_banned(self, name: str, until: float | None, reason: str) -> bool:
        """A banned name's session here goes at once (the ban is saved
        already, here or by another node); False if it has none here."""
        try:
            _, key = normalise_name(name)
        except Refused:
            return False
        session = self.sessions.by_key.get(key)
        if session is None:
            return False
        reason = plain(reason)
        self.end_session(session, "banned", ban_text(reason, until, self.clock.seconds()),
                         f"banned: {reason}", f"{session.name} was banned ({reason})")
        return True

    def bans(self) -> defer.Deferred:
        """Fires with the server bans still running, by name: [(name, until
        (server seconds) or None for ever, reason)]."""
        def running(bans):
            now = self.clock.seconds()
            return [(name, until, reason) for _, name, until, reason in bans
                    if until is None or until > now]

        saved = defer.DeferredList(list(self._bans_saving))  # the bans just made, too
        return saved.addCallback(lambda _: self.store.bans()).addCallback(running)

    def unban(self, name: str) -> defer.Deferred:
        """Fires with True if the name was banned."""
        try:
            _, key = normalise_name(name)
        except Refused:
            return defer.succeed(False)
        return self.store.delete_ban(key)
