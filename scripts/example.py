"""The classic demo: one spchat server and three chat windows on this machine.

    python scripts/example.py               # alice, bob and carol
    python scripts/example.py --names ann ben

Everything lives in a fresh temporary directory (server data, each client's
pinned key), removed at the end: nothing of yours is touched.  The clients
trust the demo server's key up front, so the windows open straight into the
chat.  It ends when every window is closed, on Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = re.compile(r"listening on TCP [\d.]+:(\d+) .*server key fingerprint (\S+)")


def spawn_server(workdir: Path, env: dict) -> subprocess.Popen:
    # In the temporary directory, so that no ./.env of yours is read, and in
    # a session of its own, so that Ctrl-C reaches this script only.
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "spchat", "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0",
         "--relay-port", "0",
         "--data-dir", str(workdir / "server-data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir,
        start_new_session=True,
    )


def wait_until_ready(proc: subprocess.Popen) -> tuple[int, str]:
    """The server's port and key fingerprint, once it listens."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        found = READY.search(line)
        if found:
            # Keep reading its log, or a full pipe would stall the server.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return int(found.group(1)), found.group(2)
    raise SystemExit("example: the server did not start:\n" + "".join(seen[-20:]))


def pin(config_dir: Path, port: int, fingerprint: str) -> None:
    config_dir.mkdir(mode=0o700, parents=True)
    (config_dir / "known_servers").write_text(f"127.0.0.1:{port} {fingerprint}\n")


# Ctrl-C, SIGTERM (a service manager's stop) and SIGHUP (the terminal
# closed) all end the demo the same clean way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupted(signum, frame):
    ignore_stop_signals()  # a second signal must not cut the clean-up short
    raise KeyboardInterrupt


def catch_stop_signals() -> None:
    # Installed even where SIGINT is ignored (a background job of a script).
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupted)


def _ignored(signum, frame):
    pass


def ignore_stop_signals() -> None:
    # A handler that does nothing, not SIG_IGN: a signal already on its way
    # would print "ignored due to race condition".
    for signum in STOP_SIGNALS:
        signal.signal(signum, _ignored)


# Windows side by side (then a row lower), so that all of them show.
WINDOW_SIZE = (600, 520)
PER_ROW = 3


def window_place(index: int) -> str:
    width, height = WINDOW_SIZE
    column, row = index % PER_ROW, index // PER_ROW
    return f"{width}x{height}+{column * (width + 8)}+{row * (height + 40)}"


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=["alice", "bob", "carol"],
                        help="one chat window per name (default: alice bob carol)")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        print("example: no display ($DISPLAY is empty): run it on a desktop, or under "
              "xvfb-run to try it headless", file=sys.stderr)
        return 1

    catch_stop_signals()
    workdir = Path(tempfile.mkdtemp(prefix="spchat-example-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env = {k: v for k, v in env.items() if not k.startswith("CHAT_")}  # a clean server
    clients: list[subprocess.Popen] = []
    server = None
    try:
        # Known before it is ready: a signal while it starts must stop it too.
        server = spawn_server(workdir, env)
        port, fingerprint = wait_until_ready(server)
        print(f"example: server on 127.0.0.1:{port}, key {fingerprint}")
        print(f"example: everything is in {workdir} (removed at the end)")
        for place, name in enumerate(args.names):
            config_dir = workdir / f"{name}-config"
            pin(config_dir, port, fingerprint)
            clients.append(subprocess.Popen(
                [sys.executable, "-m", "spchat.client", "--host", "127.0.0.1",
                 "--port", str(port), "--name", name, "--geometry", window_place(place)],
                env={**env, "SPCHAT_CONFIG_DIR": str(config_dir)}, cwd=workdir,
                start_new_session=True,
            ))
            print(f"example: window for {name} opened")
        print("example: close the windows (or press Ctrl-C) to end the demo")
        while any(c.poll() is None for c in clients):
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\nexample: stopping")
    finally:
        ignore_stop_signals()
        for client in clients:
            if client.poll() is None:
                client.send_signal(signal.SIGTERM)  # the windows log out cleanly
        # One deadline for all of them: a stuck window costs 10 s, not 10 s each.
        deadline = time.monotonic() + 10
        for client in clients:
            try:
                client.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        if server is not None:
            stop_server(server)
        shutil.rmtree(workdir, ignore_errors=True)
    print("example: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
