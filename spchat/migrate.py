"""``python -m spchat.admin migrate``: a single node's SQLite store copied
into PostgreSQL (spchat.server.migration does the copy).

    python -m spchat.admin migrate --from-sqlite spchat-data --to postgresql://chat@db/spchat

Safe to run again: it finishes an interrupted copy and changes nothing
after a complete one.  Progress per table on standard output, ``--json``
for scripts; every error is one line and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spchat import config
from spchat.server.migration import BATCH_ROWS, copy_store, open_target, shown, snapshot
from spchat.server.pg_link import StoreUnavailable
from spchat.server.threaded_store import StoreError
from spchat.terminal import printable

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
PROG = "spchat.admin migrate"


def add_arguments(parser) -> None:
    parser.add_argument("--from-sqlite", type=Path, required=True, metavar="PATH",
                        help="the node's data directory (or its spchat.db); only read")
    parser.add_argument("--to", required=True, metavar="URL",
                        help="the PostgreSQL database, postgresql://user@host:port/database")
    parser.add_argument("--batch-size", type=_positive, default=BATCH_ROWS, metavar="ROWS",
                        help=f"rows per transaction (default {BATCH_ROWS})")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {text!r}")
    return int(text)


def _check_url(url: str) -> None:
    """The check --database has, and a URL it must be."""
    try:
        if not config._database_url(url):
            raise ValueError("must be a postgresql://user@host:port/database URL")
    except ValueError as e:
        raise StoreError(f"--to {shown(url)}: {str(e).removesuffix(' (or empty)')}") from None


def run(args) -> int:
    """Copy, printing progress (or, with ``--json``, one object at the end)."""
    def say(line: str) -> None:
        if not args.json:
            print(printable(line), flush=True)

    def progress(table, counts, finished):
        if finished:
            say(f"{table}: {counts.copied} copied, {counts.already_there} already there")

    try:
        _check_url(args.to)
        with snapshot(args.from_sqlite) as source:
            link = open_target(args.to)
            try:
                upgraded = (f", upgraded on a copy to {_schema_now(source)}"
                            if source.schema < _schema_now(source) else "")
                say(f"copying {source.path} (schema {source.schema}{upgraded}) "
                    f"into {shown(args.to)}")
                counts = copy_store(source, link, args.batch_size, progress)
            finally:
                link.close()
    except StoreUnavailable as e:
        return _fail(args, str(e), EXIT_UNREACHABLE)
    except StoreError as e:
        return _fail(args, str(e), EXIT_REFUSED)
    except KeyboardInterrupt:
        return _fail(args, "interrupted: run it again to finish the copy", EXIT_REFUSED)
    copied = sum(c.copied for c in counts.values())
    there = sum(c.already_there for c in counts.values())
    summary = f"done: {copied} rows copied, {there} already there"
    if args.json:
        print(json.dumps({
            "ok": True, "text": summary, "source": str(source.path), "schema": source.schema,
            "target": shown(args.to), "copied": copied, "already_there": there,
            "tables": {name: {"copied": c.copied, "already_there": c.already_there}
                       for name, c in counts.items()}}))
    else:
        say(summary)
    return 0


def _schema_now(source) -> int:
    version, = source.conn.execute("PRAGMA user_version").fetchone()
    return version


def _fail(args, text: str, status: int) -> int:
    if args.json:
        print(json.dumps({"ok": False, "text": text}))
    else:
        sys.stderr.write(f"{PROG}: {printable(text)}\n")
    return status
