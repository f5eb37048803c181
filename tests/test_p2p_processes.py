"""File sharing end to end: a real server and every peer a separate process
(``python -m spchat.client share`` / ``get``), on loopback."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from client_processes import Peer, finished
from conftest import REPO, ServerProcess, subprocess_env

MIB = 1024 * 1024


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def server(tmp_path):
    server = ServerProcess(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def peers():
    started = []
    yield started
    for p in started:
        p.stop()


def seed(tmp_path, server, peers, path, name, env=None, script=None):
    """A seeder process sharing ``path``; returns (peer, file id)."""
    p = Peer(tmp_path, server, ["share", str(path), "--name", name], env, script)
    peers.append(p)
    line = p.proc.stdout.readline()
    found = re.match(r"sharing .* as ([0-9a-f]{64})$", line.strip())
    assert found, f"{name} did not share: {line!r} {''.join(p.err)}"
    return p, found.group(1)


def get(tmp_path, server, peers, file_id, name, directory, env=None):
    p = Peer(tmp_path, server, ["get", file_id[:10], "--name", name, "--dir", str(directory),
                                "--json"], env)
    peers.append(p)
    return p


def progress_reaches(p, percent, timeout=60):
    """Wait until the downloader's progress line says ``percent`` or more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(p.err):
            found = re.search(r": (\d+)% \(", line)
            if found and int(found.group(1)) >= percent:
                return int(found.group(1))
        time.sleep(0.02)
    raise AssertionError(f"no progress to {percent}%: {''.join(p.err)}")


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "video.bin"
    path.write_bytes(os.urandom(64 * MIB))
    return path


def test_three_seeders_each_supply_a_fair_share_of_64_mib(tmp_path, server, peers, big_file):
    file_id = None
    for name in ("s1", "s2", "s3"):
        _, file_id = seed(tmp_path, server, peers, big_file, name)
    summary = finished(get(tmp_path, server, peers, file_id, "d", tmp_path / "dl"))
    saved = tmp_path / "dl" / "video.bin"
    assert summary["path"] == str(saved)
    assert sha256(saved) == sha256(big_file)
    for name in ("s1", "s2", "s3"):
        share = summary["from"][name]["received"] / big_file.stat().st_size
        assert share >= 0.15, summary["from"]
        assert summary["from"][name]["path"] == "direct"
    assert not list((tmp_path / "dl").glob("*.part*"))


def test_a_seeder_killed_at_a_quarter_leaves_the_others_to_finish(tmp_path, server, peers,
                                                                   big_file):
    slow = {"CHAT_P2P_UPLOAD_BPS": str(3 * MIB)}  # about 7 s in all: time to act
    seeders = {}
    for name in ("s1", "s2", "s3"):
        seeders[name], file_id = seed(tmp_path, server, peers, big_file, name, slow)
    downloader = get(tmp_path, server, peers, file_id, "d", tmp_path / "dl")
    reached = progress_reaches(downloader, 25)
    seeders["s2"].proc.kill()  # SIGKILL: no goodbye
    summary = finished(downloader)
    assert 25 <= reached < 90
    assert sha256(tmp_path / "dl" / "video.bin") == sha256(big_file)
    assert summary["from"]["s2"]["dropped"]
    assert summary["from"]["s2"]["received"] < 0.5 * big_file.stat().st_size
    assert summary["from"]["s1"]["received"] + summary["from"]["s3"]["received"] > 0.5 * (
        big_file.stat().st_size)


def test_a_seeder_that_flips_bytes_is_caught_and_dropped(tmp_path, server, peers):
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(16 * MIB))
    _, file_id = seed(tmp_path, server, peers, source, "flipper",
                      script=REPO / "tests" / "p2p_flipper.py")
    seed(tmp_path, server, peers, source, "honest")
    summary = finished(get(tmp_path, server, peers, file_id, "d", tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "data.bin") == sha256(source)
    flipper = summary["from"]["flipper"]
    assert flipper["bad_pieces"] >= 1
    assert "did not match their hashes" in flipper["dropped"]
    assert summary["from"]["honest"]["bad_pieces"] == 0


def test_a_downloader_killed_halfway_fetches_only_what_was_missing(tmp_path, server, peers):
    from spchat.p2p.manifest import build_manifest

    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(32 * MIB))
    _, file_id = seed(tmp_path, server, peers, source, "s", {"CHAT_P2P_UPLOAD_BPS": str(4 * MIB)})
    first = get(tmp_path, server, peers, file_id, "d", tmp_path / "dl")
    progress_reaches(first, 50)
    first.proc.kill()
    first.proc.wait()
    # What the first run left on disk: the pieces that hash right.
    manifest = build_manifest(source)
    data = (tmp_path / "dl" / "data.bin.part").read_bytes()
    kept = 0
    for i in range(len(manifest.pieces)):
        offset, length = manifest.piece_range(i)
        if manifest.verify(i, data[offset:offset + length]):
            kept += length
    assert kept >= 0.4 * source.stat().st_size
    summary = finished(get(tmp_path, server, peers, file_id, "d2", tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "data.bin") == sha256(source)
    assert summary["fetched"] == source.stat().st_size - kept


def test_the_relay_carries_a_transfer_when_direct_connections_are_off(tmp_path, server, peers):
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(8 * MIB))
    _, file_id = seed(tmp_path, server, peers, source, "hidden", {"CHAT_P2P_DIRECT": "no"})
    summary = finished(get(tmp_path, server, peers, file_id, "d", tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "data.bin") == sha256(source)
    assert summary["from"]["hidden"]["path"] == "relay"
    assert summary["from"]["hidden"]["received"] == source.stat().st_size
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        relayed = [int(m.group(1)) for line in server.log
                   for m in [re.search(r"relay \w+: (\d+) bytes to fetch", line)] if m]
        if relayed:
            break
        time.sleep(0.1)
    assert relayed and relayed[0] >= source.stat().st_size


@pytest.mark.parametrize("name, saved_as", [
    ("...", "download"),
    ("a\\..\\b.txt", "a_.._b.txt"),
    ("evil\x1b[31m\u202e.txt", "evil[31m.txt"),
    ("  spaced out.txt ", "spaced out.txt"),
])
def test_hostile_names_stay_inside_the_download_directory(tmp_path, server, peers, name,
                                                          saved_as):
    source = tmp_path / "src" / name
    source.parent.mkdir()
    source.write_bytes(b"payload " * 1000)
    _, file_id = seed(tmp_path, server, peers, source, "s")
    summary = finished(get(tmp_path, server, peers, file_id, "d", tmp_path / "dl"))
    saved = tmp_path / "dl" / saved_as
    assert summary["path"] == str(saved)
    assert saved.read_bytes() == source.read_bytes()
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [saved_as]


def line_mode_command(server):
    return [sys.executable, "-m", "spchat.client", "--cli", "--host", "127.0.0.1",
            "--port", str(server.port)]


def line_mode(tmp_path, server, name, env=None):
    """A line-mode client, its input and output piped."""
    return subprocess.Popen(line_mode_command(server) + ["--name", name], cwd=tmp_path,
                            env={**subprocess_env(tmp_path), **(env or {})},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_until(proc, text):
    """Its output up to the line saying ``text``; that line."""
    line = ""
    while text not in line:
        line = proc.stdout.readline()
        assert line, f"{text!r} never came"
    return line


def share_typed(sharer, path):
    """/share PATH typed in a line-mode client; the file's short id."""
    sharer.stdin.write(f"/share {path}\n")
    sharer.stdin.flush()
    return re.search(r"as ([0-9a-f]{12})$",
                     read_until(sharer, f"sharing {path.name}").strip()).group(1)


def test_line_mode_share_files_and_get(tmp_path, server):
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(3 * MIB))
    env = subprocess_env(tmp_path)
    command = line_mode_command(server)
    sharer = line_mode(tmp_path, server, "alice")
    try:
        short_id = share_typed(sharer, source)
        getter = subprocess.run(
            command + ["--name", "bob"], cwd=tmp_path, env=env, text=True, timeout=60,
            input=f"/files\n/get {short_id} {tmp_path / 'dl'}\n/get 0000000\n",
            capture_output=True)
        assert getter.returncode == 1  # the unknown id was refused
        out = getter.stdout
        assert re.search(rf"{short_id}  notes\.txt \(3\.0 MiB\) from alice, 1 peer online", out)
        assert "error: cannot get 0000000: no file 0000000 is offered in your rooms" in out
        assert re.search(r"saved .*notes\.txt \(3\.0 MiB in [\d.]+ s, [\d.]+ MiB/s\) "
                         r"from alice 100% direct", out), out
        assert (tmp_path / "dl" / "notes.txt").read_bytes() == source.read_bytes()
    finally:
        sharer.stdin.close()
        assert sharer.wait(20) == 0
    # The room's offer reached the sharer too, once (not again on login).
    rest = sharer.stdout.read()
    assert rest.count(f"alice shares notes.txt (3.0 MiB): /get {short_id}") == 1, rest


def test_with_no_folder_given_a_download_goes_to_the_download_folder(tmp_path, server, peers):
    source = tmp_path / "notes.txt"
    source.write_bytes(b"minutes of the meeting\n" * 1000)
    _, file_id = seed(tmp_path, server, peers, source, "alice")
    home = tmp_path / "home"
    p = Peer(tmp_path, server, ["get", file_id[:10], "--name", "bob", "--json"],
             env={"CHAT_DOWNLOAD_DIR": "", "HOME": str(home), "XDG_CONFIG_HOME": ""})
    peers.append(p)
    summary = finished(p)
    saved = home / "Downloads" / "spchat" / "notes.txt"
    assert summary["path"] == str(saved) and sha256(saved) == sha256(source)
    assert not (tmp_path / "notes (1).txt").exists()  # not in the working directory


def test_sigterm_stops_a_download_resumably_and_a_sharer_cleanly(tmp_path, server, peers):
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(16 * MIB))
    sharer, file_id = seed(tmp_path, server, peers, source, "s",
                           {"CHAT_P2P_UPLOAD_BPS": str(4 * MIB)})
    first = get(tmp_path, server, peers, file_id, "d", tmp_path / "dl")
    progress_reaches(first, 20)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(10) == 1
    first._reader.join(5)
    assert first.err[-1] == "spchat: interrupted; run it again to resume\n"
    assert (tmp_path / "dl" / "data.bin.part.state").exists()
    summary = finished(get(tmp_path, server, peers, file_id, "d2", tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "data.bin") == sha256(source)
    assert summary["fetched"] < 0.85 * source.stat().st_size  # it kept what it had
    sharer.proc.send_signal(signal.SIGTERM)
    assert sharer.proc.wait(10) == 0
    sharer._reader.join(5)
    assert not "".join(sharer.err).strip()  # no traceback


def test_a_sharer_keeps_serving_past_several_idle_timeouts(tmp_path, peers):
    server = ServerProcess(tmp_path, "--idle-timeout", "1")
    try:
        source = tmp_path / "notes.bin"
        source.write_bytes(os.urandom(MIB))
        sharer, file_id = seed(tmp_path, server, peers, source, "keeper")
        time.sleep(5)  # five timeouts: the server looks once a second
        assert sharer.proc.poll() is None, "".join(sharer.err)
        summary = finished(get(tmp_path, server, peers, file_id, "d", tmp_path / "dl"))
        assert sha256(tmp_path / "dl" / "notes.bin") == sha256(source)
        assert summary["from"]["keeper"]["received"] == MIB
        assert not sharer.err  # nothing went wrong on the way, so it said nothing
    finally:
        server.stop()


def test_a_sharer_with_no_server_left_says_why_and_exits_1(tmp_path, peers):
    server = ServerProcess(tmp_path)
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(1024))
    sharer, _ = seed(tmp_path, server, peers, source, "keeper",
                     {"CHAT_RECONNECT_DELAY": "0.1", "CHAT_MAX_RETRIES": "1"})
    server.stop()
    assert sharer.proc.wait(20) == 1
    sharer._reader.join(5)
    assert "".join(sharer.err).startswith("spchat: stopped sharing: could not reconnect"), (
        sharer.err)


def test_line_mode_cancel_stops_a_download_and_get_resumes_it(tmp_path, server):
    source = tmp_path / "talk.bin"
    source.write_bytes(os.urandom(8 * MIB))
    sharer = line_mode(tmp_path, server, "alice", {"CHAT_P2P_UPLOAD_BPS": str(MIB)})  # 8 s
    getter = line_mode(tmp_path, server, "bob")
    try:
        short_id = share_typed(sharer, source)
        getter.stdin.write(f"/get {short_id} {tmp_path / 'dl'}\n")
        getter.stdin.flush()
        read_until(getter, "% (")  # a progress line: under way
        getter.stdin.write("/cancel 0000\n")  # no such download
        getter.stdin.write(f"/cancel {short_id[:8]}\n")
        getter.stdin.flush()
        assert "no download 0000 is under way" in read_until(getter, "no download")
        line = read_until(getter, "cancelled at ")
        assert re.search(rf"talk\.bin: cancelled at \d+%; what was fetched is kept, "
                         rf"/get {short_id} resumes it$", line.strip()), line
        assert (tmp_path / "dl" / "talk.bin.part").exists()
        assert not (tmp_path / "dl" / "talk.bin").exists()
        getter.stdin.write(f"/get {short_id} {tmp_path / 'dl'}\n")  # resumed
        getter.stdin.close()
        rest = getter.stdout.read()
        assert getter.wait(60) == 0  # a cancelled download is no failure
        assert re.search(r"saved .*talk\.bin \(8\.0 MiB", rest), rest
        assert (tmp_path / "dl" / "talk.bin").read_bytes() == source.read_bytes()
    finally:
        for proc in (getter, sharer):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)
