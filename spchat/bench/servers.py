"""The servers under test, each in a process of its own pinned to one core.

spchat as shipped (``twistd -n spchat``: encrypted, every message saved in
SQLite), ngIRCd and Mosquitto, each on a free loopback port with its
configuration written to a temporary directory.  The bench installs nothing:
a server whose program is missing is reported as skipped with the Debian
package to install.

CPU time (utime + stime) is read from ``/proc/PID/stat`` and peak RSS from
``VmHWM`` in ``/proc/PID/status``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from spchat.bench.engines import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE = "0"
OPERATOR = ("bench", "bench")  # ngIRCd operator name and password, for user mode +F


# Servers started and not yet stopped: stopped at exit too, so that a bench
# interrupted (Ctrl-C, SIGTERM) leaves no server running.
RUNNING: set = set()


def stop_all() -> None:
    for server in list(RUNNING):
        server.stop()


atexit.register(stop_all)


class Unavailable(Exception):
    """The server's program is not installed here."""


def pinned(command: list[str], core: str) -> list[str]:
    """Run ``command`` on one core, when taskset is there to do it."""
    return ["taskset", "-c", core, *command] if shutil.which("taskset") else command


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A process's peak (VmHWM) or current (VmRSS) resident memory, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class ServerUnderTest:
    name = ""
    package = ""
    program = ""

    def __init__(self, workdir: Path, profile: Path | None = None):
        self.workdir = workdir
        self.profile = profile  # spchat only: a cProfile dump of the server
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        """Accepting connections?"""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def check_available(self) -> None:
        if shutil.which(self.program) is None and not Path(self.program).exists():
            raise Unavailable(f"{self.program} not found (apt-get install {self.package})")

    def start(self, timeout: float = 30.0) -> None:
        self.check_available()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = proc = subprocess.Popen(
            pinned(self.command(), SERVER_CORE), cwd=self.workdir, env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )
        RUNNING.add(self)
        # Keep reading its output, or a full pipe would stall the server.
        threading.Thread(target=self._drain, args=(proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.log[-20:]))
            time.sleep(0.05)

    def environment(self) -> dict:
        return {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None, "started with stdout=PIPE"
        for line in proc.stdout:
            self.log.append(line)
            del self.log[:-200]

    def stop(self) -> None:
        RUNNING.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- what it costs ------------------------------------------------------

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_kib(self, field: str = "VmHWM") -> int:
        """Peak (VmHWM) or current (VmRSS) resident memory, KiB."""
        return memory_kib(self.pid, field)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid


class SpchatServer(ServerUnderTest):
    name = "spchat"
    package = "the spchat package (pip install .)"
    program = sys.executable

    def command(self):
        profile = ["--profile", str(self.profile), "--profiler", "cprofile", "--savestats"] \
            if self.profile else []
        return [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", *profile, "spchat", "--host", "127.0.0.1",
            "--tcp-port", str(self.port), "--udp-port", "0", "--relay-port", "0",
            "--data-dir", str(self.workdir / "data"),
            # A load generator is not a flooding user, and many of its
            # clients share one address.
            "--flood-burst", "1000000", "--flood-rate", "1000000", "--flood-queue", "1000000",
            "--max-connections-per-ip", "100000", "--history-on-join", "0",
            "--idle-timeout", "0", "--login-failures", "1000000",
        ]

    def environment(self):
        # The same spchat as this generator's, installed or from a checkout.
        env = super().environment()
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        return env

    def ready(self) -> bool:
        return any(re.search(r"listening on TCP", line) for line in self.log) and super().ready()


class SpchatIrcServer(SpchatServer):
    """spchat's IRC gateway, for the IRC load generator: the same protocol as
    ngIRCd's, every line still saved in SQLite before anyone sees it."""

    name = "spchat-irc"

    def command(self):
        command = super().command()
        command[command.index("--tcp-port") + 1] = "0"  # the spchat listener: unused
        return [*command, "--irc", f"tcp:{self.port}:interface=127.0.0.1"]

    def ready(self) -> bool:
        return any("IRC gateway on" in line for line in self.log) and super().ready()


class IrcServer(ServerUnderTest):
    name = "ngircd"
    package = "ngircd"
    program = "/usr/sbin/ngircd"

    def command(self):
        conf = self.workdir / "ngircd.conf"
        conf.write_text(f"""\
[Global]
Name = bench.irc.local
Info = spchat bench
Listen = 127.0.0.1
Ports = {self.port}
MotdPhrase = bench
PidFile = {self.workdir}/ngircd.pid
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
PingTimeout = 3600
PongTimeout = 3600
[Options]
DNS = no
Ident = no
PAM = no
[Operator]
Name = {OPERATOR[0]}
Password = {OPERATOR[1]}
""")
        os.chmod(self.workdir, 0o755)  # ngIRCd may drop to another user
        return [self.program, "--nodaemon", "--config", str(conf)]


class MqttServer(ServerUnderTest):
    name = "mosquitto"
    package = "mosquitto"
    program = "/usr/sbin/mosquitto"

    def command(self):
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(f"""\
listener {self.port} 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest stdout
log_type error
log_type warning
max_queued_messages 100000
set_tcp_nodelay true
""")
        return [self.program, "-c", str(conf)]


SERVERS = {cls.name: cls for cls in (SpchatServer, SpchatIrcServer, IrcServer, MqttServer)}
