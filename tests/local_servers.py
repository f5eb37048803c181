"""What the tests that start programs of their own share (PostgreSQL,
Redis, Xvfb, irssi): the rule for a program that is not here, and how one
is stopped.  No spchat imports: ``scripts/measure_*.py`` use the servers
too."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def missing(reason: str):
    """A test needs what ``reason`` names, which is not here: skipped, but
    in CI (``SPCHAT_CI``) a failure, since ``.ci/run`` must install it."""
    if os.environ.get("SPCHAT_CI"):
        pytest.fail(f"{reason} (.ci/run must install it)")
    pytest.skip(reason)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop a program a test started: ``sig``, then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
