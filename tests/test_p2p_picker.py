"""Choosing pieces: random first, rarest next, one peer per piece, endgame."""

import random

from spchat.p2p.picker import PiecePicker


def test_the_first_piece_is_random_and_then_the_rarest_comes_first():
    firsts = set()
    for seed in range(20):
        picker = PiecePicker(10, rng=random.Random(seed))
        picker.peer_has("a", range(10))
        picker.peer_has("b", range(9))  # only "a" has piece 9
        firsts.add(picker.next_piece("a"))
    assert len(firsts) > 3  # not always the same piece

    picker = PiecePicker(10, rng=random.Random(1))
    picker.peer_has("a", range(10))
    picker.peer_has("b", range(9))
    first = picker.next_piece("a")
    assert first != 9  # (this seed's random first pick)
    picker.done(first)
    assert picker.next_piece("a") == 9  # the rarest, now that one piece is in
    assert picker.next_piece("b") not in (first, 9)


def test_a_piece_goes_to_one_peer_at_a_time_and_only_to_one_that_has_it():
    picker = PiecePicker(3, have={0}, rng=random.Random(0))
    picker.peer_has("a", {0, 1})
    picker.peer_has("b", {1, 2})
    assert picker.next_piece("a") == 1
    assert picker.next_piece("a") is None  # 0 is ours, 1 is on its way
    assert picker.next_piece("b") == 2  # not 1: "a" is fetching it
    assert picker.next_piece("nobody") is None


def test_endgame_asks_a_second_peer_and_done_names_who_to_cancel():
    picker = PiecePicker(2, have={0}, rng=random.Random(0))
    picker.peer_has("a", {1})
    picker.peer_has("b", {1})
    assert picker.next_piece("a") == 1
    assert picker.endgame
    assert picker.next_piece("b") == 1  # the last piece, from both
    assert picker.next_piece("b") is None  # but not twice from the same peer
    assert picker.done(1) == {"a", "b"}
    assert picker.complete and not picker.endgame


def test_a_bad_copy_is_wanted_again_and_a_departed_peer_no_longer_counts():
    picker = PiecePicker(4, rng=random.Random(0))
    picker.peer_has("a", {0, 1, 2, 3})
    picker.peer_has("b", {3})
    picker.peer_have("c", 3)
    picker.have.update({0, 1})  # (as if done)
    assert picker.next_piece("b") == 3
    assert picker.next_piece("a") == 2  # 3 is with b
    picker.failed(3, "b")  # b's copy did not verify: 3 is wanted again
    assert picker.next_piece("a") == 3
    picker.peer_gone("a")
    picker.peer_gone("a")  # twice is harmless
    assert picker.next_piece("a") is None
    # Out-of-range claims are ignored, not counted.
    picker.peer_has("d", {99, -1})
    picker.peer_have("d", 99)
    assert picker.next_piece("d") is None


def test_a_new_bitfield_keeps_the_pieces_already_asked_of_that_peer():
    picker = PiecePicker(4, rng=random.Random(1))
    picker.peer_has("a", {0, 1, 2, 3})
    picker.peer_has("b", {0, 1, 2, 3})
    first = picker.next_piece("a")
    picker.peer_has("a", {0, 1, 2, 3})  # sent again: nothing changes for the piece asked
    assert picker.done(first) == {"a"}  # so "a" is still the one to thank (or cancel)
    assert picker._count[(first + 1) % 4] == 2  # and it is not counted twice
