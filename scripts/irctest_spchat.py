"""irctest's controller for spchat's IRC gateway: a fresh ``twistd -n spchat``
per test, with only the IRC listener on irctest's port.

    cd ../shared/irctest
    PYTHONPATH=/path/to/spchat/scripts:/path/to/spchat python -m pytest \\
        --controller irctest_spchat -m 'not services and not implementation-specific \\
        and not deprecated and not strict' -n 2

(``scripts/run_irctest.sh`` does that.)  The server keeps nothing on disk
(``CHAT_STORE=memory``), starts nobody in a room, and has no idle timeout
and no flood limits a test would trip over.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path
from typing import Optional, Set, Type

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT))
from spchat.server.passwords import hash_password  # noqa: E402

# The operator irctest's tests use (its controllers' "operuser"/"operpassword").
OPERATOR_HASH = hash_password("operpassword")
# Every server this process started.  A test whose setUp fails after the
# server started (it was slow to listen on a loaded machine) never gets its
# tearDown, so irctest never stops that server: this process does, at exit.
STARTED: list = []


@atexit.register
def _stop_the_servers_left() -> None:
    for proc in STARTED:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the whole group
            except OSError:
                pass


class SpchatController(BaseServerController, DirectoryBasedController):
    software_name = "spchat"
    supported_sasl_mechanisms: Set[str] = {"PLAIN"}
    supports_sts = False

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str],
        websocket_port: Optional[int],
    ) -> None:
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        if password is not None:
            raise NotImplementedByController("a server password")
        if ssl:
            raise NotImplementedByController("TLS")
        # run_services: accounts are the server's own, there is nothing else
        # to start (a test that registers an account through services skips).
        assert self.proc is None
        self.port = port
        self.hostname = hostname
        self.create_config()
        assert self.directory
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH")]))
        env.update({
            "CHAT_STORE": "memory", "CHAT_DEFAULT_ROOMS": " ", "CHAT_IDLE_TIMEOUT": "0",
            "CHAT_FLOOD_BURST": "100000", "CHAT_FLOOD_RATE": "100000",
            "CHAT_FLOOD_QUEUE": "100000", "CHAT_LOGIN_FAILURES": "100000",
            "CHAT_HISTORY_ON_JOIN": "0", "CHAT_IRC_SERVER_NAME": "My.Little.Server",
            "CHAT_IRC_OPERATOR": f"operuser:{OPERATOR_HASH}",
        })
        self.proc = self.execute(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "spchat",
                "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0",
                "--relay-port", "0", "--data-dir", str(self.directory / "data"),
                "--irc", f"tcp:{port}:interface={hostname}",
            ],
            env=env,
        )
        STARTED.append(self.proc)


    def wait_for_services(self) -> None:
        pass  # accounts are the server's own: no services to wait for


def get_irctest_controller_class() -> Type[SpchatController]:
    return SpchatController
