"""The file-sharing tracker in the chat core: offers, holders, listings,
introductions with fresh keys, relay tickets, and every refusal, with the
recording connections of test_core and a fake clock; then once for real
over loopback."""

import dataclasses
import json
import os
import re

import pytest
import pytest_twisted
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from spchat import noise, wire
from spchat.p2p.manifest import MIN_PIECE_SIZE, build_manifest
from spchat.p2p.tags import relay_name
from spchat.server import tracker
from spchat.server.core import FLOOD_LIMITED, ChatCore, Limits
from spchat.tap import core_limits

from conftest import connect_client, server_config, wait_until
from helpers import MemoryClient, settle

PIECE = MIN_PIECE_SIZE
HEX64 = re.compile(r"[0-9a-f]{64}")


def make_core(clock, **limits):
    # Flood control has its own tests; here it would only get in the way.
    limits.setdefault("flood_burst", 10_000)
    return ChatCore(clock, Limits(**limits))


@pytest.fixture
def core(clock):
    return make_core(clock)


def login(core, name, address="127.0.0.1:1"):
    conn = MemoryClient()
    link = core.open_link(conn, address)
    core.receive(link, wire.Login(name))
    return link, conn


@pytest.fixture
def files(tmp_path):
    """Real manifests of small files: files(name) -> Manifest."""

    def make(name="notes.txt", size=3 * PIECE + 100):
        path = tmp_path / name
        path.write_bytes(os.urandom(size))
        return build_manifest(path, PIECE)

    return make


def share(core, link, manifest, port=7000, cid="s1"):
    core.receive(link, wire.Share(manifest.canonical().decode(), port, cid))


def fetch(core, link, ref, cid="f1"):
    core.receive(link, wire.Fetch(ref, cid))


def last_error(conn):
    return conn.of(wire.Error)[-1]


def listing(core, link, conn):
    core.receive(link, wire.ListFiles())
    return conn.of(wire.FileList)[-1].files


# --- sharing -------------------------------------------------------------------


def test_an_offer_reaches_every_room_member_after_the_joins_before_it(core, files):
    links = [login(core, name) for name in ("alice", "bob", "carol")]
    (alice, a), (bob, b), (carol, c) = links
    m = files("holiday.tar")
    share(core, alice, m)
    offer = wire.Offer("lobby", 1_700_000_000_000, m.file_id, "holiday.tar", m.size, "alice")
    for _, conn in links:
        assert conn.of(wire.Offer) == [offer]
    # Carol's join was still waiting: it goes out first, not after the offer.
    kinds = [type(msg).__name__ for msg in b.sent]
    assert kinds.index("Notice") < kinds.index("Offer")
    assert listing(core, bob, b) == ((m.file_id, "holiday.tar", m.size, "alice", 1),)


def test_a_newcomer_to_a_room_is_shown_its_live_offers_after_its_history(core, files):
    alice, a = login(core, "alice")
    core.receive(alice, wire.Join("dev"))
    gone, g = login(core, "gone", "127.0.0.2:1")
    core.receive(alice, wire.Say("look", "c1", "dev"))
    holiday, notes, elsewhere = files("holiday.tar"), files("notes.txt"), files("other.bin")
    core.receive(alice, wire.Share(holiday.canonical().decode(), 7000, "s1", "dev"))
    core.receive(gone, wire.Share(elsewhere.canonical().decode(), 7000, "s2"))
    core.clock.advance(1)
    core.receive(alice, wire.Share(notes.canonical().decode(), 7000, "s3", "dev"))
    core.receive(gone, wire.Join("dev"))
    core.receive(gone, wire.Share(files("soon.bin").canonical().decode(), 7000, "s4", "dev"))
    core.receive(gone, wire.Logout())  # nobody holds its file now
    settle(core)
    bob, b = login(core, "bob", "127.0.0.3:1")
    core.receive(bob, wire.Join("dev"))
    kinds = [type(msg).__name__ for msg in b.sent]
    dev_history_end = max(i for i, kind in enumerate(kinds) if kind == "HistoryEnd")
    assert kinds.index("RoomMessage") < dev_history_end < kinds.index("Offer")
    assert [(o.room, o.name) for o in b.of(wire.Offer)] == [
        ("dev", "holiday.tar"), ("dev", "notes.txt")]  # none of those nobody holds
    # The offer the newcomer sees is the one its room saw, made before it came.
    assert b.of(wire.Offer)[0] == a.of(wire.Offer)[0]


def test_sharing_what_is_offered_already_confirms_to_that_sharer_only(core, files):
    (alice, a), (bob, b) = login(core, "alice"), login(core, "bob")
    m = files()
    share(core, alice, m)
    share(core, alice, m, cid="again")  # after a reconnect, say
    share(core, bob, m, port=7001, cid="b1")
    assert len(a.of(wire.Offer)) == 2 and len(b.of(wire.Offer)) == 2
    assert all(o.sharer == "alice" for o in b.of(wire.Offer))
    assert listing(core, alice, a)[0][4] == 2  # two holders
    assert not a.of(wire.Error) and not b.of(wire.Error)


def test_sharing_off_refuses_shares_and_fetches(clock, files):
    core = make_core(clock, max_share_bytes=0)
    alice, a = login(core, "alice")
    share(core, alice, files(), cid="s9")
    fetch(core, alice, "abcdef", cid="f9")
    assert [(e.code, e.cid) for e in a.of(wire.Error)] == [
        ("sharing_off", "s9"), ("sharing_off", "f9")]
    assert not core.tracker.files


def test_core_limits_takes_the_share_limit_from_the_configuration(tmp_path):
    cfg = server_config(tmp_path, **{"max-share-bytes": "12345"})
    assert core_limits(cfg).max_share_bytes == 12345
    assert Limits().max_share_bytes == 4 * 1024**3


def test_a_too_big_file_is_refused_with_the_limit(clock, files):
    core = make_core(clock, max_share_bytes=2 * PIECE)
    alice, a = login(core, "alice")
    m = files(size=2 * PIECE + 1)
    share(core, alice, m, cid="big")
    error = last_error(a)
    assert (error.code, error.cid) == ("too_big", "big")
    assert str(m.size) in error.text and f"limit on this server is {2 * PIECE} bytes" in error.text
    assert not core.tracker.files


def bad_manifests(m):
    body = json.loads(m.canonical())
    yield "not json", "not a JSON manifest"
    yield json.dumps(body, indent=1), "canonical"  # the same manifest, spaced out
    yield json.dumps({**body, "name": "../../etc/passwd"}, separators=(",", ":"),
                     sort_keys=True), "canonical"  # a name that is made safe differs
    yield json.dumps({**body, "pieces": body["pieces"][:-1]}, separators=(",", ":"),
                     sort_keys=True), "piece hashes"
    yield json.dumps({**body, "pieces": ["zz" * 32] * len(body["pieces"])},
                     separators=(",", ":"), sort_keys=True), "64 hex digits"
    yield json.dumps({**body, "size": 10**30}, separators=(",", ":"),
                     sort_keys=True), "limit"
    yield "[]", "JSON object"


def test_bad_manifests_are_refused_with_the_reason_and_the_cid(core, files):
    (alice, a), (_, b) = login(core, "alice"), login(core, "bob")
    b.clear()
    for i, (text, why) in enumerate(bad_manifests(files())):
        core.receive(alice, wire.Share(text, 7000, f"c{i}"))
        error = last_error(a)
        assert error.cid == f"c{i}" and error.code in ("bad_manifest", "too_big")
        assert why in error.text
    assert not core.tracker.files and not b.of(wire.Offer)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=64))
def test_no_manifest_or_file_reference_makes_the_core_raise(text, ref):
    core = make_core(Clock())
    alice, a = login(core, "alice")
    core.receive(alice, wire.Share(text, 1, "c1"))
    core.receive(alice, wire.Fetch(ref, "c2"))
    core.receive(alice, wire.Holding(ref, 3, 1))
    core.receive(alice, wire.Unshare(ref))
    core.receive(alice, wire.RelayRequest(ref))
    assert len(a.of(wire.Error)) == 4  # every one survived the codec


def test_one_user_shares_and_holds_at_most_fifty_files(core, files):
    (alice, a), (bob, _) = login(core, "alice"), login(core, "bob")
    made = [files(f"f{i}", 10) for i in range(tracker.MAX_FILES_PER_SESSION + 1)]
    for i, m in enumerate(made[:-1]):
        share(core, alice, m, cid=f"s{i}")
    assert not a.of(wire.Error)
    share(core, alice, made[-1], cid="one-more")
    assert (last_error(a).code, last_error(a).cid) == ("too_many_shares", "one-more")
    share(core, alice, made[0], cid="again")  # refreshing one held already is fine
    assert last_error(a).cid == "one-more"
    # Holding pieces counts the same.
    share(core, bob, made[-1])
    core.receive(alice, wire.Holding(made[-1].file_id, 1, 7000))
    assert last_error(a).code == "too_many_shares"
    core.receive(alice, wire.Unshare(made[0].file_id))
    core.receive(alice, wire.Holding(made[-1].file_id, 1, 7000))
    assert len(a.of(wire.Error)) == 2  # room for one again: no new refusal
    assert core.tracker.holds(alice.session.id, made[-1].file_id)


def test_file_requests_count_against_the_flood_limit_and_reports_do_not():
    assert {wire.Share, wire.Fetch, wire.ListFiles} <= set(FLOOD_LIMITED)
    assert not {wire.Holding, wire.Unshare, wire.RelayRequest} & set(FLOOD_LIMITED)


# --- holders -------------------------------------------------------------------


def test_holding_pieces_makes_a_peer_and_zero_pieces_ends_it(core, files):
    (alice, a), (bob, b), (carol, c) = (login(core, n) for n in ("alice", "bob", "carol"))
    m = files()  # 4 pieces
    share(core, alice, m)
    core.receive(bob, wire.Holding(m.file_id, 2, 7002))
    core.receive(bob, wire.Holding("ab" * 32, 1, 7002))
    assert last_error(b).code == "no_such_file"
    core.receive(bob, wire.Holding(m.file_id, 5, 7002))
    assert last_error(b).code == "bad_request" and "4 pieces" in last_error(b).text
    assert listing(core, carol, c)[0][4] == 2
    fetch(core, carol, m.file_id)
    names = {row[0]: row[2] for row in c.of(wire.Swarm)[-1].peers}
    assert names == {"alice": 7000, "bob": 7002}
    core.receive(bob, wire.Holding(m.file_id, 0, 7002))
    assert listing(core, carol, c)[0][4] == 1


def test_complete_holders_are_preferred(core, files, monkeypatch):
    monkeypatch.setattr(wire, "MAX_PEERS", 2)
    m = files()
    alice, _ = login(core, "alice")
    share(core, alice, m)
    for name in ("p1", "p2", "p3"):
        link, _ = login(core, name)
        core.receive(link, wire.Holding(m.file_id, 1, 0))
    dave, d = login(core, "dave")
    for i in range(10):
        fetch(core, dave, m.file_id, cid=f"f{i}")
    for swarm in d.of(wire.Swarm):
        assert len(swarm.peers) == 2 and swarm.peers[0][0] == "alice"
    # ...and the others at random, not always the same one.
    assert len({swarm.peers[1][0] for swarm in d.of(wire.Swarm)}) > 1


def test_an_offer_nobody_holds_any_more_is_gone(core, files):
    (alice, a), (bob, b) = login(core, "alice"), login(core, "bob")
    m = files()
    share(core, alice, m)
    core.receive(bob, wire.Holding(m.file_id, 1, 0))
    core.receive(alice, wire.Unshare(m.file_id.upper()))
    assert listing(core, bob, b)[0][4] == 1  # bob still has a piece of it
    core.receive(bob, wire.Unshare(m.file_id))
    core.receive(bob, wire.Unshare(m.file_id))  # twice: no harm, no error
    assert listing(core, bob, b) == ()
    fetch(core, alice, m.file_id)
    assert last_error(a).code == "no_such_file"
    assert not b.of(wire.Error) and core.tracker.held == {}


def test_a_holder_that_goes_offline_leaves_every_swarm(core, files):
    (alice, _), (bob, b) = login(core, "alice"), login(core, "bob")
    kept, gone = files("kept"), files("gone")
    share(core, alice, kept)
    share(core, alice, gone)
    core.receive(bob, wire.Holding(kept.file_id, 1, 0))
    core.receive(alice, wire.Logout())
    assert [row[0] for row in listing(core, bob, b)] == [kept.file_id]
    assert alice.session is None and core.tracker.held.keys() == {bob.session.id}


def test_a_reconnecting_holder_is_kept_but_not_introduced(core, files):
    (alice, a), (bob, b) = login(core, "alice"), login(core, "bob")
    m = files()
    share(core, alice, m)
    welcome = a.of(wire.Welcome)[0]
    core.link_lost(alice)
    assert listing(core, bob, b)[0][4] == 0  # listed, nobody to reach now
    fetch(core, bob, m.file_id[:8])
    error = last_error(b)
    assert (error.code, error.cid) == ("no_peers", "f1")
    assert error.text == f"nobody who has {m.name} is online now"
    again = MemoryClient()
    link = core.open_link(again, "127.0.0.1:9")
    core.receive(link, wire.Resume(welcome.session, welcome.token, (("#lobby", 0),)))
    fetch(core, bob, m.file_id[:8], cid="f2")
    assert b.of(wire.Swarm)[-1].cid == "f2" and again.of(wire.PeerRequest)


def test_listing_is_newest_first_and_fits_one_message(core):
    alice, a = login(core, "alice")
    # A name as long as a name may be, all of it escaped in JSON.
    name = '"\\' * (wire.MAX_FILE_NAME_BYTES // 2)
    for i in range(tracker.MAX_LISTED + 50):
        shared = core.tracker.add(f"{i:064x}", "{}", name, i, 1, "alice", "lobby", i)
        core.tracker.hold(shared, alice.session.id, 0, 1)
    rows = listing(core, alice, a)
    assert 0 < len(rows) <= tracker.MAX_LISTED
    assert [row[2] for row in rows] == list(range(249, 249 - len(rows), -1))
    assert len(wire.encode(wire.FileList(rows))) <= noise.MAX_PAYLOAD_LEN
    for shared in core.tracker.files.values():
        shared.name = "short"
    rows = listing(core, alice, a)
    assert len(rows) == tracker.MAX_LISTED and rows[0][2] == 249


# --- fetching ------------------------------------------------------------------


def test_a_fetch_introduces_each_pair_with_its_own_key(core, files):
    m = files()
    holders = [login(core, name, f"10.0.0.{i}:4{i}") for i, name in enumerate(("h1", "h2"))]
    holders.append(login(core, "h3", "2001:db8::7:5000"))
    for i, (link, _) in enumerate(holders):
        share(core, link, m, port=6000 + i)
    dave, d = login(core, "dave", "192.0.2.9:1")
    fetch(core, dave, m.file_id[:6].upper(), cid="get")
    (swarm,) = d.of(wire.Swarm)
    assert (swarm.file, swarm.manifest, swarm.cid) == (m.file_id, m.canonical().decode(), "get")
    peers = {row[0]: row for row in swarm.peers}
    assert {name: row[1:3] for name, row in peers.items()} == {
        "h1": ("10.0.0.0", 6000), "h2": ("10.0.0.1", 6001), "h3": ("2001:db8::7", 6002)}
    keys = [row[4] for row in swarm.peers]
    assert all(HEX64.fullmatch(key) for key in keys) and len(set(keys)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", row[3]) for row in swarm.peers)
    for (link, conn) in holders:
        (request,) = conn.of(wire.PeerRequest)
        row = peers[link.session.name]
        assert request == wire.PeerRequest(row[3], row[4], m.file_id, "dave", 0)
    # Fetching again: new transfers, new keys.
    fetch(core, dave, m.file_id, cid="again")
    assert not {row[4] for row in d.of(wire.Swarm)[-1].peers} & set(keys)


def test_file_references_that_name_no_one_file(core, files):
    alice, a = login(core, "alice")
    m = files()
    share(core, alice, m)
    for ref, code, text in [
        (m.file_id[:5], "no_such_file", "at least 6 hex digits"),
        ("", "no_such_file", "at least 6 hex digits"),
        ("not-hex!", "no_such_file", "no file 'not-hex!' is offered here"),
        ("0" * 64 if not m.file_id.startswith("0") else "f" * 64, "no_such_file",
         "is offered in your rooms"),
    ]:
        fetch(core, alice, ref, cid=f"f-{ref[:20]}")
        error = last_error(a)
        assert (error.code, error.cid) == (code, f"f-{ref[:20]}") and text in error.text


def test_an_ambiguous_prefix_says_how_many_files_it_matches(core, files):
    base = files()
    seen = {}
    for i in range(200_000):  # two ids sharing 6 digits: ~5,000 tries (birthday)
        m = dataclasses.replace(base, name=f"copy{i}")
        other = seen.setdefault(m.file_id[:6], m)
        if other is not m:
            break
    assert other is not m
    alice, a = login(core, "alice")
    share(core, alice, m)
    share(core, alice, other)
    fetch(core, alice, m.file_id[:6])
    error = last_error(a)
    assert error.code == "ambiguous" and "matches 2 files" in error.text
    # One digit past what they have in common is enough.
    common = next(i for i, (x, y) in enumerate(zip(m.file_id, other.file_id)) if x != y)
    bob, b = login(core, "bob")
    fetch(core, bob, m.file_id[:common + 1])
    assert b.of(wire.Swarm)[0].file == m.file_id


def test_nobody_else_online_to_fetch_from(core, files):
    alice, a = login(core, "alice")
    m = files("lonely.bin")
    share(core, alice, m)
    fetch(core, alice, m.file_id)  # its own copy does not count
    error = last_error(a)
    assert (error.code, error.cid) == ("no_peers", "f1")
    assert error.text == "nobody who has lonely.bin is online now"


def test_a_downloaders_introductions_are_capped(core, files):
    m = files()
    alice, _ = login(core, "alice")
    share(core, alice, m)
    bob, b = login(core, "bob")
    for i in range(tracker.MAX_TRANSFERS_PER_SESSION + 10):
        fetch(core, bob, m.file_id, cid=f"f{i}")
    mine = core.tracker.transfers[bob.session.id]
    assert len(mine) == tracker.MAX_TRANSFERS_PER_SESSION
    newest = b.of(wire.Swarm)[-1].peers[0][3]
    assert newest in mine and b.of(wire.Swarm)[0].peers[0][3] not in mine


# --- the relay -------------------------------------------------------------------


@pytest.fixture
def introduced(core, files):
    """alice shares, bob fetches: (core, alice, a, bob, b, transfer row)."""
    (alice, a), (bob, b) = login(core, "alice"), login(core, "bob")
    m = files()
    share(core, alice, m, port=0)
    fetch(core, bob, m.file_id)
    (row,) = b.of(wire.Swarm)[0].peers
    return core, alice, a, bob, b, row


def test_the_relay_is_opened_for_the_downloader_of_a_transfer(introduced):
    core, alice, a, bob, b, (_, _, _, transfer, key) = introduced
    core.ports.relay = 5002
    core.receive(bob, wire.RelayRequest(transfer))
    assert b.of(wire.RelayOpen) == [wire.RelayOpen(transfer, 5002)]
    relay_call = a.of(wire.PeerRequest)[-1]
    assert relay_call == wire.PeerRequest(transfer, key, relay_call.file, "bob", 5002)
    # The relay knows the transfer by its relay name: the id is not sent to it.
    name = relay_name(transfer, bytes.fromhex(key))
    assert core.relay_allowed(name) and not core.relay_allowed(transfer)
    # Asking again while the ticket holds: the holder is not called again.
    core.receive(bob, wire.RelayRequest(transfer))
    assert len(a.of(wire.PeerRequest)) == 2 and len(b.of(wire.RelayOpen)) == 2
    core.clock.advance(tracker.RELAY_TICKET_SECONDS)
    assert not core.relay_allowed(name)
    core.sweep()
    assert not core.relay_tickets


def test_no_relay_on_this_server(introduced):
    core, alice, a, bob, b, row = introduced
    core.receive(bob, wire.RelayRequest(row[3]))
    assert last_error(b).code == "no_relay" and "no relay" in last_error(b).text
    assert not core.relay_tickets


def test_a_stranger_cannot_use_someone_elses_transfer(introduced):
    core, alice, a, bob, b, row = introduced
    core.ports.relay = 5002
    carol, c = login(core, "carol")
    for who, conn in ((carol, c), (alice, a)):  # not even the holder
        core.receive(who, wire.RelayRequest(row[3]))
        assert last_error(conn).code == "no_such_transfer"
    core.receive(bob, wire.RelayRequest("f" * 32))
    assert last_error(b).code == "no_such_transfer"
    # Nor whoever takes bob's name after him.
    core.receive(bob, wire.Logout())
    again, b2 = login(core, "bob")
    core.receive(again, wire.RelayRequest(row[3]))
    assert last_error(b2).code == "no_such_transfer"
    assert not core.relay_tickets and not c.of(wire.RelayOpen)


def test_transfers_expire(introduced):
    core, alice, a, bob, b, row = introduced
    core.ports.relay = 5002
    core.clock.advance(tracker.TRANSFER_SECONDS)  # no sweep yet: still expired
    core.receive(bob, wire.RelayRequest(row[3]))
    assert last_error(b).code == "no_such_transfer"
    core.sweep()
    assert core.tracker.transfers == {}


def test_a_holder_gone_mid_way_cannot_be_relayed_to(introduced):
    core, alice, a, bob, b, row = introduced
    core.ports.relay = 5002
    core.link_lost(alice)  # reconnecting: no link to call it on
    core.receive(bob, wire.RelayRequest(row[3]))
    assert last_error(b).code == "no_peers"
    settle(core)
    core.clock.advance(30)  # the resume grace: offline
    core.receive(bob, wire.RelayRequest(row[3]))
    assert last_error(b).code == "no_peers"
    assert listing(core, bob, b) == () and not core.relay_tickets


# --- for real ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_two_clients_share_and_fetch_over_loopback(chat_server, pins, files):
    alice = yield connect_client(chat_server, pins, "alice")
    bob = yield connect_client(chat_server, pins, "bob")
    m = files("song.ogg")
    alice.proto.send_message(wire.Share(m.canonical().decode(), 7123, "s1"))
    yield wait_until(lambda: bob.rec.of(wire.Offer) and alice.rec.of(wire.Offer))
    assert bob.rec.of(wire.Offer)[0].name == "song.ogg"
    bob.proto.send_message(wire.Fetch(m.file_id[:10], "f1"))
    yield wait_until(lambda: bob.rec.of(wire.Swarm) and alice.rec.of(wire.PeerRequest))
    ((name, host, port, transfer, key),) = bob.rec.of(wire.Swarm)[0].peers
    assert (name, host, port) == ("alice", "127.0.0.1", 7123)
    assert alice.rec.of(wire.PeerRequest)[0] == wire.PeerRequest(
        transfer, key, m.file_id, "bob", 0)


def test_an_offer_belongs_to_the_room_it_was_made_in(core, files):
    alice, a = login(core, "alice")
    bob, b = login(core, "bob", "127.0.0.2:1")
    carol, c = login(core, "carol", "127.0.0.3:1")
    for link in (alice, bob):
        core.receive(link, wire.Join("dev"))
    settle(core)
    m = files()
    core.receive(alice, wire.Share(m.canonical().decode(), 7000, "s1", "dev"))
    assert [o.room for o in b.of(wire.Offer)] == ["dev"] and not c.of(wire.Offer)
    assert [row[0] for row in listing(core, bob, b)] == [m.file_id]
    assert listing(core, carol, c) == ()  # not in #dev: not listed...
    fetch(core, carol, m.file_id)
    assert last_error(c).code == "no_such_file"  # ...and not fetched
    fetch(core, bob, m.file_id)
    assert b.of(wire.Swarm)[-1].file == m.file_id
    core.receive(carol, wire.Share(m.canonical().decode(), 7000, "s2", "dev"))
    assert last_error(c).code == "not_in_room"
