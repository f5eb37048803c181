"""``python -m spchat.monitor``: watch and manage a running server in a window."""

from __future__ import annotations

import argparse
import sys

from spchat import config
from spchat.admin import add_server_options, read_token


def main(argv=None) -> int:
    try:
        cfg, _ = config.load_config()
    except config.ConfigError as e:
        sys.stderr.write(f"spchat.monitor: {e}\n")
        return 2
    parser = argparse.ArgumentParser(prog="python -m spchat.monitor",
                                     description="Watch and manage a running spchat server.")
    add_server_options(parser, cfg)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        token = read_token(args)
    except ValueError as e:
        sys.stderr.write(f"spchat.monitor: {e}\n")
        return 1
    try:
        import tkinter as tk

        root = tk.Tk()
    except Exception as e:  # no display, or no Tk
        sys.stderr.write(f"spchat.monitor: cannot open a window: {e}\n")
        return 1

    from twisted.internet import reactor, task, tksupport

    from spchat.client.pins import PinStore
    from spchat.monitor.app import MonitorConnection, MonitorWindow
    from spchat.monitor.presenter import MonitorPresenter

    presenter = MonitorPresenter(reactor)
    connection: MonitorConnection  # made next, once the window it refreshes is
    window = MonitorWindow(root, presenter, send=lambda request: connection.send(request))
    connection = MonitorConnection(
        reactor, args.host, args.port, token, PinStore(config.client_config_dir()),
        presenter, window.refresh,
    )
    window.connection = connection
    ticker = task.LoopingCall(window.refresh)  # durations tick every second

    def close():
        ticker.stop()
        connection.stop()
        tksupport.uninstall()  # before destroy, then the reactor
        root.destroy()
        reactor.stop()

    root.protocol("WM_DELETE_WINDOW", close)
    tksupport.install(root)
    reactor.callWhenRunning(connection.start)
    reactor.callWhenRunning(ticker.start, 1.0)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
