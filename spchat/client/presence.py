"""The presence beacon's client side.

After login the client session derives the beacon keys from the Noise
handshake hash and starts a :class:`PresenceClient` on a UDP port of its own.
It sends an authenticated hello, repeated every three intervals (to keep NAT
bindings open and to recover from a lost hello).  The server answers a hello
from an address it has not proven yet (the first one, or a new one after a
NAT rebinding) only with a cookie; the client proves that it receives there
by echoing the cookie at once in a hello of the same size, and only then do
snapshots come.  It hands every complete, fresh snapshot to ``on_snapshot``.
When no snapshot has arrived for three intervals (UDP blocked or the server
gone) it calls ``on_silence`` once, and again after each further three silent
intervals, so the session can ask for presence over TCP instead.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from spchat import beacon

SILENT_INTERVALS = 3
HELLO_INTERVALS = 3


class PresenceClient(DatagramProtocol):
    log = Logger()
    noisy = False

    def __init__(
        self,
        keys: beacon.BeaconKeys,
        server: tuple[str, int],
        clock,
        interval: float,
        on_snapshot,
        on_silence,
    ):
        """``server`` is ``(ip_address, port)``: Twisted writes UDP to IPs only."""
        if interval <= 0:
            raise ValueError("the beacon interval must be positive")
        self.keys = keys
        self.server = server
        self.clock = clock
        self.interval = interval
        self.on_snapshot = on_snapshot
        self.on_silence = on_silence
        self.window = beacon.ReplayWindow()
        self.assembler = beacon.SnapshotAssembler()
        self.counter = 0  # the next hello's counter under keys.c2s
        self.server_interval: float | None = None  # as the last snapshot said
        self.members: tuple[tuple[str, str], ...] | None = None
        self.snapshots = 0  # complete snapshots delivered
        self.hellos = 0  # hellos sent, cookie echoes included
        self.cookies = 0  # authentic, fresh cookies received (and echoed)
        self.silences = 0
        self.refused = 0  # ICMP port unreachable reports
        self.dropped: Counter[str] = Counter()
        self._hello_loop: task.LoopingCall | None = None
        self._watchdog = None

    # --- Twisted side ------------------------------------------------------

    def startProtocol(self):
        # The socket is deliberately left unconnected.  On a connected UDP
        # socket an ICMP "port unreachable" (server not up yet, UDP port
        # firewalled with REJECT) makes the poll and epoll reactors close the
        # port outright instead of calling connectionRefused (Twisted issues
        # #5377, #6287, #6467): the hellos would stop and, the timers being
        # stopped with the port, so would the watchdog, and the session would
        # never fall back to TCP.  Unconnected, Linux does not report the ICMP
        # error and the port lives on.  Nothing is lost by it: whatever
        # arrives must authenticate under this session's key, wherever it
        # comes from (which also keeps a multi-homed server that answers from
        # another address working).
        self.send_hello()
        self._hello_loop = task.LoopingCall(self.send_hello)
        self._hello_loop.clock = self.clock
        self._hello_loop.start(self.interval * HELLO_INTERVALS, now=False)
        self._watchdog = self.clock.callLater(self._silence_after(), self._silent)

    def stopProtocol(self):
        self.stop()

    def stop(self) -> None:
        """Stop the hello and watchdog timers (the port's owner closes the port)."""
        if self._hello_loop is not None and self._hello_loop.running:
            self._hello_loop.stop()
        self._hello_loop = None
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = None

    def connectionRefused(self):
        # Only a connected port reports ICMP port unreachable, and this one is
        # not connected (see startProtocol); should a reactor report it anyway,
        # the hellos continue and the watchdog reports the silence.
        self.refused += 1

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._beacon(data)
        except Exception:
            self.dropped["error"] += 1
            self.log.failure("presence beacon from {addr} failed", addr=addr)

    # --- hello -------------------------------------------------------------

    def send_hello(self, cookie: bytes | None = None) -> None:
        """A plain hello, or one echoing the server's ``cookie``."""
        transport = self.transport
        if transport is None:
            return
        plaintext = beacon.cookie_hello(cookie)
        counter = self.counter
        self.counter = counter + 1  # never reused, even if the write fails
        datagram = self.keys.c2s_cipher.seal(self.keys.key_id, counter, plaintext)
        try:
            transport.write(datagram, self.server)
        except Exception as e:
            self.log.debug("presence hello not sent: {error}", error=e)
            return
        self.hellos += 1

    # --- beacons -----------------------------------------------------------

    def _beacon(self, data: bytes) -> None:
        if len(data) < beacon.MIN_DATAGRAM:
            self.dropped["truncated"] += 1
            return
        if beacon.peek_key_id(data) != self.keys.key_id:
            self.dropped["unknown"] += 1
            return
        try:
            counter, plaintext = self.keys.s2c_cipher.open(data)
        except beacon.BeaconError as e:
            self.dropped[e.reason] += 1
            return
        if not self.window.accept(counter):
            self.dropped["replayed"] += 1
            return
        if beacon.is_cookie_reply(plaintext):
            try:
                cookie = beacon.parse_cookie_reply(plaintext)
            except beacon.BeaconError as e:
                self.dropped[e.reason] += 1
                return
            # The server will not beacon this address until it sees the
            # cookie come back from it.  Periodic hellos stay plain: a lost
            # echo is recovered by the next hello's fresh cookie.
            self.cookies += 1
            self.send_hello(cookie)
            return
        try:
            complete = self.assembler.feed(counter, plaintext)
        except beacon.BeaconError as e:
            self.dropped[e.reason] += 1
            return
        if complete is None:
            return
        self.server_interval, self.members = complete
        self.snapshots += 1
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.reset(self._silence_after())
        try:
            self.on_snapshot(self.members)
        except Exception:
            self.log.failure("presence on_snapshot callback failed")

    # --- watchdog ----------------------------------------------------------

    def _silence_after(self) -> float:
        # Trust the server's own interval when it is the longer one, so a
        # server configured slower than us is not reported as silent.
        return SILENT_INTERVALS * max(self.interval, self.server_interval or 0.0)

    def _silent(self) -> None:
        self.silences += 1
        self._watchdog = self.clock.callLater(self._silence_after(), self._silent)
        try:
            self.on_silence()
        except Exception:
            self.log.failure("presence on_silence callback failed")
