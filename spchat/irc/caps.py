"""IRCv3 capability negotiation (CAP LS/REQ/LIST/END) and SASL PLAIN's
AUTHENTICATE exchange, for one connection: what was asked and what is on."""

from __future__ import annotations

import base64
import binascii

# Only what works end to end; each value is what CAP LS 302 shows.
OFFERED = {
    "account-tag": "",
    "away-notify": "",
    "batch": "",
    "draft/chathistory": "",
    "echo-message": "",
    "labeled-response": "",
    "message-tags": "",
    # An operator may have a voice too: "@+" in NAMES and WHO.
    "multi-prefix": "",
    "sasl": "PLAIN",
    "server-time": "",
    "userhost-in-names": "",
}
# AUTHENTICATE payloads come in pieces of this many characters.
SASL_CHUNK = 400
# A PLAIN payload is a name and a password: far below this.
MAX_SASL_BYTES = 4096


class Caps:
    def __init__(self):
        self.enabled: set[str] = set()
        self.negotiating = False  # between CAP LS/REQ and CAP END: registration waits
        self.version = 301

    def __contains__(self, cap: str) -> bool:
        return cap in self.enabled

    def ls(self, version: str | None) -> list[str]:
        """CAP LS's answer: the capability list (302 shows values)."""
        if version and version.isdigit():
            self.version = max(self.version, int(version))
        self.negotiating = True
        if self.version >= 302:
            return [k + (f"={v}" if v else "") for k, v in sorted(OFFERED.items())]
        return sorted(OFFERED)

    def request(self, asked: str) -> bool:
        """CAP REQ: all of them or none (ACK or NAK)."""
        self.negotiating = True
        changes = asked.split()
        for cap in changes:
            if cap.lstrip("-") not in OFFERED:
                return False
        for cap in changes:
            if cap.startswith("-"):
                self.enabled.discard(cap[1:])
            else:
                self.enabled.add(cap)
        return True


class PlainSasl:
    """SASL PLAIN: collects the base64 payload; ``credentials`` once complete."""

    def __init__(self):
        self.started = False
        self._pieces: list[str] = []
        self._size = 0

    def start(self) -> None:
        self.started = True
        self._pieces, self._size = [], 0

    def abort(self) -> None:
        self.started = False
        self._pieces, self._size = [], 0

    def add(self, piece: str) -> tuple[str, str] | str | None:
        """One AUTHENTICATE piece.  None: more to come; a string: what is
        wrong; a pair: (account, password)."""
        self._size += len(piece)
        if self._size > MAX_SASL_BYTES:
            self.abort()
            return "too long"
        if piece != "+":
            self._pieces.append(piece)
        if len(piece) == SASL_CHUNK:
            return None
        payload, self._pieces = "".join(self._pieces), []
        self.started = False
        try:
            fields = base64.b64decode(payload, validate=True).decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return "not base64 of UTF-8"
        if len(fields) != 3 or not fields[1] or not fields[2]:
            return "not a PLAIN payload"
        authzid, authcid, password = fields
        if authzid and authzid != authcid:
            return "authorization as another account is not supported"
        return authcid, password
