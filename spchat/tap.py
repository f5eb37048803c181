"""Service assembly: twistd options -> configuration -> running services."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.internet import error as net_error
from twisted.logger import Logger
from twisted.python import usage

import spchat
from spchat import config, noise
from spchat.server.core import ChatCore
from spchat.server.identity import IdentityError, load_or_create_server_key
from spchat.server.protocol import ChatServerFactory


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run the spchat server. Every option can also be set in the environment "
        "or in a .env file in the working directory (see .env.example)."
    )
    optParameters = config.options_table()


def stop(message: str, status: int = 2) -> None:
    """End start-up with one line on stderr, no traceback."""
    # Once twistd has started logging, sys.stderr feeds the log; the user
    # must see this line on the real stderr.
    sys.__stderr__.write(f"spchat: error: {message}\n")
    sys.__stderr__.flush()
    raise SystemExit(status)


class ChatService(service.Service):
    """Listens for chat connections; binds before the reactor runs."""

    log = Logger()

    def __init__(self, cfg: config.Config, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.cfg = cfg
        self.reactor = reactor
        self.server_key = load_or_create_server_key(cfg.data_dir)
        self.fingerprint = noise.fingerprint(noise.public_key(self.server_key))
        self.core = ChatCore(clock=reactor.seconds, max_message_bytes=cfg.max_message_bytes)
        self.factory = ChatServerFactory(
            self.core,
            self.server_key,
            reactor,
            handshake_timeout=cfg.handshake_timeout,
            max_connections_per_ip=cfg.max_connections_per_ip,
        )
        self.port = None

    def listen(self):
        """Bind the TCP port; raise CannotListenError if it is taken."""
        self.port = self.reactor.listenTCP(
            self.cfg.tcp_port, self.factory, interface=self.cfg.server_host
        )
        address = self.port.getHost()
        self.log.info(
            "spchat {version} listening on TCP {host}:{port}; "
            "server key fingerprint {fingerprint}",
            version=spchat.__version__,
            host=address.host,
            port=address.port,
            fingerprint=self.fingerprint,
        )
        return address

    def privilegedStartService(self):
        super().privilegedStartService()
        try:
            self.listen()
        except net_error.CannotListenError as e:
            stop(f"cannot listen on TCP {e.interface or '*'}:{e.port}: {e.socketError}", 1)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


def makeService(options) -> service.MultiService:
    try:
        cfg, warnings = config.load_config(options=dict(options))
    except config.ConfigError as e:
        stop(str(e))
    for warning in warnings:
        sys.stderr.write(f"spchat: warning: {warning}\n")
    top = service.MultiService()
    try:
        ChatService(cfg).setServiceParent(top)
    except IdentityError as e:
        stop(str(e))
    return top
