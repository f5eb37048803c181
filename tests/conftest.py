"""Shared helpers: a real server on 127.0.0.1 and real clients."""

import gc
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task

from spchat import config
from spchat.client.pins import PinStore
from spchat.client.session import ChatClient

# A real PostgreSQL server for the tests that ask for one (``pg_url``).
from postgres import own_postgres, pg_url, postgres_server  # noqa: F401
# And a real Redis server for the bus between nodes (``redis_server``).
from redis_server import redis_server  # noqa: F401
from local_servers import missing

REPO = Path(__file__).resolve().parents[1]


def server_config(data_dir, **options):
    """A configuration for a test server on free loopback ports."""
    given = {"host": "127.0.0.1", "tcp-port": "0", "udp-port": "0", "relay-port": "0",
             "data-dir": str(data_dir)}
    given.update(options)
    cfg, _ = config.load_config(options=given, environ={}, dotenv_path=data_dir / "no.env")
    return cfg


# Clients made by connect_client, closed after each test so that no retry
# timer outlives it.
OPEN_CLIENTS = []


def start_service(cfg, clock=None):
    """A ChatService listening in this process, on the test reactor (its
    chat rules on ``clock``, if given)."""
    # Imported here: tests of one part (the store, say) need not import the server.
    from spchat.tap import ChatService

    service = ChatService(cfg, reactor, clock)
    service.address = service.listen()
    service.startService()
    return service


def stop_services(*services):
    """Close the test's clients, then the servers and every connection left;
    fires once every store is closed (its data directory free again)."""
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().logout()
    return stop_servers(*services)


def stop_servers(*services):
    """Stop servers as a crash or a restart would for their clients: every
    connection cut, the clients left to find their way (see stop_services)."""
    stopped = []
    for service in services:
        stopped.append(defer.maybeDeferred(service.stopService))
        for link in list(service.core.links):
            transport = getattr(link.conn, "transport", None)  # IRC's: closed by the service
            if transport is not None:
                transport.abortConnection()
    return defer.gatherResults(stopped)


@pytest.fixture
def clock():
    """A fake clock for the sans-IO parts, at a plausible time (UTC s)."""
    clock = task.Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def chat_server(tmp_path):
    service = start_service(server_config(tmp_path / "data"))
    yield service
    stop_services(service)


@pytest.fixture
def pins(tmp_path):
    return PinStore(tmp_path / "client-config")


def wait_until(predicate, timeout=10.0, interval=0.01, describe=None):
    """Poll ``predicate`` on the reactor; fail the test after ``timeout``,
    saying what ``describe()`` says of the state then, if given."""

    @defer.inlineCallbacks
    def poll():
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                state = f": {describe()}" if describe is not None else ""
                raise AssertionError(f"timed out after {timeout} s waiting for "
                                     f"{predicate}{state}")
            yield task.deferLater(reactor, interval, lambda: None)

    return poll()


class Recorder:
    """Event and status sink for a ChatClient."""

    def __init__(self):
        self.events = []
        self.statuses = []

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def disconnects(self):
        """Why the connection went, each time it went."""
        return [s.reason for s in self.statuses if s.state in ("reconnecting", "offline")]


@defer.inlineCallbacks
def connect_client(server, pins, name, port=None, host="127.0.0.1", **options):
    """A ChatClient logged in to ``server`` (or ``host``: one address or
    several, on ``port``), recording what it is told in ``client.rec``."""
    rec = Recorder()
    options.setdefault("reconnect_delay", 0.05)
    client = ChatClient(
        reactor,
        host,
        port or server.address.port,
        name,
        pins,
        on_event=rec.events.append,
        on_status=rec.statuses.append,
        **options,
    )
    client.rec = rec
    OPEN_CLIENTS.append(client)
    yield client.connect()
    return client


# --- subprocesses: the real command lines --------------------------------


def subprocess_env(tmp_path, **extra):
    """Environment for spawned commands: this checkout first, a private config dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SPCHAT_CONFIG_DIR"] = str(tmp_path / "client-config")
    env["PYTHONUNBUFFERED"] = "1"
    env["CHAT_RELAY_PORT"] = "0"  # a server started here takes any free port for its relay
    # Downloads stay in the test's directory, never in the user's download folder.
    env["CHAT_DOWNLOAD_DIR"] = str(tmp_path)
    env.update(extra)
    return env


def twistd_command():
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def client_command(port, name, *extra):
    """The line-mode client, as a user starts it."""
    return [sys.executable, "-m", "spchat.client", "--cli", "--host", "127.0.0.1",
            "--port", str(port), "--name", name, *extra]


class ServerProcess:
    """``twistd -n spchat`` in a subprocess, on a free loopback port (and
    its IRC gateway's, if ``--irc`` is given: ``irc_port``)."""

    def __init__(self, tmp_path, *args, env=None, preexec_fn=None, no_pid_file=True):
        """``preexec_fn``: run in the child before twistd (set its limits);
        ``no_pid_file`` False: without ``--pidfile=``, as the README writes it."""
        self.proc = subprocess.Popen(
            twistd_command() + ["-n", *(["--pidfile="] if no_pid_file else []), "spchat",
                                "--host", "127.0.0.1",
                                "--tcp-port", "0", "--udp-port", "0",
                                "--data-dir", str(tmp_path / "data"), *args],
            cwd=tmp_path,
            env=env or subprocess_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec_fn,
        )
        self.log = []
        self.irc_port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            irc = re.search(r"IRC gateway on [\d.]+:(\d+)", line)  # logged before the rest
            if irc:
                self.irc_port = int(irc.group(1))
            found = re.search(
                r"listening on TCP [\d.]+:(\d+) \(presence on UDP (\d+)\); "
                r"server key fingerprint (\S+)", line)
            if found:
                self.port, self.udp_port = int(found.group(1)), int(found.group(2))
                self.fingerprint = found.group(3)
                # Keep reading its log, or a full pipe would stall the server.
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        time.sleep(0.1)  # the drain thread reads the last lines
        return self.proc.returncode


# --- windows: a real display (Xvfb) --------------------------------------


@pytest.fixture(scope="session")
def display():
    """One X display for every window test: $DISPLAY, or an Xvfb of our own."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        missing("no display and no Xvfb: install Debian's xvfb package to run the window tests")
    # Xvfb picks a free display number itself and tells it on a pipe.
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], pass_fds=(write_end,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        number = pipe.readline().strip()
    if not number.isdigit():
        proc.kill()
        pytest.fail("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    del os.environ["DISPLAY"]
    proc.terminate()
    proc.wait()


@pytest.fixture(scope="session", autouse=True)
def tk_roots_live_until_the_end():
    """Every Tk root a test makes is kept until the session ends, then freed
    here.  A destroyed root is still a Python object in reference cycles; if
    the collector frees it on another thread (the store's reader, say), Tcl
    aborts the whole process ("async handler deleted by the wrong thread")."""
    try:
        import tkinter
    except ImportError:  # no Tk here: the window tests skip or fail on their own
        yield
        return
    kept = []
    make = tkinter.Tk.__init__

    def keeping(self, *args, **kwargs):
        make(self, *args, **kwargs)
        kept.append(self)

    tkinter.Tk.__init__ = keeping
    yield
    tkinter.Tk.__init__ = make
    kept.clear()
    gc.collect()


@pytest.fixture(autouse=True)
def window_garbage_is_freed_on_the_main_thread(request):
    """And what a window test leaves (widgets, Tk variables in cycles) is
    collected here, not later on a thread, where Tk refuses to be called."""
    yield
    if "display" in request.fixturenames:
        gc.collect()


def screenshot(window, display, name):
    """Save a window as a PNG in screenshots/ (git-ignored), to be looked at.

    ``$SPCHAT_SCREENSHOT_DIR`` puts them elsewhere (for the README's pictures).
    """
    from PIL import ImageGrab

    window.lift()  # windows may overlap (Xvfb has no window manager)
    window.update()
    x, y = window.winfo_rootx(), window.winfo_rooty()
    image = ImageGrab.grab(
        bbox=(x, y, x + window.winfo_width(), y + window.winfo_height()), xdisplay=display
    )
    folder = Path(os.environ.get("SPCHAT_SCREENSHOT_DIR") or REPO / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)
    return image
