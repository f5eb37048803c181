"""What the user reads about sharing: offers, file rows, progress, summaries."""

from spchat.p2p.report import file_row_text, offer_text, progress_text, size_text, summary_text


def test_sizes_read_naturally():
    assert size_text(0) == "0 bytes"
    assert size_text(1023) == "1023 bytes"
    assert size_text(1536) == "1.5 KiB"
    assert size_text(64 * 1024 * 1024) == "64.0 MiB"
    assert size_text(5 * 1024 ** 4) == "5120.0 GiB"


def test_an_offer_names_the_command_and_a_safe_name():
    text = offer_text("alice", "evil\x1b[2J\u202e.txt", 2048, "ab12" * 16)
    assert text == "alice shares evil[2J.txt (2.0 KiB): /get ab12ab12ab12"
    assert file_row_text(("ab12" * 16, "x.bin", 10, "bob", 1)) == (
        "ab12ab12ab12  x.bin (10 bytes) from bob, 1 peer online")


def test_progress_says_percent_rate_peers_relay_and_time_left():
    line = progress_text({"name": "x.bin", "done": 25 * 2**20, "size": 100 * 2**20,
                          "rate": 5 * 2**20, "peers": 3, "relayed": 1, "eta": 15.2})
    assert line == ("x.bin: 25% (25.0 MiB of 100.0 MiB) at 5.0 MiB/s from 3 peers "
                    "(1 through the relay), about 15 s left")
    empty = progress_text({"name": "e", "done": 0, "size": 0, "rate": 0.0, "peers": 0,
                           "eta": None})
    assert empty == "e: 100% (0 bytes of 0 bytes) at 0.0 MiB/s from 0 peers"


def test_a_summary_gives_each_peers_share_and_path():
    summary = {"path": "/d/x.bin", "size": 4 * 2**20, "seconds": 2.0, "fetched": 4 * 2**20,
               "from": {"a": {"path": "direct", "received": 3 * 2**20, "bad_pieces": 2,
                              "dropped": "dropped: 3 pieces did not match their hashes"},
                        "b": {"path": "relay", "received": 2**20, "bad_pieces": 0,
                              "dropped": ""},
                        "c": {"path": "relay", "received": 0, "bad_pieces": 0,
                              "dropped": "cannot connect"}}}
    assert summary_text(summary) == (
        "saved /d/x.bin (4.0 MiB in 2.0 s, 2.0 MiB/s) from a 75% direct (bad pieces: 2), "
        "b 25% relay, c 0% relay [cannot connect]")
