"""The package as a user installs it: `pip install .` then `twistd -n spchat`.

These tests look at the installed copy, not this checkout: the README's test
command (and CI) installs the project with plain `pip install .` first.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def installed_env():
    """Environment without this checkout on the path: only what pip installed."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_installed_twistd_lists_spchat(tmp_path):
    twistd = Path(sys.executable).parent / "twistd"
    assert twistd.exists(), f"{twistd} missing: install the project with `pip install .`"
    result = subprocess.run(
        [str(twistd), "--help"], cwd=tmp_path, env=installed_env(),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    commands = [line.split()[0] for line in result.stdout.splitlines()
                if line.startswith("    ") and line.split()]
    assert "spchat" in commands, (
        "twistd does not list spchat: was the project installed with `pip install .` "
        "(an editable install hides the plugin)?\n" + result.stdout
    )


def test_installed_server_help_shows_every_option(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "spchat", "--help"],
        cwd=tmp_path, env=installed_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--tcp-port", "--udp-port", "--host", "--data-dir", "--max-message-bytes"):
        assert option in result.stdout


def test_wheel_ships_the_plugin_without_shadowing_twisted(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    if built.returncode != 0:
        pytest.fail("pip wheel failed:\n" + built.stdout + built.stderr)
    (wheel,) = tmp_path.glob("spchat-*.whl")
    # One version: the wheel's is spchat.__version__ (setup.py has none of its own).
    from spchat import __version__
    assert wheel.name.startswith(f"spchat-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "twisted/plugins/spchat_plugin.py" in names
    # An __init__.py here would replace Twisted's own package (or hide its plugins).
    assert "twisted/__init__.py" not in names
    assert "twisted/plugins/__init__.py" not in names
    assert {"spchat/noise.py", "spchat/server/core.py", "spchat/client/__main__.py"} <= names


def test_setup_lists_every_package_of_the_checkout():
    import ast

    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    listed = next(ast.literal_eval(k.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Call) for k in node.keywords if k.arg == "packages")
    found = {".".join(init.parent.relative_to(REPO).parts)
             for init in (REPO / "spchat").rglob("__init__.py")}
    assert found <= set(listed), f"add to setup.py's packages: {sorted(found - set(listed))}"
