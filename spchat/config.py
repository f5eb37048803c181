"""Every spchat setting, where it comes from, and how it is checked.

One table, ``SETTINGS``, describes each setting once: its ``Config`` field,
its environment name, its twistd option (if any), its default, its parser and
a one-line meaning.  The ``Config`` defaults, the twistd option list
(``options_table()``) and ``.env.example`` (``env_example_text()``) are all
derived from it, so they cannot drift apart.

Sources, highest precedence first::

    command-line option > process environment > .env file > default

An empty value (``CHAT_TCP_PORT=``) in the environment or in ``.env`` counts
as unset, so the next source down applies.  An option given explicitly on the
command line is always checked, even when empty.

The ``.env`` file is read with python-dotenv's ``dotenv_values`` and never
copied into ``os.environ``.  Nothing else in spchat reads ``os.environ`` for
settings.

Regenerate ``.env.example`` with ``python -m spchat.config > .env.example``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, TypeGuard

import dotenv

__all__ = [
    "Config",
    "ConfigError",
    "OBSOLETE_ENV",
    "SETTINGS",
    "Setting",
    "client_config_dir",
    "env_example_text",
    "load_config",
    "options_table",
]

# Longest chat text: one Noise transport message is at most 65535 bytes
# (including its 16-byte tag), JSON may double a text (every '"', '\\' or
# newline becomes two bytes) and the message envelope needs room too.
MAX_MESSAGE_BYTES_LIMIT = 32000

OBSOLETE_ENV = ("CHAT_SECRET_KEY", "CHAT_IV")
OBSOLETE_REASON = "encryption keys are now negotiated per session (Noise handshake)"


class ConfigError(ValueError):
    """A setting has a bad value, or the .env file cannot be read.

    ``str(error)`` is one line naming the setting (as the user wrote it:
    option or environment name) and the offending value.
    """

    def __init__(self, message: str, name: str | None = None, value: str | None = None):
        super().__init__(message)
        self.name = name
        self.value = value


# ---------------------------------------------------------------- parsers
# Each parser takes the raw text and returns the typed value, or raises
# ValueError whose message is the reason (load_config adds name and value).

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _int(text: str) -> int:
    text = text.strip()
    if not _INT_RE.fullmatch(text):  # also refuses "5.5", "1_000", "٥"
        raise ValueError("not an integer")
    return int(text)


def _port(text: str) -> int:
    port = _int(text)
    if not 0 <= port <= 65535:
        raise ValueError("port must be 1-65535, or 0 for any free port")
    return port


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if high is None and value < low:
            raise ValueError(f"must be at least {low}")
        if high is not None and not low <= value <= high:
            raise ValueError(f"must be {low}-{high}")
        return value

    return parse


def _seconds(*, allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        stripped = text.strip()
        if not _FLOAT_RE.fullmatch(stripped):
            try:
                float(stripped)
            except ValueError:
                raise ValueError("not a number of seconds") from None
            raise ValueError("must be a finite number of seconds")  # nan, inf
        value = float(stripped)
        if not math.isfinite(value):  # e.g. 1e999
            raise ValueError("must be a finite number of seconds")
        if allow_zero and value < 0:
            raise ValueError("must be 0 or more seconds")
        if not allow_zero and value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value

    return parse


def _seconds_up_to(limit: float) -> Callable[[str], float]:
    base = _seconds(allow_zero=True)

    def parse(text: str) -> float:
        value = base(text)
        if value > limit:
            raise ValueError(f"must be at most {limit:g} s")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _room_names(text: str) -> tuple[str, ...]:
    from spchat.server.rules import Refused, normalise_room

    names: dict[str, str] = {}  # by key: a room named twice is one room
    if not text.strip():
        return ()  # newcomers start in no room
    for part in text.split(","):
        try:
            display, key = normalise_room(part.strip())
        except Refused as e:
            raise ValueError(f"{part.strip()!r}: {e.text}") from None
        names.setdefault(key, display)
    return tuple(names.values())


def _irc_operator(text: str) -> tuple[str, str] | None:
    """NAME:HASH (an Argon2id hash as spchat stores passwords), or None."""
    text = text.strip()
    if not text:
        return None
    from spchat.server.passwords import _parse

    name, _, encoded = text.partition(":")
    try:
        _parse(encoded)
    except ValueError as e:
        raise ValueError(f"must be NAME:HASH with an Argon2id hash ({e})") from None
    if not name or any(c.isspace() for c in name):
        raise ValueError("must be NAME:HASH with a name without spaces")
    return name, encoded


def _irc_name(text: str) -> str:
    name = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", name):
        raise ValueError("an IRC server name is 1-63 letters, digits, '.' and '-'")
    return name


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError("must be yes or no")


def _host(text: str) -> str:
    if not text.strip():
        raise ValueError("host must not be empty")
    if any(c.isspace() for c in text):
        raise ValueError("host must not contain whitespace")
    return text


def _optional_host(text: str) -> str:
    """A host name or IP address (IPv6 without brackets), or "" for none."""
    text = text.strip()
    if text and not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", text):
        raise ValueError("must be a host name or an IP address (letters, digits, '.', "
                         "'-' and ':'), or empty")
    if ":" in text:  # only an IPv6 address has one; a port is CHAT_RELAY_PORT's
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError("must be a host name or an IP address with no port (the port "
                             "is CHAT_RELAY_PORT), or empty") from None
    return text


def _endpoint(text: str) -> str:
    """A Twisted server endpoint description, or "" for the default."""
    text = text.strip()
    if text and (":" not in text or any(c.isspace() for c in text)):
        raise ValueError("must be an endpoint description such as tcp:5000:interface=0.0.0.0")
    return text


def _tls_endpoint(text: str) -> str:
    """An ssl: endpoint description, or "" for none."""
    text = _endpoint(text)
    if text and not text.startswith("ssl:"):
        raise ValueError("must be an ssl: endpoint description such as "
                         "ssl:6697:interface=0.0.0.0")
    return text


def _check_url_port(parts: urllib.parse.SplitResult) -> None:
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("its port must be a number 1-65535")


def _password_hidden(text: str) -> str:
    """``text``, but for the password of a URL in it (scheme://user:password@...):
    an error is printed, and logged by whatever runs the server."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#]*@", r"\1***@", text)


def _database_url(text: str) -> str:
    """A PostgreSQL URL, or empty: whether the server can reach it is
    found at start."""
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql://user@host:port/database URL (or empty)")
    _check_url_port(parts)
    if not parts.path.strip("/"):
        raise ValueError("it names no database (postgresql://user@host:port/database)")
    return text


def _bus_url(text: str) -> str:
    """A Redis URL, or empty: whether the server can reach it is found at start."""
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("must be a redis://[[user]:password@]host:port[/db] URL (rediss:// "
                         "for TLS), or empty")
    if parts.username and parts.password is None:
        raise ValueError("a Redis user needs its password too (redis://user:password@host)")
    _check_url_port(parts)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError("its database must be a number (redis://host:port/0)")
    return text


def _node_name(text: str) -> str:
    """A node's name, or empty: this machine's name and the chat port."""
    text = text.strip()
    if len(text) > 64 or any(not c.isprintable() or c.isspace() for c in text):
        raise ValueError("must be at most 64 printable characters without spaces")
    return text


def _optional_path(text: str) -> Path | None:
    return _path(text) if text.strip() else None


def _path(text: str) -> Path:
    if not text:
        raise ValueError("path must not be empty")
    if "\0" in text:
        raise ValueError("path must not contain a NUL character")
    # "~" is expanded (a .env file has no shell to do it); otherwise not
    # resolved: relative stays relative to the working directory.
    return Path(text).expanduser()


# ------------------------------------------------------------------ table


class Setting(NamedTuple):
    field: str  # Config attribute
    env: str  # environment / .env name
    option: str | None  # twistd long option, or None if the server has none
    default: str  # as written in .env.example; parsed for the Config default
    parse: Callable[[str], Any]
    help: str  # one line: what the setting means


SETTINGS: tuple[Setting, ...] = (
    Setting("server_host", "CHAT_SERVER_HOST", "host", "0.0.0.0", _host,
            "Address the server listens on (0.0.0.0 = every IPv4 interface)."),
    Setting("client_host", "CHAT_CLIENT_HOST", None, "127.0.0.1", _host,
            "Server address clients connect to by default (client --host overrides); several "
            "nodes of one server as a list, a,b:7001,[::1]:7002, tried in turn."),
    Setting("tcp_port", "CHAT_TCP_PORT", "tcp-port", "5000", _port,
            "TCP chat port, 1-65535 (0 lets the server pick any free port)."),
    Setting("udp_port", "CHAT_UDP_PORT", "udp-port", "5001", _port,
            "UDP presence beacon port, 1-65535 (0 lets the server pick any free port)."),
    Setting("listen", "CHAT_LISTEN", "listen", "", _endpoint,
            "Where the chat listens, as a Twisted endpoint (tcp:5000:interface=0.0.0.0); "
            "empty: TCP on CHAT_TCP_PORT at CHAT_SERVER_HOST."),
    Setting("irc_listen", "CHAT_IRC_LISTEN", "irc", "", _endpoint,
            "Where the IRC gateway listens, as a Twisted endpoint "
            "(tcp:6667:interface=127.0.0.1: plain IRC is not encrypted); empty: no gateway."),
    Setting("ircs_listen", "CHAT_IRCS_LISTEN", "ircs", "", _tls_endpoint,
            "Where the IRC gateway listens with TLS (ssl:6697:interface=0.0.0.0); empty: no TLS."),
    Setting("irc_cert", "CHAT_IRC_CERT", "irc-cert", "", _optional_path,
            "The TLS certificate (PEM) for CHAT_IRCS_LISTEN; empty: a self-signed one in the "
            "data directory, made on first start."),
    Setting("irc_key", "CHAT_IRC_KEY", "irc-key", "", _optional_path,
            "The private key (PEM) of CHAT_IRC_CERT."),
    Setting("irc_operator", "CHAT_IRC_OPERATOR", "irc-operator", "", _irc_operator,
            "NAME:HASH: who may OPER on IRC (and then KILL, WALLOPS); HASH from "
            "python -m spchat.admin irc-operator-hash. Empty: nobody."),
    Setting("irc_server_name", "CHAT_IRC_SERVER_NAME", "irc-server-name", "spchat", _irc_name,
            "The server's name as IRC clients see it (letters, digits, '.' and '-')."),
    Setting("metrics_listen", "CHAT_METRICS_LISTEN", "metrics", "", _endpoint,
            "Where Prometheus metrics are served over HTTP (at /metrics), as a Twisted endpoint "
            "(tcp:9100:interface=127.0.0.1: anyone who reaches it can read them); needs "
            "pip install 'spchat[metrics]'. Empty: none."),
    Setting("idle_timeout", "CHAT_IDLE_TIMEOUT", "idle-timeout", "120", _seconds(allow_zero=True),
            "Seconds a connection may send nothing (clients send a keepalive every third of it) "
            "before the server frees it as dead; its session waits CHAT_RESUME_GRACE, as after "
            "a drop (0 = never)."),
    Setting("reconnect_delay", "CHAT_RECONNECT_DELAY", None, "3", _seconds(allow_zero=True),
            "Seconds a client waits before its first reconnect attempt (0 or more)."),
    Setting("max_retries", "CHAT_MAX_RETRIES", None, "3", _int_range(0),
            "How many times a client tries to reconnect (0 or more)."),
    Setting("data_dir", "CHAT_DATA_DIR", "data-dir", "./spchat-data", _path,
            "Server data directory (server key); relative to the working directory."),
    Setting("max_message_bytes", "CHAT_MAX_MESSAGE_BYTES", "max-message-bytes", "8192",
            _int_range(1, MAX_MESSAGE_BYTES_LIMIT),
            f"Longest chat message text in UTF-8 bytes, 1-{MAX_MESSAGE_BYTES_LIMIT}."),
    Setting("handshake_timeout", "CHAT_HANDSHAKE_TIMEOUT", "handshake-timeout", "10",
            _seconds(allow_zero=False),
            "Seconds a new connection has to finish the encrypted handshake and log in."),
    Setting("max_connections_per_ip", "CHAT_MAX_CONNECTIONS_PER_IP", "max-connections-per-ip",
            "20", _int_range(1),
            "Concurrent TCP connections allowed from one IP address (1 or more), on each node."),
    Setting("max_connections", "CHAT_MAX_CONNECTIONS", "max-connections", "0", _int_range(0),
            "Chat and IRC connections the server (each node) holds at once (0: its "
            "file-descriptor limit, raised to the hard limit at start, less 64); when full, the "
            "oldest not logged in goes."),
    Setting("login_reserve", "CHAT_LOGIN_RESERVE", "login-reserve", "32", _int_range(0),
            "Of those, the last ones only for addresses with a session on the server "
            "(a client coming back), so guests cannot take every place."),
    Setting("resume_grace", "CHAT_RESUME_GRACE", "resume-grace", "30", _seconds(allow_zero=True),
            "Seconds a dropped session waits for its client to reconnect before it goes offline."),
    Setting("presence_interval", "CHAT_PRESENCE_INTERVAL", "presence-interval", "2",
            _seconds(allow_zero=False),
            "Seconds between UDP presence beacons to each client (more than 0)."),
    Setting("idle_after", "CHAT_IDLE_AFTER", "idle-after", "30", _seconds(allow_zero=False),
            "Seconds without user activity (saying something, a command) before a member is "
            "shown as idle; a reader stays, shown idle."),
    Setting("flood_burst", "CHAT_FLOOD_BURST", "flood-burst", "10", _int_range(1),
            "Messages a session may send at once before flood control delays it."),
    Setting("flood_rate", "CHAT_FLOOD_RATE", "flood-rate", "5", _seconds(allow_zero=False),
            "Messages per second a session may send on average (more than 0)."),
    Setting("flood_queue", "CHAT_FLOOD_QUEUE", "flood-queue", "20", _int_range(1),
            "Delayed messages a session may have waiting before it is disconnected for flooding."),
    Setting("refusal_log_seconds", "CHAT_REFUSAL_LOG_SECONDS", "refusal-log-seconds", "60",
            _seconds(allow_zero=False),
            "Seconds between two log lines about one address's refusals (a connection too many, "
            "an admin request without the token) or faults (a malformed message, a broken "
            "channel); every one is still counted."),
    Setting("send_buffer_bytes", "CHAT_SEND_BUFFER_BYTES", "send-buffer-bytes", "1048576",
            _int_range(65536),
            "Unsent bytes a connection may pile up (a client that does not read) before it is cut."),
    Setting("history_on_join", "CHAT_HISTORY_ON_JOIN", "history-on-join", "50", _int_range(0, 200),
            "Messages of history a client receives when it logs in (0-200)."),
    Setting("max_waiting_directs", "CHAT_MAX_WAITING_DIRECTS", "max-waiting-directs", "100",
            _int_range(0, 10000),
            "Direct messages kept for a registered user who is offline, delivered at their next "
            "login (0-10000, all nodes together; 0: refused, as for guests); more are refused."),
    Setting("max_waiting_from_one", "CHAT_MAX_WAITING_FROM_ONE", "max-waiting-from-one", "25",
            _int_range(1, 10000),
            "Of those, how many one sender may have waiting for one user (1-10000), so that "
            "one sender cannot fill someone's inbox and keep everyone else's out."),
    Setting("history_days", "CHAT_HISTORY_DAYS", "history-days", "0", _seconds(allow_zero=True),
            "Days to keep messages (0 = keep for ever); older ones are deleted hourly."),
    Setting("default_rooms", "CHAT_DEFAULT_ROOMS", "default-rooms", "lobby", _room_names,
            "Rooms (comma-separated) everyone is put in on their first login (a space: none)."),
    Setting("store", "CHAT_STORE", "store", "sqlite", _choice("sqlite", "memory"),
            "Where messages, accounts and rooms are kept: sqlite (spchat.db in the data "
            "directory) or memory (gone when the server stops; for trials and tests)."),
    Setting("database", "CHAT_DATABASE_URL", "database", "", _database_url,
            "A PostgreSQL database for messages, accounts and rooms, in place of CHAT_STORE "
            "(postgresql://user@host:port/db; needs pip install 'spchat[postgresql]'); "
            "empty: CHAT_STORE decides."),
    Setting("bus", "CHAT_BUS_URL", "bus", "", _bus_url,
            "A Redis server that carries new messages between the nodes sharing "
            "CHAT_DATABASE_URL (redis://[[user]:password@]host:port[/db], the password "
            "%-encoded; rediss:// for TLS; needs pip install 'spchat[bus]'); "
            "empty: one node."),
    Setting("bus_ca", "CHAT_BUS_CA", "bus-ca", "", _optional_path,
            "For a rediss:// bus: a PEM file of the certificates (a CA, or the server's own) "
            "that the Redis server's certificate must be signed by; empty: the system's."),
    Setting("node", "CHAT_NODE", "node", "", _node_name,
            "This node's name among the nodes on one bus, as admin list and shutdown --node "
            "show and take it (at most 64 characters, no spaces); empty: this machine's "
            "name and the chat port, host:port."),
    Setting("node_timeout", "CHAT_NODE_TIMEOUT", "node-timeout", "20", _seconds(allow_zero=False),
            "Seconds a node on the database may go without saying it is alive before the "
            "names its users hold may be taken by users of other nodes (its users resume "
            "on another node at any time)."),
    Setting("store_writer", "CHAT_STORE_WRITER", "store-writer", "thread",
            _choice("thread", "inline"),
            "How messages are saved: a writer thread, or short transactions inline."),
    Setting("store_sync", "CHAT_STORE_SYNC", "store-sync", "full", _choice("full", "normal"),
            "full: a saved message survives a power cut; normal: it survives a crash."),
    Setting("commit_interval", "CHAT_COMMIT_INTERVAL", "commit-interval", "0.005",
            _seconds_up_to(1.0),
            "Under load, messages are saved at most once per this many seconds, so more of "
            "them share one disk sync and one write to each member (0: at once)."),
    Setting("login_failures", "CHAT_LOGIN_FAILURES", "login-failures", "5", _int_range(1),
            "Failed logins per minute, per name and per address (all nodes together), before a "
            "wait is imposed."),
    Setting("registrations_per_hour", "CHAT_REGISTRATIONS_PER_HOUR", "registrations-per-hour",
            "5", _int_range(0),
            "New accounts one IP address may register per hour, all nodes together (0 = no limit)."),
    Setting("registrations_per_hour_total", "CHAT_REGISTRATIONS_PER_HOUR_TOTAL",
            "registrations-per-hour-total", "100", _int_range(0),
            "New accounts the whole server (all nodes) takes per hour, from all addresses "
            "(0 = no limit)."),
    Setting("offline_retention", "CHAT_OFFLINE_RETENTION", "offline-retention", "600",
            _seconds(allow_zero=True),
            "Seconds an offline session stays in the admin tools' list."),
    Setting("max_share_bytes", "CHAT_MAX_SHARE_BYTES", "max-share-bytes", "4294967296",
            _int_range(0, 2**53),
            "Largest file a user may share, in bytes (0 = file sharing off)."),
    Setting("relay_port", "CHAT_RELAY_PORT", "relay-port", "5002", _port,
            "TCP port of the file-sharing relay for peers that cannot connect directly."),
    Setting("relay_host", "CHAT_RELAY_HOST", "relay-host", "", _optional_host,
            "Host name or address at which clients connected to other nodes reach this "
            "node's relay (empty: the address the downloader reached this node at; set it "
            "behind NAT or a load balancer)."),
    Setting("relay_max_bps", "CHAT_RELAY_MAX_BPS", "relay-max-bps", "10485760",
            _int_range(0, 2**53),
            "Bytes per second the relay carries for one transfer (0 = no relay)."),
    Setting("relay_max_per_ip", "CHAT_RELAY_MAX_PER_IP", "relay-max-per-ip", "8", _int_range(1),
            "Concurrent relay connections allowed from one IP address (1 or more)."),
    Setting("relay_idle_timeout", "CHAT_RELAY_IDLE_TIMEOUT", "relay-idle-timeout", "60",
            _seconds(allow_zero=False),
            "Seconds a relayed transfer may carry nothing either way before it is cut."),
    Setting("p2p_port", "CHAT_P2P_PORT", None, "0", _port,
            "TCP port a client takes file-sharing peers on (0 = any free port)."),
    Setting("p2p_direct", "CHAT_P2P_DIRECT", None, "yes", _yes_no,
            "yes: peers connect to this client directly; no: only through the relay."),
    Setting("download_dir", "CHAT_DOWNLOAD_DIR", None, "", _optional_path,
            "Where a client saves downloaded files; empty: spchat/ in the desktop's download "
            "folder (XDG_DOWNLOAD_DIR, else ~/Downloads)."),
    Setting("p2p_upload_bps", "CHAT_P2P_UPLOAD_BPS", None, "0", _int_range(0, 2**53),
            "Bytes per second a client uploads to other peers at most (0 = no limit)."),
    Setting("p2p_max_per_ip", "CHAT_P2P_MAX_PER_IP", None, "4", _int_range(1),
            "Concurrent peer connections a sharing client takes from one IP address."),
)

_BY_FIELD = {s.field: s for s in SETTINGS}
_BY_OPTION = {s.option: s for s in SETTINGS if s.option is not None}
_KNOWN_ENV = {s.env for s in SETTINGS} | set(OBSOLETE_ENV)


def _default(field: str) -> Any:
    setting = _BY_FIELD[field]
    return setting.parse(setting.default)


@dataclass(frozen=True)
class Config:
    """Every spchat setting; see ``SETTINGS`` for meanings and sources."""

    server_host: str = _default("server_host")
    client_host: str = _default("client_host")
    tcp_port: int = _default("tcp_port")
    udp_port: int = _default("udp_port")
    listen: str = _default("listen")
    irc_listen: str = _default("irc_listen")
    ircs_listen: str = _default("ircs_listen")
    irc_cert: Path | None = _default("irc_cert")
    irc_key: Path | None = _default("irc_key")
    irc_operator: tuple[str, str] | None = _default("irc_operator")
    irc_server_name: str = _default("irc_server_name")
    metrics_listen: str = _default("metrics_listen")
    idle_timeout: float = _default("idle_timeout")
    reconnect_delay: float = _default("reconnect_delay")
    max_retries: int = _default("max_retries")
    data_dir: Path = _default("data_dir")
    max_message_bytes: int = _default("max_message_bytes")
    handshake_timeout: float = _default("handshake_timeout")
    max_connections_per_ip: int = _default("max_connections_per_ip")
    max_connections: int = _default("max_connections")
    login_reserve: int = _default("login_reserve")
    resume_grace: float = _default("resume_grace")
    presence_interval: float = _default("presence_interval")
    idle_after: float = _default("idle_after")
    flood_burst: int = _default("flood_burst")
    flood_rate: float = _default("flood_rate")
    flood_queue: int = _default("flood_queue")
    refusal_log_seconds: float = _default("refusal_log_seconds")
    send_buffer_bytes: int = _default("send_buffer_bytes")
    history_on_join: int = _default("history_on_join")
    max_waiting_directs: int = _default("max_waiting_directs")
    max_waiting_from_one: int = _default("max_waiting_from_one")
    history_days: float = _default("history_days")
    default_rooms: tuple[str, ...] = _default("default_rooms")
    store: str = _default("store")
    database: str = _default("database")
    bus: str = _default("bus")
    bus_ca: Path | None = _default("bus_ca")
    node: str = _default("node")
    node_timeout: float = _default("node_timeout")
    store_writer: str = _default("store_writer")
    store_sync: str = _default("store_sync")
    commit_interval: float = _default("commit_interval")
    login_failures: int = _default("login_failures")
    registrations_per_hour: int = _default("registrations_per_hour")
    registrations_per_hour_total: int = _default("registrations_per_hour_total")
    offline_retention: float = _default("offline_retention")
    max_share_bytes: int = _default("max_share_bytes")
    relay_port: int = _default("relay_port")
    relay_host: str = _default("relay_host")
    relay_max_bps: int = _default("relay_max_bps")
    relay_max_per_ip: int = _default("relay_max_per_ip")
    relay_idle_timeout: float = _default("relay_idle_timeout")
    p2p_port: int = _default("p2p_port")
    p2p_direct: bool = _default("p2p_direct")
    download_dir: Path | None = _default("download_dir")  # see spchat.client.downloads
    p2p_upload_bps: int = _default("p2p_upload_bps")
    p2p_max_per_ip: int = _default("p2p_max_per_ip")


if [f.name for f in fields(Config)] != [s.field for s in SETTINGS]:  # pragma: no cover
    raise RuntimeError("spchat.config: Config fields and SETTINGS are out of step")


# ---------------------------------------------------------------- loading


def options_table() -> list[list]:
    """``optParameters`` rows for twistd: ``[long, None, None, help]``.

    The default is None so that "not given" can be told apart from a value;
    the real default and the environment name are shown in the help text.
    """
    return [
        [s.option, None, None, f"{s.help} [env {s.env}, default {s.default}]"]
        for s in SETTINGS
        if s.option is not None
    ]


def _read_dotenv(path: str | os.PathLike) -> dict[str, str | None]:
    try:
        if os.path.exists(path) and not os.path.isfile(path):
            raise IsADirectoryError("not a regular file")
        return dotenv.dotenv_values(path)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"cannot read .env file {os.fspath(path)!r}: {reason}") from None


def _set(value: str | None) -> TypeGuard[str]:
    return value is not None and value != ""


def load_config(
    options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    dotenv_path: str | os.PathLike | None = ".env",
) -> tuple[Config, list[str]]:
    """Build the Config from options, environment, .env file and defaults.

    ``options`` maps twistd long option names (``"tcp-port"``) to the given
    string, or None when not given; names that are not settings are ignored.
    ``environ`` defaults to ``os.environ``.  ``dotenv_path`` None skips the
    .env file; a missing file is fine, an unreadable one is a ConfigError.

    Returns the Config and a list of one-line warnings for the caller to show.
    Raises ConfigError (one line, naming the setting and value) on bad input.
    """
    options = {} if options is None else options
    environ = os.environ if environ is None else environ
    file_values = {} if dotenv_path is None else _read_dotenv(dotenv_path)
    dotenv_label = None if dotenv_path is None else os.fspath(dotenv_path)

    values: dict[str, Any] = {}
    for s in SETTINGS:
        given = options.get(s.option) if s.option is not None else None
        if given is not None:
            raw, shown, where = str(given), f"--{s.option}", ""
        elif _set(environ.get(s.env)):
            raw, shown, where = environ[s.env], s.env, ""
        elif _set(in_file := file_values.get(s.env)):
            raw, shown, where = in_file, s.env, f" (in {dotenv_label})"
        else:
            continue
        try:
            values[s.field] = s.parse(raw)
        except ValueError as e:
            told = _password_hidden(raw)
            raise ConfigError(f"invalid {shown}={told!r}{where}: {e}", shown, told) from None

    warnings = []
    for name in OBSOLETE_ENV:
        places = []
        if _set(environ.get(name)):
            places.append("the environment")
        if dotenv_label is not None and _set(file_values.get(name)):
            places.append(dotenv_label)
        if places:
            warnings.append(
                f"{name} is ignored: {OBSOLETE_REASON}; remove it from {' and '.join(places)}"
            )
    for name in file_values:
        if name.startswith("CHAT_") and name not in _KNOWN_ENV:
            warnings.append(f"{name} in {dotenv_label} is not an spchat setting (misspelt?)")

    return Config(**values), warnings


def client_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the client keeps its own files (pinned server keys).

    ``$SPCHAT_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/spchat``, else
    ``~/.config/spchat`` (``%APPDATA%\\spchat`` on Windows).
    """
    environ = os.environ if environ is None else environ
    if environ.get("SPCHAT_CONFIG_DIR"):
        return Path(environ["SPCHAT_CONFIG_DIR"]).expanduser()
    if sys.platform == "win32" and environ.get("APPDATA"):
        return Path(environ["APPDATA"]) / "spchat"
    base = environ.get("XDG_CONFIG_HOME")
    if base and os.path.isabs(base):  # the XDG spec says to ignore relative ones
        return Path(base) / "spchat"
    return Path.home() / ".config" / "spchat"


def env_example_text() -> str:
    """The content of ``.env.example``, generated from ``SETTINGS``."""
    lines = [
        "# spchat settings. Copy this file to .env in the directory the server",
        "# (or client) is started from, and change what you need.",
        "# Precedence: command-line option > environment > .env > default.",
        "# An empty value (NAME=) counts as unset: the next source or the default applies.",
        "",
    ]
    for s in SETTINGS:
        lines += [f"# {s.help}", f"{s.env}={s.default}", ""]
    lines += [
        "# Obsolete: CHAT_SECRET_KEY and CHAT_IV are ignored (with a warning);",
        "# encryption keys are now negotiated per session by the Noise handshake.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(env_example_text())
