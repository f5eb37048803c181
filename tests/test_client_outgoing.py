"""What a person typed that the wire cannot carry is refused by the client,
in plain words, before anything is sent."""

import pytest

from spchat import wire
from spchat.client.outgoing import refusal


def test_check_names_the_field_the_other_side_would_refuse():
    wire.check(wire.Join("dev", cid="c1"))  # fine: nothing raised
    with pytest.raises(wire.WireError) as caught:
        wire.check(wire.Join("x" * 65, cid="c1"))
    assert (str(caught.value), caught.value.field, caught.value.cid) == (
        "join.room longer than 64 characters", "room", "c1")
    # The same words as the decoder's, which the server would have answered with.
    with pytest.raises(wire.WireError, match="^join.room longer than 64 characters$"):
        wire.decode(wire.encode(wire.Join("x" * 65)))


@pytest.mark.parametrize("msg, said", [
    # A room to join, by the server's rule (the wire's would say 64).
    (wire.Join("x" * 33), "a room name must be 1 to 32 characters long"),
    (wire.Join("x" * 65), "a room name must be 1 to 32 characters long"),
    (wire.Join("#" + "x" * 33), "a room name must be 1 to 32 characters long"),
    (wire.Join("my room"), "a room name may contain only letters, digits, '_', '-' and '.' "
                           "(not ' ')"),
    (wire.Join("dev", password="p" * 65), "room passwords are at most 64 characters"),
    (wire.Topic("dev", "t" * 501), "a topic is at most 500 characters"),
    (wire.Part("dev", "r" * 501), "reasons are at most 500 characters"),
    (wire.Moderate("dev", "kick", "n" * 65), "names are at most 64 characters"),
    (wire.Direct("n" * 65, "hi", "c1"), "names are at most 64 characters"),
    (wire.Fetch("ab\x07cd", "c1"), "file ids: contains the unprintable character '\\x07'"),
])
def test_the_refusal_is_said_in_a_persons_words(msg, said):
    assert refusal(msg) == said


def test_what_the_wire_carries_is_not_refused():
    for msg in (wire.Join("x" * 32), wire.Join("#Dev.ops_2"), wire.Topic("dev", "t" * 500), wire.Say("hi", "c1", "dev")):
        assert refusal(msg) is None
