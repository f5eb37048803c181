"""What went wrong on the way to a server, in plain words.

Twisted's own texts ("Connection was refused by other side: 111:
Connection refused.") are for logs; a person reading the window, the
connect form or line mode gets what it means for them.
"""

from __future__ import annotations

import socket

from twisted.internet import error


def dial_error_text(failure, host: str, port: int, where: str | None = None) -> str:
    """Why a TCP connection to ``host:port`` (shown as ``where``) could not be made."""
    where = where or f"{host}:{port}"
    if failure.check(error.ConnectionRefusedError):
        return f"nothing is listening at {where} (connection refused)"
    if failure.check(error.DNSLookupError, socket.gaierror):
        return f"{host}: no such host"
    if failure.check(error.TimeoutError, error.TCPTimedOutError):
        return f"no answer from {where}"
    if failure.check(error.NoRouteError):
        return f"no route to {where} (is the network up?)"
    text = failure.getErrorMessage() or failure.type.__name__
    return f"cannot reach {where}: {text.rstrip('.')}"


def not_spchat_text(where: str) -> str:
    """Something answered at ``where`` (host:port), not in spchat's handshake."""
    return f"{where} is not an spchat server (it answered in another protocol)"


def no_answer_text(where: str, seconds: float) -> str:
    """A connection was taken at ``where`` (host:port), and nothing said on it."""
    return (f"no answer from {where} within {seconds:g} s "
            "(is it an spchat server, and the right port?)")
