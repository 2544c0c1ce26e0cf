"""The classic rule of the original design: orders in a 10-second sliding window ≥ threshold, ≤ 1 alarm a minute.

It sees every order (event time), keeps the order times of the last ``window_seconds`` in a sorted list
(records of several shards arrive slightly out of order) and raises an alarm when the count in
``(t − window_seconds, t]`` reaches ``threshold``, at most once per ``min_interval_seconds`` of event time.
It only knows surges, and only at the level its fixed threshold was set for: an outage or a surge at
3 a.m. stays below it — the random cut forest exists for those.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass
from typing import Any

from shoplake.errors import ConfigError


@dataclass(frozen=True)
class RuleConfig:
    """Knobs of the rule; ``threshold`` is in orders per ``window_seconds``."""

    threshold: int = 15
    window_seconds: float = 10.0
    min_interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise ConfigError(f"rule threshold must be ≥ 1 order, got {self.threshold}")
        if self.window_seconds <= 0 or self.min_interval_seconds < 0:
            raise ConfigError("rule window_seconds must be > 0 and min_interval_seconds ≥ 0")


@dataclass(frozen=True)
class RuleAlarm:
    """One firing of the rule."""

    ts: float
    count: int
    threshold: int


class SlidingWindowRule:
    """Count orders in a sliding event-time window and fire when the count reaches the threshold."""

    def __init__(self, config: RuleConfig | None = None) -> None:
        self.config = config or RuleConfig()
        self.times: list[float] = []
        self.last_alarm_ts: float | None = None
        self.alarms = 0

    def add(self, ts: float) -> RuleAlarm | None:
        """Feed one order at event time ``ts``; returns an alarm when the rule fires."""
        cfg = self.config
        bisect.insort(self.times, ts)
        latest = self.times[-1]
        drop = bisect.bisect_right(self.times, latest - cfg.window_seconds - 1.0)
        if drop:
            del self.times[:drop]
        count = bisect.bisect_right(self.times, ts) - bisect.bisect_right(self.times, ts - cfg.window_seconds)
        if count < cfg.threshold:
            return None
        if self.last_alarm_ts is not None and ts - self.last_alarm_ts < cfg.min_interval_seconds:
            return None
        self.last_alarm_ts = ts
        self.alarms += 1
        return RuleAlarm(ts, count, cfg.threshold)

    def to_state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "times": list(self.times),
            "last_alarm_ts": self.last_alarm_ts,
            "alarms": self.alarms,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SlidingWindowRule:
        rule = cls(RuleConfig(**state["config"]))
        rule.times = [float(t) for t in state["times"]]
        rule.last_alarm_ts = state["last_alarm_ts"]
        rule.alarms = int(state["alarms"])
        return rule
