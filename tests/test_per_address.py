"""Per-address limits, and log lines a flood cannot multiply."""

from spchat.server.refusals import PerAddress, ThrottledLog


class Lines:
    """A Logger stand-in that keeps what ``info`` was asked to write."""

    def __init__(self):
        self.lines = []

    def info(self, fmt, **fields):
        self.lines.append(fmt.format(**fields))


def test_one_line_a_minute_per_key_with_the_count(clock):
    lines = Lines()
    log = ThrottledLog(lines, clock, every=60.0)
    for _ in range(1000):
        log("10.0.0.1", "{host}: refused ({count} so far)", host="10.0.0.1")
    log("10.0.0.2", "{host}: refused ({count} so far)", host="10.0.0.2")
    clock.advance(59)
    log("10.0.0.1", "{host}: refused ({count} so far)", host="10.0.0.1")
    clock.advance(1)
    log("10.0.0.1", "{host}: refused ({count} so far)", host="10.0.0.1")
    assert lines.lines == ["10.0.0.1: refused (1 so far)", "10.0.0.2: refused (1 so far)",
                           "10.0.0.1: refused (1002 so far)"]


def test_per_address_counts_up_to_its_limit_and_forgets_at_zero():
    held = PerAddress(2)
    assert [held.take("a"), held.take("a"), held.take("a"), held.take("b")] == [
        True, True, False, True]
    held.give_back("a")
    assert held.take("a")
    for _ in range(2):
        held.give_back("a")
    held.give_back("b")
    assert held.held == {}
