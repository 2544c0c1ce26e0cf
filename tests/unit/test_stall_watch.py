"""The weblogs waits fail only when nothing moves for a while, never on a fixed deadline a larger log outgrows."""

from __future__ import annotations

import time

from shoplake.weblogs._delivery import StallWatch


def test_a_moving_count_never_stalls_and_a_still_one_does_after_the_window():
    watch = StallWatch(0.2)
    began = time.perf_counter()
    count = 0
    while time.perf_counter() - began < 0.6:  # three windows long, but the count keeps moving
        count += 1
        assert not watch.stalled(count)
        time.sleep(0.02)
    assert not watch.stalled(count)  # it just stopped
    time.sleep(0.25)
    assert watch.stalled(count)
    assert not watch.stalled(count + 1)  # moving again: the window starts over
