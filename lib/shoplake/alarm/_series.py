"""A recorded rate series (NAB format: ``timestamp,value``, counts per interval) streamed through the rate detector.

The rows are summed into the detector's windows: an hour (or the series' interval when longer) — the incidents of
real count series last hours to days, and at five minutes most of what moves is noise; each closed window goes
through the very :class:`~shoplake.alarm.detector.RateDetector` the stream uses (forest + alarm policy with its
cool-down), and an alarm is reported at the window's last row. Beside it runs the classic rule, here "a row's
count ≥ threshold" with the threshold fixed from the probation (``rule_factor`` × the largest count seen in it),
through the same alarm policy. Missing intervals are gaps: a window with missing rows is not scored and the forest's
shingle starts over after it.

The configuration is one for every series, derived from what the data shows (:func:`series_config`): the window
from its interval; the expectation of each hour is the median of the same hour of the last week, or the same hour a
week ago when that is nearer (weekends are judged against weekends; a burst does not move a median, a level shift
becomes the expectation after half a week); real count series burst every few days without an
incident, so an alarm needs a deviation — over one window, or summed over six hours — that a day's peak reaches only
once in two weeks by the series' own last four weeks of daily peaks (a Gumbel fit, incidents included), and the
forest finding the window's shape unusual; one alarm covers a day (a burst on a real series is a day's story).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from shoplake.alarm import _nab
from shoplake.alarm._policy import AlarmPolicy
from shoplake.alarm._rcf import DAY_SECONDS
from shoplake.alarm._windows import WindowCount
from shoplake.alarm.detector import DetectorConfig, RateDetector, detector_config
from shoplake.errors import DataError

SERIES_TREES = 100  # as the stream (AWS's default): every window is scored, ~0.1 ms each with krcf
RULE_FACTOR = 2.0
WINDOW_SECONDS = 3600  # the detector's window: an hour, or the series' interval when longer
PROFILE_DAYS = 7  # the expectation: the median of the same hour of the last week ...
PROFILE_WEEKS = 1  # ... or the same hour a week ago, whichever is nearer (a Saturday is judged against Saturday)
SUSTAINED_SECONDS = 6 * 3600  # deviations are judged over one window and summed over six hours
RETURN_PERIOD_DAYS = 14.0  # an alarm-worthy deviation: one a day's peak reaches once in two weeks ...
PEAK_DAYS = 28  # ... by the daily peaks of the last four weeks
MIN_PEAK_DAYS = 5  # ... once five days of peaks are known
COOLDOWN_SECONDS = 24 * 3600.0
THRESHOLD_QUANTILE = 0.99
THRESHOLD_FACTOR = 1.25  # × the 99th percentile of normal scores: past the return level, the shape has to be unusual
# (NAB's five Twitter files, 100 trees: 1.1–1.35 give a raw total of 13.25–13.45 and 16/16 incidents, 1.4 misses two)
DAY = timedelta(days=1)


@dataclass
class Series:
    """A validated NAB-format series."""

    name: str
    timestamps: list[datetime]  # as written (NAB: local time, naive); treated as UTC
    values: np.ndarray
    interval_seconds: int
    missing: int  # intervals absent between rows (gaps)

    @property
    def epoch(self) -> list[float]:
        return [t.replace(tzinfo=UTC).timestamp() if t.tzinfo is None else t.timestamp() for t in self.timestamps]

    def __len__(self) -> int:
        return len(self.timestamps)


def read_series(path: str | Path) -> Series:
    """Read and check a ``timestamp,value`` CSV; one-line DataError for a wrong header, a non-numeric or negative
    value, an unsorted or duplicate timestamp, or too few rows."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"series file {path} does not exist") from None
    timestamps: list[datetime] = []
    values: list[float] = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != ["timestamp", "value"]:
                raise DataError(f"{path.name}: header must be 'timestamp,value' (NAB format), got {header!r}")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise DataError(f"{path.name} line {line}: expected 2 fields (timestamp,value), got {len(row)}")
                try:
                    ts = _nab.parse_time(row[0])
                except ValueError:
                    raise DataError(f"{path.name} line {line}: timestamp {row[0]!r} is not ISO 8601") from None
                try:
                    value = float(row[1])
                except ValueError:
                    raise DataError(f"{path.name} line {line}: value {row[1]!r} is not a number") from None
                if not math.isfinite(value) or value < 0:
                    raise DataError(f"{path.name} line {line}: value {row[1]!r} must be a finite count ≥ 0")
                if timestamps and ts <= timestamps[-1]:
                    what = "duplicate" if ts == timestamps[-1] else "unsorted"
                    raise DataError(
                        f"{path.name} line {line}: {what} timestamp {row[0]} (after {timestamps[-1]}): "
                        "rows must be in strictly increasing time"
                    )
                timestamps.append(ts)
                values.append(value)
        except UnicodeDecodeError:
            raise DataError(f"{path.name}: not a UTF-8 text file") from None
    if len(timestamps) < 3:
        raise DataError(f"{path.name}: {len(timestamps)} rows; a series needs at least 3")
    steps = np.diff([t.timestamp() for t in timestamps])
    interval = int(round(float(np.median(steps))))
    if interval <= 0 or DAY_SECONDS % interval:
        raise DataError(f"{path.name}: interval {interval} s does not divide a day; resample to e.g. 60, 300 or 600 s")
    missing = int(sum(max(0, round(s / interval) - 1) for s in steps))
    return Series(path.name, timestamps, np.asarray(values), interval, missing)


def detector_window(series: Series) -> int:
    """The detector's window for a series: the shortest multiple of its interval that divides a day and lasts at
    least :data:`WINDOW_SECONDS` (the series' interval when that is longer)."""
    step = series.interval_seconds
    for k in range(1, DAY_SECONDS // step + 1):
        width = k * step
        if DAY_SECONDS % width == 0 and width >= WINDOW_SECONDS:
            return width
    return step


def series_config(window_seconds: int, num_trees: int = SERIES_TREES) -> DetectorConfig:
    """The one configuration for any series, given the detector's window (:func:`detector_window`): a median
    profile of the last :data:`PROFILE_DAYS` days; the return-level bar (:data:`RETURN_PERIOD_DAYS` over
    :data:`PEAK_DAYS` days of daily peaks, from :data:`MIN_PEAK_DAYS` days on) at one window and over
    :data:`SUSTAINED_SECONDS`; the forest built on the second day and scoring every window, with its threshold at
    :data:`THRESHOLD_FACTOR` × the 99th percentile of its normal windows' scores; one alarm a day."""
    per_day = DAY_SECONDS // window_seconds
    return detector_config(
        window_seconds,
        allowed_lateness_seconds=0,
        cooldown_seconds=COOLDOWN_SECONDS,
        num_trees=num_trees,
        warmup_windows=max(per_day, 16),
        score_history=max(2 * per_day, 288),
        threshold_quantile=THRESHOLD_QUANTILE,
        threshold_factor=THRESHOLD_FACTOR,
        deviation_factor=0.0,
        profile_days=PROFILE_DAYS,
        profile_weeks=PROFILE_WEEKS,
        sustained_windows=SUSTAINED_SECONDS // window_seconds,
        return_period_days=RETURN_PERIOD_DAYS,
        peak_days=PEAK_DAYS,
        min_peak_days=MIN_PEAK_DAYS,
    )


@dataclass
class SeriesRun:
    """The detector (and the rule) over one series, with NAB's view and the incident view of its alarms."""

    series: Series
    windows: list[tuple[datetime, datetime]]
    detector: RateDetector
    forest_rows: list[int]  # rows where the forest alarmed (one per incident, after the cool-down)
    rule_rows: list[int]
    rule_threshold: float
    scores: list[float | None]
    elapsed_s: float
    forest: dict[str, Any] = field(default_factory=dict)  # evaluation of the forest's alarms
    rule: dict[str, Any] = field(default_factory=dict)

    @property
    def alarms_possible_from(self) -> str | None:
        """When the detector could first alarm (its bar needs days of daily peaks); None: never in this series."""
        armed = self.detector.forest.armed_at
        return None if armed is None else datetime.fromtimestamp(armed, UTC).strftime("%Y-%m-%d %H:%M:%S")

    @property
    def points_per_s(self) -> float:
        return len(self.series) / self.elapsed_s if self.elapsed_s else 0.0

    def detections_frame(self) -> Any:
        """NAB's results layout: timestamp, value, anomaly_score (1 at an alarm), label (1 inside a window)."""
        import pandas as pd

        label = np.zeros(len(self.series), dtype=int)
        if self.windows:
            for left, right in _nab.window_rows(self.series.timestamps, self.windows):
                label[left : right + 1] = 1
        flag = np.zeros(len(self.series), dtype=float)
        flag[self.forest_rows] = 1.0
        values = self.series.values
        if np.all(values == np.round(values)):
            values = values.astype(np.int64)
        return pd.DataFrame(
            {
                "timestamp": [t.strftime("%Y-%m-%d %H:%M:%S") for t in self.series.timestamps],
                "value": values,
                "anomaly_score": flag,
                "label": label,
            }
        )

    def table(self) -> Any:
        """Forest vs rule, one row each: NAB raw score, recall, precision, alarms, false alarms."""
        import pandas as pd

        keys = ("nab_raw", "recall", "precision", "alarms", "false_alarms")
        rows = [
            {"detector": name, **{k: ev.get(k) for k in keys}}
            for name, ev in (("rule", self.rule), ("rcf", self.forest))
        ]
        return pd.DataFrame(rows).set_index("detector")

    def metrics(self) -> dict[str, Any]:
        """What a notebook records: the evaluation without the per-window detail, plus the throughput."""
        return {
            "series": self.series.name,
            "rows": len(self.series),
            "windows": len(self.windows),
            "rcf": {k: v for k, v in self.forest.items() if k != "windows"},
            "rule": {k: v for k, v in self.rule.items() if k != "windows"},
            "rcf_windows": self.forest.get("windows", []),
            "points_per_s": self.points_per_s,
        }

    def summary(self) -> dict[str, Any]:
        """What the CLI prints: the series, the forest's and the rule's evaluation, throughput."""
        return {
            "series": self.series.name,
            "rows": len(self.series),
            "interval_seconds": self.series.interval_seconds,
            "detector_window_seconds": self.detector.config.window_seconds,
            "missing_intervals": self.series.missing,
            "alarms_possible_from": self.alarms_possible_from,
            "windows": len(self.windows),
            "forest": self.forest,
            "rule": {**self.rule, "threshold": self.rule_threshold},
            "points_per_s": round(self.points_per_s, 1),
        }


def run_series(
    series: Series,
    windows: list[tuple[datetime, datetime]] | None = None,
    config: DetectorConfig | None = None,
    rule_factor: float = RULE_FACTOR,
) -> SeriesRun:
    """Stream every row through the detector (and the rule); evaluate both when windows are given."""
    windows = windows or []
    if windows:
        _nab.window_rows(series.timestamps, windows)  # a window outside the series fails before the run
    config = config or series_config(detector_window(series))
    detector = RateDetector(config, name="rcf")
    step = series.interval_seconds
    width = config.window_seconds
    per_window = width // step
    if width % step:
        raise DataError(f"the detector's window ({width} s) must be a multiple of the series' interval ({step} s)")
    probation = _nab.probation_length(len(series))
    rule_threshold = rule_factor * float(np.max(series.values[: max(probation, 1)]))
    rule_policy = AlarmPolicy("rule", config.policy)
    forest_rows: list[int] = []
    rule_rows: list[int] = []
    scores: list[float | None] = []
    epoch = series.epoch
    origin = epoch[0]
    bucket, total, rows_in = None, 0.0, 0  # the detector's window being filled: its number, count, rows

    def close(last_row: int) -> None:
        start = origin + bucket * width
        if rows_in < per_window:  # rows are missing (a gap): no data is not zero orders
            detector.forest.gap()
            scores.append(None)
            return
        count = int(round(total))
        if detector.score_windows([WindowCount(start, start + width, count, count, 0)]):
            forest_rows.append(last_row)  # decided when the window's last row is in
        scores.append(detector.history[-1]["score"])

    began = time.perf_counter()
    for i, (ts, value) in enumerate(zip(epoch, series.values, strict=True)):
        b = int((ts - origin) // width)
        if bucket is not None and b != bucket:
            close(i - 1)
            if b > bucket + 1:
                detector.forest.gap()
            total, rows_in = 0.0, 0
        bucket = b
        total += float(value)
        rows_in += 1
        row = WindowCount(ts, ts + step, int(round(float(value))), 0, 0)
        if rule_policy.observe(row, value >= rule_threshold and i >= probation, None, rule_threshold, None):
            rule_rows.append(i)
    if bucket is not None:
        close(len(epoch) - 1)
    elapsed = time.perf_counter() - began
    run = SeriesRun(series, windows, detector, forest_rows, rule_rows, rule_threshold, scores, elapsed)
    if windows:
        run.forest = evaluate_rows(series, windows, forest_rows, config.policy.cooldown_seconds)
        run.rule = evaluate_rows(series, windows, rule_rows, config.policy.cooldown_seconds)
    return run


def evaluate_rows(
    series: Series, windows: list[tuple[datetime, datetime]], rows: list[int], cooldown_seconds: float
) -> dict[str, Any]:
    """Incident view (per window: detected, delay of the first alarm; false alarms; precision, recall) and the NAB
    raw score of alarms at ``rows``; only rows after NAB's probation count, as in NAB."""
    n = len(series)
    flags = np.zeros(n, dtype=bool)
    flags[rows] = True
    nab = _nab.score(series.timestamps, flags.tolist(), windows)
    scored_rows = [r for r in rows if r >= nab.probation]
    inside = [r for r in scored_rows if any(w.left <= r <= w.right for w in nab.windows)]
    per_window = []
    for w in nab.windows:
        first = w.first_detection
        delay_s = None if first is None else (series.timestamps[first] - series.timestamps[w.left]).total_seconds()
        per_window.append(
            {
                "start": w.start,
                "end": w.end,
                "scored": w.scored,
                "detected": w.detected,
                "first_alarm": None if first is None else str(series.timestamps[first]),
                "delay_s": delay_s,
                "delay_rows": None if first is None else first - w.left,
                "position": None if w.position is None else round(w.position, 4),
                "nab": round(w.score, 4),
            }
        )
    scored_windows = [w for w in nab.windows if w.scored]
    false_alarms = len(scored_rows) - len(inside)
    return {
        "nab_raw": round(nab.raw, 6),
        "nab_counts": {"tp": nab.tp, "fp": nab.fp, "fn": nab.fn, "tn": nab.tn},
        "probation_rows": nab.probation,
        "alarms": len(scored_rows),
        "alarms_in_probation": len(rows) - len(scored_rows),
        "true_alarms": len(inside),
        "false_alarms": false_alarms,
        "precision": len(inside) / len(scored_rows) if scored_rows else None,
        "recall": sum(w.detected for w in scored_windows) / len(scored_windows) if scored_windows else None,
        "cooldown_seconds": cooldown_seconds,
        "windows": per_window,
    }


def evaluate_series(
    path: str | Path, windows_path: str | Path | None = None, config: DetectorConfig | None = None
) -> SeriesRun:
    """Read a series (and its windows: a ``[[start, end], …]`` list or NAB's per-file JSON), run, evaluate."""
    series = read_series(path)
    windows = _nab.load_windows(windows_path, series.name) if windows_path else []
    return run_series(series, windows, config)


def write_detections(run: SeriesRun, out: str | Path) -> Path:
    """Write NAB's results layout (``timestamp,value,anomaly_score,label``) atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    run.detections_frame().to_csv(tmp, index=False)
    tmp.replace(out)
    return out
