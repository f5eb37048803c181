"""Chat events made once for many recipients.

The core hands the same object to every member of a room; each front-end
encodes it in its own format, once, and keeps that encoding here
(``cached``), so the second member's copy costs no encoding at all.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from spchat import wire
from spchat.server.records import Record


class _Shared:
    __slots__ = ("encoded",)

    def __init__(self):
        # By format: what a front-end made of this once, for every recipient
        # (read with encoded.get(fmt) on the hot path: no call of ours).
        self.encoded: dict[str, Any] = {}

    def cached(self, fmt: str, make: Callable[..., Any], *args) -> Any:
        """``make(*args)``'s result, made on the first call for this format."""
        value = self.encoded.get(fmt)
        if value is None:
            value = self.encoded[fmt] = make(*args)
        return value


class SharedEvents(_Shared):
    """The same wire messages, in order, for many clients.

    ``suffix(i)`` is the messages from the i-th on, sharing this object's
    per-message encodings (``each``): a room's newcomers get only what
    happened after they came, without encoding anything twice."""

    __slots__ = ("_all", "_start", "_messages")

    def __init__(self, messages: Sequence[wire.Message], _root: SharedEvents | None = None,
                 _start: int = 0):
        super().__init__()
        self._all = _root if _root is not None else self
        self._start = _start
        if _root is None:
            self._messages = list(messages)

    @property
    def messages(self) -> list[wire.Message]:
        return self._all._messages[self._start:]

    def suffix(self, start: int) -> SharedEvents:
        return SharedEvents((), self._all, self._start + start)

    def each(self, fmt: str, encode: Callable[[wire.Message], Any]) -> list:
        """Every message encoded by ``encode``, each once for all suffixes."""
        encoded = self._all.cached(fmt, _encode_all, encode, self._all._messages)
        return encoded[self._start:]


def _encode_all(encode, messages) -> list:
    return [encode(m) for m in messages]


class LineBatch(_Shared):
    """Saved lines of one room, in its order, for every member online."""

    __slots__ = ("room", "records")

    def __init__(self, room: str, records: list[Record]):
        super().__init__()
        self.room = room  # the room's display form (records hold its key)
        self.records = records

    def messages_for(self, key: str) -> list[wire.Message]:
        """The lines as wire messages for the member ``key``: its own carry their cid."""
        return [r.for_recipient(key, self.room) for r in self.records]
