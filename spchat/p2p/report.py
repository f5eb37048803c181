"""How sharing looks in text: sizes, progress lines, summaries, offers."""

from __future__ import annotations

import math

from spchat.p2p.manifest import safe_name

SHORT_ID = 12  # hex digits shown of a file id (6 or more are enough to /get it)


def size_text(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""  # not reached


def rate_text(rate: float) -> str:
    return f"{rate / 1048576:.1f} MiB/s"


def offer_text(sharer: str, name: str, size: int, file_id: str) -> str:
    return f"{sharer} shares {safe_name(name)} ({size_text(size)}): /get {file_id[:SHORT_ID]}"


def file_row_text(row) -> str:
    file_id, name, size, sharer, holders = row
    return (f"{file_id[:SHORT_ID]}  {safe_name(name)} ({size_text(size)}) from {sharer}, "
            f"{holders} peer{'s' if holders != 1 else ''} online")


def progress_text(p: dict) -> str:
    percent = 100.0 * p["done"] / p["size"] if p["size"] else 100.0
    eta = "" if p["eta"] is None else f", about {p['eta']:.0f} s left"
    relayed = p.get("relayed", 0)
    paths = f" ({relayed} through the relay)" if relayed else ""
    return (f"{p['name']}: {percent:.0f}% ({size_text(p['done'])} of {size_text(p['size'])}) "
            f"at {rate_text(p['rate'])} from {p['peers']} peer{'s' if p['peers'] != 1 else ''}"
            f"{paths}{eta}")


def cancelled_text(p: dict, again: str) -> str:
    """A download stopped by its user: how far it got, and that it resumes."""
    percent = math.floor(100 * p["done"] / p["size"]) if p["size"] else 100
    return f"{safe_name(p['name'])}: cancelled at {percent}%; what was fetched is kept, {again}"


def summary_text(s: dict) -> str:
    fetched = max(1, s["fetched"])
    sources = ", ".join(
        f"{name} {100.0 * peer['received'] / fetched:.0f}% {peer['path']}"
        + (f" (bad pieces: {peer['bad_pieces']})" if peer["bad_pieces"] else "")
        + (f" [{peer['dropped']}]" if peer["dropped"] and not peer["received"] else "")
        for name, peer in s["from"].items()
    )
    return (f"saved {s['path']} ({size_text(s['size'])} in {s['seconds']:.1f} s, "
            f"{rate_text(s['size'] / max(1e-6, s['seconds']))}) from {sources or 'nobody'}")
