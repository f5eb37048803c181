"""Where the client's password comes from, never shown as it is typed.

A password on the command line (``--password``) is seen by every user of
the machine (``ps``) and stays in the shell's history: it still works, with
a warning. The ways meant for it: ``--password-file FILE`` (its first
line), the environment variable ``SPCHAT_PASSWORD``, or ``--ask-password``
(a prompt without echo, asked before the reactor starts, so nothing waits
on it; ``--register`` asks too when no password is given otherwise).
"""

from __future__ import annotations

import getpass
import os
import sys

PASSWORD_ENV = "SPCHAT_PASSWORD"
COMMAND_LINE_WARNING = (
    "--password puts the password where other users of this machine can see it "
    "(ps, your shell's history); use --password-file FILE, $SPCHAT_PASSWORD or "
    "--ask-password instead"
)


class PasswordError(ValueError):
    """No password could be had the way asked: said in one line."""


def terminal_prompt():
    """getpass where there is a terminal to ask on (not on a pipe: that is
    what is to be said in the chat), else None."""
    return getpass.getpass if sys.stdin.isatty() else None


def read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\r\n")
    except OSError as e:
        raise PasswordError(f"--password-file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PasswordError(f"--password-file {path}: not UTF-8 text") from None
    if not first:
        raise PasswordError(f"--password-file {path}: its first line is empty")
    return first


def _ask(ask, register: bool) -> str:
    if ask is None:
        raise PasswordError("cannot ask for the password without a terminal; use "
                            f"--password-file FILE or ${PASSWORD_ENV}")
    try:
        password = ask("password: ")
        if password and register and ask("the same password again: ") != password:
            raise PasswordError("the two passwords typed differ")
    except (EOFError, KeyboardInterrupt):
        raise PasswordError("no password typed") from None
    if not password:
        raise PasswordError("no password typed")
    return password


def choose_password(args, environ=os.environ, ask=None, warn=lambda text: None,
                    form: bool = False) -> str | None:
    """The password ``args`` (from the command line) lead to, or None.

    ``ask`` is a getpass-like prompt (None: there is no terminal); ``warn``
    gets the warning for ``--password``; ``form``: the window's masked field
    asks instead of a prompt (None then, where a prompt would be).
    """
    if args.password is not None:
        warn(COMMAND_LINE_WARNING)
        return args.password
    if args.password_file is not None:
        return read_password_file(args.password_file)
    from_env = environ.get(PASSWORD_ENV) or None
    register = getattr(args, "register", False)  # share and get do not register
    if args.ask_password or (register and from_env is None):
        return None if form else _ask(ask, register)
    return from_env


def add_password_options(parser) -> None:
    """--password-file, --ask-password and --password (one of them)."""
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-file", metavar="FILE",
        help="read the password of a registered name from FILE's first line",
    )
    secret.add_argument(
        "--ask-password", action="store_true",
        help="ask for the password, without echo, before connecting (not in the window)",
    )
    secret.add_argument(
        "--password", help=f"the password itself (seen by others in ps: prefer "
                           f"--password-file, ${PASSWORD_ENV} or --ask-password)",
    )


def password_or_exit(args, ask, form: bool = False) -> str | None:
    """The password the command line leads to; a one-line error (exit
    status 2) if none can be had."""
    try:
        return choose_password(args, ask=ask, form=form,
                               warn=lambda text: sys.stderr.write(f"spchat: warning: {text}\n"))
    except PasswordError as e:
        sys.stderr.write(f"spchat: error: {e}\n")
        raise SystemExit(2) from None
