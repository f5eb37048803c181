"""``python -m spchat.client`` as a separate process (``share``, ``get``),
as the file-sharing tests run it: its stderr collected as it comes, its
JSON answer read when it is done."""

import json
import signal
import subprocess
import sys
import threading

from conftest import subprocess_env


class Peer:
    """One client process; its stderr lines are collected as they come."""

    def __init__(self, tmp_path, server, args, env=None, script=None, host="127.0.0.1"):
        """``host``: one address or several (on the server's port unless named)."""
        command = [sys.executable, str(script)] if script else [sys.executable, "-m",
                                                                 "spchat.client"]
        self.proc = subprocess.Popen(
            command + args + ["--host", host, "--port", str(server.port)],
            cwd=tmp_path, env=subprocess_env(tmp_path, **(env or {})),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read_err, daemon=True)
        self._reader.start()

    def _read_err(self):
        for line in self.proc.stderr:
            self.err.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def finished(p, timeout=120):
    out, _ = p.proc.communicate(timeout=timeout)
    p._reader.join(5)
    assert p.proc.returncode == 0, "".join(p.err)
    return json.loads(out)
