"""scripts/run_server.sh and scripts/run_client.sh, as a user runs them."""

import re
import subprocess
import threading

from conftest import REPO, subprocess_env


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
