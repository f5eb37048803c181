"""Writing to a TCP connection's socket at once, past Twisted's buffer.

A plain ``transport.write`` costs two epoll_ctl calls and a reactor wake-up
per write, which was most of the server's cost of a frame: when Twisted has
nothing queued for the connection (the usual case), the bytes go to the
kernel now, and only what it did not take goes to Twisted's buffer, behind
which everything later queues until it drains.

Twisted has no public way to ask whether a connection's buffer is empty,
so this one class reads its attributes (``dataBuffer``,
``_tempDataBuffer``, ``_aborting``); its tests fail if a Twisted release
moves them, and anything other than a plain ``tcp.Connection`` (TLS, a
test transport) is written the ordinary way.
"""

from __future__ import annotations

from twisted.internet import tcp


class SocketWriter:
    __slots__ = ("transport", "_socket")

    def __init__(self, transport):
        self.transport = transport
        plain = isinstance(transport, tcp.Connection) and not transport.TLS
        self._socket = transport.socket if plain else None

    def _buffer_empty(self) -> bool:
        t = self.transport
        return (t.connected and not t.disconnecting and not t._aborting
                and not t.TLS  # TLS started later encrypts inside write()
                and not t.dataBuffer and not t._tempDataBuffer)

    def write(self, data: bytes) -> None:
        if self._socket is not None and self._buffer_empty():
            try:
                sent = self._socket.send(data)
            except OSError:  # would block, or a dead peer: Twisted sees to it
                sent = 0
            data = data[sent:]
            if not data:
                return
        self.transport.write(data)
