"""Every ETA and estimate is written in readable units (the exact sweep once showed "about 895388 s left")."""

import math

import pytest

from headscope.durations import readable_duration, time_left
from headscope.sharing import GateStatus


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.43, "0.4 s"), (9.94, "9.9 s"), (42.4, "42 s"), (59.6, "1 min"), (200, "3 min 20 s"), (3599, "1 h"),
    (7500, "2 h 5 min"), (14_399.9, "4 h"), (86_399, "1 d"), (895_388, "10 d 9 h"), (math.inf, "unknown"),
])
def test_durations_are_written_in_the_two_largest_units(seconds, shown):
    assert readable_duration(seconds) == shown


def test_time_left_is_empty_without_an_estimate():
    assert time_left(None) == ""
    assert time_left(783_267) == "about 9 d 2 h left"


def test_the_waiting_notice_gives_a_long_wait_in_hours_not_seconds():
    status = GateStatus(True, "an exact sweep", "other", held_seconds=4_000, eta_seconds=895_388)
    assert status.describe("me") == "an exact sweep in another session, about 10 d 9 h left"
    running = GateStatus(True, "an exact sweep", "other", held_seconds=4_000)
    assert running.describe("me") == "an exact sweep in another session, running for 1 h 7 min"
