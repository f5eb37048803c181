"""A bare IRC connection for tests that need many of them, or one beside a
server in another process: it registers (or stays silent) and keeps
everything it is sent."""

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from conftest import wait_until


class IrcPeer(protocol.Protocol):
    """Registers as ``nick`` if given, or says nothing."""

    def __init__(self, nick=None):
        self.nick, self.data, self.open = nick, b"", True

    def connectionMade(self):
        if self.nick:
            self.send(f"NICK {self.nick}", "USER u 0 * :u")

    def send(self, *lines):
        self.transport.write(b"".join(line.encode() + b"\r\n" for line in lines))

    def dataReceived(self, data):
        self.data += data

    @property
    def welcomed(self):
        return b" 001 " in self.data

    def connectionLost(self, reason=None):
        self.open = False


@defer.inlineCallbacks
def irc_peer(port: int, source: str = "127.0.0.1", nick=None):
    """Connected from ``source`` and, with a ``nick``, registered."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                  bindAddress=(source, 0))
    peer = yield connectProtocol(endpoint, IrcPeer(nick))
    if nick:
        yield wait_until(lambda: peer.welcomed or not peer.open)
    return peer
