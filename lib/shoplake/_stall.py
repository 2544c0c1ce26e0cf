"""Waits without a fixed deadline: a wait fails only when what it watches has not moved for a while.

A fixed timeout is sized for one data set and outgrown by the next (a million order events do not drain in the time
100k do). Every wait in shoplake that follows a consumer — the local event-source mapping's pollers, a deployed
mapping's probe, Firehose landing objects in the lake, log lines reaching the index — watches a progress value
instead and gives up only after ``stall_s`` seconds in which it did not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_UNSEEN = object()


class StallWatch:
    """Seconds since a watched value last changed; :meth:`stalled` once that reaches ``stall_s``.

    ``value`` is the value at the start (the first observation that differs counts as progress); ``clock`` is
    injectable so that long waits can be tested without sleeping.
    """

    def __init__(self, stall_s: float, value: Any = _UNSEEN, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = float(stall_s)
        self.clock = clock
        self.value = value
        self.since = clock()

    def observe(self, value: Any) -> float:
        """Record the newest value; the seconds it has gone unchanged (0 when it just moved)."""
        now = self.clock()
        if value != self.value:
            self.value, self.since = value, now
        return now - self.since

    def stalled(self, value: Any) -> bool:
        """Record the newest value; True when it has not moved for ``stall_s`` seconds."""
        return self.observe(value) >= self.stall_s

    @property
    def idle_s(self) -> float:
        """Seconds since the value last moved (without observing a new one)."""
        return self.clock() - self.since
