"""``python -m spchat.client``: the chat clients' command line."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path

from spchat import config
from spchat.client.addresses import add_server_options, check_server_options
from spchat.client.passwords import add_password_options, password_or_exit, terminal_prompt


def parse_args(argv, cfg: config.Config):
    parser = argparse.ArgumentParser(
        prog="python -m spchat.client", description="Chat on an spchat server."
    )
    parser.add_argument(
        "--cli", action="store_true",
        help="line mode for terminals and scripts (default: the desktop window)",
    )
    add_server_options(parser, cfg)
    parser.add_argument(
        "--name", help="the name to chat under (the window then connects at once)"
    )
    add_password_options(parser)
    parser.add_argument(
        "--register", action="store_true",
        help="register the name now, with the password (asked for if none is given)",
    )
    parser.add_argument(
        "--geometry", metavar="WxH+X+Y",
        help="the window's size and place on the screen, as X11's -geometry "
             "(960x580, 960x580+0+0)",
    )
    parser.add_argument(
        "--download-dir", type=Path, metavar="DIR",
        help="where downloads are saved (default: CHAT_DOWNLOAD_DIR, else spchat/ in the "
             "desktop's download folder)",
    )
    parser.add_argument(
        "--forget-server",
        metavar="HOST:PORT",
        help="forget the pinned key of a server whose key was really replaced",
    )
    args = parser.parse_args(argv)
    check_server_options(parser, args, cfg)
    return parser, args


def forget_server(pins, where: str) -> int:
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit():
        sys.stderr.write(f"spchat: --forget-server needs HOST:PORT, not {where!r}\n")
        return 2
    if pins.forget(host, int(port)):
        print(f"forgot the pinned key of {host}:{port}")
    else:
        print(f"no key was pinned for {host}:{port}")
    return 0


def main(argv=None) -> int:
    try:
        cfg, warnings = config.load_config()
    except config.ConfigError as e:
        sys.stderr.write(f"spchat: error: {e}\n")
        return 2
    for warning in warnings:
        sys.stderr.write(f"spchat: warning: {warning}\n")
    argv = sys.argv[1:] if argv is None else argv
    from spchat.client.pins import PinStore

    pins = PinStore(config.client_config_dir())
    if argv and argv[0] in ("share", "get"):
        from spchat.client import transfer

        return transfer.main(argv, cfg, pins)
    parser, args = parse_args(argv, cfg)
    if args.download_dir is not None:
        cfg = dataclasses.replace(cfg, download_dir=args.download_dir)
    if args.forget_server:
        return forget_server(pins, args.forget_server)
    if not args.cli:
        # The window's form has a masked password field: nothing is asked here.
        args.password = password_or_exit(args, ask=None, form=True)
        return run_desktop(cfg, args)
    if not args.name:
        parser.error("--name is required")
    # Asked before the reactor runs: a prompt then stalls nothing.
    args.password = password_or_exit(args, ask=terminal_prompt())
    host = args.host or cfg.client_host
    port = args.port or cfg.tcp_port

    from twisted.internet import defer, task

    from spchat.client.cli import LineModeClient
    from spchat.client.downloads import download_dir
    from spchat.client.session import ChatClient

    def run(reactor):
        client = ChatClient(
            reactor, host, port, args.name, pins,
            reconnect_delay=cfg.reconnect_delay, max_retries=cfg.max_retries,
            password=args.password, register=args.register,
        )
        from spchat.p2p.node import SharingNode

        sharing = SharingNode(reactor, client, port=cfg.p2p_port, direct=cfg.p2p_direct,
                              upload_bps=cfg.p2p_upload_bps, max_per_ip=cfg.p2p_max_per_ip)
        try:
            sharing.start()
        except Exception as e:  # a taken CHAT_P2P_PORT: chat still works
            sys.stderr.write(f"spchat: warning: file sharing is off: cannot take peer "
                             f"connections on port {cfg.p2p_port}: {e}\n")
            sharing = None
        cli = LineModeClient(reactor, client, sharing=sharing,
                             download_dir=download_dir(cfg.download_dir))
        return cli.run().addBoth(lambda status: (sharing.stop() if sharing else
                                                 defer.succeed(None)).addBoth(lambda _: status))

    def finished(status):
        if status:
            raise SystemExit(status)  # react() exits with this status

    task.react(lambda reactor: run(reactor).addCallback(finished))
    return 0  # not reached: react() exits the process


def run_desktop(cfg: config.Config, args) -> int:
    """The chat window, on the reactor through tksupport; 0 when it is closed."""
    try:
        import tkinter as tk

        root = tk.Tk()
    except Exception as e:  # no display, or no Tk
        sys.stderr.write(
            f"spchat: cannot open a window ({e}); use --cli for line mode in a terminal\n"
        )
        return 1

    from twisted.internet import defer, reactor, tksupport

    from spchat.client.desktop import DesktopController
    from spchat.client.tkui import ChatWindow

    controller = DesktopController(reactor, cfg, config.client_config_dir())
    controller.view = ChatWindow(root, controller)
    if args.geometry:
        try:
            root.geometry(args.geometry)
        except tk.TclError:
            root.destroy()
            sys.stderr.write(f"spchat: --geometry {args.geometry!r}: not WIDTHxHEIGHT+X+Y\n")
            return 2
    finished: list[defer.Deferred] = []  # the first shutdown's Deferred

    def shut_down():
        """Log out, then uninstall Tk from the reactor, then destroy it.

        Once: a second request (Ctrl-C while closing) waits for the first.
        """
        if finished:
            waiter = defer.Deferred()
            finished[0].addBoth(lambda result: (waiter.callback(None), result)[1])
            return waiter
        root.withdraw()  # gone for the user at once; the logout follows

        def finish(_):
            tksupport.uninstall()
            root.destroy()

        finished.append(controller.close().addBoth(finish))
        return shut_down()

    # Closing the window, Ctrl-C and SIGTERM all log out the same way, and
    # a second one while that happens only waits (no "reactor not running").
    stopping: list[bool] = []

    def stop_once(*_):
        if not stopping:
            stopping.append(True)
            reactor.stop()

    def close_clicked():
        if not finished:
            shut_down().addBoth(stop_once)

    def on_signal(signum, frame):
        reactor.callFromThread(stop_once)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    root.protocol("WM_DELETE_WINDOW", close_clicked)
    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    tksupport.install(root)
    given = {"host": args.host, "port": args.port, "name": args.name,
             "password": args.password, "register": args.register}
    reactor.callWhenRunning(controller.start, given, connect_now=bool(args.name))
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]  # the real reactor's run takes it
    return 0


if __name__ == "__main__":
    sys.exit(main())
