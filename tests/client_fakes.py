"""The server's side of a client session, by hand: a fake protocol that
records what the client sends, and the server's messages to hand it."""

from spchat import wire

T = 1_700_000_000_000


class FakeProto:
    """What ChatClient uses of a ChatClientProtocol."""

    is_open = True

    def __init__(self, max_message_bytes=8192):
        self.server_hello = wire.ServerHello("test", max_message_bytes)
        self.sent = []
        self.hung_up = False

    def send_message(self, msg):
        self.sent.append(msg)

    def hang_up(self):
        self.hung_up = True

    def of(self, kind):
        return [m for m in self.sent if isinstance(m, kind)]


def room(name, last_seq=0, topic="", private=False, locked=False):
    return wire.RoomState(name, topic, private, locked, last_seq)


def say(seq, room_name, sender="bob", text="hi", cid=None, history=False):
    return wire.RoomMessage(seq, T + seq, room_name, sender, text, cid, history)


def dm(seq, sender, to, text="psst", cid=None, history=False):
    return wire.DirectMessage(seq, T + seq, sender, to, text, cid, history)


def welcome(server_time=T, resumed=False, max_in_flight=10):
    return wire.Welcome("Me", "sess", "tok", ("lobby",), server_time, 0, 2000, max_in_flight, resumed)
