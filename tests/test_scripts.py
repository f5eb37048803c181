"""scripts/run_server.sh, scripts/run_client.sh and scripts/example.py, as a user
runs them."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env
from local_servers import missing


def test_run_server_and_run_client_scripts(tmp_path):
    env = subprocess_env(tmp_path, PYTHON=__import__("sys").executable)
    server = subprocess.Popen(
        ["sh", "scripts/run_server.sh", "--host", "127.0.0.1", "--tcp-port", "0",
         "--udp-port", "0", "--data-dir", str(tmp_path / "data")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = []
        for line in server.stdout:
            log.append(line)
            found = re.search(r"listening on TCP [\d.]+:(\d+)", line)
            if found:
                break
        assert found, "".join(log)
        threading.Thread(target=server.stdout.read, daemon=True).start()
        result = subprocess.run(
            ["sh", "scripts/run_client.sh", "--cli", "--host", "127.0.0.1",
             "--port", found.group(1), "--name", "scripted"],
            cwd=REPO, env=env, input="hello from a script\n", capture_output=True, text=True,
            timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "scripted: hello from a script" in result.stdout
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- scripts/example.py: a signal stops its server and removes its folder --


def _children(pid):
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _running(pid):
    """Alive and not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _data_dir_of(pid):
    """The server's --data-dir, once the child runs the server (None before)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return Path(args[args.index(b"--data-dir") + 1].decode()) if b"--data-dir" in args else None


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.02)


@pytest.mark.parametrize("stop, when", [
    (signal.SIGTERM, "starting"), (signal.SIGTERM, "running"), (signal.SIGHUP, "starting"),
    (signal.SIGHUP, "running"), (signal.SIGINT, "running"), (signal.SIGTERM, "twice")])
def test_a_signal_stops_the_examples_server_and_removes_its_folder(tmp_path, display,
                                                                    stop, when):
    """``starting``: while its server starts; ``running``: once its window is
    up; ``twice``: a second signal while it cleans up (an impatient user)."""
    env = subprocess_env(tmp_path, DISPLAY=display)
    proc = subprocess.Popen([sys.executable, "scripts/example.py", "--names", "ann"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        # The server is the example's first child (its window comes later).
        _wait_for(lambda: any(map(_data_dir_of, _children(proc.pid))), timeout=30)
        server = next(pid for pid in _children(proc.pid) if _data_dir_of(pid))
        workdir = _data_dir_of(server).parent
        if when != "starting":
            for line in proc.stdout:
                if "to end the demo" in line:
                    break
        proc.send_signal(stop)
        if when == "twice":
            proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output
        assert "example: done" in output and "Traceback" not in output
        _wait_for(lambda: not _running(server), timeout=5)
        assert not workdir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _window_places(display, names):
    """Where each name's chat window is (x, y), by xdotool."""
    places = {}
    for name in names:
        found = subprocess.run(["xdotool", "search", "--name", f" {name}@"],
                               env={**os.environ, "DISPLAY": display}, capture_output=True,
                               text=True)
        ids = found.stdout.split()
        if not ids:
            return None
        shown = subprocess.run(["xdotool", "getwindowgeometry", ids[-1]],
                               env={**os.environ, "DISPLAY": display}, capture_output=True,
                               text=True).stdout
        x, y = shown.split("Position: ")[1].split()[0].split(",")
        places[name] = (int(x), int(y))
    return places


def test_the_examples_windows_open_side_by_side(tmp_path, display):
    if shutil.which("xdotool") is None:
        missing("no xdotool to find the windows with: apt-get install xdotool")
    names = ["ann", "ben", "cat"]
    env = subprocess_env(tmp_path, DISPLAY=display)
    proc = subprocess.Popen([sys.executable, "scripts/example.py", "--names", *names],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        places = []
        _wait_for(lambda: places.append(_window_places(display, names)) or places[-1],
                  timeout=60)
        xs = sorted(x for x, _ in places[-1].values())
        # Apart by at least a window's width: none hides another.
        assert all(b - a >= 600 for a, b in zip(xs, xs[1:])), places[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
