"""The line-mode client's commands and current room, without a server: a
fake protocol records what the client sends, the tests hand it the
server's messages and read what the terminal would show."""

import dataclasses
import io

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from spchat import wire
from spchat.client.cli import ROOM_WAIT_SECONDS, LineModeClient
from spchat.client.commands import NO_ROOM, ROOM_USAGE
from spchat.client.days import local_day
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient

from client_fakes import T, FakeProto, room, say, welcome


class FakeTerminal:
    def __init__(self):
        self.transport = self
        self.out = []
        self.closed = defer.Deferred()

    def write(self, data):
        self.out.extend(data.decode("utf-8").rstrip("\n").split("\n"))

    def loseConnection(self):
        self.closed.callback(None)


class Terminal:
    """A LineModeClient on a ChatClient on a fake connection."""

    def __init__(self, tmp_path):
        self.clock = Clock()
        self.client = ChatClient(self.clock, "127.0.0.1", 5000, "me", PinStore(tmp_path),
                                 presence=False)
        self.cli = LineModeClient(self.clock, self.client, err=io.StringIO())
        self.cli.today = lambda: local_day(T)  # the fakes' lines are today's
        self.terminal = self.cli._terminal = FakeTerminal()
        self.proto = FakeProto()
        self.client.channel_open(self.proto)

    def log_in(self, *rooms):
        self.server(welcome())
        self.cli.logged_in(self.client._welcome)
        self.server(*rooms)

    def server(self, *messages):
        for msg in messages:
            self.client.message_received(msg)

    def type(self, *lines):
        for line in lines:
            self.cli.line(line)

    def sent(self, kind=wire.Message):
        return [m for m in self.proto.sent[1:] if isinstance(m, kind)]  # after the login

    def said(self):
        """What the last lines printed say, without their time stamps."""
        return [line[11:] for line in self.terminal.out]


@pytest.fixture
def term(tmp_path):
    return Terminal(tmp_path)


@pytest.fixture
def lobby(term):
    """Logged in, put in #lobby (with alice and me) and then in #dev."""
    term.log_in(room("lobby", 5), room("dev", 2, topic="plans"))
    term.server(wire.Members("lobby", (("alice", "online", "owner"), ("Me", "online", "member"))))
    return term


def test_lines_typed_before_the_first_room_go_to_it_in_order(term):
    term.type("early one", "/msg bob psst", "early two")
    assert term.sent() == []
    term.log_in()
    assert term.sent() == []  # logged in, but in no room yet
    term.server(room("Lobby", 7), room("dev", 2))
    assert [(type(m).__name__, getattr(m, "room", None), m.text) for m in term.sent()] == [
        ("Say", "Lobby", "early one"), ("Direct", None, "psst"), ("Say", "Lobby", "early two")]
    assert term.cli.room == "Lobby"
    assert term.said() == ["* logged in as Me", "* you are in #Lobby", "* you are in #dev"]


def test_input_that_ends_at_once_still_goes_out_and_is_acknowledged(term):
    term.type("said at the very start")
    term.cli.end_of_input()  # a script's input: gone before the login
    term.log_in(room("lobby", 3))
    (line,) = term.sent(wire.Say)
    term.server(say(4, "lobby", "Me", line.text, line.cid))  # the acknowledgement
    assert term.sent()[-1] == wire.Logout()
    term.client.connection_lost(None, term.proto)
    assert term.cli.done.called and term.cli.done.result == 0


def test_with_no_room_at_all_the_lines_are_refused_after_a_while(term):
    term.log_in()
    term.type("anyone?")
    term.clock.advance(ROOM_WAIT_SECONDS)
    assert term.sent() == [] and term.cli.refused == 1
    assert term.said()[-1] == f"* error: {NO_ROOM}"


def test_join_makes_the_room_current_once_in(lobby):
    lobby.type("/join #Dev2 private", "hello dev2", "/who")
    (join,) = lobby.sent()  # the line waits for the room
    assert (join.room, join.private) == ("Dev2", True)
    lobby.server(room("dev2", 0), wire.Members("dev2", (("Me", "online", "owner"),)))
    assert lobby.sent(wire.Say)[0].room == "dev2" and lobby.cli.room == "dev2"
    assert lobby.said()[-3:] == ["* you are in #dev2", "* lines now go to #dev2",
                                 "* in #dev2: Me (online, owner)"]
    # Lines of the other rooms say where they are from.
    lobby.server(say(6, "lobby", "alice", "over here"), say(1, "dev2", "Me", "hello dev2"))
    assert lobby.said()[-2:] == ["#lobby alice: over here", "Me: hello dev2"]


def test_join_of_a_room_the_client_is_in_switches_at_once(lobby):
    lobby.type("/join #DEV", "to dev")
    join, line = lobby.sent()
    assert join == wire.Join("DEV") and (line.text, line.room) == ("to dev", "dev")
    assert lobby.said()[-1] == "* lines now go to #dev"


def test_a_refused_join_lets_the_lines_go_on_in_the_current_room(lobby):
    lobby.type("/join #secret", "still here")
    lobby.server(wire.Error("not_invited", "#secret is private: you need an invitation"))
    assert lobby.sent(wire.Say)[0].room == "lobby" and lobby.cli.room == "lobby"
    assert (lobby.cli.refused, lobby.cli.commands_refused) == (0, 1)  # a command, not a line


def test_a_join_refused_by_the_server_names_its_cid_and_nothing_waits(lobby):
    lobby.type("/join #secret", "still here")
    (join,) = lobby.sent()  # the line waits for the room, or for the refusal
    assert isinstance(join, wire.Join)
    lobby.server(wire.Error("not_invited", "#secret is private: you need an invitation",
                            join.cid))
    assert lobby.sent(wire.Say)[0].room == "lobby"  # at once, not after ROOM_WAIT_SECONDS


def test_an_overlong_room_name_is_refused_before_sending(lobby):
    lobby.type("/join #" + "x" * 65, "still here")
    assert [type(m) for m in lobby.sent()] == [wire.Say]  # no join; the line went on
    assert lobby.sent(wire.Say)[0].room == "lobby"
    assert "* error: a room name must be 1 to 32 characters long" in lobby.said()
    assert lobby.cli.commands_refused == 1 and lobby.cli.refused == 0


def test_part_and_being_kicked_move_on_to_another_room(lobby):
    lobby.type("/part #dev see you")
    lobby.type("/part")
    assert lobby.sent() == [wire.Part("dev", "see you"), wire.Part("lobby", None)]
    lobby.server(wire.RoomLeft("lobby", "kicked", "alice kicked you from #lobby: spam"))
    assert lobby.cli.room == "dev"
    assert lobby.said()[-2:] == ["* alice kicked you from #lobby: spam", "* lines now go to #dev"]
    lobby.server(wire.RoomLeft("dev", "part", "you left #dev"))
    assert lobby.cli.room is None and lobby.said()[-1] == (
        "* you are in no room now; /join #name to talk")
    lobby.type("hello?")
    assert lobby.said()[-1] == f"* error: {NO_ROOM}" and lobby.cli.refused == 1


def test_room_commands_act_on_the_current_room(lobby):
    lobby.type("/topic", "/topic a new topic", "/topic -delete", "/mode +t", "/mode -i",
               "/invite bob", "/kick bob spamming links", "/ban bob 10 flooding", "/ban carol",
               "/unban carol", "/mute bob", "/unmute bob", "/op bob", "/deop bob",
               "/owner bob", "/rooms", "/mode +k beer", "/mode -k", "/mode +l 5", "/mode -l",
               "/mode +m", "/voice bob", "/devoice bob")
    assert lobby.said()[-1] == "* #lobby has no topic"
    assert lobby.sent() == [
        wire.Topic("lobby", "a new topic"), wire.Topic("lobby", ""),
        wire.Mode("lobby", "topic_locked", True), wire.Mode("lobby", "private", False),
        wire.Moderate("lobby", "invite", "bob"),
        wire.Moderate("lobby", "kick", "bob", "spamming links"),
        wire.Moderate("lobby", "ban", "bob", "flooding", 10.0),
        wire.Moderate("lobby", "ban", "carol"), wire.Moderate("lobby", "unban", "carol"),
        wire.Moderate("lobby", "mute", "bob"), wire.Moderate("lobby", "unmute", "bob"),
        wire.Moderate("lobby", "op", "bob"), wire.Moderate("lobby", "deop", "bob"),
        wire.Moderate("lobby", "owner", "bob"), wire.ListRooms(),
        wire.Mode("lobby", "password", True, password="beer"), wire.Mode("lobby", "password", False),
        wire.Mode("lobby", "member_limit", True, limit=5),
        wire.Mode("lobby", "member_limit", False), wire.Mode("lobby", "moderated", True),
        wire.Moderate("lobby", "voice", "bob"), wire.Moderate("lobby", "devoice", "bob")]
    lobby.server(wire.RoomState("lobby", "a new topic", False, True, 5))
    lobby.type("/topic")
    assert lobby.said()[-1] == "* topic of #lobby: a new topic (topic locked)"
    lobby.server(wire.RoomState("lobby", "a new topic", False, True, 5, "beer", 9))
    lobby.type("/topic")
    assert lobby.said()[-1] == ("* topic of #lobby: a new topic (topic locked, needs a password, "
                                "at most 9 members)")


def test_join_takes_a_rooms_password(lobby):
    lobby.type("/join #club beer")
    joins = [dataclasses.replace(m, cid=None) for m in lobby.sent()]
    assert joins == [wire.Join("club", password="beer")]


@pytest.mark.parametrize("typed", [
    "/join", "/join #", "/join #a b c", "/mode", "/mode +x", "/mode +k", "/mode +k two words",
    "/mode +l 0", "/mode +l x", "/mode -l 5", "/kick", "/kick #dev",
    "/ban bob 0 why", "/invite bob now", "/mute", "/rooms please", "/part #",
])
def test_bad_usage_prints_a_usage_line_and_sends_nothing(lobby, typed):
    lobby.type(typed)
    assert lobby.sent() == [] and lobby.cli.refused == 0
    word = typed.split()[0]
    assert lobby.said()[-1].startswith(f"* usage: {ROOM_USAGE[word]}")


def test_who_and_history_are_the_current_rooms(lobby):
    lobby.type("/who")
    assert lobby.said()[-1] == "* in #lobby: alice (online, owner), Me (online)"
    lobby.server(wire.HistoryEnd(1, False, "#lobby"))  # on join: not asked for
    lobby.type("/history")
    assert lobby.sent() == [wire.HistoryRequest(1, 50, "#lobby")]
    lobby.server(wire.HistoryEnd(1, False, "#lobby"))
    assert lobby.said()[-1] == "* no older messages"
    lobby.type("/history @bob")
    lobby.server(wire.HistoryEnd(1, False, "@bob"))
    assert lobby.said()[-1] == "* no older messages in @bob"
    lobby.type("/history bob")
    assert lobby.said()[-1] == "* usage: /history [#room|@name]"


def test_room_list_and_notices_of_no_room(lobby):
    lobby.server(wire.RoomList((("lobby", 2, ""), ("dev", 5, "plans"))),
                 wire.Notice("", T, "invite", "alice invited you to #secret; /join #secret "
                             "to accept"))
    assert lobby.said()[-4:] == ["* rooms:", "| #lobby (2 members)", "| #dev (5 members): plans",
                                 "* alice invited you to #secret; /join #secret to accept"]


def test_help_lists_the_room_commands(lobby):
    lobby.type("/help")
    for usage in ROOM_USAGE.values():
        assert usage in lobby.said()[-1]


def test_a_kick_says_which_lines_will_not_be_sent_and_why(lobby):
    lobby.type("are you there?", "hello?")
    lobby.server(wire.Bye("kicked", "you were kicked: spam"))
    lobby.client.connection_lost(None, lobby.proto)
    assert lobby.cli.err.getvalue() == (
        "spchat: 2 lines you typed were not sent (you were kicked: spam): "
        "“are you there?”, “hello?”\n"
        "spchat: disconnected: you were kicked: spam\n")
    lobby.type("still here")  # typed while the terminal closes: refused with the reason
    assert lobby.said()[-1] == ("* error: not sent: you were kicked: spam; the session is "
                                "over, connect again to send it")


def test_lines_typed_after_giving_up_wait_for_reconnect_or_are_said_lost(lobby):
    lobby.client.connection_lost("connection lost", lobby.proto)
    lobby.client._give_up("could not reconnect after 3 attempts: refused", "manual")
    lobby.type("anyone?")
    assert lobby.said()[-1] == "* not sent yet: offline; /reconnect sends it"
    lobby.type("/quit")
    assert lobby.cli.done.called and lobby.cli.done.result == 1
    assert lobby.cli.err.getvalue() == (
        "spchat: 1 line you typed was not sent (could not reconnect after 3 attempts: "
        "refused): “anyone?”\n")


def test_reconnect_while_connected_says_so(lobby):
    lobby.type("/reconnect")
    assert lobby.said()[-1] == "* already connected to 127.0.0.1:5000"
    assert lobby.client.status.state == "connected"


def test_refused_commands_are_not_called_refused_messages(lobby):
    for _ in range(3):
        lobby.type("/register short")
        lobby.server(wire.Error("bad_password", "a password has 8 to 1024 characters"))
    lobby.type("hello", "/msg nobody hi")
    direct = lobby.sent(wire.Direct)[-1]
    lobby.server(wire.Error("unknown_user", "nobody called 'nobody' is here", direct.cid))
    lobby.server(say(6, "lobby", "Me", "hello", lobby.sent(wire.Say)[-1].cid))
    lobby.type("/quit")
    assert lobby.sent()[-1] == wire.Logout()
    lobby.client.connection_lost(None, lobby.proto)
    assert lobby.cli.done.called and lobby.cli.done.result == 1
    assert lobby.cli.err.getvalue() == (
        "spchat: 1 message refused\n"
        "spchat: 3 commands refused (said above)\n")


def test_quit_while_reconnecting_leaves_at_once_saying_what_is_lost(lobby):
    lobby.client.connection_lost("connection lost", lobby.proto)
    assert lobby.client.status.state == "reconnecting"
    lobby.type("anyone?", "/quit")
    # Not a second of waiting for a connection that is away.
    assert lobby.cli.done.called and lobby.cli.done.result == 1
    assert lobby.cli.err.getvalue() == (
        "spchat: 1 line you typed was not sent (offline: connection lost): “anyone?”\n")
