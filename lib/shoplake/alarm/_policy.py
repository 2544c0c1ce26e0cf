"""Alarm policy: turn per-window anomaly verdicts into at most one alarm per incident, with a cool-down.

An *incident* opens at the first anomalous window and stays open until ``quiet_windows`` normal windows in
a row have passed (the shingle still holds incident values for ``shingle_size − 1`` windows after the rate
recovers; those windows stay anomalous and keep the incident open). Only the opening window raises an alarm; anomalous
windows inside an open incident are de-duplicated. A new incident within ``cooldown_seconds`` (event
time) of the last alarm is counted as suppressed, not alarmed. The alarm handler repeats both checks
against DynamoDB (``alarm_state``), so a restarted or duplicated detector cannot text twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shoplake.alarm._windows import WindowCount, iso
from shoplake.errors import ConfigError


@dataclass(frozen=True)
class PolicyConfig:
    """Knobs of the policy."""

    cooldown_seconds: float = 900.0
    quiet_windows: int = 2

    def __post_init__(self) -> None:
        if self.cooldown_seconds < 0 or self.quiet_windows < 1:
            raise ConfigError("cooldown_seconds must be ≥ 0 and quiet_windows ≥ 1")


@dataclass(frozen=True)
class Alarm:
    """What the detector hands to the alarm handler (``rate_alarm``)."""

    incident_id: str
    detector: str
    kind: str  # surge | drop
    window_start: str
    window_end: str
    observed: int
    expected: float
    score: float
    threshold: float
    raised_at: str  # event time (the watermark) when the window closed
    window_seconds: float

    def as_event(self) -> dict[str, Any]:
        return asdict(self)


class AlarmPolicy:
    """Stateful incident tracker for one detector."""

    def __init__(self, detector: str = "rcf", config: PolicyConfig | None = None) -> None:
        self.detector = detector
        self.config = config or PolicyConfig()
        self.incident_id: str | None = None
        self.quiet = 0
        self.last_alarm_ts: float | None = None
        self.counts = {"alarms": 0, "deduplicated": 0, "cooled_down": 0, "incidents": 0}

    def observe(
        self,
        window: WindowCount,
        anomalous: bool,
        score: float | None,
        threshold: float | None,
        expected: float | None,
        watermark: float | None = None,
    ) -> Alarm | None:
        """Feed one scored window; returns an Alarm when a new incident opens outside the cool-down."""
        if not anomalous:
            if self.incident_id is not None:
                self.quiet += 1
                if self.quiet >= self.config.quiet_windows:
                    self.incident_id = None
                    self.quiet = 0
            return None
        self.quiet = 0
        if self.incident_id is not None:
            self.counts["deduplicated"] += 1
            return None
        self.incident_id = f"{self.detector}-{iso(window.start)}"
        self.counts["incidents"] += 1
        if self.last_alarm_ts is not None and window.end - self.last_alarm_ts < self.config.cooldown_seconds:
            self.counts["cooled_down"] += 1
            return None
        self.last_alarm_ts = window.end
        self.counts["alarms"] += 1
        exp = float(expected) if expected is not None else 0.0
        return Alarm(
            incident_id=self.incident_id,
            detector=self.detector,
            kind="surge" if window.orders > exp else "drop",
            window_start=iso(window.start),
            window_end=iso(window.end),
            observed=window.orders,
            expected=round(exp, 1),
            score=round(float(score or 0.0), 2),
            threshold=round(float(threshold or 0.0), 2),
            raised_at=iso(watermark if watermark is not None else window.end),
            window_seconds=window.end - window.start,
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "config": asdict(self.config),
            "incident_id": self.incident_id,
            "quiet": self.quiet,
            "last_alarm_ts": self.last_alarm_ts,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AlarmPolicy:
        policy = cls(state["detector"], PolicyConfig(**state["config"]))
        policy.incident_id = state["incident_id"]
        policy.quiet = int(state["quiet"])
        policy.last_alarm_ts = state["last_alarm_ts"]
        policy.counts.update(state["counts"])
        return policy
