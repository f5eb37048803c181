"""The desktop client's presenter, with a real (unconnected) ChatClient."""

import pytest

from spchat import wire
from spchat.client.pins import PinStore
from spchat.client.presenter import ROOM, ChatPresenter, name_colour
from spchat.client.session import ChatClient, Status

T = 1_700_000_000_000


@pytest.fixture
def chat(tmp_path):
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    client.message_received(wire.Welcome("me", "s", "t", "lobby", T, 0, 0, 2000, 10))
    presenter = ChatPresenter(client)
    client.on_event = presenter.event  # as the desktop controller wires it
    presenter.event(wire.Members("lobby", (("me", "online"), ("bob", "idle"))))
    return presenter


def test_own_message_is_pending_then_confirmed_in_place(chat):
    chat.send("hello")
    (line,) = chat.lines()
    assert (line.text, line.own, line.pending) == ("hello", True, True)
    chat.event(wire.RoomMessage(7, T, "lobby", "bob", "hi"))
    chat.event(wire.RoomMessage(6, T, "lobby", "me", "hello", line.cid))  # the ack
    lines = chat.lines()
    assert [(l.text, l.pending, l.seq) for l in lines] == [("hello", False, 6), ("hi", False, 7)]


def test_typed_while_reconnecting_stays_pending(chat):
    chat.status(Status("reconnecting", 2, 5, 6.0, "connection lost"))
    assert chat.status_text() == (
        "reconnecting (attempt 2 of 5), next try in 6 s — connection lost")
    chat.send("are you there?")
    assert chat.lines()[-1].pending
    chat.status(Status("connected", resumed=True))
    assert chat.status_text() == "connected as me"


def test_refused_message_says_why(chat):
    chat.send("x" * 10)
    cid = chat.lines()[-1].cid
    chat.event(wire.Error("too_long", "the message is too long", cid))
    line = chat.lines()[-1]
    assert line.kind == "error" and not line.pending
    assert "not sent: the message is too long" in line.text


def test_direct_messages_have_their_own_view_and_unread_counts(chat):
    chat.event(wire.DirectMessage(3, T, "bob", "me", "psst"))
    chat.event(wire.DirectMessage(4, T, "bob", "me", "still there?"))
    assert chat.conversations() == [(ROOM, 0), ("bob", 2)]
    assert [l.text for l in chat.lines(ROOM)] == []
    chat.open("BOB")  # a double-click, in any case
    assert chat.active == "bob" and chat.conversations() == [(ROOM, 0), ("bob", 0)]
    chat.send("yes")
    cid = chat.lines()[-1].cid
    chat.event(wire.DirectMessage(5, T, "me", "bob", "yes", cid))
    assert [(l.text, l.pending) for l in chat.lines()] == [
        ("psst", False), ("still there?", False), ("yes", False)]
    chat.open(ROOM)
    chat.event(wire.RoomMessage(6, T, "lobby", "bob", "in the room"))
    assert chat.conversations() == [(ROOM, 0), ("bob", 0)]


def test_msg_command_opens_the_conversation(chat):
    chat.send("/msg Bob lunch?")
    assert chat.active == "bob" and chat.lines()[-1].text == "lunch?"
    chat.send("/msg nobodytext")
    assert chat.lines()[-1].kind == "error"


def test_history_is_marked_and_kept_in_order(chat):
    chat.event(wire.RoomMessage(10, T, "lobby", "bob", "new"))
    chat.event(wire.RoomMessage(2, T, "lobby", "bob", "old", history=True))
    chat.event(wire.RoomMessage(5, T, "lobby", "bob", "older page", history=True))
    assert [(l.text, l.history) for l in chat.lines()] == [
        ("old", True), ("older page", True), ("new", False)]


def test_notices_errors_members_and_offline(chat):
    chat.event(wire.Notice("lobby", T, "join", "carol joined"))
    chat.event(wire.Members("lobby", (("carol", "online"), ("me", "online"))))
    assert chat.members == (("carol", "online"), ("me", "online"))
    assert chat.lines()[-1].kind == "notice"
    chat.event(wire.Bye("kicked", "you were kicked: spam"))
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    assert chat.status_text() == "offline: you were kicked: spam"
    assert not chat.can_reconnect
    assert chat.member_rows() == []  # not live any more: not shown as if it were
    assert chat.lines()[-1].notice == "kicked"  # styled as an alert
    chat.status(Status("offline", reason="could not reconnect", recovery="manual"))
    assert chat.can_reconnect


def test_names_keep_their_colour():
    assert name_colour("Alice") == name_colour("alice")
    assert len({name_colour(n) for n in ("a", "b", "c", "d", "e", "f")}) > 1


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_reconnect_countdown_ticks_and_the_button_follows(tmp_path):
    clock = FakeClock()
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path))
    chat = ChatPresenter(client, clock=clock)
    chat.status(Status("reconnecting", 1, 3, 4.0, "connection lost"))
    assert "next try in 4 s" in chat.status_text() and chat.can_reconnect
    clock.now += 1.5
    assert "next try in 3 s" in chat.status_text()
    clock.now += 3
    assert "trying now…" in chat.status_text()
    chat.status(Status("offline", reason="idle for 30 s", recovery="on_activity"))
    assert chat.status_text() == "offline: idle for 30 s (sending a message reconnects)"
    assert chat.can_reconnect
    chat.status(Status("connected"))
    assert not chat.can_reconnect


def test_older_history_is_asked_once_at_a_time_and_not_past_the_start(chat):
    sent = []
    chat.client._request = sent.append  # what would go to the server
    assert chat.reached_top() is True
    assert chat.reached_top() is False  # a page is on its way: scrolling more asks nothing
    assert [type(m).__name__ for m in sent] == ["HistoryRequest"]
    chat.event(wire.RoomMessage(3, T, "lobby", "bob", "third", history=True))
    chat.client.message_received(wire.HistoryEnd(3, True))
    assert chat.reached_top() is True and sent[-1].before == 3
    chat.client.message_received(wire.HistoryEnd(1, False))  # the very first message was reached
    assert chat.reached_top() is False
    chat.send("/history")
    assert chat.lines()[-1].text == "no older messages" and len(sent) == 2


def test_commands_typed_in_the_entry(chat):
    sent = []
    chat.client._request = sent.append
    chat.send("/help")
    assert chat.lines()[-1].notice == "help" and "/msg NAME TEXT" in chat.lines()[-1].text
    chat.send("/register s3cret")
    assert type(sent[-1]).__name__ == "Register" and sent[-1].password == "s3cret"
    chat.send("/password s3cret n3w")
    assert type(sent[-1]).__name__ == "ChangePassword"
    chat.send("/password onlyone")
    assert chat.lines()[-1].text == "usage: /register PASSWORD, /password OLD NEW"
    chat.send("/who")
    assert chat.lines()[-1].text == "in the room: me, bob (idle)"
    chat.send("/frobnicate")
    assert chat.lines()[-1].text == "unknown command /frobnicate; /help lists them"
    chat.send("/reconnect")
    assert chat.lines()[-1].text == "cannot reconnect now: connected as me"
    chat.send("//shrug")  # a line that starts with / is said with one /
    assert (chat.lines()[-1].text, chat.lines()[-1].pending) == ("/shrug", True)
    assert len(sent) == 2  # nothing else reached the server


def test_too_long_is_refused_before_sending(chat):
    chat.client.max_message_bytes = 10
    chat.send("x" * 11)
    line = chat.lines()[-1]
    assert line.kind == "error" and "limit is 10 bytes" in line.text
    assert not chat.client.outbox


def test_member_rows_mark_me_and_states(chat):
    chat.event(wire.Members("lobby", (("bob", "idle"), ("Me", "online"), ("eve", "reconnecting"))))
    assert chat.member_rows() == [("bob", "idle", False), ("Me", "online", True),
                                  ("eve", "reconnecting", False)]
    chat.event(wire.DirectMessage(3, T, "bob", "me", "psst"))
    chat.event(wire.DirectMessage(4, T, "eve", "me", "hey"))
    assert chat.unread_total() == 2


def test_member_updates_keep_the_list_in_the_servers_order(tmp_path):
    from spchat.client.session import updated_members

    members = (("alice", "online"), ("Carol", "idle"))
    members = updated_members(members, "bob", "online")
    assert members == (("alice", "online"), ("bob", "online"), ("Carol", "idle"))
    members = updated_members(members, "CAROL", "gone")
    assert members == (("alice", "online"), ("bob", "online"))
    assert updated_members(members, "bob", "reconnecting")[1] == ("bob", "reconnecting")
    # Fed to a client, an update reaches its listeners as the whole new list.
    got = []
    client = ChatClient(None, "127.0.0.1", 5000, "me", PinStore(tmp_path), on_event=got.append)
    client.message_received(wire.Members("lobby", (("me", "online"),)))
    client.message_received(wire.MemberUpdate("lobby", "zed", "online"))
    assert got[-1] == wire.Members("lobby", (("me", "online"), ("zed", "online")))
    assert client.members == got[-1].members


def test_a_user_called_lobby_is_a_person_not_the_room(chat):
    chat.event(wire.DirectMessage(3, T, "lobby", "me", "psst"))
    assert [l.text for l in chat.lines(ROOM)] == []
    assert chat.conversations() == [(ROOM, 0), ("lobby", 1)]
    chat.open("lobby")
    chat.send("a private answer")
    assert list(chat.client.outbox.values())[-1] == wire.Direct(
        "lobby", "a private answer", chat.lines()[-1].cid)


def test_a_dropped_connection_does_not_block_older_history_for_good(chat):
    sent = []
    chat.client._request = sent.append
    assert chat.reached_top()
    chat.status(Status("reconnecting", 1, 3, 1.0, "connection lost"))  # the page is lost
    chat.status(Status("connected", resumed=True))
    assert chat.reached_top() and len(sent) == 2


def test_a_direct_message_typed_with_other_capitals_is_confirmed(chat):
    chat.event(wire.Members("lobby", ()))  # nobody listed: "BOB" stays as typed
    chat.send("/msg BOB hi")
    assert chat.active == "BOB" and chat.lines()[-1].pending
    cid = chat.lines()[-1].cid
    chat.event(wire.DirectMessage(9, T, "me", "bob", "hi", cid))
    assert chat.active == "bob"
    assert [(l.text, l.pending) for l in chat.lines()] == [("hi", False)]
    assert [v for v, _ in chat.conversations()] == [ROOM, "bob"]


def test_after_a_kick_nothing_stays_sending(chat):
    chat.send("one last word")
    chat.status(Status("offline", reason="you were kicked: spam", recovery="never"))
    line = chat.lines()[-1]
    assert not line.pending and line.kind == "error"
    assert line.text == "one last word  (not sent: you were kicked: spam)"


def test_a_member_list_cut_off_with_its_connection_is_not_glued_to_the_next(tmp_path):
    from twisted.internet.task import Clock

    client = ChatClient(Clock(), "127.0.0.1", 5000, "me", PinStore(tmp_path))
    client.message_received(wire.Members("lobby", (("old1", "online"), ("old2", "online")),
                                         more=True))
    client.connection_lost("connection lost")  # before the last part came
    client.message_received(wire.Members("lobby", (("me", "online"),)))
    assert client.members == (("me", "online"),)


# --- file sharing: offers, Download, /share /files /get ------------------------


class FakeFetch:
    def __init__(self, file_id, name, size):
        from twisted.internet import defer

        self.file_id, self.size, self.done = file_id, size, 0
        self.manifest = type("M", (), {"name": name, "size": size})()
        self.result = defer.Deferred()
        self.path = None

    def progress(self):
        return {"name": self.manifest.name, "file": self.file_id, "done": self.done,
                "size": self.size, "rate": 1048576.0, "peers": 1, "eta": 2.0, "seconds": 1.0}

    def summary(self):
        return {**self.progress(), "path": str(self.path), "fetched": self.size,
                "from": {"alice": {"path": "direct", "received": self.size, "bad_pieces": 0,
                                   "dropped": ""}}}


class FakeSharing:
    """What the presenter uses of a SharingNode; each request's Deferred kept."""

    def __init__(self):
        self.fetches, self.seeds, self.asked, self.listed = {}, {}, [], 0

    def fetch(self, ref, directory):
        from twisted.internet import defer

        d = defer.Deferred()
        self.asked.append(("fetch", ref, str(directory), d))
        return d

    def share(self, path):
        from twisted.internet import defer

        d = defer.Deferred()
        self.asked.append(("share", path, None, d))
        return d

    def list_files(self):
        self.listed += 1


FILE = "ab" * 32


@pytest.fixture
def sharing_chat(chat):
    chat.sharing = FakeSharing()
    chat.download_dir = "/tmp/dl"
    chat.changes = []
    chat.on_change = lambda: chat.changes.append(1)
    return chat


def test_an_offer_is_a_line_of_its_own_with_the_file_id(sharing_chat):
    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 12 * 1048576, "alice"))
    chat.event(wire.Offer("lobby", T, "cd" * 32, "mine.txt", 10, "Me"))
    offer, own = chat.lines(ROOM)
    assert (offer.kind, offer.sender, offer.text, offer.file, offer.own, offer.download) == (
        "offer", "alice", "shares talk.mp4 (12.0 MiB)", FILE, False, "")
    assert offer.colour == name_colour("alice")
    assert (own.kind, own.own, own.text) == ("offer", True, "shares mine.txt (10 bytes)")
    # A name that could fake a line is shown harmless.
    chat.event(wire.Offer("lobby", T, "ef" * 32, "evil\nbob: hi", 1, "alice"))
    assert "\n" not in chat.lines()[-1].text


def test_download_runs_with_a_progress_row_and_ends_saved(sharing_chat):
    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 2048, "alice"))
    chat.download(FILE)
    ((kind, ref, directory, d),) = chat.sharing.asked
    assert (kind, ref, directory) == ("fetch", FILE, "/tmp/dl")
    assert chat.lines()[-1].download == "running"  # the button is disabled
    (row,) = chat.download_rows()
    assert (row.fraction, row.text) == (0.0, "talk.mp4: asking the server for peers…")
    chat.download(FILE)  # a second click while it runs does nothing
    assert len(chat.sharing.asked) == 1
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.fetches[FILE] = fetch
    d.callback(fetch)
    fetch.done = 1024
    (row,) = chat.download_rows()
    assert row.fraction == 0.5
    assert row.text.startswith("talk.mp4: 50% (1.0 KiB of 2.0 KiB) at 1.0 MiB/s from 1 peer")
    fetch.path = "/tmp/dl/talk.mp4"
    fetch.done = 2048
    fetch.result.callback(fetch.path)
    assert chat.download_rows() == []
    offer, saved = chat.lines()
    assert offer.download == "saved"
    assert saved.kind == "notice" and saved.notice == "saved"
    assert saved.text.startswith("saved /tmp/dl/talk.mp4 (2.0 KiB in ")
    assert chat.changes  # the window is told without any event from the server
    chat.download(FILE)  # saved already: not again
    assert len(chat.sharing.asked) == 1
    # An offer of a file already saved shows it at once.
    chat.event(wire.Offer("lobby", T + 1, FILE, "talk.mp4", 2048, "bob"))
    assert chat.lines()[-1].download == "saved"


def test_a_failed_download_says_why_in_red_and_can_be_tried_again(sharing_chat):
    from spchat.p2p.node import SharingError

    chat = sharing_chat
    chat.event(wire.Offer("lobby", T, FILE, "talk.mp4", 2048, "alice"))
    chat.download(FILE)
    chat.sharing.asked[0][3].errback(SharingError("nobody has that file online"))
    offer, error = chat.lines()
    assert offer.download == "failed"
    assert (error.kind, error.text) == ("error", "cannot get talk.mp4: nobody has that file online")
    assert chat.download_rows() == []
    chat.download(FILE)  # tried again
    fetch = FakeFetch(FILE, "talk.mp4", 2048)
    chat.sharing.asked[1][3].callback(fetch)
    fetch.result.errback(SharingError("no peer could be reached"))
    assert chat.lines()[-1].text == "talk.mp4: no peer could be reached"
    assert chat.lines()[0].download == "failed" and chat.download_rows() == []


def test_share_files_and_get_typed_in_the_entry(sharing_chat):
    from spchat.p2p.node import SharingError

    chat = sharing_chat
    chat.send("/share /tmp/my talk.mp4")  # a path with a space
    kind, path, _, d = chat.sharing.asked[-1]
    assert (kind, path) == ("share", "/tmp/my talk.mp4")
    d.callback((FILE, type("M", (), {"name": "my talk.mp4", "size": 5 * 1024})()))
    assert chat.lines()[-1].text == f"sharing my talk.mp4 (5.0 KiB) as {FILE[:12]}"
    chat.send("/share /nope")
    chat.sharing.asked[-1][3].errback(SharingError("/nope is not a file"))
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "cannot share /nope: /nope is not a file")
    chat.send("/files")
    assert chat.sharing.listed == 1
    chat.event(wire.FileList(((FILE, "talk.mp4", 2048, "alice", 2),)))
    assert [l.text for l in chat.lines()[-2:]] == [
        "offered files:", f"{FILE[:12]}  talk.mp4 (2.0 KiB) from alice, 2 peers online"]
    chat.event(wire.FileList(()))
    assert chat.lines()[-1].text == "no files are offered"
    chat.send("/get abab /tmp/elsewhere")
    assert chat.sharing.asked[-1][:3] == ("fetch", "abab", "/tmp/elsewhere")
    assert len(chat.download_rows()) == 1
    chat.send("/get")
    assert chat.lines()[-1].text == "usage: /get ID [DIR]"
    chat.sharing = None
    chat.send("/files")
    assert (chat.lines()[-1].kind, chat.lines()[-1].text) == (
        "error", "file sharing is off in this window")
