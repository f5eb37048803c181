"""The desktop client's connect form: checking it, remembering it, trust texts.

No Tk here: the window hands over what was typed and shows what comes back.
The last values (never the password) are kept in ``desktop.json`` in the
client's config dir, next to the pinned server keys.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from spchat.client.addresses import parse_addresses
from spchat.client.pins import PinMismatch, UnknownServer

LAST_VALUES_FILE = "desktop.json"


@dataclass(frozen=True)
class ConnectForm:
    host: str  # one address, or several: the nodes of one server
    port: int
    name: str
    password: str | None = None
    register: bool = False


def check_form(host: str, port: str, name: str, password: str, register: bool) -> ConnectForm:
    """The form as typed -> ConnectForm, or ValueError saying what to fix."""
    host, port, name = host.strip(), port.strip(), name.strip()
    if not host:
        raise ValueError("enter the server's address")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"the port must be a number, not {port!r}") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"the port must be 1-65535, not {number}")
    parse_addresses(host, number)  # several are a server's nodes ("a,b:7001")
    if not name:
        raise ValueError("enter the name to chat under")
    if register and not password:
        raise ValueError("to register the name, enter a password for it")
    return ConnectForm(host, number, name, password or None, register)


def load_last(config_dir: Path) -> dict:
    """What was typed last time (host, port, name), or {} if nothing usable."""
    try:
        data = json.loads((Path(config_dir) / LAST_VALUES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # first run, or a damaged file: start from the defaults
    if not isinstance(data, dict):
        return {}
    return {k: str(data[k]) for k in ("host", "port", "name") if isinstance(data.get(k), (str, int))}


def save_last(config_dir: Path, form: ConnectForm) -> None:
    """Remember the form for next time; the password is never written."""
    config_dir = Path(config_dir)
    values = {k: v for k, v in asdict(form).items() if k in ("host", "port", "name")}
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config_dir, prefix=".desktop.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(values, f)
        os.replace(tmp, config_dir / LAST_VALUES_FILE)
    except BaseException:
        os.unlink(tmp)
        raise


@dataclass(frozen=True)
class TrustQuestion:
    """What the trust panel shows; ``can_trust`` is False for a changed key."""

    title: str
    text: str
    fingerprint: str
    can_trust: bool


def trust_question(problem: Exception) -> TrustQuestion:
    if isinstance(problem, UnknownServer):
        return TrustQuestion(
            f"First connection to {problem.host}:{problem.port}",
            "This server has not been seen before. Check that its key fingerprint "
            "is the one your server's admin gave you (twistd prints it at start), "
            "then trust it. It will be remembered, and a different key later will "
            "be refused.",
            problem.fingerprint,
            True,
        )
    if isinstance(problem, PinMismatch):
        return TrustQuestion(
            changed_title(problem),
            f"Remembered: {problem.pinned}\nPresented:  {problem.presented}\n\n"
            "This may be an attack, so spchat will not connect. If the server's key "
            "was really replaced, ask its admin, then forget the old key with: "
            f"{forget_command(problem.where)}",
            problem.presented,
            False,
        )
    raise TypeError(f"not a trust problem: {problem!r}")


def changed_title(problem: PinMismatch) -> str:
    if problem.presented_at != problem.where:  # another node of the list
        return f"{problem.presented_at} presents another key than {problem.where}"
    return f"The key of {problem.where} has CHANGED"


def forget_command(where: str) -> str:
    return f"python -m spchat.client --forget-server {where}"


@dataclass(frozen=True)
class KeyChange:
    """What the chat shows when the server's key changed during it: both
    keys, what it may mean and what to do (it never reconnects by itself)."""

    where: str  # host:port
    pinned: str
    presented: str
    title: str
    text: str


def key_change(problem: PinMismatch) -> KeyChange:
    return KeyChange(
        problem.where, problem.pinned, problem.presented,
        f"{changed_title(problem)}: not reconnecting",
        "This may be an attack (someone between you and the server, posing as it), so "
        "spchat will not talk to it. If the server's key was really replaced, ask its admin "
        "for the new fingerprint, then forget the old key (the button below, or "
        f"{forget_command(problem.where)}) and check the new one when asked to trust it.",
    )
