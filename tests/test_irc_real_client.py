"""A real IRC client against the gateway: Debian's irssi, driven in tmux as
a person would (keys in, the screen read back), beside a spchat line-mode
client, both on a real ``twistd -n spchat``."""

import re
import shutil
import subprocess
import threading
import time

import pytest

from conftest import ServerProcess, client_command, subprocess_env
from local_servers import missing as needs

PASSWORD = "correct horse battery"
# Both clients show times in this zone, not UTC: equal times mean each
# turned the server's UTC stamp into the same local time.
TZ = "XYZ-05:45"
TIMEOUT = 30.0  # s, for a loaded machine; a pass takes a few
EXITED = "irssi exited with status"

IRSSI_CONFIG = """\
servers = (
  { address = "127.0.0.1"; port = "{port}"; chatnet = "spchat"; use_tls = "no";
    autoconnect = "yes"; }
);
chatnets = {
  spchat = {
    type = "IRC";
    nick = "{nick}";
    sasl_mechanism = "plain";
    sasl_username = "{nick}";
    sasl_password = "{password}";
  };
};
settings = {
  core = {
    nick = "{nick}";
    user_name = "{nick}";
    real_name = "spchat test";
    timestamp_format = "%H:%M:%S";
  };
  # irssi's own flood control would pace what it sends after the first
  # five lines to one every 2.2 s.
  "irc/core" = { cmd_queue_speed = "0"; };
  # Channels in the window that is open: one window, one screen to read.
  "fe-common/core" = { autocreate_windows = "no"; };
};
"""


def poll(what, read, timeout=TIMEOUT):
    """``read()`` again and again until it gives something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def tools():
    missing = [tool for tool in ("irssi", "tmux") if shutil.which(tool) is None]
    if missing:
        needs(f"no {' and '.join(missing)}: apt-get install irssi tmux to run this test")


@pytest.fixture
def server(tmp_path, tools):
    server = ServerProcess(tmp_path, "--irc", "tcp:0:interface=127.0.0.1")
    yield server
    server.stop()


class Irssi:
    """irssi in a detached tmux session, on a tmux server of its own."""

    def __init__(self, home):
        self.home = home
        # Its own tmux server, whose socket goes with the test's directory.
        self.socket = str(home.parent / "tmux.sock")
        self.started = False
        self.last_screen = ""  # the last one read while irssi ran

    def start(self, port, nick, password):
        self.home.mkdir(exist_ok=True)
        (self.home / "config").write_text(
            IRSSI_CONFIG.replace("{port}", str(port)).replace("{nick}", nick)
            .replace("{password}", password))
        # The pane stays once irssi has quit, saying how it ended (tmux's
        # own exit status of a pane is not always there to be read).
        self.started = True
        self.tmux("new-session", "-d", "-s", "irc", "-x", "200", "-y", "50",
                  "-e", f"TZ={TZ}", "-e", "LANG=C.UTF-8",
                  f"irssi --home={self.home}; echo {EXITED} $?",
                  ";", "set-option", "-w", "-t", "irc", "remain-on-exit", "on")

    def tmux(self, *args):
        return subprocess.run(["tmux", "-f", "/dev/null", "-S", self.socket, *args],
                              capture_output=True, text=True, timeout=10, check=True).stdout

    def type(self, text):
        self.tmux("send-keys", "-t", "irc", "-l", text)
        self.tmux("send-keys", "-t", "irc", "Enter")

    def screen(self):
        """The window's text, its scrollback included."""
        text = self.tmux("capture-pane", "-p", "-t", "irc", "-S", "-")
        # irssi's screen goes with it (it is the terminal's alternate screen).
        if text.strip() and EXITED not in text:
            self.last_screen = text
        return text

    def wait_for(self, pattern, count=1):
        """The ``count``-th line of the window that matches."""
        return poll(f"{pattern!r} ({count}) in irssi's window",
                    lambda: list(re.finditer(pattern, self.screen(), re.M))[count - 1:])[0]

    def close(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


class LineClient:
    """``python -m spchat.client --cli`` in a subprocess; a thread keeps
    every line it prints."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.proc = None
        self.lines = []

    def start(self, port, name):
        self.proc = subprocess.Popen(
            client_command(port, name), cwd=self.tmp_path,
            env=subprocess_env(self.tmp_path, TZ=TZ), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def say(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def matching(self, pattern):
        return [m for m in map(re.compile(pattern).search, list(self.lines)) if m]

    def wait_for(self, pattern, count=1):
        """The ``count``-th line that matches."""
        return poll(f"{pattern!r} ({count}) from the spchat client",
                    lambda: self.matching(pattern)[count - 1:])[0]

    def close(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.stdin.close()  # end of input: it logs out
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def spchat_client(tmp_path):
    client = LineClient(tmp_path)
    yield client
    client.close()
    print("--- the spchat client's output ---", *client.lines, sep="\n")


@pytest.fixture
def irssi(tmp_path, tools):
    irssi = Irssi(tmp_path / "irssi")
    yield irssi
    if irssi.started:
        try:
            irssi.screen()
            print("--- irssi's window ---", irssi.last_screen.rstrip(), sep="\n")
        finally:
            irssi.close()


def register(tmp_path, port, name, password):
    """An account, registered by the line-mode client as a user would."""
    registration = subprocess.run(
        client_command(port, name, "--register"), input="", cwd=tmp_path,
        env={**subprocess_env(tmp_path), "SPCHAT_PASSWORD": password}, capture_output=True,
        text=True, timeout=60)
    assert registration.returncode == 0, registration.stdout + registration.stderr
    assert f"the name {name} is now registered to you" in registration.stdout


def test_irssi_logs_in_by_sasl_and_talks_with_a_spchat_client(tmp_path, server, irssi,
                                                              spchat_client):
    register(tmp_path, server.port, "ircuser", PASSWORD)
    spchat = spchat_client
    spchat.start(server.port, "spuser")
    spchat.wait_for(r"\* you are in #lobby$")
    irssi.start(server.irc_port, "ircuser", PASSWORD)
    irssi.wait_for(r"Capabilities acknowledged: .*server-time")
    irssi.wait_for(r"SASL authentication succeeded$")
    irssi.wait_for(r"You are now logged in as ircuser$")
    # Everyone starts in #lobby (irssi's /join of it just shows it).
    irssi.wait_for(r"ircuser \[ircuser@spchat\] has joined #lobby$")
    irssi.type("/join #lobby")
    spchat.wait_for(r"\* ircuser joined$")
    irssi.wait_for(r"\[1:spchat/#lobby")  # the status bar: #lobby is the window's channel

    irssi.type("hello from irssi")
    spchat.wait_for(r"\] ircuser: hello from irssi$")
    spchat.say("hello from spchat")
    own = spchat.wait_for(r"^\[(\d\d:\d\d:\d\d)\] spuser: hello from spchat$")
    shown = irssi.wait_for(r"^(\d\d:\d\d:\d\d) < spuser> hello from spchat$")
    # The time irssi shows is the spchat client's: the server's stamp
    # (server-time), in the same local time.
    assert shown.group(1) == own.group(1)

    irssi.type("/part #lobby")
    spchat.wait_for(r"\* ircuser left$")
    irssi.wait_for(r"ircuser \[ircuser@spchat\] has left #lobby")
    irssi.type("/join #lobby")
    spchat.wait_for(r"\* ircuser joined$", count=2)
    irssi.wait_for(r"ircuser \[ircuser@spchat\] has joined #lobby$", count=2)
    irssi.type("/quit see you")
    spchat.wait_for(r"\* ircuser left \(Quit: see you\)$")
    assert irssi.wait_for(EXITED + r" (\d+)$").group(1) == "0"

    # Nothing irssi sent was unknown to the gateway (421), nor its settings to irssi.
    assert "Unknown" not in irssi.last_screen
    # Each line once, on each side.
    assert len(spchat.matching(r"ircuser: hello from irssi$")) == 1
    assert len(re.findall(r"spuser> hello from spchat$", irssi.last_screen, re.M)) == 1
