"""NAB standard-profile scoring (shoplake's implementation) on hand-made cases with known scores, and against NAB's
published numbers for the null detector on the shared Twitter series."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from shoplake.alarm import _nab
from shoplake.errors import DataError

T0 = datetime(2015, 3, 1)
ROWS = 100  # probation: floor(0.15 · 100) = 15 rows
TS = [T0 + timedelta(minutes=i) for i in range(ROWS)]
WINDOW = [(TS[40], TS[49])]  # rows 40..49, width 10
NAB_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "nab"


def score_at(*rows: int, windows=WINDOW) -> _nab.NabScore:
    flags = [False] * ROWS
    for r in rows:
        flags[r] = True
    return _nab.score(TS, flags, windows)


def test_scaled_sigmoid_matches_nab_reference_points():
    assert _nab.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert _nab.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert _nab.scaled_sigmoid(0.0) == 0.0
    assert _nab.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert _nab.scaled_sigmoid(3.0) == -1.0


def test_probation_is_fifteen_percent_capped_at_750_rows():
    assert _nab.probation_length(100) == 15
    assert _nab.probation_length(5000) == 750
    assert _nab.probation_length(15_902) == 750  # NAB caps it: min(floor(0.15 n), 0.15 · 5000)


def test_detection_at_window_start_earns_the_full_true_positive():
    s = score_at(40)
    assert s.raw == pytest.approx(1.0)
    assert (s.tp, s.fp, s.fn) == (1, 0, 9)
    assert s.windows[0].position == -1.0


def test_detection_at_window_end_earns_little():
    s = score_at(49)  # position −1/10
    expected = (2 / (1 + math.exp(-0.5)) - 1) / _nab.MAX_TP
    assert s.raw == pytest.approx(expected) and s.raw == pytest.approx(0.248242, abs=1e-6)


def test_only_the_first_detection_of_a_window_counts():
    assert score_at(45, 40, 49).raw == pytest.approx(score_at(40).raw)
    assert score_at(45, 46).raw == pytest.approx(score_at(45).raw)
    assert score_at(45, 46).tp == 2  # NAB's counts are rows, not windows


def test_no_detection_costs_a_false_negative():
    s = score_at()
    assert s.raw == -1.0 and (s.tp, s.fp, s.fn, s.tn) == (0, 0, 10, 75)


def test_false_positive_far_after_a_window_costs_full_a_fp():
    assert score_at(99).raw == pytest.approx(-1.0 - 0.11)  # (99 − 49) / 9 ≥ 3


def test_false_positive_right_after_a_window_costs_little():
    position = 1 / 9  # one row after the window's last row, width − 1 = 9
    expected = -1.0 + 0.11 * (2 / (1 + math.exp(5 * position)) - 1)
    s = score_at(50)
    assert s.raw == pytest.approx(expected) and -1.03 < s.raw < -1.02
    assert s.false_positives[0][0] == 50


def test_false_positive_before_any_window_costs_full_a_fp():
    assert score_at(20).raw == pytest.approx(-1.11)


def test_detections_within_the_probation_are_not_scored():
    assert score_at(5).raw == -1.0 and score_at(5).fp == 0
    # a window wholly inside the probation is not scored either (neither TP nor FN)
    s = score_at(3, windows=[(TS[2], TS[8]), WINDOW[0]])
    assert s.raw == -1.0 and not s.windows[0].scored and s.windows[0].score == 0.0


def test_windows_outside_the_series_or_overlapping_are_refused():
    with pytest.raises(DataError, match="outside the series"):
        _nab.score(TS, [False] * ROWS, [(TS[90], TS[-1] + timedelta(minutes=5))])
    with pytest.raises(DataError, match="overlaps"):
        _nab.score(TS, [False] * ROWS, [(TS[10], TS[30]), (TS[20], TS[40])])
    with pytest.raises(DataError, match="one per row"):
        _nab.score(TS, [False] * 3, WINDOW)


@pytest.mark.skipif(not NAB_DIR.exists(), reason="shared NAB data not present")
def test_null_detector_matches_nabs_published_scores_and_counts():
    """NAB's published null-detector results: raw score = −(scored windows) and fn = window rows after the
    probation. Both match exactly only with NAB's 750-row probation cap (CVS's first window lies in the first 15 %)."""
    import csv

    published = _nab.published_scores(NAB_DIR / "published_standard_scores.json")["null"]
    assert len(published) == 5
    for name, expected in published.items():
        with (NAB_DIR / "data" / name).open() as handle:
            stamps = [_nab.parse_time(row["timestamp"]) for row in csv.DictReader(handle)]
        s = _nab.score(stamps, [False] * len(stamps), _nab.load_windows(NAB_DIR / "windows.json", name))
        assert s.raw == expected["raw_score"], name
        assert (s.tp, s.fp, s.fn) == (expected["tp"], expected["fp"], expected["fn"]), name
    # every published detector's tp + fn is the same number of window rows as ours
    everything = json.loads((NAB_DIR / "published_standard_scores.json").read_text())
    for row in everything:
        assert row["tp"] + row["fn"] == published[row["file"]]["fn"], row
