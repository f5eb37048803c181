"""The client's sharing node against a real server, in process."""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor

from spchat import wire
from spchat.p2p import node as node_mod
from spchat.p2p.node import SharingError, SharingNode

from conftest import connect_client, wait_until


@pytest_twisted.inlineCallbacks
def test_a_request_lost_with_the_connection_fails_instead_of_hanging(chat_server, pins,
                                                                     tmp_path):
    alice = yield connect_client(chat_server, pins, "alice")

    class CutAfterAsking(SharingNode):
        """The connection dies right after the request is written."""
        cut = True

        def _ask(self, kind, msg, file_id):
            d = super()._ask(kind, msg, file_id)
            if self.cut:
                self.cut = False
                self.client.proto.transport.abortConnection()  # unsent bytes go too
            return d

    node = CutAfterAsking(reactor, alice)
    node.start()
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(100_000))
    try:
        with pytest.raises(SharingError, match="connection to the server was lost"):
            yield node.share(source)
        yield wait_until(lambda: alice.connected)  # resumed, and usable again
        file_id, _ = yield node.share(source)
        assert file_id in node.seeds
        # /unshare takes a prefix of the id, like /get.
        assert node.unshare("ffffffffff" if not file_id.startswith("f") else "0000") is None
        assert node.unshare(file_id[:8].upper()) == file_id
        assert not node.seeds and node.unshare(file_id) is None
    finally:
        yield node.stop()
        yield alice.logout()


@pytest_twisted.inlineCallbacks
def test_a_file_once_downloaded_raises_no_error_on_a_new_login(tmp_path, pins):
    from conftest import OPEN_CLIENTS, server_config, start_service, stop_services

    first = start_service(server_config(tmp_path / "data"))
    port = first.address.port
    alice = yield connect_client(first, pins, "alice")
    bob = yield connect_client(first, pins, "bob", max_retries=20)
    sharer, downloader = SharingNode(reactor, alice), SharingNode(reactor, bob)
    sharer.start()
    downloader.start()
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(50_000))
    second = None
    try:
        file_id, _ = yield sharer.share(source)
        (tmp_path / "got").mkdir()
        fetch = yield downloader.fetch(file_id, tmp_path / "got")
        yield fetch.result.addTimeout(30, reactor)  # a stuck download fails, not hangs
        yield sharer.stop()
        yield alice.logout()  # the file is offered no more
        # The server restarts: bob's session is gone, he logs in anew and
        # says again what he holds, of a file that is no longer offered.
        errors_before, statuses = len(bob.rec.of(wire.Error)), len(bob.rec.statuses)
        OPEN_CLIENTS.remove(bob)  # bob is not logged out with it: he comes back
        yield stop_services(first)
        OPEN_CLIENTS.append(bob)
        second = start_service(server_config(tmp_path / "data", **{"tcp-port": str(port)}))
        yield wait_until(lambda: any(s.state == "connected"  # back, on a new connection
                                     for s in bob.rec.statuses[statuses:]), timeout=20)
        bob.list_rooms()  # a round trip: an answer to the holding would be in by its end
        rooms = len(bob.rec.of(wire.RoomList))
        yield wait_until(lambda: len(bob.rec.of(wire.RoomList)) > rooms)
        assert bob.rec.of(wire.Error)[errors_before:] == []
    finally:
        yield downloader.stop()
        if second is not None:
            yield stop_services(second)


@pytest_twisted.inlineCallbacks
def test_a_download_whose_peers_lack_a_piece_stops_and_says_why(chat_server, pins, tmp_path,
                                                                 monkeypatch):
    # The sharer's file changed on disk after it was shared: it no longer
    # gives piece 2, and stays connected.  The download must not wait for
    # it for ever: it asks the server for others, then stops, saying why.
    monkeypatch.setattr(node_mod, "SAVE_EVERY", 0.2)
    monkeypatch.setattr(node_mod, "ASK_AGAIN_AFTER", 0.2)
    monkeypatch.setattr(node_mod, "GIVE_UP_AFTER", 1.0)
    alice = yield connect_client(chat_server, pins, "alice")
    bob = yield connect_client(chat_server, pins, "bob")
    sharer, downloader = SharingNode(reactor, alice), SharingNode(reactor, bob)
    sharer.start()
    downloader.start()
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(4 * 256 * 1024))
    asked_again = []
    ask_again = downloader.ask_again
    downloader.ask_again = lambda fetch: (asked_again.append(fetch), ask_again(fetch))
    try:
        file_id, manifest = yield sharer.share(source)
        with open(source, "r+b") as f:
            f.seek(manifest.piece_range(2)[0] + 10)
            f.write(b"edited")
        (tmp_path / "got").mkdir()
        fetch = yield downloader.fetch(file_id, tmp_path / "got")
        with pytest.raises(SharingError) as stopped:
            yield fetch.result.addTimeout(20, reactor)
        assert str(stopped.value) == ("none of the connected peers (1) has had the piece "
                                      "still missing for 1 s; run it again to resume")
        assert asked_again  # it looked for someone else first
        assert fetch.swarm.download.have == {0, 1, 3}  # kept, to resume
    finally:
        yield downloader.stop()
        yield sharer.stop()


@pytest_twisted.inlineCallbacks
def test_an_offer_outlives_a_server_restart_and_reaches_who_comes_after(tmp_path, pins):
    from conftest import OPEN_CLIENTS, server_config, start_service, stop_services

    first = start_service(server_config(tmp_path / "data"))
    port = first.address.port
    alice = yield connect_client(first, pins, "alice", max_retries=50)
    sharer = SharingNode(reactor, alice)
    sharer.start()
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(50_000))
    second, sharing = None, [sharer]
    try:
        file_id, _ = yield sharer.share(source)
        OPEN_CLIENTS.remove(alice)  # alice is not logged out with it: she comes back
        yield stop_services(first)
        OPEN_CLIENTS.append(alice)
        second = start_service(server_config(tmp_path / "data", **{"tcp-port": str(port)}))
        yield wait_until(lambda: file_id in second.core.tracker.files, timeout=20)
        # bob comes after the restart: he is shown the offer, and gets the file.
        bob = yield connect_client(second, pins, "bob")
        yield wait_until(lambda: [o.file for o in bob.rec.of(wire.Offer)] == [file_id])
        downloader = SharingNode(reactor, bob)
        sharing.append(downloader)
        downloader.start()
        (tmp_path / "got").mkdir()
        fetch = yield downloader.fetch(file_id, tmp_path / "got")
        yield fetch.result.addTimeout(30, reactor)
        assert (tmp_path / "got" / "talk.bin").read_bytes() == source.read_bytes()
    finally:
        for node in sharing:
            yield node.stop()
        if second is not None:
            yield stop_services(second)
