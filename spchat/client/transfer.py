"""``python -m spchat.client share PATH...`` and ``... get ID`` for scripts.

``share`` logs in, offers the files, prints one line per file
("sharing NAME (SIZE) as ID") and serves them until Ctrl-C or SIGTERM
(its client keeps the connection alive; after a drop it reconnects and
offers them again); if it is off the server for good (kicked, the server
gone after every retry) it says why and exits 1.
``get`` logs in, downloads one file from every peer that has it, prints its
progress on stderr and a summary on stdout (``--json``: one JSON object),
and exits 0, or 1 with one line saying why.  Interrupted, a download keeps
what it has and resumes when run again.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from twisted.internet import defer, task

from spchat import config
from spchat.client.addresses import add_server_options, check_server_options
from spchat.client.downloads import download_dir
from spchat.client.passwords import add_password_options, password_or_exit, terminal_prompt
from spchat.p2p.report import progress_text, size_text, summary_text

PROGRESS_SECONDS = 1.0


def parse_args(argv, cfg: config.Config):
    parser = argparse.ArgumentParser(
        prog="python -m spchat.client", description="Share files with, or get them from, "
        "the peers of an spchat room.")
    sub = parser.add_subparsers(dest="command", required=True)
    share = sub.add_parser("share", help="offer files and serve them until stopped")
    share.add_argument("paths", nargs="+", metavar="PATH")
    get = sub.add_parser("get", help="download one file and exit")
    get.add_argument("file", metavar="ID", help="the file's id (6 or more hex digits)")
    get.add_argument("--dir", help=f"where to save it (default {download_dir(cfg.download_dir)})")
    get.add_argument("--json", action="store_true", help="print the summary as JSON")
    for p in (share, get):
        add_server_options(p, cfg)
        p.add_argument("--name", required=True, help="the name to log in with")
        add_password_options(p)
    args = parser.parse_args(argv)
    check_server_options(parser, args, cfg)
    args.password = password_or_exit(args, ask=terminal_prompt())  # before the reactor
    return args


def main(argv, cfg: config.Config, pins) -> int:
    args = parse_args(argv, cfg)
    from spchat.client.session import ChatClient, ClientError
    from spchat.p2p.node import SharingError, SharingNode

    def err(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    from twisted.internet import reactor

    # Ctrl-C and SIGTERM end it the normal way (a download kept resumable,
    # a logout), not by stopping the reactor under it: our own handlers,
    # and the reactor runs without its own.
    stop_requested: defer.Deferred = defer.Deferred()

    def on_signal(signum, frame):
        reactor.callFromThread(lambda: stop_requested.called or stop_requested.callback(None))

    offline: defer.Deferred = defer.Deferred()  # fires with the reason once the client gives up

    def on_status(status) -> None:
        if status.state == "offline" and not offline.called:
            offline.callback(status.reason)

    @defer.inlineCallbacks
    def run(reactor):
        client = ChatClient(
            reactor, args.host or cfg.client_host, args.port or cfg.tcp_port, args.name, pins,
            on_status=on_status, reconnect_delay=cfg.reconnect_delay,
            max_retries=cfg.max_retries, password=args.password)
        node = SharingNode(reactor, client, port=cfg.p2p_port, direct=cfg.p2p_direct,
                           upload_bps=cfg.p2p_upload_bps, max_per_ip=cfg.p2p_max_per_ip)
        try:
            node.start()
        except Exception as e:  # a taken CHAT_P2P_PORT, say
            err(f"spchat: cannot take peer connections on port {cfg.p2p_port}: {e}")
            return 1
        try:
            yield client.connect()
        except ClientError as e:
            err(f"spchat: {e}")
            return 1
        try:
            if args.command == "share":
                for path in args.paths:
                    file_id, manifest = yield node.share(path)
                    out(f"sharing {manifest.name} ({size_text(manifest.size)}) as {file_id}")
                # Serve until stopped, or until there is no server to serve through.
                reason, which = yield defer.DeferredList([stop_requested, offline],
                                                    fireOnOneCallback=True)
                yield node.stop()
                if which == 1:
                    err(f"spchat: stopped sharing: {reason}")
                    return 1
                yield client.logout()
                return 0
            fetch = yield node.fetch(args.file, args.dir or download_dir(cfg.download_dir))
            stop_requested.addCallback(lambda _: fetch.stop())
            ticker = task.LoopingCall(lambda: err(progress_text(fetch.progress())))
            ticker.clock = reactor
            ticker.start(PROGRESS_SECONDS, now=False)
            try:
                yield fetch.result
            finally:
                ticker.stop()
        except SharingError as e:
            err(f"spchat: {e}")
            yield node.stop()
            yield client.logout()
            return 1
        summary = fetch.summary()
        out(json.dumps(summary) if args.json else summary_text(summary))
        yield node.stop()
        yield client.logout()
        return 0

    status = []

    def finished(result):
        if isinstance(result, int):
            status.append(result)
        else:  # a bug: say it in one line rather than hang
            err(f"spchat: {result.getErrorMessage()}")
            status.append(1)
        reactor.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    reactor.callWhenRunning(lambda: run(reactor).addBoth(finished))
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]  # the real reactor's run takes it
    return status[0] if status else 1
