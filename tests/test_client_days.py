"""Day separators and dated time stamps in the conversation."""

from spchat.client.days import day_break, day_label, stamp

NOW = "2026-12-01"


def test_a_day_is_named_by_how_far_back_it_is():
    assert day_label("2026-12-01", NOW) == "Today"
    assert day_label("2026-11-30", NOW) == "Yesterday"
    assert day_label("2026-11-29", NOW) == "Sunday 29 November 2026"


def test_a_time_alone_only_for_todays_lines():
    assert stamp("14:02:07", NOW, NOW) == "14:02:07"
    assert stamp("14:02:07", "2026-11-30", NOW) == "30 Nov 14:02:07"
    assert stamp("23:59:59", "2025-12-31", NOW) == "31 Dec 2025 23:59:59"


def test_a_separator_where_the_day_changes_and_above_an_old_first_line():
    assert day_break(None, NOW, NOW) is None  # a conversation of today: no clutter
    assert day_break(None, "2026-11-30", NOW) == "Yesterday"
    assert day_break("2026-11-30", "2026-11-30", NOW) is None
    assert day_break("2026-11-30", NOW, NOW) == "Today"
