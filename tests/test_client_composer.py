"""The message entry's memory (Up, Down) and name completion (Tab)."""

from spchat.client.composer import LineHistory, NameCompleter

NAMES = ("alice", "Albert", "bob", "al.x")


def test_up_recalls_earlier_lines_and_down_comes_back_to_the_draft():
    history = LineHistory()
    assert history.older("typing") is None  # nothing sent yet
    for line in ("one", "two", "two", "three"):
        history.add(line)
    assert history.older("half a thou") == "three"
    assert history.older("three") == "two"
    assert history.older("two") == "one"  # "two" twice in a row is kept once
    assert history.older("one") is None  # the oldest: stays
    assert [history.newer(), history.newer(), history.newer()] == ["two", "three", "half a thou"]
    assert history.newer() is None
    history.add("four")
    assert history.older("") == "four"


def test_the_history_keeps_its_size():
    history = LineHistory(size=2)
    for line in ("a", "b", "c"):
        history.add(line)
    assert [history.older(""), history.older("b"), history.older("a")] == ["c", "b", None]


def test_tab_completes_a_name_and_cycles_on_the_next_tab():
    c = NameCompleter()
    assert c.complete("al", NAMES) == (0, "al.x: ")  # by name, in the server's order
    assert c.complete("al.x: ", NAMES) == (0, "Albert: ")
    assert c.complete("Albert: ", NAMES) == (0, "alice: ")
    assert c.complete("alice: ", NAMES) == (0, "al.x: ")  # round again
    # Inside a line: a space after it, not a colon; "@" and case do not matter.
    assert c.complete("thanks @BO", NAMES) == (7, "bob ")
    assert c.complete("thanks z", NAMES) is None
    assert c.complete("thanks ", NAMES) is None  # no word: nothing to complete


def test_typing_after_a_completion_starts_afresh():
    c = NameCompleter()
    assert c.complete("b", NAMES) == (0, "bob: ")
    assert c.complete("bob: al", NAMES) == (5, "al.x ")
