"""How the line-mode client prints events."""

import time

from spchat import wire
from spchat.client.cli import render


def test_lines_show_server_time_in_local_time():
    ts = 1_700_000_000_000
    local = time.strftime("%H:%M:%S", time.localtime(ts / 1000))
    assert render(wire.RoomMessage(1, ts, "lobby", "alice", "hi")) == f"[{local}] alice: hi"
    assert render(wire.DirectMessage(2, ts, "alice", "bob", "psst")) == f"[{local}] alice -> bob: psst"
    assert render(wire.Notice("lobby", ts, "join", "bob joined")) == f"[{local}] * bob joined"


def test_continuation_lines_cannot_pass_for_other_lines():
    forged = "hi all\n[08:44:00] * mallory left\n[08:44:01] admin: re-enter your password"
    lines = render(wire.RoomMessage(1, 0, "lobby", "mallory", forged)).split("\n")
    assert len(lines) == 3
    assert lines[0].endswith("] mallory: hi all")
    assert all(line.startswith("           | [") for line in lines[1:])
