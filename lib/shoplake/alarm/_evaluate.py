"""Evaluation against ground-truth incidents: precision, recall, detection delay, false alarms per day.

An alarm *belongs* to an incident when its evidence overlaps the incident: for the forest, the alarm's window
``[window_start, window_end)`` overlaps ``[start, end + grace)``; for the rule, its order time falls in that
span (``grace`` = one window: the tail of an incident still shows in the last window). Then:

- precision = alarms that belong to an incident / all alarms (None without alarms);
- recall = incidents with at least one alarm / incidents;
- detection delay = event time at which the first alarm was *decided* (forest: the watermark that closed the
  window; rule: the order that tipped the count) − incident start, in seconds and in windows;
- false alarms per day = alarms belonging to no incident / simulated days.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from shoplake.alarm._simulate import SimulatedDay
from shoplake.alarm._windows import parse_ts
from shoplake.alarm.detector import DetectorConfig, RateDetector, detector_config


@dataclass(frozen=True)
class Detection:
    """One alarm reduced to what evaluation needs (epoch seconds)."""

    evidence_start: float
    evidence_end: float
    decided_at: float


def evaluate(
    detections: list[Detection],
    incidents: list[dict[str, Any]],
    *,
    days: float,
    window_seconds: float,
    grace_seconds: float | None = None,
) -> dict[str, Any]:
    """Precision, recall, delays and false alarms per day of one detector's alarms."""
    grace = window_seconds if grace_seconds is None else grace_seconds
    spans = [(parse_ts(i["start"]), parse_ts(i["end"]) + grace, i) for i in incidents]
    belongs = [any(d.evidence_end > a and d.evidence_start < b for a, b, _ in spans) for d in detections]
    per_incident = []
    for start, end, incident in spans:
        mine = [d for d in detections if d.evidence_end > start and d.evidence_start < end]
        first = min((d.decided_at for d in mine), default=None)
        delay = None if first is None else max(0.0, first - start)
        per_incident.append(
            {
                "incident_id": incident.get("incident_id"),
                "kind": incident.get("kind"),
                "start": incident["start"],
                "multiplier": incident.get("multiplier"),
                "alarms": len(mine),
                "detected": first is not None,
                "delay_s": delay,
                "delay_windows": None if delay is None else delay / window_seconds,
            }
        )
    delays = [p["delay_s"] for p in per_incident if p["delay_s"] is not None]
    true_alarms = sum(belongs)
    return {
        "alarms": len(detections),
        "true_alarms": true_alarms,
        "false_alarms": len(detections) - true_alarms,
        "precision": true_alarms / len(detections) if detections else None,
        "recall": sum(p["detected"] for p in per_incident) / len(per_incident) if per_incident else None,
        "mean_delay_s": sum(delays) / len(delays) if delays else None,
        "max_delay_s": max(delays) if delays else None,
        "max_delay_windows": max(delays) / window_seconds if delays else None,
        "false_alarms_per_day": (len(detections) - true_alarms) / days if days else None,
        "incidents": per_incident,
    }


def rcf_detections(alarms: list[Any]) -> list[Detection]:
    """Forest alarms (``Alarm`` objects or their dicts) as detections."""
    out = []
    for alarm in alarms:
        a = alarm if isinstance(alarm, dict) else alarm.as_event()
        out.append(Detection(parse_ts(a["window_start"]), parse_ts(a["window_end"]), parse_ts(a["raised_at"])))
    return out


def rule_detections(rule_alarms: list[Any]) -> list[Detection]:
    """Rule firings as detections (their evidence is the instant of the order that tipped the count)."""
    return [Detection(r.ts, r.ts + 1e-6, r.ts) for r in rule_alarms]


def compare(detector: RateDetector, incidents: list[dict[str, Any]], days: float = 1.0) -> pd.DataFrame:
    """Rule vs RCF side by side (one row each): alarms, precision, recall, delays, false alarms per day."""
    window = detector.config.window_seconds
    rows = []
    for name, detections in (
        ("rule (10 s ≥ threshold)", rule_detections(detector.rule_alarms)),
        ("random cut forest", rcf_detections(detector.alarms)),
    ):
        result = evaluate(detections, incidents, days=days, window_seconds=window)
        rows.append({"detector": name, **{k: v for k, v in result.items() if k != "incidents"}})
    return pd.DataFrame(rows).set_index("detector")


@dataclass
class OfflineRun:
    """The detector run in-process over a simulated day (no stream): for evaluation and tests."""

    detector: RateDetector
    rcf: dict[str, Any]
    rule: dict[str, Any]
    elapsed_s: float
    events_per_s: float

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"detector": "rule", **{k: v for k, v in self.rule.items() if k != "incidents"}},
                {"detector": "rcf", **{k: v for k, v in self.rcf.items() if k != "incidents"}},
            ]
        ).set_index("detector")


def run_offline(sim: SimulatedDay, config: DetectorConfig | None = None, batch: int = 500) -> OfflineRun:
    """Warm the detector up on the simulation's earlier days, feed the day's events in batches, evaluate both."""
    config = config or detector_config(sim.window_seconds, rule_threshold=suggest_rule_threshold(sim))
    detector = RateDetector(config, name="rcf")
    detector.warm_up(sim.warmup)
    records = sim.records()
    began = time.perf_counter()
    for start in range(0, len(records), batch):
        detector.process(records[start : start + batch])
    detector.flush()
    elapsed = time.perf_counter() - began
    window = config.window_seconds
    rcf = evaluate(rcf_detections(detector.alarms), sim.incidents, days=1.0, window_seconds=window)
    rule = evaluate(rule_detections(detector.rule_alarms), sim.incidents, days=1.0, window_seconds=window)
    return OfflineRun(detector, rcf, rule, elapsed, len(records) / elapsed if elapsed else 0.0)


def suggest_rule_threshold(sim: SimulatedDay, factor: float = 2.0) -> int:
    """The classic rule's fixed threshold: ``factor`` × the busiest normal 10-second expectation of the day."""
    busiest = max(w.orders for w in sim.warmup) / sim.window_seconds * 10.0
    return max(1, int(round(factor * busiest)))
