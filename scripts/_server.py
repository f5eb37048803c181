"""Shared by the measurement scripts: a `twistd -n spchat` of their own."""

import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from twisted.internet import task

# Flood control would pace one fast sender to 5 messages a second.
NO_FLOOD_LIMIT = ["--flood-burst", "1000000", "--flood-rate", "1000000", "--flood-queue", "20000"]


def start_server(data_dir: Path, *options: str):
    """Start the server on free loopback ports; return (process, TCP port)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "spchat", "--host", "127.0.0.1", "--tcp-port", "0", "--udp-port", "0",
         "--relay-port", "0",
         "--data-dir", str(data_dir), *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in proc.stdout:
        found = re.search(r"listening on TCP [\d.]+:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    raise SystemExit("server did not start")


def measure_with_server(measure, *options: str) -> None:
    """Run ``measure(reactor, proc, port, scratch_dir)`` (a Deferred) on
    the reactor against a server of our own, then stop the server."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp) / "data", *options)
        # Keep reading its log, or a full pipe would stall the server.
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        try:
            task.react(lambda reactor: measure(reactor, proc, port, Path(tmp)))
        finally:
            proc.terminate()
            proc.wait()
