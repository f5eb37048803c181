"""``python -m spchat.bench.p2p``: how fast a file comes from spchat peers.

    python -m spchat.bench.p2p            # 256 MiB, 3 rounds a case (a minute or two)
    python -m spchat.bench.p2p --quick    # 64 MiB, one round

One spchat server on 127.0.0.1 and every peer a process of its own
(``python -m spchat.client share`` / ``get``): (1) three seeders and one
downloader, (2) one seeder and one downloader, and for scale (3) aria2c
fetching the same file from three local HTTP servers at once.  A speed is
the file's size over the wall time of the downloading process, start to
exit (startup, login and the tracker's introductions included), and for
spchat also over the download time the downloader reports itself.  Each
case runs ``--rounds`` times into a fresh directory; the table gives the
best and the median.  Every copy's SHA-256 is checked: a wrong copy, or a
download that fails, is an error (exit status 1).

Results go to ``bench/results/p2p.md``.  The bench installs nothing:
without aria2c, case (3) is reported as skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FILE_NAME = "p2p-bench.bin"
ROOT = Path(__file__).resolve().parents[2]  # this checkout, for the children's PYTHONPATH
ARIA2_PACKAGE = "aria2"

TITLES = {
    "1": "(1) spchat: 3 seeders, 1 downloader",
    "2": "(2) spchat: 1 seeder, 1 downloader",
    "3": "(3) aria2c from 3 HTTP servers",
}

SERVER_READY = re.compile(r"listening on TCP [\d.]+:(\d+) \(presence on UDP (\d+)\); "
                          r"server key fingerprint (\S+)")
SHARING = re.compile(r"^sharing .* as ([0-9a-f]{64})$")
HTTP_READY = re.compile(r"^serving on port (\d+)$")
HTTP_SENT = re.compile(r"^sent (\d+)$")


class BenchError(Exception):
    """A case could not be measured, or measured a wrong copy."""


# --- what a case measured ---------------------------------------------------


@dataclass
class Case:
    key: str
    wall: list[float] = field(default_factory=list)  # s, process start to exit, per round
    own: list[float] = field(default_factory=list)  # s, as the downloader reports it
    getter_cpu: list[float] = field(default_factory=list)  # CPU s of the downloader
    senders_cpu: list[float] = field(default_factory=list)  # CPU s of all senders together
    sent: dict[str, int] = field(default_factory=dict)  # bytes per sender, all rounds
    skipped: str = ""
    error: str = ""

    @property
    def title(self) -> str:
        return TITLES[self.key]


def rate(size: int, seconds: float) -> float:
    """MiB/s."""
    return size / MIB / seconds


def best_and_median(size: int, seconds: list[float]) -> tuple[float, float] | None:
    """The best and the median speed of rounds that took ``seconds``."""
    if not seconds:
        return None
    return rate(size, min(seconds)), rate(size, statistics.median(seconds))


def busy(cpu: list[float], wall: list[float]) -> float | None:
    """Median CPU use over the rounds, in % of one core."""
    if not cpu or len(cpu) != len(wall):
        return None
    return statistics.median(100 * c / w for c, w in zip(cpu, wall))


def shares_text(sent: dict[str, int]) -> str:
    """Each sender's share of the bytes, in the senders' order."""
    total = sum(sent.values())
    if not total:
        return ""
    return ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in sent.items())


def _number(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _cell(text: str) -> str:
    """One line of ``text`` that keeps a Markdown table whole."""
    return text.strip().splitlines()[0].replace("|", "\\|") if text.strip() else ""


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f} %"


def table(cases: list[Case], size: int, rounds: int, load: float, note: str = "") -> str:
    """The results as Markdown; ``load``: the load average over the minute before."""
    lines = [f"# spchat peer-to-peer bench{' (' + note + ')' if note else ''}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
             f"{os.cpu_count()} cores (load average {load:.2f} before the run), "
             f"Python {platform.python_version()}; a file of {size / MIB:,.0f} MiB of random "
             f"bytes, {rounds} round{'s' if rounds != 1 else ''} a case, every process on "
             "127.0.0.1.", "",
             "| case | MiB/s best | MiB/s median | own clock: best | own clock: median "
             "| downloader CPU | senders' CPU | bytes per sender |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for case in cases:
        if case.skipped or not case.wall:
            why = f"skipped: {case.skipped}" if case.skipped else \
                f"error: {_cell(case.error)}" if case.error else "not run"
            lines.append(f"| {case.title} | {why} |  |  |  |  |  |  |")
            continue
        wall = best_and_median(size, case.wall) or (None, None)
        own = best_and_median(size, case.own) or (None, None)
        getter, senders = busy(case.getter_cpu, case.wall), busy(case.senders_cpu, case.wall)
        shares = shares_text(case.sent)
        if case.error:
            shares = (shares + "; " if shares else "") + f"error: {_cell(case.error)}"
        lines.append(
            f"| {case.title} | {_number(wall[0])} | {_number(wall[1])} | {_number(own[0])} "
            f"| {_number(own[1])} | {_percent(getter)} | {_percent(senders)} | {shares} |")
    lines += ["",
              "MiB/s: the file's size over the wall time of the downloading process, from "
              "its start to its exit (Python's startup, the login and the tracker's "
              "introductions included).  Own clock: over the download time the spchat "
              "downloader reports itself (its `seconds`).  CPU: the median over the rounds "
              "of CPU time (user + system) over that wall time, in % of one core; the "
              "senders are the seeders, or the HTTP servers, all together.  Bytes per "
              "sender: each one's share of the bytes the downloader received, over all "
              "rounds.", ""]
    return "\n".join(lines)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks of a file of ``size``
    bytes; None for the whole file (no header, or several ranges).  ValueError
    when it cannot be satisfied."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first + last).isdigit():
        raise ValueError(f"bad range {header!r}")
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            raise ValueError(f"empty range {header!r}")
        return max(0, size - int(last)), size - 1
    start, end = int(first), int(last) if last else size - 1
    if start >= size or end < start:
        raise ValueError(f"range {header!r} outside {size} bytes")
    return start, min(end, size - 1)


# --- the HTTP servers of case (3): python -m spchat.bench.p2p --serve-http DIR


class FileServer(http.server.ThreadingHTTPServer):
    """The HTTP server of one directory's files, ``root``."""

    daemon_threads = True
    root: Path


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files in one directory, with byte ranges, sent
    with sendfile(2); each response's byte count goes to stdout."""

    protocol_version = "HTTP/1.1"
    server: FileServer

    def do_HEAD(self):
        self._respond(body=False)

    def do_GET(self):
        self._respond(body=True)

    def _respond(self, body: bool) -> None:
        root = self.server.root
        path = root / unquote(urlsplit(self.path).path).lstrip("/")
        if path.parent != root or not path.is_file():
            self.send_error(404)
            return
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                wanted = parse_range(self.headers.get("Range"), size)
            except ValueError:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = wanted or (0, size - 1)
            length = end - start + 1
            self.send_response(206 if wanted else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if wanted:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            sent = 0
            try:
                while sent < length:
                    n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent,
                                    length - sent)
                    if not n:
                        break
                    sent += n
            except OSError:  # the client closed: aria2c does when a segment is done
                self.close_connection = True
            finally:
                print(f"sent {sent}", flush=True)

    def log_message(self, format, *args):
        pass


def serve_http(directory: str) -> int:
    server = FileServer(("127.0.0.1", 0), RangeHandler)
    server.root = Path(directory).resolve()
    print(f"serving on port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


# --- the processes ---------------------------------------------------------


RUNNING: list[subprocess.Popen] = []  # stopped at the end, whatever happens


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in RUNNING:
        RUNNING.remove(proc)


def stop_all() -> None:
    for proc in list(RUNNING):
        if proc.poll() is None:
            proc.terminate()  # all at once: each says goodbye while the others do
    for proc in reversed(list(RUNNING)):
        stop(proc)


def environment(config_dir: Path) -> dict:
    """This checkout first, a private client configuration, no CHAT_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["SPCHAT_CONFIG_DIR"] = str(config_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(command: list[str], env: dict, cwd: Path, **pipes) -> subprocess.Popen:
    # A session of its own: Ctrl-C reaches the bench only, which stops the
    # processes itself, in order.
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", start_new_session=True, **pipes)
    RUNNING.append(proc)
    return proc


class Child:
    """A long-lived process (server, seeder, HTTP server), its output read as
    it comes: a full pipe would stall it."""

    def __init__(self, name: str, command: list[str], env: dict, cwd: Path):
        self.name = name
        self.proc = spawn(command, env, cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._new = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None, "started with stdout=PIPE"
        for line in self.proc.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: re.Pattern, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new:
            while True:
                for line in self.lines[seen:]:
                    found = pattern.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self.proc.poll() is not None or left <= 0:
                    raise BenchError(f"{self.name} did not start" + (
                        f" (exit status {self.proc.returncode})" if self.proc.returncode
                        is not None else f" in {timeout:.0f} s") + ":\n  "
                        + "\n  ".join(self.lines[-15:]))
                self._new.wait(min(left, 0.5))

    def cpu_seconds(self) -> float:
        """utime + stime so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        stop(self.proc)


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def download(command: list[str], env: dict, cwd: Path, timeout: float):
    """Run one downloading process to its end: (wall s, CPU s, stdout, stderr)."""
    cpu = children_cpu()  # the other children are alive: only this one is reaped meanwhile
    started = time.monotonic()
    proc = spawn(command, env, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise BenchError(f"{Path(command[0]).name} took over {timeout:.0f} s") from None
    wall = time.monotonic() - started
    RUNNING.remove(proc)
    if proc.returncode:
        tail = "\n  ".join(err.strip().splitlines()[-8:] or out.strip().splitlines()[-8:])
        raise BenchError(f"the download exited with status {proc.returncode}:\n  {tail}")
    return wall, children_cpu() - cpu, out, err


# --- the bench -------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; their SHA-256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def say(line: str) -> None:
    print(f"p2p: {line}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.size = args.size_mib * MIB
        self.source = work / "src" / FILE_NAME
        self.env = environment(work / "client-config")
        self.timeout = 60 + args.size_mib  # s: a stuck download, not a slow one
        self.cases = [Case(key) for key in TITLES]
        self.downloads = 0
        self.digest = ""

    def case(self, key: str) -> Case:
        return next(c for c in self.cases if c.key == key)

    def run(self) -> None:
        say(f"writing {self.args.size_mib} MiB of random bytes…")
        self.digest = make_file(self.source, self.size)
        try:
            self.spchat()
        except BenchError as e:  # the server or a seeder would not start
            for case in self.cases[:2]:
                if not case.wall and not case.error:
                    case.error = str(e)
        try:
            self.aria2()
        except BenchError as e:
            self.case("3").error = str(e)

    def spchat(self) -> None:
        server = Child("the spchat server", [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "spchat", "--host", "127.0.0.1", "--tcp-port", "0",
            "--udp-port", "0", "--relay-port", "0", "--data-dir", str(self.work / "data"),
        ], self.env, self.work)
        port = server.wait_for(SERVER_READY, 30).group(1)
        seeders = []
        try:
            # One seeder first, then two more: no case waits for the server to
            # notice that a seeder left.
            for key, names in (("2", ["s1"]), ("1", ["s2", "s3"])):
                for name in names:
                    seeder = Child(name, [sys.executable, "-m", "spchat.client", "share",
                                          str(self.source), "--host", "127.0.0.1", "--port",
                                          port, "--name", name], self.env, self.work)
                    seeders.append(seeder)
                for seeder in seeders[-len(names):]:
                    file_id = seeder.wait_for(SHARING, self.timeout).group(1)
                self.rounds(self.case(key), seeders, lambda directory, n: [
                    sys.executable, "-m", "spchat.client", "get", file_id, "--host",
                    "127.0.0.1", "--port", port, "--name", f"d{n}", "--dir", str(directory),
                    "--json"])
        finally:
            for seeder in seeders:
                seeder.proc.terminate()
            for seeder in seeders:
                seeder.stop()
            server.stop()

    def aria2(self) -> None:
        case = self.case("3")
        program = shutil.which("aria2c")
        if program is None:
            case.skipped = f"install the Debian package {ARIA2_PACKAGE}"
            return
        servers = [Child(f"m{i}", [sys.executable, "-m", "spchat.bench.p2p", "--serve-http",
                                   str(self.source.parent)], self.env, self.work)
                   for i in (1, 2, 3)]
        try:
            urls = [f"http://127.0.0.1:{s.wait_for(HTTP_READY, 30).group(1)}/{FILE_NAME}"
                    for s in servers]
            # Several URIs of one file are its mirrors: one connection to each.
            self.rounds(case, servers, lambda directory, n: [
                program, "--no-conf", "-x3", "-s3", "--split=3", "--min-split-size=1M",
                "--allow-overwrite=true", "--file-allocation=none", "--summary-interval=0",
                "-d", str(directory), "-o", FILE_NAME, *urls])
        finally:
            for server in servers:
                server.stop()

    def rounds(self, case: Case, senders: list[Child], command) -> None:
        """``--rounds`` downloads, each into a fresh directory, checked."""
        for n in range(1, self.args.rounds + 1):
            self.downloads += 1
            directory = self.work / f"download-{self.downloads}"
            directory.mkdir()
            marks = [len(s.lines) for s in senders]
            sender_cpu = sum(s.cpu_seconds() for s in senders)
            try:
                wall, cpu, out, _ = download(command(directory, self.downloads), self.env,
                                             self.work, self.timeout)
                senders_cpu = sum(s.cpu_seconds() for s in senders) - sender_cpu
                copy = directory / FILE_NAME
                if not copy.is_file():
                    raise BenchError(f"no {FILE_NAME} in the download directory")
                if sha256(copy) != self.digest:
                    raise BenchError(f"round {n}: the copy's SHA-256 differs from the source's")
                if case.key == "3":
                    time.sleep(0.2)  # the servers' last "sent" lines
                    got = {s.name: sum(int(m.group(1)) for line in s.lines[mark:]
                                       if (m := HTTP_SENT.match(line)))
                           for s, mark in zip(senders, marks)}
                    own = None
                else:
                    summary = json.loads(out.strip().splitlines()[-1])
                    if summary.get("size") != self.size:
                        raise BenchError(f"round {n}: the downloader reports "
                                         f"{summary.get('size')} bytes, not {self.size}")
                    got = {name: peer["received"] for name, peer in summary["from"].items()}
                    own = summary["seconds"]
            except BenchError as e:
                case.error = str(e)
                say(f"{case.title}: error: {e}")
                return
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            case.wall.append(wall)
            case.getter_cpu.append(cpu)
            case.senders_cpu.append(senders_cpu)
            if own is not None:
                case.own.append(own)
            for name in sorted(got):
                case.sent[name] = case.sent.get(name, 0) + got[name]
            say(f"{case.title}, round {n}/{self.args.rounds}: {rate(self.size, wall):.1f} MiB/s"
                + (f" ({rate(self.size, own):.1f} by its own clock)" if own else "")
                + f"; downloader CPU {100 * cpu / wall:.0f} %, senders' "
                f"{100 * senders_cpu / wall:.0f} %; {shares_text(got)}")


def _terminated(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops the bench as Ctrl-C does: cleanly


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spchat.bench.p2p",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and one round")
    parser.add_argument("--size-mib", type=int, help="the file's size (default 256, quick 64)")
    parser.add_argument("--rounds", type=int, help="downloads per case (default 3, quick 1)")
    parser.add_argument("--out", default="bench/results", help="where p2p.md goes")
    parser.add_argument("--serve-http", metavar="DIR", help=argparse.SUPPRESS)  # case (3)
    args = parser.parse_args(argv)
    if args.serve_http:
        return serve_http(args.serve_http)
    if args.size_mib is None:
        args.size_mib = 64 if args.quick else 256
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.size_mib < 1 or args.rounds < 1:
        parser.error("--size-mib and --rounds must be 1 or more")
    signal.signal(signal.SIGTERM, _terminated)
    note = "quick" if args.quick else ""
    load = os.getloadavg()[0]  # others busy on these cores would slow every case
    with tempfile.TemporaryDirectory(prefix="spchat-p2p-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            bench.run()
        except KeyboardInterrupt:
            note = ", ".join(filter(None, [note, "interrupted"]))
            say("interrupted")
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleaning up: not again
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_all()
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    text = table(bench.cases, bench.size, args.rounds, load, note)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "p2p.md").write_text(text, encoding="utf-8")
    print(text)
    say(f"wrote {out / 'p2p.md'}")
    errors = [f"{c.title}: {c.error}" for c in bench.cases if c.error]
    for error in errors:
        say(f"error: {error}")
    return 1 if errors or "interrupted" in note else 0


if __name__ == "__main__":
    sys.exit(main())
