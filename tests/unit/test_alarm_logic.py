"""Alarm building blocks without the stack: windows, watermark, rule, policy, forest state, decoding."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from shoplake.alarm import (
    AlarmPolicy,
    EventTimeWindows,
    PolicyConfig,
    RateForest,
    RcfConfig,
    RuleConfig,
    SlidingWindowRule,
    WindowCount,
)
from shoplake.alarm._windows import parse_ts
from shoplake.alarm.detector import Malformed, RateDetector, decode, detector_config
from shoplake.errors import ConfigError

T0 = parse_ts("2011-11-09T10:00:00Z")


def test_windows_emit_empty_windows_count_orders_once_and_late_records():
    windows = EventTimeWindows(window_seconds=60, allowed_lateness_seconds=10)
    assert windows.add(T0 + 5, "1001", 0) == "accepted"
    assert windows.add(T0 + 6, "1001", 1) == "accepted"  # second line of the same order
    assert windows.add(T0 + 6, "1001", 1) == "duplicate"  # re-delivered record
    assert windows.add(T0 + 7, "C1002", 0) == "accepted"  # a cancellation is not an order
    assert windows.add(T0 + 200, "1003", 0) == "accepted"  # two empty minutes in between
    closed = windows.close_ready()
    assert [(w.start - T0, w.orders, w.lines, w.cancellations) for w in closed] == [
        (0, 1, 3, 1),
        (60, 0, 0, 0),
        (120, 0, 0, 0),
    ]
    assert windows.add(T0 + 30, "1004", 0) == "late"
    assert windows.counts == {"accepted": 4, "late": 1, "duplicate": 1}
    restored = EventTimeWindows.from_state(json.loads(json.dumps(windows.to_state())))
    assert [w.orders for w in restored.flush()] == [1]


def test_windows_reject_bad_parameters():
    with pytest.raises(ConfigError, match="allowed_lateness_seconds"):
        EventTimeWindows(60, 60)


def test_rule_fires_at_threshold_at_most_once_a_minute():
    rule = SlidingWindowRule(RuleConfig(threshold=3, window_seconds=10, min_interval_seconds=60))
    fired = [rule.add(T0 + t) for t in (0, 1, 2, 3, 20, 21, 22, 70, 71, 72)]
    hits = [(a.ts - T0, a.count) for a in fired if a]
    assert hits == [(2, 3), (72, 3)]  # the burst at 20–22 is within a minute of the alarm at 2
    restored = SlidingWindowRule.from_state(json.loads(json.dumps(rule.to_state())))
    assert restored.last_alarm_ts == rule.last_alarm_ts and restored.alarms == 2


def _window(i: int, orders: int = 10) -> WindowCount:
    return WindowCount(T0 + 600 * i, T0 + 600 * (i + 1), orders, orders, 0)


def test_policy_one_alarm_per_incident_and_cool_down():
    policy = AlarmPolicy("rcf", PolicyConfig(cooldown_seconds=7200, quiet_windows=2))
    verdicts = [False, True, True, False, True, False, False, True, False, False]
    alarms = [policy.observe(_window(i, 50), v, 9.0, 3.0, 10.0) for i, v in enumerate(verdicts)]
    raised = [a for a in alarms if a]
    assert len(raised) == 1 and raised[0].kind == "surge" and raised[0].observed == 50
    # window 4 is still the first incident (one quiet window only); window 7 opens a new one inside the cool-down
    assert policy.counts == {"alarms": 1, "deduplicated": 2, "cooled_down": 1, "incidents": 2}
    after = AlarmPolicy("rcf", PolicyConfig(cooldown_seconds=0, quiet_windows=1))
    assert after.observe(_window(0, 1), True, 9.0, 3.0, 10.0).kind == "drop"


def test_forest_state_round_trip_scores_alike():
    config = RcfConfig(num_trees=10, tree_size=64, warmup_windows=24, window_seconds=3600, seed=3)
    forest = RateForest(config)
    counts = [100 + (i % 24) * 5 for i in range(24 * 3)]
    for i, n in enumerate(counts):
        forest.update(n, T0 + 3600 * i)
    assert forest.warm and forest.threshold
    restored = RateForest.from_state(json.loads(json.dumps(forest.to_state())))
    assert restored.profile == forest.profile and list(restored.points) == list(forest.points)
    surge = restored.update(1000, T0 + 3600 * len(counts))
    assert surge.anomalous and surge.expected == pytest.approx(forest.expected(T0 + 3600 * len(counts)))


def _poisson_days(days: int, seed: int) -> list[int]:
    """Hourly Poisson counts with a daily rhythm."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    return list(rng.poisson(200 * (1.0 + 0.5 * np.sin(2 * np.pi * (hours % 24) / 24))))


def test_every_window_is_scored_the_surge_is_not_learnt_and_the_state_rebuilds_the_same_forest():
    config = RcfConfig(num_trees=10, tree_size=32, warmup_windows=24, window_seconds=3600, seed=3)
    forest = RateForest(config)
    counts = _poisson_days(6, seed=4)
    surge = len(counts) - 10
    counts[surge] *= 4
    verdicts, learnt = [], []
    for i, n in enumerate(counts):
        before = forest.learnt
        verdicts.append(forest.update(n, T0 + 3600 * i))
        learnt.append(forest.learnt > before)
    # after the warm-up (the first day fills the profile, the second the forest) every window is scored
    assert all(v.score is not None for v in verdicts[48:])
    assert [i for i, v in enumerate(verdicts) if v.anomalous] == [surge]
    assert not learnt[surge]  # the surge was scored, never fed to the forest (nor is a normal window it finds odd)
    assert sum(learnt[48:surge]) >= 0.9 * (surge - 48)
    # 5 days of points fed, 32 a forest: it was planted anew from the last 32 (the state never holds 2 × 32)
    assert forest.plantings > 1 and 32 <= len(forest.points) < 2 * 32
    # the state rebuilds the very same forest: a restored copy and the running one score the next days alike
    restored = RateForest.from_state(json.loads(json.dumps(forest.to_state())))
    more = _poisson_days(3, seed=9)
    more[30] *= 4
    start = len(counts)
    ours = [forest.update(n, T0 + 3600 * (start + i)) for i, n in enumerate(more)]
    theirs = [restored.update(n, T0 + 3600 * (start + i)) for i, n in enumerate(more)]
    assert ours == theirs and ours[30].anomalous
    assert forest.plantings == restored.plantings and list(forest.points) == list(restored.points)


def test_a_state_of_the_earlier_rrcf_forest_is_refused_with_a_reason():
    forest = RateForest(RcfConfig(num_trees=10, tree_size=64, warmup_windows=24, window_seconds=3600))
    state = forest.to_state()
    del state["engine"]  # states saved before krcf carry no engine (and CoDisp scores, on another scale) ...
    state["config"]["score_every_window"] = True  # ... and the lazy-scoring knob, gone (every window is scored)
    with pytest.raises(ConfigError, match="earlier rrcf forest .* reset it"):
        RateForest.from_state(state)
    detector = RateDetector(detector_config(3600, num_trees=10, tree_size=64, warmup_windows=24)).to_state()
    detector["config"]["rcf"]["score_every_window"] = False
    del detector["forest"]["engine"]
    with pytest.raises(ConfigError, match="earlier rrcf forest .* reset it"):
        RateDetector.from_state(detector)


def test_week_maximum_bar_waits_for_half_its_history():
    config = RcfConfig(deviation_quantile=1.0, deviation_factor=1.2, deviation_history=40, window_seconds=3600)
    forest = RateForest(config)
    forest.deviations.extend([1.0] * 18 + [3.0])  # 19 of 40: young, the default bar (2 × the 99th percentile)
    assert forest.deviation_bar() == pytest.approx(2.0 * float(np.quantile([1.0] * 18 + [3.0], 0.99)))
    forest.deviations.append(1.0)  # half known: 1.2 × the largest normal deviation
    assert forest.deviation_bar() == pytest.approx(1.2 * 3.0)
    with pytest.raises(ConfigError, match="deviation_quantile"):
        RcfConfig(deviation_quantile=0.2)


def _order(invoice: str, at: str, line: int = 0) -> dict:
    """A whole order event (the detector judges events by shoplake.events, like every consumer)."""
    return {
        "InvoiceNo": invoice,
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
        "Quantity": 6,
        "InvoiceDate": at,
        "UnitPrice": 2.55,
        "CustomerID": "17850",
        "Country": "United Kingdom",
        "LineNo": line,
    }


def test_decode_names_what_is_wrong():
    good = _order("536365", "2011-11-09T10:00:00Z", line=1)
    assert decode(json.dumps(good).encode()) == (parse_ts("2011-11-09T10:00:00Z"), "536365", 1)
    for data, reason in [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps({**good, "InvoiceNo": ""}).encode(), "InvoiceNo"),
        (json.dumps({**good, "InvoiceDate": "yesterday"}).encode(), "InvoiceDate"),
        (json.dumps({**good, "LineNo": -1}).encode(), "LineNo"),
    ]:
        with pytest.raises(Malformed, match=reason):
            decode(data)


def test_detector_counts_bad_records_and_keeps_going():
    detector = RateDetector(detector_config(600, num_trees=5, tree_size=32, warmup_windows=20))
    good = [json.dumps(_order(str(i), f"2011-11-09T10:{i:02d}:00Z")).encode() for i in range(30)]
    late = json.dumps(_order("9", "2011-11-09T09:00:00Z")).encode()
    _alarms, dead = detector.process(good[:20] + [b"garbage", late] + good[20:])
    assert detector.counts["malformed"] == 1 and detector.counts["late"] == 1 and detector.counts["accepted"] == 30
    assert [d.reason.split(":")[0] for d in dead] == ["malformed", "late"]
    detector.flush()
    assert sum(h["orders"] for h in detector.history) == 30


def test_live_demo_bad_records_are_one_malformed_and_one_late_order():
    from shoplake.alarm import bad_records, day_slice, simulate_day

    day = day_slice(simulate_day(seed=3, orders_per_day=2_000, window_seconds=600), 10, 11)
    malformed, late = bad_records(day)
    with pytest.raises(Malformed, match="not JSON"):
        decode(malformed)
    ts, invoice, _line = decode(late)
    assert invoice == "LATE1" and ts <= parse_ts(day.records()[0]["InvoiceDate"]) - 3600
    detector = RateDetector(detector_config(600), shards=["s"])
    detector.process(day.records(), "s")
    detector.flush()
    _alarms, dead = detector.process([late], "s")
    assert [d.reason.split(":")[0] for d in dead] == ["late"]
    with pytest.raises(ConfigError, match="no order events"):
        bad_records(dataclasses.replace(day, events=day.events.iloc[:0]))
