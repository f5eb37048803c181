"""Nothing lost, nothing twice, from IRC too: an IRC client among spchat
clients, every connection cut again and again by a proxy; after each
reconnect the IRC client asks CHATHISTORY for what came after the last line
it is sure of, as modern IRC clients do."""

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor

from spchat.irc.lines import parse

from conftest import connect_client, server_config, start_service, stop_services, wait_until
from cutting_proxy import CuttingProxy

ROOMS = ("lobby", "dev")
PER_CLIENT = 150


class CatchingUp(protocol.Protocol):
    """One connection of the IRC reader: register, join, ask for the rest."""

    def __init__(self, reader):
        self.reader = reader
        self.buffer = b""

    def connectionMade(self):
        self.send("CAP LS 302", "CAP REQ :batch draft/chathistory server-time message-tags",
                  "CAP END", "NICK reader", "USER reader 0 * :reader")

    def send(self, *lines):
        self.transport.write(b"".join(line.encode() + b"\r\n" for line in lines))

    def dataReceived(self, data):
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\r\n")
        for raw in complete:  # only whole lines count: a cut one never arrived
            self.line(parse(raw))

    def line(self, line):
        reader = self.reader
        if line.command == "433":  # the last connection's session is not over yet
            reactor.callLater(0.05, self.send, "NICK reader")
        elif line.command == "001":
            self.send("JOIN " + ",".join("#" + room for room in ROOMS))
        elif line.command == "366":
            room = line.params[1][1:]
            self.send(f"CHATHISTORY AFTER #{room} msgid=#{room}/{reader.sure_of(room)} 100")
        elif line.command == "BATCH" and line.params[0].startswith("-"):
            for room in ROOMS:  # a full page: there may be more
                self.send(f"CHATHISTORY AFTER #{room} msgid=#{room}/{reader.sure_of(room)} 100")
        elif line.command == "PRIVMSG" and "msgid" in line.tags:
            reader.got(line.tags["msgid"], line.params[1])

    def connectionLost(self, reason):
        self.reader.lost()


class Reader:
    """The IRC client across its connections: every line by msgid."""

    def __init__(self, port):
        self.port = port
        self.lines = {}  # msgid -> text
        self.deliveries = 0
        self.connections = 0
        self.stopped = False

    def connect(self):
        self.connections += 1
        protocol.ClientCreator(reactor, CatchingUp, self).connectTCP("127.0.0.1", self.port) \
            .addErrback(lambda _: self.lost())

    def lost(self):
        if not self.stopped:
            reactor.callLater(0.01, self.connect)

    def got(self, msgid, text):
        self.deliveries += 1
        self.lines[msgid] = text

    def sure_of(self, room):
        """The room's number up to which every line is here."""
        n = 0
        while f"#{room}/{n + 1}" in self.lines:
            n += 1
        return n


@pytest.fixture
def fast_server(tmp_path):
    service = start_service(server_config(
        tmp_path / "data", irc="tcp:0:interface=127.0.0.1",
        **{"flood-burst": "10000", "flood-rate": "100000", "flood-queue": "10000",
           "default-rooms": "lobby,dev", "history-on-join": "0"}))
    yield service
    stop_services(service)


@pytest_twisted.inlineCallbacks
def test_an_irc_client_gets_every_line_through_a_cutting_proxy(fast_server, pins):
    chat_proxy = CuttingProxy(fast_server.address.port, seed=20261201)
    irc_proxy = CuttingProxy(fast_server.irc_port.getHost().port, seed=1201, low=1500,
                             high=12000)
    listening = [reactor.listenTCP(0, p, interface="127.0.0.1") for p in (chat_proxy, irc_proxy)]
    reader = Reader(listening[1].getHost().port)
    try:
        reader.connect()
        writers = []
        for name in ("alice", "bob"):
            writers.append((yield connect_client(
                fast_server, pins, name, port=listening[0].getHost().port,
                reconnect_delay=0.01, max_retries=10_000, presence=False)))
        for i in range(PER_CLIENT):
            for client in writers:
                client.say(f"{client.name} {i}", ROOMS[i % 2])
        total = PER_CLIENT * len(writers)
        yield wait_until(lambda: all(not c.outbox for c in writers), timeout=60)
        yield wait_until(lambda: len(reader.lines) == total, timeout=60)
    finally:
        reader.stopped = True
        for port in listening:
            yield port.stopListening()
        for proxy in (chat_proxy, irc_proxy):
            for pipe in list(proxy.pipes):
                pipe.transport.abortConnection()
    per_room = total // len(ROOMS)
    assert set(reader.lines) == {f"#{room}/{n}" for room in ROOMS
                                 for n in range(1, per_room + 1)}  # all of them, no gaps
    expected = {f"{c.name} {i}" for c in writers for i in range(PER_CLIENT)}
    assert sorted(reader.lines.values()) == sorted(expected)  # each text under one number
    for msgid, text in reader.lines.items():  # and in the room it was said in
        assert ROOMS[int(text.split()[1]) % 2] == msgid.split("/")[0][1:]
    stored = []
    for room in ROOMS:
        stored += [r.text for r in (yield fast_server.store.after("#" + room, 0, 1000))]
    assert sorted(stored) == sorted(expected)  # saved once each
    assert irc_proxy.cuts >= 5 and reader.connections > 5, (irc_proxy.cuts, reader.connections)
    print(f"IRC reader: {reader.connections} connections, {irc_proxy.cuts} cuts, "
          f"{reader.deliveries} lines received for {total} distinct")
