"""The client's keepalive, on a fake clock: sent only after a silence of
``keepalive_ms``, started by the welcome and stopped with the connection."""

from twisted.internet.task import Clock

from spchat import wire
from spchat.client.keepalive import Keepalive
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient

from client_fakes import FakeProto


class TimedProto(FakeProto):
    """The fake protocol, noting when each message went."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.times: list[float] = []
        self.last_sent = clock.seconds()

    def send_message(self, msg):
        super().send_message(msg)
        self.times.append(self.clock.seconds())
        self.last_sent = self.clock.seconds()

    def keepalives(self):
        return [t for t, msg in zip(self.times, self.sent) if isinstance(msg, wire.Keepalive)]


def test_a_keepalive_goes_only_after_a_whole_interval_of_silence():
    clock = Clock()
    proto = TimedProto(clock)
    keepalive = Keepalive(clock, proto, 20)
    clock.advance(15)
    proto.send_message(wire.Who())  # something else said: no keepalive due yet
    clock.advance(10)
    assert proto.keepalives() == []
    clock.advance(10)
    assert proto.keepalives() == [35]
    for _ in range(3):
        clock.advance(20)
    assert proto.keepalives() == [35, 55, 75, 95]  # never more than 20 s silent
    keepalive.stop()
    clock.advance(100)
    assert proto.keepalives() == [35, 55, 75, 95] and not clock.getDelayedCalls()


def test_the_welcome_starts_it_and_a_lost_connection_stops_it(tmp_path):
    clock = Clock()
    client = ChatClient(clock, "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False,
                        max_retries=0)  # no redial here
    proto = TimedProto(clock)
    client.channel_open(proto)
    client.message_received(wire.Welcome("me", "s", "t", ("lobby",), 0, 0, 2000, 10,
                                         keepalive_ms=40_000))
    clock.advance(40)
    assert proto.keepalives() == [40]
    client.connection_lost("connection lost", proto)
    assert client.keepalive is None
    clock.advance(100)
    assert proto.keepalives() == [40]  # nothing more on the old connection


def test_no_keepalive_when_the_server_needs_none(tmp_path):
    clock = Clock()
    client = ChatClient(clock, "127.0.0.1", 5000, "me", PinStore(tmp_path), presence=False)
    proto = TimedProto(clock)
    client.channel_open(proto)
    client.message_received(wire.Welcome("me", "s", "t", ("lobby",), 0, 0, 2000, 10))
    clock.advance(3600)
    assert client.keepalive is None and proto.keepalives() == []
