"""The client's sharing node against a real server, in process."""

import os

import pytest
import pytest_twisted
from twisted.internet import reactor

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
