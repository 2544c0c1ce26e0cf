"""The weblogs waits fail only when nothing moves for a while, never on a fixed deadline a larger log outgrows."""

from __future__ import annotations

import time

from shoplake._stall import StallWatch


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


def test_a_long_wait_is_judged_on_the_watched_value_not_on_the_time_spent():
    now = {"t": 0.0}
    watch = StallWatch(300, value=0, clock=lambda: now["t"])
    for step in range(1, 11):  # 50 minutes of waiting, a little progress every 4 minutes: never stalled
        now["t"] += 240
        assert not watch.stalled(step)
    now["t"] += 299
    assert not watch.stalled(10) and watch.idle_s == 299
    now["t"] += 1
    assert watch.stalled(10)  # five minutes without progress, wherever the wait started
    assert StallWatch(0.0, value=5, clock=lambda: now["t"]).stalled(5)  # no patience: the first still look fails
