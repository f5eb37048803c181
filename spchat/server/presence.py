"""The presence beacon's server side: one UDP port for every session.

Thin on purpose: datagram formats and checks live in ``spchat.beacon``.

A client proves its UDP endpoint by return routability: an authenticated
hello from an address that is not the session's endpoint gets only a cookie
datagram no larger than the hello (at most one a second per session), and a
hello that echoes a valid cookie for its source address makes that address
the endpoint, so a key holder who forges another's source address cannot make
the server send it more than it sent.  From then on the server sends that
endpoint an encrypted snapshot of the room every ``interval`` seconds and at
once when the chat core reports a change; plain hellos from the endpoint
itself are keepalives and answered by nothing.  A datagram that does not
authenticate, or echoes a wrong or expired cookie, gets no answer of any size
(no reflection, no amplification, no oracle); it is counted in ``dropped`` by
reason (as is a hello whose cookie the rate limit withholds, ``rate_limited``)
and logged at most once a minute per reason.

The directory (the chat core's side) is any object with::

    beacon_peer(key_id) -> peer or None
    beacon_peers() -> iterable of peers
    presence_snapshot() -> sequence of (display_name, state)

where a peer has ``keys`` (BeaconKeys), ``window`` (ReplayWindow for its
hellos), ``endpoint`` (proven (host, port) or None) and ``send_counter`` (the
next counter under its ``s2c`` key; only this class advances it).
"""

from __future__ import annotations

import os
from collections import Counter

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol

from spchat import beacon
from spchat.terminal import SafeLogger

# At most one log line per drop reason in this many seconds.
LOG_EVERY_SECONDS = 60.0
# At most one cookie reply per session in this many seconds.
COOKIE_EVERY_SECONDS = 1.0
# Change-triggered snapshots at most this often: a join storm of n members
# must not build and send n snapshots of n names each.
CHANGE_GAP_SECONDS = 0.2


class PresenceServer(DatagramProtocol):
    log = SafeLogger()
    noisy = False

    def __init__(self, directory, clock, interval: float = 2.0,
                 cookie_every: float = COOKIE_EVERY_SECONDS):
        """``cookie_every``: the least time between two cookie replies to one peer."""
        beacon.check_interval(interval)
        self.cookie_every = cookie_every
        self.directory = directory
        self.clock = clock
        self.interval = interval
        self.dropped: Counter[str] = Counter()
        self.accepted = 0  # authentic, fresh hellos (with a valid cookie if any)
        self.sent = 0  # datagrams written, cookies included
        self.cookies_sent = 0
        # 32 random bytes per server: cookies are stateless, short-lived, and
        # none made before a restart is valid after it.
        self.cookies = beacon.CookieMaker(os.urandom(32))
        self._cookie_times: dict[bytes, float] = {}  # key id -> last cookie reply
        self.send_errors = 0
        self._loop: task.LoopingCall | None = None
        self._pending = None  # the coalesced send after changed()
        self._last_change_send = None  # when a change last went out
        self._last_snapshot: tuple | None = None  # what the peers were sent last
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
        try:
            cookie = beacon.parse_hello(plaintext)
        except beacon.BeaconError as e:
            self._drop(e.reason, addr)
            return
        if cookie is not None and not self.cookies.check(
            peer.keys.key_id, addr, cookie, self.clock.seconds()
        ):
            # Wrong, expired, or made for another address: never answered.
            self._drop("bad_cookie", addr)
            return
        self.accepted += 1
        if not newest:
            # Authentic but overtaken by a later hello (UDP reordering): it
            # must not move the endpoint back to where the client was, and it
            # is not answered.
            return
        if addr == peer.endpoint:
            return  # a keepalive from the proven endpoint
        if cookie is None:
            # A new address (first hello, or the client's NAT gave it a new
            # one, or a forged source): it must prove it receives what we
            # send there before it gets any snapshot.
            self._send_cookie(peer, addr, len(data))
            return
        # The cookie came back from addr: the endpoint moves there.
        peer.endpoint = addr
        self._send(self._snapshot(), (peer,))

    def _send_cookie(self, peer, addr, received: int) -> None:
        """A cookie for ``addr``: at most one per peer a second, never larger than the hello."""
        key_id = peer.keys.key_id
        now = self.clock.seconds()
        last = self._cookie_times.get(key_id)
        if last is not None and 0 <= now - last < self.cookie_every:
            self._drop("rate_limited", addr)
            return
        transport = self.transport
        if transport is None:
            return
        plaintext = beacon.cookie_reply(self.cookies.make(key_id, addr, now))
        if beacon.MIN_DATAGRAM + len(plaintext) > received:
            return  # never for a valid hello (both are 49 bytes); the rule comes first
        self._cookie_times[key_id] = now
        counter = peer.send_counter
        peer.send_counter = counter + 1
        datagram = peer.keys.s2c_cipher.seal(key_id, counter, plaintext)
        try:
            transport.write(datagram, addr)
        except Exception as e:
            self.send_errors += 1
            self._rate_limited_log(
                "send-error", "presence: send to {addr} failed: {error}", addr=addr, error=e,
            )
            return
        self.sent += 1
        self.cookies_sent += 1

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
        """Membership or a state may have changed: send soon (at the end of
        this reactor turn, or CHANGE_GAP_SECONDS after the last such send),
        once for all the changes until then, and only if the snapshot differs."""
        if self._pending is not None and self._pending.active():
            return
        now = self.clock.seconds()
        last = self._last_change_send
        wait = 0.0 if last is None else max(0.0, last + CHANGE_GAP_SECONDS - now)
        self._pending = self.clock.callLater(wait, self._flush_changed)

    def _flush_changed(self) -> None:
        self._pending = None
        self._last_change_send = self.clock.seconds()
        self.broadcast(only_if_changed=True)

    def broadcast(self, only_if_changed: bool = False) -> None:
        """The current snapshot to every peer that proved an endpoint (the
        periodic beacon always; a change only if the snapshot differs)."""
        try:
            self._forget_cookie_times()
            peers = [p for p in self.directory.beacon_peers() if p.endpoint is not None]
            if not peers:
                return
            snapshot = tuple(self.directory.presence_snapshot())
            if only_if_changed and snapshot == self._last_snapshot:
                return
            self._last_snapshot = snapshot
            self._send(beacon.encode_snapshot_parts(self.interval, snapshot), peers)
        except Exception:
            # Raising here would stop the LoopingCall for good.
            if self._may_log("broadcast-error"):
                self.log.failure("presence broadcast failed")

    def _forget_cookie_times(self) -> None:
        # Only the last second matters, so the table holds at most the peers
        # that asked for a cookie in the last second or so.
        now = self.clock.seconds()
        stale = [k for k, t in self._cookie_times.items()
                 if not 0 <= now - t < self.cookie_every]
        for key_id in stale:
            del self._cookie_times[key_id]

    def _snapshot(self) -> list[bytes]:
        # For one peer (a new endpoint): not what every peer was sent, so
        # _last_snapshot stays as it is, or a change held back would be lost.
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
