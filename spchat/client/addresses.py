"""Where a client may reach its server, and the order it tries them in.

A server of several nodes is given as a list: ``a,b,c`` (each on the
default port) or ``a:7000,b:7001`` (a port for each); an IPv6 address takes
brackets when a port follows it (``[::1]:7000``).  A name may also resolve
to several addresses (its A and AAAA records): each is a candidate of its own.

A *round* tries every candidate once, in turn, starting after the one the
client was last on (a node that dropped it is likely down): the session's
backoff comes between rounds, not between the candidates of one.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass
from typing import Callable

from twisted.internet import defer, threads
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

from spchat.client.neterrors import dial_error_text

MAX_ADDRESSES = 32

# (host, port) -> Deferred firing with the host's IP addresses, in order.
Resolve = Callable[[str, int], defer.Deferred]


@dataclass(frozen=True)
class Address:
    """An address as the user gave it: what is pinned and shown."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Candidate:
    """One IP address to dial, and the address it was given as."""

    address: Address
    ip: str

    def __str__(self) -> str:
        if self.ip == self.address.host:
            return str(self.address)
        return f"{self.address} ({self.ip})"


def listed(addresses: tuple[Address, ...]) -> str:
    return ", ".join(str(a) for a in addresses)


def parse_addresses(text: str, default_port: int) -> tuple[Address, ...]:
    """``a,b:7001,[::1]:7002`` -> Addresses, or ValueError saying what to fix."""
    if not text.strip():
        raise ValueError("enter the server's address")
    addresses: list[Address] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise ValueError(f"the server address {text!r} has an empty item between its commas")
        if any(c.isspace() for c in item):
            raise ValueError(f"the server address {item!r} has spaces in it")
        address = _one_address(item, default_port)
        if address not in addresses:
            addresses.append(address)
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"give at most {MAX_ADDRESSES} server addresses, not {len(addresses)}")
    return tuple(addresses)


def _one_address(item: str, default_port: int) -> Address:
    if item.startswith("["):  # [IPv6] or [IPv6]:port
        host, closed, rest = item[1:].partition("]")
        if not closed or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"{item!r}: write an IPv6 address with a port as [::1]:7000")
        return Address(host, _port(item, rest[1:]) if rest else default_port)
    if item.count(":") > 1:  # a bare IPv6 address: no port of its own
        return Address(item, default_port)
    host, colon, port = item.partition(":")
    if not host:
        raise ValueError(f"{item!r} names no host before its port")
    return Address(host, _port(item, port) if colon else default_port)


def _port(item: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"the port in {item!r} must be a number 1-65535")
    return int(text)


def system_resolver(reactor) -> Resolve:
    """The system's resolver (``getaddrinfo``: /etc/hosts, DNS), in a
    thread so that a slow answer stalls nothing; an IP address is itself."""

    def resolve(host: str, port: int) -> defer.Deferred:
        if isIPAddress(host) or isIPv6Address(host):
            return defer.succeed([host])
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(),
                                         _all_addresses, host, port)

    return resolve


def _all_addresses(host: str, port: int) -> list[str]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def endpoint(reactor, candidate: Candidate, timeout: float):
    """The TCP endpoint that dials ``candidate``."""
    kind = TCP6ClientEndpoint if isIPv6Address(candidate.ip) else TCP4ClientEndpoint
    return kind(reactor, candidate.ip, candidate.address.port, timeout=timeout)


def add_server_options(parser, cfg) -> None:
    """``--host`` and ``--port``, for every command that talks to the server."""
    parser.add_argument(
        "--host", help="server address, or the addresses of one server's nodes: a,b,c "
        "(each on --port) or a:7000,b:7001; an IPv6 one with a port as [::1]:7000 "
        f"(default {cfg.client_host})")
    parser.add_argument("--port", type=int,
                        help=f"server TCP port (default {cfg.tcp_port})")


def check_server_options(parser, args, cfg) -> None:
    """Exit with one line on a --host or --port that cannot be used."""
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error(f"--port {args.port}: port must be 1-65535")
    try:
        parse_addresses(args.host or cfg.client_host, args.port or cfg.tcp_port)
    except ValueError as e:
        parser.error(f"--host: {e}")


class Failover:
    """The candidates of the current round, and the one being tried or used."""

    def __init__(self, addresses: tuple[Address, ...], resolve: Resolve):
        self.addresses = addresses
        self.resolve = resolve
        self.current: Candidate | None = None
        self.failures: list[str] = []  # why each candidate of this round failed
        self.seen_several = len(addresses) > 1  # a list, or a name of several addresses
        self._round: deque[Candidate] = deque()

    def new_round(self) -> defer.Deferred:
        """Resolve every address; fires (never fails) once the round is ready.
        A name that does not resolve is a failure of the round."""
        self.failures = []
        found = [self.resolve(a.host, a.port).addCallbacks(
            lambda ips, a=a: [Candidate(a, ip) for ip in ips], self._unresolved,
            errbackArgs=(a,)) for a in self.addresses]
        return defer.gatherResults(found).addCallback(self._ordered)

    def _unresolved(self, failure, address: Address) -> list[Candidate]:
        self.failed(dial_error_text(failure, address.host, address.port))
        return []

    def _ordered(self, found: list[list[Candidate]]) -> None:
        candidates = list(dict.fromkeys(c for per_address in found for c in per_address))
        self.seen_several = self.seen_several or len(candidates) > 1
        if self.current in candidates:  # the last one used goes last
            start = candidates.index(self.current) + 1
            candidates = candidates[start:] + candidates[:start]
        self._round = deque(candidates)

    @property
    def address(self) -> Address:
        """The address being tried or used, as given (the first before any)."""
        return self.current.address if self.current is not None else self.addresses[0]

    @property
    def where(self) -> str:
        return str(self.current) if self.current is not None else str(self.addresses[0])

    @property
    def ip(self) -> str:
        return self.current.ip if self.current is not None else self.addresses[0].host

    def next(self) -> Candidate | None:
        """The next candidate to dial, or None: the round is over."""
        if not self._round:
            return None
        self.current = self._round.popleft()
        return self.current

    def failed(self, reason: str) -> None:
        self.failures.append(reason)

    def round_failure(self) -> str:
        """Why the round found no server: each failure, once."""
        return "; ".join(dict.fromkeys(self.failures)) or "no address to connect to"
