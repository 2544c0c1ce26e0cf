"""Transaction-rate alarm (issue 5): order events → event-time windows → random cut forest → alarm → SNS text.

Verbs:
- ``simulate_day`` — a dense simulated day (datagen's rate model) with ground-truth incidents and warm-up days;
- ``run_offline`` — the detector in-process over a simulated day, evaluated (rule vs forest);
- ``consume`` — the detector as its own consumer of the ``orders`` stream (checkpoints, state, SNS, dead letters);
- ``run_live`` — a simulated slice replayed onto ``orders`` (plus a malformed and a late record), consumed, texts read back;
- ``evaluate`` / ``compare`` — precision, recall, detection delay, false alarms per day;
- ``sent_messages`` — the alarm texts the SNS topic sent, read back through the ``alarm-inbox`` queue;
- ``evaluate_series`` — a recorded rate series (NAB format) through the same detector, scored as NAB scores detectors.
"""

from shoplake.alarm._evaluate import (
    OfflineRun,
    compare,
    evaluate,
    rcf_detections,
    rule_detections,
    run_offline,
    suggest_rule_threshold,
)
from shoplake.alarm._live import LiveRun, bad_records, run_live
from shoplake.alarm._policy import Alarm, AlarmPolicy, PolicyConfig
from shoplake.alarm._rcf import RateForest, RcfConfig
from shoplake.alarm._rule import RuleConfig, SlidingWindowRule
from shoplake.alarm._series import SeriesRun, evaluate_series, read_series, run_series, series_config
from shoplake.alarm._simulate import SimulatedDay, day_slice, default_incidents, simulate_day
from shoplake.alarm._windows import EventTimeWindows, WindowCount
from shoplake.alarm.detector import ConsumeResult, DetectorConfig, RateDetector, consume, detector_config, reset
from shoplake.alarm.messages import sent_messages

__all__ = [
    "Alarm",
    "AlarmPolicy",
    "ConsumeResult",
    "DetectorConfig",
    "EventTimeWindows",
    "LiveRun",
    "OfflineRun",
    "PolicyConfig",
    "RateDetector",
    "RateForest",
    "RcfConfig",
    "RuleConfig",
    "SeriesRun",
    "SimulatedDay",
    "SlidingWindowRule",
    "WindowCount",
    "bad_records",
    "compare",
    "consume",
    "day_slice",
    "default_incidents",
    "detector_config",
    "evaluate",
    "evaluate_series",
    "rcf_detections",
    "read_series",
    "reset",
    "rule_detections",
    "run_live",
    "run_offline",
    "run_series",
    "sent_messages",
    "series_config",
    "simulate_day",
    "suggest_rule_threshold",
]
