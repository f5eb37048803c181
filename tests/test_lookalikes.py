"""Look-alike names (TR39 skeletons) and mixed scripts: the pure rules."""

import pytest

from spchat.server.lookalikes import looks, mixed_scripts, skeleton


@pytest.mark.parametrize("one, other", [
    ("alice", "аlice"),  # Cyrillic а
    ("alice", "alicе"),  # Cyrillic е
    ("bob", "bоb"),  # Cyrillic о
    ("bob", "bοb"),  # Greek ο
    ("Carol", "Сarol"),  # Cyrillic С
    ("Ian", "lan"),  # capital i and small L, in a sans-serif font
    ("amie", "arnie"),  # m and rn
    ("user1", "userl"),
    ("alice", "ＡＬＩＣＥ".lower()),  # fullwidth (NFKC folds it before, too)
])
def test_names_that_look_alike_have_one_skeleton(one, other):
    assert skeleton(one) == skeleton(other)


@pytest.mark.parametrize("one, other", [
    ("alice", "bob"), ("café", "cafe"), ("Zoë", "Zoe"), ("bob0", "bobo"), ("ian", "lan"),
])
def test_names_that_do_not_look_alike_have_different_skeletons(one, other):
    assert skeleton(one) != skeleton(other)


def test_a_name_looks_like_its_display_form_and_its_key():
    # "ALІCE" (Cyrillic І) shows in capitals, but its key looks like alice's.
    assert looks("ALІCE", "alіce") & looks("alice", "alice")
    assert looks("ALICE", "alice") & looks("аlice", "аlice")
    assert not looks("Bob", "bob") & looks("alice", "alice")


@pytest.mark.parametrize("name, mixed", [
    ("аlice", {"CYRILLIC", "LATIN"}),
    ("bοb", {"GREEK", "LATIN"}),
    ("Борис_b", {"CYRILLIC", "LATIN"}),
    ("alice", set()),
    ("Борис", set()),
    ("Ελένη", set()),
    ("bob_42.x-y", set()),  # digits and _-. go with any script
    ("Борис2", set()),
    ("Zoë", set()),  # a combining mark takes its letter's script
    ("田中さん", set()),  # Han and Hiragana: Japanese
    ("Bobさん", set()),
    ("김민준", set()),
    ("王小明ㄅ", set()),  # Han and Bopomofo
    ("ひらがなと한국어", {"HIRAGANA", "HANGUL"}),
])
def test_mixed_scripts(name, mixed):
    assert mixed_scripts(name) == mixed
