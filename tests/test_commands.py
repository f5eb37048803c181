"""The commands a user types: `twistd -n spchat` and the line-mode client."""

import re
import subprocess
import time

import pytest

from conftest import ServerProcess, client_command, subprocess_env, twistd_command

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ")


def start_client(tmp_path, port, name, **env):
    return subprocess.Popen(
        client_command(port, name),
        cwd=tmp_path,
        env=subprocess_env(tmp_path, **env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc, pattern, timeout=20):
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r} in {lines!r}")


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(tmp_path)
    yield proc
    proc.stop()


def test_line_mode_clients_chat_through_twistd(tmp_path, server):
    bob = start_client(tmp_path, server.port, "bob", TZ="XYZ-05:45")
    read_until(bob, r"\* logged in as bob")
    alice = subprocess.run(
        client_command(server.port, "alice"),
        input="hello from alice\n/msg bob psst\n/who\n//slash\n",
        cwd=tmp_path, env=subprocess_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )
    assert alice.returncode == 0, alice.stderr
    # Comings and goings reach the room a moment later: wait for them.
    bob_seen = read_until(bob, r"\* alice left")
    out = alice.stdout.splitlines()
    assert all(LINE.match(line) for line in out), out
    assert any(line.endswith("] alice: hello from alice") for line in out)
    assert any(line.endswith("] alice -> bob: psst") for line in out)
    assert any(line.endswith("] * in #lobby: alice (online), bob (online)") for line in out)
    assert any(line.endswith("] alice: /slash") for line in out)
    bob_out, bob_err = bob.communicate(input="", timeout=60)
    assert bob.returncode == 0, bob_err
    bob_lines = [line.rstrip("\n") for line in bob_seen] + bob_out.splitlines()
    assert any(line.endswith("] * alice joined") for line in bob_lines)
    assert any(line.endswith("] alice: hello from alice") for line in bob_lines)
    assert any(line.endswith("] alice -> bob: psst") for line in bob_lines)
    assert any(line.endswith("] * alice left") for line in bob_lines)
    # Bob runs 5:45 ahead of UTC: the server's UTC stamp is shown in his time.
    shown = next(line for line in bob_lines if "hello from alice" in line)
    hh, mm, ss = map(int, shown[1:9].split(":"))
    there = time.gmtime(time.time() + 5.75 * 3600)
    delta = abs(hh * 3600 + mm * 60 + ss - (there.tm_hour * 3600 + there.tm_min * 60 + there.tm_sec))
    assert min(delta, 86400 - delta) < 120, shown


def test_taken_name_and_refused_messages_in_line_mode(tmp_path, server):
    bob = start_client(tmp_path, server.port, "bob")
    read_until(bob, r"\* logged in as bob")
    taken = subprocess.run(
        client_command(server.port, "BOB"), input="hi\n",
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert taken.returncode != 0
    assert taken.stderr.strip().splitlines() == [
        "spchat: login refused: the name 'BOB' is taken; try --name BOB2"]
    errors = subprocess.run(
        client_command(server.port, "carol"),
        input="x" * 9000 + "\n/msg nobody hi\n/bogus\n",
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    # Refused messages are reported, and the exit status tells a script.
    assert errors.returncode == 1
    assert errors.stderr == "spchat: 2 messages refused\n"
    assert "the limit is 8192 bytes" in errors.stdout
    assert "nobody called 'nobody' is online, and direct messages are kept only for registered" in errors.stdout
    assert "unknown command /bogus" in errors.stdout
    bob.communicate(input="", timeout=60)


def test_unreachable_server_and_changed_key_are_one_line_errors(tmp_path, server):
    first = subprocess.run(
        client_command(server.port, "dave"), input="",
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert f"key {server.fingerprint} pinned" in first.stdout
    # Same address, new server with a new key (a fresh data dir).
    server.stop()
    (tmp_path / "other").mkdir()
    impostor = None
    for _ in range(20):  # the old port may linger briefly
        try:
            impostor = ServerProcess(tmp_path / "other", "--tcp-port", str(server.port),
                                     env=subprocess_env(tmp_path))
            break
        except AssertionError:
            time.sleep(0.5)
    assert impostor is not None
    try:
        refused = subprocess.run(
            client_command(server.port, "dave"), input="hi\n",
            cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True,
            timeout=60,
        )
    finally:
        impostor.stop()
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert server.fingerprint in line and impostor.fingerprint in line
    assert "--forget-server" in line and "Traceback" not in refused.stderr
    gone = subprocess.run(
        client_command(server.port, "dave"), input="",
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert gone.returncode != 0
    (line,) = gone.stderr.strip().splitlines()
    assert "nothing is listening at 127.0.0.1:" in line


def test_server_start_prints_address_and_fingerprint_and_keeps_its_key(tmp_path):
    first = ServerProcess(tmp_path)
    first.stop()
    key = tmp_path / "data" / "server_key"
    assert key.stat().st_mode & 0o777 == 0o600
    again = ServerProcess(tmp_path)
    assert again.fingerprint == first.fingerprint
    again.stop()


def test_the_nodes_of_a_cluster_share_the_first_ones_key(tmp_path):
    from spchat.server.identity import KEY_FILE, share_server_key

    dirs = [tmp_path / "a", tmp_path / "b" / "data", tmp_path / "c"]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / KEY_FILE).write_bytes(b"an old key of its own".ljust(32, b"."))
    share_server_key(dirs)
    key = (dirs[0] / KEY_FILE).read_bytes()
    for data_dir in dirs:
        assert (data_dir / KEY_FILE).read_bytes() == key
        assert (data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert data_dir.stat().st_mode & 0o777 == 0o700 or data_dir == dirs[2]
    first, second = (ServerProcess(tmp_path / name, "--data-dir", str(data_dir))
                     for name, data_dir in (("a", dirs[0]), ("c", dirs[2])))
    try:
        assert first.fingerprint == second.fingerprint
    finally:
        first.stop()
        second.stop()


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["--tcp-port", "abc"], {}, "--tcp-port='abc'"),
        (["--tcp-port", "70000"], {}, "--tcp-port='70000'"),
        ([], {"CHAT_TCP_PORT": "70000"}, "CHAT_TCP_PORT='70000'"),
        ([], {"CHAT_IDLE_TIMEOUT": "-5"}, "CHAT_IDLE_TIMEOUT='-5'"),
    ],
)
def test_invalid_setting_stops_startup_with_one_line(tmp_path, args, env, says):
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "spchat", "--data-dir", str(tmp_path / "d"),
                            *args],
        cwd=tmp_path, env=subprocess_env(tmp_path, **env),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_obsolete_secret_settings_warn(tmp_path):
    proc = ServerProcess(tmp_path, env=subprocess_env(tmp_path, CHAT_SECRET_KEY="x", CHAT_IV="y"))
    proc.stop()
    log = "".join(proc.log)
    assert "CHAT_SECRET_KEY is ignored" in log and "CHAT_IV is ignored" in log


def test_twistd_n_as_the_readme_writes_it_leaves_no_pid_file(tmp_path):
    # Two nodes from one directory (as in the README's cluster): the second
    # would be refused if the first had left a twistd.pid there.
    first = ServerProcess(tmp_path, no_pid_file=False)
    try:
        second = ServerProcess(tmp_path, "--data-dir", str(tmp_path / "data2"),
                               no_pid_file=False)
        second.stop()
        assert not (tmp_path / "twistd.pid").exists()
    finally:
        first.stop()


def test_port_in_use_is_a_one_line_error(tmp_path, server):
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "spchat", "--host", "127.0.0.1",
                            "--tcp-port", str(server.port), "--udp-port", "0",
                            "--data-dir", str(tmp_path / "d2")],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1 port {server.port}" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_the_chat_listens_where_an_endpoint_description_says(tmp_path):
    # Another loopback address than the default, and any free port.
    server = ServerProcess(tmp_path, "--listen", "tcp:0:interface=127.0.0.2")
    try:
        assert "listening on TCP 127.0.0.2:" in "".join(server.log)
        command = client_command(server.port, "alice")
        command[command.index("127.0.0.1")] = "127.0.0.2"
        said = subprocess.run(command,
                              input="hello over 127.0.0.2\n", cwd=tmp_path,
                              env=subprocess_env(tmp_path), capture_output=True, text=True,
                              timeout=60)
        assert said.returncode == 0, said.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("listen, words", [
    ("nonsense:5000", "bad endpoint"),
    ("tcp:notaport", "bad endpoint"),
])
def test_a_bad_endpoint_is_a_one_line_error(tmp_path, listen, words):
    result = subprocess.run(
        twistd_command() + ["-n", "--pidfile=", "spchat", "--listen", listen, "--udp-port", "0",
                            "--data-dir", str(tmp_path / "d")],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0 and words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_slow_reader_of_the_output_loses_nothing(tmp_path, server):
    reader = start_client(tmp_path, server.port, "reader")
    read_until(reader, r"\* logged in as reader")
    lines = [f"{i:03d} " + "y" * 3000 for i in range(60)]  # ~180 KB: fills a pipe
    sender = subprocess.run(
        client_command(server.port, "sender"), input="\n".join(lines) + "\n",
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert sender.returncode == 0, sender.stderr
    time.sleep(1)  # the reader's output pipe has been full all this while
    out, err = reader.communicate(input="", timeout=60)
    assert reader.returncode == 0, err
    got = [line.split(": ", 1)[1] for line in out.splitlines() if "] sender: " in line]
    assert got == lines


def test_over_long_and_unterminated_lines(tmp_path, server):
    text = "A" * (1 << 20) + "TAIL\nafter\n" + "B" * (2 << 20) + "\nlast without newline"
    result = subprocess.run(
        client_command(server.port, "dora"), input=text,
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    said = [line.split("] dora: ", 1)[1] for line in result.stdout.splitlines()
            if "] dora: " in line]
    assert said == ["after", "last without newline"]
    assert result.stdout.count("it was not sent") + result.stdout.count("; not sent") == 2
    assert result.returncode == 1
    assert result.stderr == "spchat: 2 messages refused\n"


def test_closed_output_ends_the_client_quietly(tmp_path, server):
    command = " ".join(f"'{part}'" for part in client_command(server.port, "eve"))
    result = subprocess.run(
        f"(printf 'a\\nb\\nc\\n'; sleep 1) | {command} | head -1",
        shell=True, cwd=tmp_path, env=subprocess_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )
    assert len(result.stdout.splitlines()) == 1
    assert "Traceback" not in result.stderr and "Unhandled" not in result.stderr
    assert result.stderr == ""


def test_line_mode_reconnects_after_a_server_restart(tmp_path, server):
    env = subprocess_env(tmp_path, CHAT_RECONNECT_DELAY="0.3", CHAT_MAX_RETRIES="20")
    frank = subprocess.Popen(
        client_command(server.port, "frank"), cwd=tmp_path, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    read_until(frank, r"\* logged in as frank")
    frank.stdin.write("before\n")
    frank.stdin.flush()
    read_until(frank, r"\] frank: before")
    server.proc.kill()  # kill -9: no goodbye
    server.proc.wait()
    read_until(frank, r"\* reconnecting \(attempt 1 of 20\)")
    frank.stdin.write("typed while away\n")
    frank.stdin.flush()
    restarted = ServerProcess(tmp_path, "--tcp-port", str(server.port))
    try:
        lines = read_until(frank, r"\] frank: typed while away")
        assert any("* reconnected" in line for line in lines)
        out, err = frank.communicate(input="", timeout=60)
        assert frank.returncode == 0, err
    finally:
        restarted.stop()


def test_line_mode_shows_history_and_pages_back(tmp_path, server):
    env = subprocess_env(tmp_path)
    first = subprocess.run(client_command(server.port, "alice"), input="one\ntwo\n",
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    later = subprocess.run(client_command(server.port, "carol"), input="/history\n",
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert later.returncode == 0, later.stderr
    lines = later.stdout.splitlines()
    assert [line[11:] for line in lines if "(history)" in line] == [
        "(history) alice: one", "(history) alice: two"]
    assert lines[-2].endswith("* no older messages")


def test_line_mode_register_then_password_login(tmp_path, server):
    env = subprocess_env(tmp_path)
    # No terminal to ask on (standard input is what is said): refused in words.
    unasked = subprocess.run(client_command(server.port, "rita", "--register"),
                             input="hi\n", cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
    assert unasked.returncode == 2
    assert unasked.stderr == ("spchat: error: cannot ask for the password without a "
                              "terminal; use --password-file FILE or $SPCHAT_PASSWORD\n")
    (tmp_path / "pw").write_text("s3cret pass\n", encoding="utf-8")
    reg = subprocess.run(client_command(server.port, "rita", "--password-file", "pw",
                                        "--register"),
                         input="", cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert reg.returncode == 0, reg.stderr
    assert "the name rita is now registered to you" in reg.stdout
    assert "warning" not in reg.stderr
    guest = subprocess.run(client_command(server.port, "rita"), input="",
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert guest.returncode != 0
    assert guest.stderr.strip() == (
        "spchat: login refused: the name 'rita' is registered; log in with its password")
    back = subprocess.run(client_command(server.port, "rita", "--password", "s3cret pass"),
                          input="hello again\n", cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert back.returncode == 0, back.stderr
    assert "] rita: hello again" in back.stdout
    assert "spchat: warning: --password puts the password where other users" in back.stderr
    from_env = subprocess.run(client_command(server.port, "rita"), input="from env\n",
                              cwd=tmp_path, env={**env, "SPCHAT_PASSWORD": "s3cret pass"},
                              capture_output=True, text=True, timeout=60)
    assert from_env.returncode == 0, from_env.stderr
    assert "] rita: from env" in from_env.stdout and from_env.stderr == ""


def test_line_mode_gets_what_waited_for_it_at_login(tmp_path, server):
    env = subprocess_env(tmp_path)
    (tmp_path / "pw").write_text("s3cret pass\n", encoding="utf-8")
    rita = client_command(server.port, "rita", "--password-file", "pw")
    reg = subprocess.run(rita + ["--register"], input="", cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert reg.returncode == 0, reg.stderr
    sent = subprocess.run(client_command(server.port, "alice"),
                          input="/msg rita are you there?\n/msg rita call me\n",
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert "] * rita is offline: they will get your messages when they log in" in sent.stdout
    acked = [line for line in sent.stdout.splitlines() if "alice -> rita" in line]
    # /history is answered after what waited: the client stays for both.
    back = subprocess.run(rita, input="/history\n", cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert back.returncode == 0, back.stderr
    got = [line for line in back.stdout.splitlines() if "alice -> rita" in line]
    assert got == acked and [line[11:] for line in got] == [
        "alice -> rita: are you there?", "alice -> rita: call me"]  # at the times sent
    again = subprocess.run(rita, input="/history\n", cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert "alice -> rita" not in again.stdout


def test_line_mode_account_commands_typed_early_or_last_are_answered(tmp_path, server):
    env = subprocess_env(tmp_path)
    bad = subprocess.run(client_command(server.port, "reg1"), input="/register short\n",
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "too short" in bad.stdout
    good = subprocess.run(client_command(server.port, "reg2"), input="/register good password\n",
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert "the name reg2 is now registered to you" in good.stdout
