"""A recorded rate series through the detector: the CLI on a tiny series, bad files, gaps, level shifts, early spikes,
and the shipped NAB excerpt scored as NAB scores it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from shoplake.alarm import _nab, _series
from shoplake.alarm.cli import alarm
from shoplake.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "samples" / "nab_twitter_volume_amzn_excerpt.csv"
SAMPLE_WINDOWS = ROOT / "data" / "samples" / "nab_twitter_volume_amzn_excerpt.windows.json"
T0 = datetime(2015, 3, 2)  # a Monday


def hourly(days: int, seed: int = 7, base: float = 120.0) -> tuple[list[datetime], np.ndarray]:
    """An hourly count series with a daily rhythm (Poisson)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    rate = base * (1.0 + 0.6 * np.sin(2 * np.pi * ((hours % 24) - 6) / 24))
    return [T0 + timedelta(hours=int(h)) for h in hours], rng.poisson(rate).astype(float)


def write(path: Path, stamps, values) -> Path:
    pd.DataFrame({"timestamp": [t.strftime("%Y-%m-%d %H:%M:%S") for t in stamps], "value": values}).to_csv(
        path, index=False
    )
    return path


def test_cli_scores_a_tiny_series_and_writes_nabs_results_layout(tmp_path):
    stamps, values = hourly(9)
    spike = 24 * 6 + 12  # day 7, noon: five days of daily peaks are known (the first day only fills the profile)
    values[spike] *= 8
    series = write(tmp_path / "tiny.csv", stamps, values)
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps([[str(stamps[spike - 6]), str(stamps[spike + 6])]]))
    out = tmp_path / "out" / "det.csv"
    result = CliRunner().invoke(
        alarm, ["evaluate-series", str(series), "--windows", str(windows), "--detections-out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    forest = summary["forest"]
    assert summary["rows"] == 216 and summary["interval_seconds"] == 3600 and summary["missing_intervals"] == 0
    assert forest["recall"] == 1.0 and forest["false_alarms"] == 0, forest
    first = forest["windows"][0]
    assert first["detected"] and first["first_alarm"] == str(stamps[spike]) and first["delay_rows"] == 6
    # NAB's score for a detection in the middle of a 13-row window: σ(−7/13)/σ(−1)
    assert forest["nab_raw"] == pytest.approx(_nab.scaled_sigmoid(-7 / 13) / _nab.MAX_TP, abs=1e-6)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(frame) == 216 and frame["label"].sum() == 13
    assert frame.loc[spike, "anomaly_score"] == 1.0 and frame["anomaly_score"].sum() == 1.0
    text = CliRunner().invoke(alarm, ["evaluate-series", str(series), "--windows", str(windows)])
    assert text.exit_code == 0 and "NAB raw" in text.output and "rule" in text.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,count\n2015-03-01 00:00:00,1\n", "header must be 'timestamp,value'"),
        ("timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,many\n", "line 3: value 'many' is not a number"),
        ("timestamp,value\n2015-03-01 00:05:00,1\n2015-03-01 00:00:00,2\n", "line 3: unsorted timestamp"),
        ("timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:00:00,2\n", "line 3: duplicate timestamp"),
        ("timestamp,value\n2015-03-01 00:00:00,-4\n", "must be a finite count"),
        ("timestamp,value\nyesterday,4\n", "is not ISO 8601"),
        ("timestamp,value\n2015-03-01 00:00:00,1\n", "needs at least 3"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        _series.read_series(path)
    assert "\n" not in str(info.value)


def test_windows_outside_the_series_are_refused_before_the_run(tmp_path):
    stamps, values = hourly(3)
    series = write(tmp_path / "s.csv", stamps, values)
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps([[str(stamps[-3]), str(stamps[-1] + timedelta(days=2))]]))
    with pytest.raises(DataError, match="outside the series"):
        _series.evaluate_series(series, windows)
    windows.write_text(json.dumps({"other.csv": []}))
    with pytest.raises(DataError, match="no entry for 's.csv'"):
        _series.evaluate_series(series, windows)


def test_command_line_prints_one_error_line_and_exit_code_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("when,value\n")
    done = subprocess.run(
        [sys.executable, "-m", "shoplake.cli", "alarm", "evaluate-series", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.csv: header must be")


def test_a_level_shift_becomes_the_new_normal_without_an_alarm_storm():
    stamps, values = hourly(14, seed=3)
    shift, spike = 24 * 6 + 9, 24 * 12 + 12
    values[shift:] *= 3  # day 7 on: three times the traffic, for good
    values[spike] *= 4  # and a real surge on day 13, on top of the new level
    series = _series.Series("shift.csv", stamps, values, 3600, 0)
    run = _series.run_series(series)
    # the shift is one incident, raised at once; then it is learnt (no alarm every hour, no incident open for ever),
    # so the later surge is an incident of its own
    assert [str(stamps[r]) for r in run.forest_rows] == [str(stamps[shift]), str(stamps[spike])]


def test_a_strong_weekly_rhythm_is_learnt_after_its_first_weekend():
    stamps, values = hourly(35, seed=5)
    weekend = np.array([t.weekday() >= 5 for t in stamps])
    rng = np.random.default_rng(6)
    values = np.where(weekend, rng.poisson(values * 0.3), values)  # weekends at 30 % of the weekdays' traffic
    surge = 24 * 23 + 12  # a Wednesday noon in the fourth week
    values[surge] *= 3
    series = _series.Series("weekly.csv", stamps, values.astype(float), 3600, 0)
    run = _series.run_series(series)
    alarms = [stamps[r] for r in run.forest_rows]
    # the first weekend is news (nothing is known of weekends yet): one alarm; from then on a Saturday is judged
    # against last Saturday, so four later weekends pass quietly and the weekday surge still alarms
    assert [t for t in alarms if t.weekday() >= 5] == [t for t in alarms if t < T0 + timedelta(days=7)]
    assert len(alarms) == 2 and alarms[-1] == stamps[surge], [str(t) for t in alarms]


def test_gaps_are_no_data_not_an_outage(tmp_path):
    stamps, values = hourly(8, seed=5)
    keep = [i for i in range(len(stamps)) if not 24 * 5 + 2 <= i < 24 * 5 + 10]  # eight hours missing on day 6
    path = write(tmp_path / "gappy.csv", [stamps[i] for i in keep], values[keep])
    series = _series.read_series(path)
    assert series.missing == 8 and series.interval_seconds == 3600
    run = _series.run_series(series)
    assert run.forest_rows == [], [str(series.timestamps[r]) for r in run.forest_rows]


def test_a_spike_at_the_very_start_does_not_haunt_the_next_days():
    stamps, values = hourly(8, seed=11)
    values[3] *= 30  # the first day, while the profile is being filled
    values[30] *= 30  # the second day, while the forest is being built
    series = _series.Series("early.csv", stamps, values, 3600, 0)
    run = _series.run_series(series)
    assert run.forest_rows == [], [str(stamps[r]) for r in run.forest_rows]


def test_the_series_usual_bursts_set_the_bar_and_a_larger_surge_still_alarms():
    stamps = [T0 + timedelta(minutes=5 * i) for i in range(14 * 288)]
    rng = np.random.default_rng(8)
    rate = 40 * (1 + 0.5 * np.sin(2 * np.pi * (np.arange(len(stamps)) % 288) / 288))
    for day in range(14):  # on two days of three an unlabelled burst: 3 × for half an hour at a random time
        if day % 3 != 2:
            at = day * 288 + int(rng.integers(0, 282))
            rate[at : at + 6] *= 3
    surge = 12 * 288 + 150
    rate[surge : surge + 3] *= 8
    series = _series.Series("bursty.csv", stamps, rng.poisson(rate).astype(float), 300, 0)
    run = _series.run_series(series)
    # once a week of the series is known, its bursts are its normal; only the surge alarms (a bar of 2 × the 99th
    # percentile of two days alarmed on most bursts), at the last row of its hour
    surge_hour_end = surge - surge % 12 + 11
    assert [r for r in run.forest_rows if r >= 7 * 288] == [surge_hour_end], [str(stamps[r]) for r in run.forest_rows]
    assert len(run.forest_rows) <= 2
    # the forest judges every hour once it is built (the first day fills the profile, the second the forest)
    assert all(score is not None for score in run.scores[2 * 24 :]) and len(run.scores) == 14 * 24


def test_the_shipped_nab_excerpt_is_detected_in_its_window():
    run = _series.evaluate_series(SAMPLE, SAMPLE_WINDOWS)
    forest = run.forest
    assert run.series.interval_seconds == 300 and len(run.series) == 4348
    assert forest["recall"] == 1.0 and forest["false_alarms"] == 0
    # both labelled bursts detected before their window's last third (σ(−1/3)/σ(−1) ≈ 0.8 each)
    assert 1.6 < forest["nab_raw"] <= 2.0
    assert math.isfinite(run.points_per_s) and run.rule_threshold > 0


@pytest.mark.parametrize(("interval", "window"), [(60, 3600), (300, 3600), (1800, 3600), (7200, 7200), (86400, 86400)])
def test_detector_window_is_an_hour_or_the_series_interval_when_longer(interval, window):
    stamps = [T0 + timedelta(seconds=interval * i) for i in range(10)]
    series = _series.Series("s.csv", stamps, np.ones(len(stamps)), interval, 0)
    assert _series.detector_window(series) == window
    assert _series.series_config(window).rcf.sustained_windows == _series.SUSTAINED_SECONDS // window


def test_rows_are_summed_into_the_detectors_windows():
    stamps = [T0 + timedelta(minutes=5 * i) for i in range(5 * 288)]
    rng = np.random.default_rng(2)
    values = rng.poisson(3.0, len(stamps)).astype(float)
    series = _series.Series("sparse.csv", stamps, values, 300, 0)
    run = _series.run_series(series)
    assert run.detector.config.window_seconds == 3600
    assert run.detector.counts["windows"] == len(stamps) // 12
    assert sum(h["orders"] for h in run.detector.history) == pytest.approx(
        values[-12 * len(run.detector.history) :].sum()
    )


def test_a_series_too_short_for_the_bar_says_so(tmp_path):
    stamps, values = hourly(4)
    path = write(tmp_path / "short.csv", stamps, values)
    text = CliRunner().invoke(alarm, ["evaluate-series", str(path)])
    assert text.exit_code == 0 and "too short to alarm" in text.output and "5 days of daily peaks" in text.output
    long_enough = _series.run_series(_series.Series("long.csv", *hourly(9), 3600, 0))
    assert long_enough.alarms_possible_from == "2015-03-08 00:00:00"  # day 1 fills the profile, days 2–6 give peaks
