"""The bench's output: a Markdown table, a JSON dump and a PNG plot."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

TITLES = {
    "a": "(a) 10 clients, 10 senders, rate swept to saturation",
    "b": "(b) 100 clients, 10 senders, 1,000 room messages/s",
    "c": "(c) 1,000 clients, 10 senders, 100 room messages/s",
    "d": "(d) 10,000 idle connections, one sender at 1 message/s",
    "e": "(e) reconnect storm: every client cut at once (spchat only)",
    "f": "(f) one room over several nodes on PostgreSQL and Redis (spchat only)",
}
# Said under a scenario's title.
FOOTNOTES = {
    "f": "Clients are dealt to the nodes in turn. Nothing is pinned here: the nodes, "
         "PostgreSQL, Redis and the generator share this machine's cores, so more nodes "
         "cannot add capacity on it; the runs show what the cluster costs and adds to "
         "latency. PostgreSQL syncs each commit (fsync on), as SQLite does by default.",
}


def _number(x, digits=1):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


def table(results, quick: bool, crypto_share: float | None, skipped: dict) -> str:
    lines = [f"# spchat bench{' (quick)' if quick else ''}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
             f"Python {platform.python_version()}; server on core 0, generator on core 1.",
             ""]
    for name, why in skipped.items():
        lines.append(f"* {name}: skipped: {why}")
    if skipped:
        lines.append("")
    for key, title in TITLES.items():
        rows = [r for r in results if r.scenario == key]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        if key in FOOTNOTES:
            lines += [FOOTNOTES[key], ""]
        lines += ["| server | clients | offered msg/s | delivered/s | p50 ms | p99 ms | p99.9 ms "
                  "| CPU s per M deliveries | peak RSS MiB | lost | dup | out of order | notes |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            note = r.note
            if r.rss_per_connection_kib is not None:
                note = f"{r.rss_per_connection_kib:.1f} KiB RSS per connection; " + note
            if r.generator_busy > 0.9:
                note = (note + "; " if note else "") + "generator near 100 % of its core"
            lines.append(
                f"| {r.server} | {r.clients:,} | {_number(r.offered_rate, 0)} "
                f"| {_number(r.delivered_per_s, 0)} | {_number(r.percentile(50))} "
                f"| {_number(r.percentile(99))} | {_number(r.percentile(99.9))} "
                f"| {_number(r.cpu_per_million, 2)} | {_number(r.server_peak_rss_kib / 1024)} "
                f"| {r.lost:,} | {r.duplicated:,} | {r.out_of_order:,} | {note} |")
        lines.append("")
    for server, what in (("spchat", "spchat's"), ("spchat-irc", "spchat's IRC gateway's")):
        ratio = cpu_ratio(results, server)
        if ratio:
            lines.append(f"{what} server CPU per delivered message, divided by ngIRCd's, at the "
                         "same offered rate in (a): " + ", ".join(
                             f"{rate:,.0f}/s: {value:.1f}×" for rate, value in ratio) + ".")
            lines.append("")
    if crypto_share is not None:
        lines.append(f"Cryptography (Noise handshakes and AES-GCM) is {crypto_share:.0%} of the "
                     "spchat server's own CPU time in a profile of scenario (b).")
        lines.append("")
    return "\n".join(lines)


def cpu_ratio(results, server="spchat"):
    spchat = {r.offered_rate: r for r in results if r.scenario == "a" and r.server == server}
    irc = {r.offered_rate: r for r in results if r.scenario == "a" and r.server == "ngircd"}
    return [(rate, spchat[rate].cpu_per_million / irc[rate].cpu_per_million)
            for rate in sorted(spchat) if rate in irc and irc[rate].cpu_per_million > 0
            and spchat[rate].delivered and not math.isnan(spchat[rate].cpu_per_million)]


def plot(results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False  # the bench extra is not installed: the table is enough
    sweep = [r for r in results if r.scenario == "a"]
    if not sweep:
        return False  # nothing to plot
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in sorted({r.server for r in sweep}):
        rows = sorted((r for r in sweep if r.server == server), key=lambda r: r.offered_rate)
        offered = [r.offered_rate * 9 for r in rows]  # deliveries offered: 9 receivers
        left.plot(offered, [r.delivered_per_s for r in rows], marker="o", label=server)
        right.plot(offered, [r.percentile(99) for r in rows], marker="o", label=server)
    left.set(title="(a) delivered vs offered", xlabel="offered deliveries/s",
             ylabel="delivered/s")
    right.set(title="(a) p99 latency", xlabel="offered deliveries/s", ylabel="ms", yscale="log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def save(results, out: Path, quick: bool, crypto_share, skipped) -> tuple[Path, Path | None]:
    out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if quick else "bench"
    md = out / f"{stem}.md"
    md.write_text(table(results, quick, crypto_share, skipped), encoding="utf-8")
    rows = []
    for r in results:
        row = asdict(r)
        row.pop("latencies_ms")
        row.pop("per_client")
        row.update(p50_ms=r.percentile(50), p99_ms=r.percentile(99), p999_ms=r.percentile(99.9),
                   delivered_per_s=r.delivered_per_s, cpu_s_per_million=r.cpu_per_million)
        rows.append(row)
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    png = out / f"{stem}.png"
    return md, (png if plot(results, png) else None)
