"""What the tests that start programs of their own share (PostgreSQL,
Redis, Xvfb, irssi): the rule for a program that is not here, and how one
is stopped (``spchat.bench.engines.stop_process``)."""

from __future__ import annotations

import os

import pytest

from spchat.bench.engines import stop_process  # noqa: F401 (one way to stop one)


def missing(reason: str):
    """A test needs what ``reason`` names, which is not here: skipped, but
    in CI (``SPCHAT_CI``) a failure, since ``.ci/run`` must install it."""
    if os.environ.get("SPCHAT_CI"):
        pytest.fail(f"{reason} (.ci/run must install it)")
    pytest.skip(reason)
