"""The rule of new names and the limits on new accounts, in the core, on
task.Clock with the in-memory store: who is refused, with what words, and
what stays allowed."""

import pytest
from twisted.internet import defer

from spchat import wire
from spchat.server.throttles import SignupLimit
from spchat.server.core import ChatCore, Limits

from helpers import login, settle


class HeldPasswords:
    """The password worker's interface; a hash waits until ``release()``
    when ``hold`` is set (a login under way), else it is answered at once."""

    def __init__(self):
        self.hold = False
        self.held = []

    def waiting_in(self, lane):
        return 0

    def hash(self, password, lane=None):
        d = defer.Deferred()
        self.held.append((d, "hash:" + password))
        if not self.hold:
            self.release()
        return d

    def release(self):
        while self.held:
            d, result = self.held.pop(0)
            d.callback(result)

    def verify(self, password, encoded):
        return defer.succeed(encoded == "hash:" + password)


@pytest.fixture
def passwords():
    return HeldPasswords()


@pytest.fixture
def core(clock, passwords):
    return ChatCore(clock, Limits(), passwords=passwords,
                    signups=SignupLimit(clock, per_address=2, total=3))


def refusal(conn):
    (error,) = conn.of(wire.Error)
    return error.code, error.text


def welcomed(conn):
    return bool(conn.of(wire.Welcome))


def register(core, name, address="127.0.0.1:1", password="a long password"):
    return login(core, name, address, password=password, register=True)


def log_out(core, link):
    core.receive(link, wire.Logout())
    core.link_lost(link)
    settle(core)


# --- look-alikes ----------------------------------------------------------------------


def test_a_look_alike_of_someone_online_is_refused_until_they_go(core):
    alice, _ = login(core, "alice")
    _, conn = login(core, "аlice", "127.0.0.2:1")  # Cyrillic а
    assert refusal(conn) == ("name_lookalike", "the name 'аlice' looks like 'alice', who is "
                             "online; choose another")
    _, conn = register(core, "ALІCE", "127.0.0.2:2")  # Cyrillic І
    assert refusal(conn)[0] == "name_lookalike"
    log_out(core, alice)
    _, conn = login(core, "аlice", "127.0.0.2:3")
    assert refusal(conn)[0] == "name_invalid"  # still Cyrillic and Latin mixed


def test_a_guest_name_looks_free_again_when_its_guest_goes(core):
    ace, _ = login(core, "ace")
    _, conn = login(core, "асе", "127.0.0.2:1")  # all Cyrillic
    assert refusal(conn) == ("name_lookalike", "the name 'асе' looks like 'ace', who is "
                             "online; choose another")
    log_out(core, ace)
    _, conn = login(core, "асе", "127.0.0.2:2")
    assert welcomed(conn)
    _, conn = login(core, "ace", "127.0.0.2:3")  # and now the other way round
    assert refusal(conn)[0] == "name_lookalike"


def test_a_look_alike_of_a_registered_name_is_refused_even_offline(core):
    carol, _ = register(core, "Carol")
    log_out(core, carol)
    for name in ("Сarol", "CАROL"):  # Cyrillic С; Cyrillic А
        _, conn = login(core, name, "127.0.0.2:1")
        assert refusal(conn) == ("name_lookalike", f"the name {name!r} looks like 'Carol', "
                                 "a registered name; choose another")
    _, conn = login(core, "carol", "127.0.0.2:2", password="a long password")
    assert welcomed(conn)  # the owner, of course


def test_two_look_alikes_logging_in_at_once_cannot_both_get_in(core, passwords):
    passwords.hold = True
    _, first = register(core, "bob")  # its password is being hashed
    _, second = login(core, "bоb", "127.0.0.2:1")
    assert refusal(second) == ("name_lookalike", "someone is logging in with a name like "
                               "'bоb' right now; choose another")
    passwords.release()
    assert welcomed(first)
    _, third = login(core, "bоb", "127.0.0.2:2")
    assert refusal(third)[0] == "name_lookalike"


def test_mixed_scripts_are_refused_for_new_names_only(core):
    _, conn = login(core, "mаllory")  # Latin and Cyrillic, like no one
    assert refusal(conn) == ("name_invalid", "a name must not mix letters of different "
                             "scripts (Cyrillic and Latin in 'mаllory')")
    # An account made before the rule still logs in, and can be banned.
    core.store.set_account("mаllory", "mаllory", "hash:a long password", 0)
    _, conn = login(core, "mаllory", password="a long password")
    assert welcomed(conn)
    assert core.ban("mаllory", None, "spam")


def test_accounts_from_before_the_rule_that_look_alike_both_log_in(core):
    core.store.set_account("alice", "alice", "hash:one password", 0)
    core.store.set_account("аlice", "аlice", "hash:two password", 0)
    _, one = login(core, "alice", password="one password")
    _, two = login(core, "аlice", "127.0.0.2:1", password="two password")
    assert welcomed(one) and welcomed(two)


def test_a_guest_registering_is_checked_against_registered_names(core):
    # A look-alike account from before the rule, while the guest was away.
    _, conn = login(core, "dave")
    core.store.set_account("dаve", "dаve", "hash:x", 0)
    core.receive(core.table.by_key["dave"].link, wire.Register("a long password"))
    assert refusal(conn) == ("name_lookalike", "the name 'dave' looks like 'dаve', a "
                             "registered name; choose another")


def test_a_room_that_looks_like_another_is_refused(core):
    link, conn = login(core, "alice")
    core.receive(link, wire.Join("lоbby", cid="1"))  # Cyrillic о
    core.receive(link, wire.Join("dеv", cid="2"))  # Cyrillic е, like no room
    core.receive(link, wire.Join("LOBBY", cid="3"))  # the lobby itself
    core.receive(link, wire.Join("Разработка", cid="4"))
    errors = [(e.cid, e.code, e.text) for e in conn.of(wire.Error)]
    assert errors == [
        ("1", "room_lookalike", "#lоbby looks like #lobby; join that or choose another name"),
        ("2", "room_invalid", "a room name must not mix letters of different scripts "
         "(Cyrillic and Latin in 'dеv')"),
    ]
    assert "разработка" in link.session.rooms


# --- limits on new accounts -------------------------------------------------------------


def test_new_accounts_are_limited_per_address_and_server_wide(core, clock):
    for n in range(2):
        _, conn = register(core, f"first{n}", "127.0.0.1:1")
        assert welcomed(conn)
    _, conn = register(core, "first2", "127.0.0.1:2")
    assert refusal(conn) == ("throttled", "too many new accounts from your address (at most "
                             "2 an hour); try again in 60 minutes")
    # A guest from that address may still come, but not register.
    link, conn = login(core, "guest", "127.0.0.1:3")
    assert welcomed(conn)
    core.receive(link, wire.Register("a long password"))
    assert refusal(conn)[0] == "throttled"
    _, conn = register(core, "second0", "127.0.0.2:1")
    assert welcomed(conn)  # the server's third this hour
    _, conn = register(core, "third0", "127.0.0.3:1")
    assert refusal(conn) == ("throttled", "this server takes no more new accounts for now "
                             "(at most 3 an hour); try again in 60 minutes")
    clock.advance(3600)
    _, conn = register(core, "third0", "127.0.0.3:2")
    assert welcomed(conn)


def test_only_registrations_that_reach_the_hashing_count(core):
    first, _ = register(core, "taken")
    log_out(core, first)
    for n in range(5):  # refused before any hashing: not counted
        _, conn = register(core, "taken", f"127.0.0.1:{n + 2}")
        assert refusal(conn)[0] == "name_registered"
    _, conn = register(core, "another", "127.0.0.1:10")
    assert welcomed(conn)


def test_a_client_that_hangs_up_while_its_account_is_made_still_counts(core, passwords):
    passwords.hold = True
    for n in range(2):
        link, _ = register(core, f"gone{n}", f"127.0.0.1:{n}")
        core.link_lost(link)
    passwords.release()
    assert core.store.account("gone0").result is None  # nothing saved for them
    _, conn = register(core, "third", "127.0.0.1:3")
    assert refusal(conn)[0] == "throttled"


def test_logins_of_existing_accounts_are_not_limited(core):
    for n in range(2):
        link, _ = register(core, f"user{n}")
        log_out(core, link)
    for _ in range(10):
        link, conn = login(core, "user0", password="a long password")
        assert welcomed(conn)
        log_out(core, link)


def test_a_guest_is_told_it_is_registered_once_its_direct_lines_are_its_own(core):
    # The store's hand-over of the guest's lines to the account waits
    # (a busy writer): the notice waits for it, so that what the new
    # account reads next (its direct conversations) is all there.
    ann, _ = login(core, "ann")
    link, lou = login(core, "lou")
    core.receive(ann, wire.Direct("lou", "welcome, lou", "a1"))
    settle(core)
    held = []
    adopt = core.store.adopt_lineage

    def slow_adopt(old, new):
        d = defer.Deferred()
        held.append(lambda: adopt(old, new).chainDeferred(d))
        return d

    core.store.adopt_lineage = slow_adopt
    core.receive(link, wire.Register("a long password"))
    settle(core)
    registered = [n for n in lou.of(wire.Notice) if "registered to you" in n.text]
    assert held and registered == []
    held.pop()()
    registered = [n for n in lou.of(wire.Notice) if "registered to you" in n.text]
    assert len(registered) == 1
    core.receive(link, wire.HistoryRequest(2**53, 100, "@ann"))
    settle(core)
    assert [m.text for m in lou.of(wire.DirectMessage)] == ["welcome, lou", "welcome, lou"]


def test_a_store_that_fails_is_not_described_to_clients(core):
    # The store's own words name the database, its user and host: the log
    # gets them; whoever connects is only told to try again.
    secret = "cannot connect to the database postgresql://chat@db.internal:5432/spchat"

    def failing(*args):
        return defer.fail(RuntimeError(secret))

    link, conn = login(core, "ann")
    core.store.account = failing
    core.receive(link, wire.Register("a long password"))
    settle(core)
    core.store.ban = failing
    _, newcomer = login(core, "bob")
    settle(core)
    errors = [e for e in conn.of(wire.Error) + newcomer.of(wire.Error)]
    assert [e.code for e in errors] == ["unavailable", "unavailable"]
    assert all("db.internal" not in e.text and "try again" in e.text for e in errors)
