"""The peer-to-peer bench's arithmetic, its table and its HTTP ranges (no network)."""

import pytest

from spchat.bench.p2p import (MIB, Case, best_and_median, busy, parse_range, shares_text,
                              table)

SIZE = 256 * MIB


def test_best_and_median_speeds_come_from_the_fastest_and_the_middle_round():
    # Three rounds of a 256 MiB file: 1.6 s, 0.8 s and 1.28 s.
    best, median = best_and_median(SIZE, [1.6, 0.8, 1.28])
    assert best == pytest.approx(320.0)
    assert median == pytest.approx(200.0)
    assert best_and_median(SIZE, [2.0, 1.0]) == (pytest.approx(256.0), pytest.approx(256 / 1.5))
    assert best_and_median(SIZE, []) is None


def test_cpu_use_is_the_median_share_of_one_core():
    assert busy([1.2, 0.5, 0.9], [1.5, 1.0, 1.0]) == pytest.approx(80.0)
    assert busy([], []) is None
    assert busy([1.0], [1.0, 2.0]) is None  # a round without its CPU time: no figure


def test_shares_keep_the_senders_order_and_sum_to_a_hundred():
    sent = {"s1": 90177536, "s2": 90406912, "s3": 88080384}
    assert shares_text(sent) == "s1 34 %, s2 34 %, s3 33 %"
    assert shares_text({"m1": 3 * MIB, "m2": MIB}) == "m1 75 %, m2 25 %"
    assert shares_text({}) == shares_text({"s1": 0}) == ""


def test_the_table_has_a_row_per_case_skipped_and_failed_ones_saying_why():
    measured = Case("1", wall=[1.6, 0.8, 1.28], own=[1.28, 0.64, 1.0],
                    getter_cpu=[1.2, 0.6, 1.0], senders_cpu=[0.4, 0.2, 0.3],
                    sent={"s1": 100, "s2": 100, "s3": 200})
    failed = Case("2", error="round 1: the copy's SHA-256 differs from the source's")
    skipped = Case("3", skipped="install the Debian package aria2")
    text = table([measured, failed, skipped], SIZE, 3, 0.25)
    assert text.startswith("# spchat peer-to-peer bench\n")
    assert "256 MiB of random bytes, 3 rounds a case" in text
    assert "(load average 0.25 before the run)" in text
    rows = [line for line in text.splitlines() if line.startswith("| (")]
    assert rows == [
        "| (1) spchat: 3 seeders, 1 downloader | 320.0 | 200.0 | 400.0 | 256.0 | 75 % | 25 % "
        "| s1 25 %, s2 25 %, s3 50 % |",
        "| (2) spchat: 1 seeder, 1 downloader | error: round 1: the copy's SHA-256 differs "
        "from the source's |  |  |  |  |  |  |",
        "| (3) aria2c from 3 HTTP servers | skipped: install the Debian package aria2 "
        "|  |  |  |  |  |  |",
    ]


def test_a_case_without_its_own_clock_shows_dashes_and_a_late_error_keeps_the_rounds():
    aria2 = Case("3", wall=[0.5], getter_cpu=[0.4], senders_cpu=[0.05],
                 sent={"m1": 1, "m2": 1}, error="aria2c took over 316 s")
    text = table([aria2], 64 * MIB, 1, 1.0, "quick, interrupted")
    assert text.startswith("# spchat peer-to-peer bench (quick, interrupted)\n")
    assert "1 round a case" in text
    assert ("| (3) aria2c from 3 HTTP servers | 128.0 | 128.0 | – | – | 80 % | 10 % "
            "| m1 50 %, m2 50 %; error: aria2c took over 316 s |") in text


def test_http_ranges():
    assert parse_range(None, 1000) is None
    assert parse_range("bytes=0-", 1000) == (0, 999)
    assert parse_range("bytes=100-199", 1000) == (100, 199)
    assert parse_range("bytes=900-5000", 1000) == (900, 999)  # clipped to the file
    assert parse_range("bytes=-300", 1000) == (700, 999)  # the last 300 bytes
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=0-1,5-9", 1000) is None  # several: the whole file instead
    assert parse_range("pages=1-2", 1000) is None
    for bad in ("bytes=1000-", "bytes=500-100", "bytes=-0", "bytes=a-b", "bytes=5"):
        with pytest.raises(ValueError):
            parse_range(bad, 1000)


def test_a_case_not_run_says_so_and_a_long_error_keeps_to_its_cell():
    server_down = Case("1", error="the spchat server did not start (exit status 1):\n  "
                                  "Traceback | (most recent call last)")
    text = table([server_down, Case("2")], SIZE, 3, 0.0, "interrupted")
    rows = [line for line in text.splitlines() if line.startswith("| (")]
    assert rows == [
        "| (1) spchat: 3 seeders, 1 downloader | error: the spchat server did not start "
        "(exit status 1): |  |  |  |  |  |  |",
        "| (2) spchat: 1 seeder, 1 downloader | not run |  |  |  |  |  |  |",
    ]
