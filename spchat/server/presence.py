"""The presence beacon's server side: one UDP port for every session.

Thin on purpose: datagram formats and checks live in ``spchat.beacon``.

A client proves its UDP endpoint with an authenticated hello; from then on
the server sends that endpoint an encrypted snapshot of the room every
``interval`` seconds and at once when the chat core reports a change.  A
datagram that does not authenticate gets no answer of any size (no
reflection, no amplification, no oracle); it is counted in ``dropped`` by
reason and logged at most once a minute per reason.

The directory (the chat core's side) is any object with::

    beacon_peer(key_id) -> peer or None
    beacon_peers() -> iterable of peers
    presence_snapshot() -> sequence of (display_name, state)

where a peer has ``keys`` (BeaconKeys), ``window`` (ReplayWindow for its
hellos), ``endpoint`` (proven (host, port) or None) and ``send_counter`` (the
next counter under its ``s2c`` key; only this class advances it).
"""

from __future__ import annotations

from collections import Counter

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from spchat import beacon

# At most one log line per drop reason in this many seconds.
LOG_EVERY_SECONDS = 60.0


class PresenceServer(DatagramProtocol):
    log = Logger()
    noisy = False

    def __init__(self, directory, clock, interval: float = 2.0):
        beacon.check_interval(interval)
        self.directory = directory
        self.clock = clock
        self.interval = interval
        self.dropped: Counter[str] = Counter()
        self.accepted = 0  # authentic, fresh hellos
        self.sent = 0  # datagrams written
        self.send_errors = 0
        self._loop: task.LoopingCall | None = None
        self._pending = None  # the coalesced send after changed()
        self._last_log: dict[str, float] = {}

    # --- Twisted side ------------------------------------------------------

    def startProtocol(self):
        self._loop = task.LoopingCall(self.broadcast)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: self.log.failure("presence broadcast loop stopped", f)
        )

    def stopProtocol(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._hello(data, addr)
        except Exception:
            # A bug here must not take the port down with it.
            self.dropped["error"] += 1
            if self._may_log("error"):
                self.log.failure("presence datagram from {addr} failed", addr=addr)

    # --- receiving ---------------------------------------------------------

    def _hello(self, data: bytes, addr) -> None:
        if len(data) < beacon.MIN_DATAGRAM:
            self._drop("truncated", addr)
            return
        peer = self.directory.beacon_peer(beacon.peek_key_id(data))
        if peer is None:
            self._drop("unknown", addr)
            return
        try:
            counter, plaintext = peer.keys.c2s_cipher.open(data)
        except beacon.BeaconError as e:
            self._drop(e.reason, addr)
            return
        window = peer.window
        newest = window.highest is None or counter > window.highest
        if not window.accept(counter):
            self._drop("replayed", addr)
            return
        if plaintext != beacon.HELLO:
            self._drop("garbage", addr)
            return
        self.accepted += 1
        if not newest:
            # Authentic but overtaken by a later hello (UDP reordering): it
            # must not move the endpoint back to where the client was.
            return
        # A first hello proves the endpoint; a newer one from elsewhere moves
        # it (the client's NAT gave it a new address).
        peer.endpoint = addr
        self._send(self._snapshot(), (peer,))

    def _drop(self, reason: str, addr) -> None:
        self.dropped[reason] += 1
        self._rate_limited_log(
            reason, "presence: dropped {reason} datagram from {addr} ({total} so far)",
            addr=addr, total=self.dropped[reason],
        )

    def _rate_limited_log(self, key: str, fmt: str, **kw) -> None:
        if self._may_log(key):
            self.log.debug(fmt, reason=key, **kw)

    def _may_log(self, key: str) -> bool:
        """True at most once per LOG_EVERY_SECONDS for each key."""
        now = self.clock.seconds()
        last = self._last_log.get(key)
        if last is not None and now - last < LOG_EVERY_SECONDS:
            return False
        self._last_log[key] = now
        return True

    # --- sending -----------------------------------------------------------

    def changed(self) -> None:
        """Membership or a state changed: send soon, once per reactor turn."""
        if self._pending is None or not self._pending.active():
            self._pending = self.clock.callLater(0, self._flush_changed)

    def _flush_changed(self) -> None:
        self._pending = None
        self.broadcast()

    def broadcast(self) -> None:
        """The current snapshot to every peer that proved an endpoint."""
        try:
            peers = [p for p in self.directory.beacon_peers() if p.endpoint is not None]
            if peers:
                self._send(self._snapshot(), peers)
        except Exception:
            # Raising here would stop the LoopingCall for good.
            if self._may_log("broadcast-error"):
                self.log.failure("presence broadcast failed")

    def _snapshot(self) -> list[bytes]:
        # Encoded once, encrypted per peer.
        return beacon.encode_snapshot_parts(self.interval, self.directory.presence_snapshot())

    def _send(self, parts: list[bytes], peers) -> None:
        transport = self.transport
        if transport is None:
            return
        for peer in peers:
            keys = peer.keys
            cipher = keys.s2c_cipher
            # The parts of one snapshot take consecutive counters: the client
            # groups them by counter - part.
            for plaintext in parts:
                counter = peer.send_counter
                peer.send_counter = counter + 1  # never reused, even if the write fails
                datagram = cipher.seal(keys.key_id, counter, plaintext)
                try:
                    transport.write(datagram, peer.endpoint)
                except Exception as e:
                    self.send_errors += 1
                    self._rate_limited_log(
                        "send-error", "presence: send to {addr} failed: {error}",
                        addr=peer.endpoint, error=e,
                    )
                    break
                self.sent += 1
