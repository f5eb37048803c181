"""``python -m spchat.admin``: manage a running server from a script.

    python -m spchat.admin list
    python -m spchat.admin stats
    python -m spchat.admin kick NAME [--reason R] [--ban-minutes M]
    python -m spchat.admin ban NAME [--minutes M] [--reason R]
    python -m spchat.admin unban NAME
    python -m spchat.admin bans
    python -m spchat.admin broadcast TEXT
    python -m spchat.admin disconnect-all [--reason R]
    python -m spchat.admin shutdown [--node NAME] [--reason R]
    python -m spchat.admin rooms
    python -m spchat.admin room-info ROOM
    python -m spchat.admin room-delete ROOM
    python -m spchat.admin room-kick ROOM NAME [--reason R]
    python -m spchat.admin room-ban ROOM NAME [--minutes M] [--reason R]
    python -m spchat.admin room-unban ROOM NAME
    python -m spchat.admin room-mute ROOM NAME [--reason R]
    python -m spchat.admin room-unmute|room-op|room-deop|room-owner|room-invite ROOM NAME
    python -m spchat.admin room-topic ROOM TEXT
    python -m spchat.admin room-mode ROOM private|topic-locked on|off
    python -m spchat.admin migrate --from-sqlite PATH --to postgresql://...

It connects over the same encrypted channel as a chat client (pinning the
server's key) and proves itself with the admin token from the server's data
directory (``--data-dir``, ``CHAT_DATA_DIR``) or ``--token-file``.  Tables for
people, ``--json`` for scripts; the exit status is non-zero on any error.
ROOM may be written with or without its '#'.  ``migrate`` (see
spchat.migrate) works on the stores themselves, not on a running server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spchat import config, wire
from spchat.server.identity import ADMIN_TOKEN_FILE
from spchat.terminal import printable

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
# room-<op> -> (the moderate op, its help); kick, ban and mute also take a reason.
MODERATION_COMMANDS = {
    "room-kick": ("kick", "take NAME out of ROOM (they stay on the server)"),
    "room-ban": ("ban", "ban NAME from ROOM (for ever without --minutes)"),
    "room-unban": ("unban", "lift NAME's ban from ROOM"),
    "room-mute": ("mute", "NAME may no longer speak in ROOM"),
    "room-unmute": ("unmute", "NAME may speak in ROOM again"),
    "room-op": ("op", "make NAME an operator of ROOM"),
    "room-deop": ("deop", "make NAME a plain member of ROOM"),
    "room-owner": ("owner", "make NAME an owner of ROOM"),
    "room-invite": ("invite", "invite NAME into ROOM (a private room)"),
}
WITH_REASON = ("kick", "ban", "mute")
TOPIC_CLIP = 60  # characters of a topic in the tables; --json has it whole

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


def add_server_options(parser: argparse.ArgumentParser, cfg: config.Config,
                       defaults: bool = True) -> None:
    """Where the server is and where its admin token is (admin and monitor).
    ``defaults`` False: a sub-command's copy, which sets only what is typed
    after it (so the options go before or after the sub-command)."""
    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--host", default=default("127.0.0.1"),
                        help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default(cfg.tcp_port),
                        help=f"TCP port (default {cfg.tcp_port})")
    parser.add_argument("--data-dir", type=Path, default=default(cfg.data_dir),
                        help=f"the server's data directory, for its admin token (default {cfg.data_dir})")
    parser.add_argument("--token-file", type=Path, default=default(None),
                        help="the admin token, copied from the server")


def read_token(args) -> str:
    """The admin token named by the options; ValueError with one line if not."""
    token_file = args.token_file or args.data_dir / ADMIN_TOKEN_FILE
    try:
        return token_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the admin token {token_file}: {e}") from None


def room_name(text: str) -> str:
    # Without its '#': the server takes both, but its audit lines add one.
    return text.removeprefix("#")


def add_room_commands(command) -> None:
    command("rooms", help="every room, with members online, topic and flags")
    for name, help_text in (("room-info", "a room and its members online, with their roles"),
                            ("room-delete", "delete a room: its members are told, its history "
                                            "is forgotten")):
        command(name, help=help_text).add_argument("room", type=room_name)
    for name, (op, help_text) in MODERATION_COMMANDS.items():
        moderate = command(name, help=help_text)
        moderate.add_argument("room", type=room_name)
        moderate.add_argument("name")
        if op in WITH_REASON:
            moderate.add_argument("--reason")
        if op == "ban":
            moderate.add_argument("--minutes", type=float, help="for ever without it")
    topic = command("room-topic", help='set the topic ("" clears it)')
    topic.add_argument("room", type=room_name)
    topic.add_argument("text")
    mode = command("room-mode", help="turn a room's flag on or off")
    mode.add_argument("room", type=room_name)
    mode.add_argument("flag", choices=("private", "topic-locked"),
                      type=lambda text: text.replace("_", "-"))
    mode.add_argument("state", choices=("on", "off"))


def parse_args(argv, cfg):
    parser = argparse.ArgumentParser(prog="python -m spchat.admin", description=__doc__.split("\n\n")[0])
    add_server_options(parser, cfg)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    # The common options may come before or after the command.
    json_option = argparse.ArgumentParser(add_help=False)
    json_option.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    server_options = argparse.ArgumentParser(add_help=False, parents=[json_option])
    add_server_options(server_options, cfg, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, local=False, **kwargs):
        """``local``: a command that does not reach the server."""
        parents = [json_option if local else server_options]
        return commands.add_parser(name, parents=parents, **kwargs)

    command("list", help="every session")
    command("stats", help="the server's figures, as --metrics serves them to Prometheus")
    command("bans", help="the server bans still running: name, time left, reason")
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
    command("disconnect-all", help="disconnect every session (of every node)").add_argument(
        "--reason")
    shutdown = command("shutdown", help="stop the server: every node of a cluster, or the "
                       "one --node names")
    shutdown.add_argument("--reason")
    shutdown.add_argument("--node", help="stop this node only (its CHAT_NODE name)")
    command("irc-operator-hash", local=True, help="a password's hash for CHAT_IRC_OPERATOR (asked for, "
            "or read from standard input; the server is not contacted)")
    add_room_commands(command)
    from spchat import migrate

    migrate.add_arguments(command("migrate", local=True, help="copy a stopped node's SQLite store into "
                                  "PostgreSQL (safe to run again)"))
    return parser.parse_args(argv)


def room_request(args) -> wire.AdminRequest:
    room = getattr(args, "room", None)
    if args.command in MODERATION_COMMANDS:
        return wire.AdminRequest("1", "room_moderate", args.name, getattr(args, "reason", None),
                                 getattr(args, "minutes", None), room,
                                 MODERATION_COMMANDS[args.command][0])
    if args.command == "room-topic":
        return wire.AdminRequest("1", "room_topic", reason=args.text, room=room)
    if args.command == "room-mode":
        return wire.AdminRequest("1", "room_mode", room=room, action=args.flag.replace("-", "_"),
                                 on=args.state == "on")
    return wire.AdminRequest("1", args.command.replace("-", "_"), room=room)  # rooms, info, delete


def build_request(args) -> wire.AdminRequest:
    if args.command == "rooms" or args.command.startswith("room-"):
        return room_request(args)
    op = args.command.replace("-", "_")
    minutes = getattr(args, "ban_minutes", None) if op == "kick" else getattr(args, "minutes", None)
    reason = args.text if op == "broadcast" else getattr(args, "reason", None)
    return wire.AdminRequest("1", op, getattr(args, "name", None), reason, minutes,
                             node=getattr(args, "node", None))


# --- output --------------------------------------------------------------------


def render_json(reply: wire.AdminReply, op: str) -> str:
    """The reply with its tables as lists of objects (keys: the wire's field names)."""
    out = {"ok": reply.ok, "text": reply.text}
    if op == "rooms":
        out["rooms"] = [dict(zip(wire.ROOM_FIELDS, row)) for row in reply.rooms]
    elif op == "room_info":
        out["room"] = dict(zip(wire.ROOM_FIELDS, reply.rooms[0])) if reply.rooms else None
        out["members"] = [dict(zip(wire.MEMBER_FIELDS, row)) for row in reply.members]
    elif op == "stats":
        out["stats"] = [{"metric": metric, "labels": labels_of(labels), "value": value}
                        for metric, labels, value in reply.stats]
    elif op == "bans":
        out["bans"] = [dict(zip(wire.BAN_FIELDS, row)) for row in reply.bans]
    elif not op.startswith("room_"):
        out["sessions"] = [dict(zip(wire.SESSION_FIELDS, row)) for row in reply.sessions]
    return json.dumps(out)  # ASCII only: nothing in it can reach a terminal as a control


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """Aligned columns, every cell made printable."""
    cells = [tuple(printable(str(cell)) for cell in row) for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row).rstrip() for row in [header, *cells])


def duration(seconds: float) -> str:
    """"47s", "1m 47s", "2h 05m": as the admin table and the monitor show it."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def sessions_table(sessions: tuple) -> str:
    header = ("NAME", "ADDRESS", "STATE", "CLIENT", "FOR", "SINCE", "IDLE", "MSGS", "IN", "OUT")
    clustered = any(len(row) > len(header) for row in sessions)
    now = time.time()
    rows = [(name, address, state, agent, duration(in_state),
             time.strftime("%H:%M:%S", time.localtime(since / 1000)),
             duration(now - last / 1000), msgs, b_in, b_out, *node)
            for name, address, state, agent, in_state, since, last, msgs, b_in, b_out, *node
            in sessions]
    return table(header + ("NODE",) if clustered else header, rows)


def time_left(until_ms: int | None, now: float) -> str:
    """How long a ban still runs, as the admin table and the monitor say it."""
    return "for ever" if until_ms is None else duration(until_ms / 1000 - now)


def bans_table(bans: tuple) -> str:
    now = time.time()
    return table(("NAME", "LEFT", "REASON"),
                 [(name, time_left(until, now), reason) for name, until, reason in bans])


def room_flags(private: bool, topic_locked: bool) -> str:
    """A room's flags as one word, "private,topic-locked"; "" for neither
    (admin and monitor)."""
    return ",".join(flag for flag, on in (("private", private), ("topic-locked", topic_locked))
                    if on)


def rooms_table(rooms: tuple) -> str:
    header = ("ROOM", "MEMBERS", "FLAGS", "LAST_SEQ", "TOPIC")
    rows = [(f"#{room}", members, room_flags(private, locked) or "-", last_seq,
             wire.clip(printable(topic), TOPIC_CLIP))
            for room, members, topic, private, locked, last_seq in rooms]
    return table(header, rows)


def labels_of(text: str) -> dict[str, str]:
    """A figure's labels, "kind=chat,x=y", as {"kind": "chat", "x": "y"}."""
    return dict(part.partition("=")[::2] for part in text.split(",") if part)


def stats_table(stats: tuple) -> str:
    rows = [(metric, labels or "-", f"{value:g}" if isinstance(value, float) else value)
            for metric, labels, value in stats]
    return table(("METRIC", "LABELS", "VALUE"), rows)


def render(reply: wire.AdminReply, op: str, as_json: bool) -> str:
    if as_json:
        return render_json(reply, op)
    if reply.ok and op == "stats" and reply.stats:
        return stats_table(reply.stats)
    if reply.ok and op == "bans" and reply.bans:
        return bans_table(reply.bans)
    if reply.ok and op == "room_info" and reply.rooms:
        members = (table(("NAME", "STATE", "ROLE"), list(reply.members)) if reply.members
                   else printable(reply.text))  # nobody online
        return f"{rooms_table(reply.rooms)}\n\n{members}"
    if reply.ok and op == "rooms" and reply.rooms:
        return rooms_table(reply.rooms)
    if reply.sessions:
        return sessions_table(reply.sessions)
    return printable(reply.text)


def operator_hash() -> int:
    """Print the Argon2id hash of a password typed (without echo) or piped in."""
    import getpass

    from spchat.server.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("IRC operator password: ")
        if getpass.getpass("again: ") != password:
            sys.stderr.write("spchat.admin: the two passwords differ\n")
            return EXIT_REFUSED
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_password(password))
    except ValueError as e:
        sys.stderr.write(f"spchat.admin: {e}\n")
        return EXIT_REFUSED
    return 0


def main(argv=None) -> int:
    try:
        cfg, _ = config.load_config()
    except config.ConfigError as e:
        sys.stderr.write(f"spchat.admin: {e}\n")
        return EXIT_UNREACHABLE
    args = parse_args(sys.argv[1:] if argv is None else argv, cfg)
    if args.command == "irc-operator-hash":
        return operator_hash()
    if args.command == "migrate":
        from spchat import migrate

        return migrate.run(args)
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
    request = build_request(args)
    result = {}

    @defer.inlineCallbacks
    def run(reactor):
        done = defer.Deferred()
        session = AdminSession(reactor, token, request, done)
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
    stream.write(render(reply, request.op, args.json) + "\n")
    return result["status"]


if __name__ == "__main__":
    sys.exit(main())
