"""The name offered when the one asked for is taken."""

import pytest

from spchat.client.alternate import alternate_name


@pytest.mark.parametrize("name, other", [
    ("bob", "bob2"), ("bob2", "bob3"), ("bob9", "bob10"), ("r2d2", "r2d3"), ("42", "43"),
    ("b" * 32, "b" * 31 + "2"), ("b" * 31 + "9", "b" * 30 + "10"),
])
def test_a_number_at_the_end_counted_up_within_the_length(name, other):
    assert alternate_name(name) == other
