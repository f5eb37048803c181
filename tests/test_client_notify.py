"""Desktop notifications: notify-send spawned, never waited for; nothing
without it."""

from spchat.client.notify import BODY_CHARS, QUIET_SECONDS, DesktopNotifier


class Reactor:
    def __init__(self, fail=False):
        self.spawned, self.fail, self.now = [], fail, 100.0

    def seconds(self):
        return self.now

    def spawnProcess(self, proto, executable, args, env):
        if self.fail:
            raise OSError("no such file")
        self.spawned.append((executable, args))


def test_a_notification_is_spawned_with_its_title_and_a_short_body():
    reactor = Reactor()
    notifier = DesktopNotifier(reactor, which=lambda name: f"/usr/bin/{name}")
    assert notifier.notify("bob", "-x " + "a" * 500)
    ((executable, args),) = reactor.spawned
    assert executable == "/usr/bin/notify-send"
    assert args[:4] == [executable, "--app-name=spchat", "--", "bob"]
    assert len(args[4]) == BODY_CHARS and args[4].startswith("-x ")


def test_a_burst_is_one_notification():
    reactor = Reactor()
    notifier = DesktopNotifier(reactor, which=lambda name: f"/usr/bin/{name}")
    assert notifier.notify("bob", "one") and not notifier.notify("bob", "two")
    reactor.now += QUIET_SECONDS
    assert notifier.notify("bob", "three")
    assert [args[-1] for _, args in reactor.spawned] == ["one", "three"]


def test_without_notify_send_nothing_is_tried():
    reactor = Reactor()
    notifier = DesktopNotifier(reactor, which=lambda name: None)
    assert not notifier.available and not notifier.notify("bob", "hi")
    assert reactor.spawned == []


def test_a_notify_send_that_cannot_start_is_not_an_error():
    notifier = DesktopNotifier(Reactor(fail=True), which=lambda name: "/gone/notify-send")
    assert not notifier.notify("bob", "hi")


class View:
    def __init__(self, focused):
        self.is_focused, self.alerts = focused, 0

    def focused(self):
        return self.is_focused

    def alert(self):
        self.alerts += 1


class Notifier:
    def __init__(self):
        self.sent = []

    def notify(self, title, body):
        self.sent.append((title, body))


def test_the_window_alerts_and_notifies_only_when_not_looked_at(tmp_path):
    from twisted.internet import task

    from spchat.client.desktop import DesktopController

    controller = DesktopController(task.Clock(), None, tmp_path)
    controller.notifier = Notifier()
    client = controller.client = object()
    controller.view = View(focused=True)
    controller._attention(client, "bob", "psst")
    assert controller.view.alerts == 0 and controller.notifier.sent == []
    controller.view = View(focused=False)
    controller._attention(client, "bob", "psst")
    controller._attention(object(), "old", "a client left behind")  # not this window's
    assert controller.view.alerts == 1 and controller.notifier.sent == [("bob", "psst")]
