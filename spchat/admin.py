"""``python -m spchat.admin``: manage a running server from a script.

    python -m spchat.admin list
    python -m spchat.admin kick NAME [--reason R] [--ban-minutes M]
    python -m spchat.admin ban NAME [--minutes M] [--reason R]
    python -m spchat.admin unban NAME
    python -m spchat.admin broadcast TEXT
    python -m spchat.admin disconnect-all [--reason R]
    python -m spchat.admin shutdown [--reason R]

It connects over the same encrypted channel as a chat client (pinning the
server's key) and proves itself with the admin token from the server's data
directory (``--data-dir``, ``CHAT_DATA_DIR``) or ``--token-file``.  Tables for
people, ``--json`` for scripts; the exit status is non-zero on any error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spchat import config, wire
from spchat.server.identity import ADMIN_TOKEN_FILE

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


class AdminSession:
    """Listener for ChatClientProtocol: log in as admin, send one request."""

    def __init__(self, reactor, token: str, request: wire.AdminRequest, done):
        self.reactor, self.token, self.request, self.done = reactor, token, request, done
        self.proto = None
        self.parts = wire.RowCollector()

    def channel_open(self, proto):
        self.proto = proto
        proto.send_message(wire.AdminLogin(self.token))

    def message_received(self, msg):
        if isinstance(msg, wire.AdminReply) and msg.rid == "login":
            self.proto.send_message(self.request)
        elif isinstance(msg, wire.AdminReply) and msg.rid == self.request.rid:
            whole = self.parts.add(msg)  # a long table comes in parts
            if whole is not None:
                self.finish(whole)
        elif isinstance(msg, (wire.Error, wire.Bye)):
            self.finish(wire.AdminReply(self.request.rid, False, msg.text))

    def finish(self, reply):
        if not self.done.called:
            self.done.callback(reply)
        if self.proto is not None:
            self.proto.hang_up()

    def connection_lost(self, reason, proto=None):
        if not self.done.called:
            self.done.callback(wire.AdminReply(
                self.request.rid, False, reason or "the server closed the connection"
            ))


def add_server_options(parser: argparse.ArgumentParser, cfg: config.Config) -> None:
    """Where the server is and where its admin token is (admin and monitor)."""
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=cfg.tcp_port, help=f"TCP port (default {cfg.tcp_port})")
    parser.add_argument("--data-dir", type=Path, default=cfg.data_dir,
                        help=f"the server's data directory, for its admin token (default {cfg.data_dir})")
    parser.add_argument("--token-file", type=Path, help="the admin token, copied from the server")


def read_token(args) -> str:
    """The admin token named by the options; ValueError with one line if not."""
    token_file = args.token_file or args.data_dir / ADMIN_TOKEN_FILE
    try:
        return token_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the admin token {token_file}: {e}") from None


def parse_args(argv, cfg):
    parser = argparse.ArgumentParser(prog="python -m spchat.admin", description=__doc__.split("\n\n")[0])
    add_server_options(parser, cfg)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    # --json may come before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, **kwargs):
        return commands.add_parser(name, parents=[common], **kwargs)

    command("list", help="every session")
    kick = command("kick", help="disconnect a user; it does not come back by itself")
    kick.add_argument("name")
    kick.add_argument("--reason")
    kick.add_argument("--ban-minutes", type=float)
    ban = command("ban", help="ban a name (for ever without --minutes)")
    ban.add_argument("name")
    ban.add_argument("--minutes", type=float)
    ban.add_argument("--reason")
    unban = command("unban")
    unban.add_argument("name")
    broadcast = command("broadcast", help="a server notice to everyone")
    broadcast.add_argument("text")
    for name in ("disconnect-all", "shutdown"):
        command(name).add_argument("--reason")
    return parser.parse_args(argv)


def build_request(args) -> wire.AdminRequest:
    op = args.command.replace("-", "_")
    minutes = getattr(args, "ban_minutes", None) if op == "kick" else getattr(args, "minutes", None)
    reason = args.text if op == "broadcast" else getattr(args, "reason", None)
    return wire.AdminRequest("1", op, getattr(args, "name", None), reason, minutes)


def render(reply: wire.AdminReply, as_json: bool) -> str:
    if as_json:
        rows = [dict(zip(wire.SESSION_FIELDS, row)) for row in reply.sessions]
        return json.dumps({"ok": reply.ok, "text": reply.text, "sessions": rows})
    if not reply.sessions:
        return reply.text
    header = ("NAME", "ADDRESS", "STATE", "CLIENT", "FOR", "SINCE", "IDLE", "MSGS", "IN", "OUT")
    now = time.time()
    lines = []
    for name, address, state, agent, in_state, since, last, msgs, b_in, b_out in reply.sessions:
        lines.append((name, address, state, agent, f"{in_state:.0f}s",
                      time.strftime("%H:%M:%S", time.localtime(since / 1000)),
                      f"{max(0, now - last / 1000):.0f}s", str(msgs), str(b_in), str(b_out)))
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*row) for row in lines])


def main(argv=None) -> int:
    try:
        cfg, _ = config.load_config()
    except config.ConfigError as e:
        sys.stderr.write(f"spchat.admin: {e}\n")
        return EXIT_UNREACHABLE
    args = parse_args(sys.argv[1:] if argv is None else argv, cfg)
    try:
        token = read_token(args)
    except ValueError as e:
        sys.stderr.write(f"spchat.admin: {e}\n")
        return EXIT_REFUSED

    from twisted.internet import defer, task
    from twisted.internet.endpoints import HostnameEndpoint, connectProtocol

    from spchat.client.pins import PinStore
    from spchat.client.protocol import ChatClientProtocol

    pins = PinStore(config.client_config_dir())
    result = {}

    @defer.inlineCallbacks
    def run(reactor):
        done = defer.Deferred()
        session = AdminSession(reactor, token, build_request(args), done)
        proto = ChatClientProtocol(
            reactor, lambda fp: pins.check(args.host, args.port, fp), session
        )
        try:
            yield connectProtocol(HostnameEndpoint(reactor, args.host, args.port, timeout=10), proto)
        except Exception as e:
            result["reply"] = wire.AdminReply("1", False, f"cannot reach {args.host}:{args.port}: {e}")
            result["status"] = EXIT_UNREACHABLE
            return
        timer = reactor.callLater(15, session.finish, wire.AdminReply("1", False, "no answer"))
        result["reply"] = yield done
        if timer.active():
            timer.cancel()
        result["status"] = 0 if result["reply"].ok else EXIT_REFUSED
        yield task.deferLater(reactor, 0.05, lambda: None)  # let the hang-up go out

    try:
        task.react(run)
    except SystemExit:
        pass
    reply = result["reply"]
    stream = sys.stdout if reply.ok or args.json else sys.stderr
    stream.write(render(reply, args.json) + "\n")
    return result["status"]


if __name__ == "__main__":
    sys.exit(main())
