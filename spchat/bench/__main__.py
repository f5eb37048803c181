"""``python -m spchat.bench``: spchat side by side with ngIRCd and Mosquitto.

    python -m spchat.bench            # the full run (about 15 minutes)
    python -m spchat.bench --quick    # a smoke run, under 2 minutes

Every server runs in its own process on core 0, the load generator in this
one on core 1.  Results go to ``bench/results/`` (Markdown, JSON, PNG).  The
exit status is 1 only for errors: a run that crashed, or spchat losing,
duplicating or reordering a message below saturation.  Slowness is reported,
never failed.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, task

from spchat.bench import cluster, report, scenarios
from spchat.bench.load import run_room
from spchat.bench.servers import SERVERS, Unavailable, stop_all

GENERATOR_CORE = 1


def crypto_share(profile: Path) -> float | None:
    """Cryptography's share of the server's CPU time in a cProfile dump:
    spchat/noise.py and the cryptography library, over everything but the
    reactor waiting in epoll."""
    try:
        stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]  # not in typeshed
    except (OSError, TypeError, ValueError, EOFError):
        return None
    total = crypto = 0.0
    for (filename, _, function), (_, _, tottime, _, _) in stats.items():
        if "poll' of 'select.epoll" in function:
            continue  # waiting, not working
        total += tottime
        if filename.endswith(os.path.join("spchat", "noise.py")) or "cryptography" in function \
                or "cryptography" in filename:
            crypto += tottime
    return crypto / total if total else None


def errors_in(results) -> list[str]:
    problems = []
    for r in results:
        if not r.server.startswith("spchat") or r.note == "saturated":
            continue
        if r.lost or r.duplicated or r.out_of_order:
            problems.append(f"{r.server} ({r.scenario}, {r.offered_rate:g}/s): lost {r.lost}, "
                            f"duplicated {r.duplicated}, out of order {r.out_of_order}")
        if "never acknowledged" in r.note or "not all resumed" in r.note:
            problems.append(f"{r.server} ({r.scenario}): {r.note}")
    return problems


@defer.inlineCallbacks
def bench(reactor, args, workdir: Path):
    plan = scenarios.QUICK if args.quick else scenarios.FULL
    results, skipped, failures = [], {}, []
    # Interrupted (Ctrl-C, SIGTERM): the reactor stops mid-run; so do its
    # servers, and no new run starts.
    interrupted: list[bool] = []

    def interrupt() -> None:
        interrupted.append(True)
        stop_all()

    reactor.addSystemEventTrigger("before", "shutdown", interrupt)
    runs = iter(range(1_000_000))

    def starter(kind, **options):
        def start():
            server = SERVERS[kind](workdir / f"{kind}-{next(runs)}", **options)
            server.start()
            return server
        return start

    for kind in args.servers:
        try:
            SERVERS[kind](workdir / "probe").check_available()
        except Unavailable as e:
            skipped[kind] = str(e)
    servers = [k for k in args.servers if k not in skipped]
    for key in args.scenarios:
        for kind in servers:
            if key in "ef" and kind != "spchat" or interrupted:
                continue
            print(f"bench: ({key}) {kind}…", file=sys.stderr, flush=True)
            start = starter(kind)
            try:
                if key == "a":
                    got = yield scenarios.sweep(reactor, start, plan)
                elif key in "bc":
                    got = yield scenarios.room(reactor, start, key, getattr(plan, key))
                elif key == "d":
                    got = yield scenarios.idle(reactor, start, plan)
                elif key == "f":
                    got = yield cluster.spread(reactor, workdir / f"f-{next(runs)}", plan)
                else:
                    got = yield scenarios.storm(reactor, start, plan, workdir / "pins")
            except Exception as e:  # one server failing must not hide the others
                if isinstance(e, defer.FirstError):  # one client of a batch: say which
                    e = e.subFailure.value
                why = "interrupted" if interrupted else f"{type(e).__name__}: {e}"
                failures.append(f"({key}) {kind}: {why}")
                continue
            results.extend(got)
            # Saved as it goes: an interrupted run keeps what it measured.
            report.save(results, Path(args.out), args.quick, None, skipped)
    share = None
    if "spchat" in servers and args.profile and not interrupted:
        print("bench: profiling spchat in (b)…", file=sys.stderr, flush=True)
        profile = workdir / "spchat.prof"
        server = starter("spchat", profile=profile)()
        try:
            clients, senders, rate, seconds = plan.b
            yield run_room(reactor, server, "b", clients, senders, rate, seconds)
        finally:
            server.stop()
        share = crypto_share(profile)
    md, png = report.save(results, Path(args.out), args.quick, share, skipped)
    print(md.read_text(encoding="utf-8"))
    no_plot = " (no plot: no sweep (a) in this run)" if not any(
        r.scenario == "a" for r in results) else " (no plot: pip install '.[bench]')"
    print(f"bench: wrote {md}" + (f" and {png}" if png else no_plot),
          file=sys.stderr)
    problems = failures + errors_in(results)
    for problem in problems:
        print(f"bench: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spchat.bench", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--servers", default="spchat,spchat-irc,ngircd,mosquitto",
                        help="comma-separated: spchat, spchat-irc (its IRC gateway), ngircd, "
                        "mosquitto (default: all)")
    parser.add_argument("--scenarios", default="abcdef", help="letters a-f (default: abcdef)")
    parser.add_argument("--out", default="bench/results", help="where the results go")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the profile of spchat that measures the cost of cryptography")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVERS)}")
    if not args.scenarios or set(args.scenarios) - set("abcdef"):
        parser.error(f"--scenarios takes letters a to f, not {args.scenarios!r}")
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {GENERATOR_CORE})  # the server gets core 0
    status: list[int] = []
    with tempfile.TemporaryDirectory(prefix="spchat-bench-") as tmp:
        def run(reactor):
            return bench(reactor, args, Path(tmp)).addCallback(status.append)
        try:
            task.react(run)
        except SystemExit as e:
            if e.code:
                return int(e.code)  # react exits with the status it was given
    return status[0] if status else 1


if __name__ == "__main__":
    sys.exit(main())
