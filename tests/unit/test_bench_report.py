"""``bench/_report.py``: a figure with a ratio goal says whether it met it, and if not whether the same run's ceiling
leaves room for it (the printed table and ``build/bench.json`` carry that verdict)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "_report.py"


@pytest.fixture()
def report():
    spec = importlib.util.spec_from_file_location("bench_report_under_test", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a fresh module: its figure list starts empty
    return module


@pytest.mark.parametrize(
    ("ratio", "goal", "ceiling", "higher", "expected"),
    [
        (0.81, 0.8, None, True, "met"),
        (0.8, 0.8, 0.7, True, "met"),  # the goal itself meets the goal
        (0.6, 0.8, None, True, "not met"),
        (0.6, 0.8, 0.9, True, "not met (ceiling 0.9: room)"),
        (0.6, 0.8, 0.716, True, "unreachable here (ceiling 0.716 < 0.8)"),
        (0.25, 0.5, 0.481, True, "unreachable here (ceiling 0.481 < 0.5)"),
        (1.2, 1.0, 1.1, False, "unreachable here (ceiling 1.1 > 1)"),
        (0.9, 1.0, None, False, "met"),
        (None, 0.5, 0.7, True, "not measured"),
        (float("nan"), 0.5, 0.7, True, "not measured"),
    ],
)
def test_verdict(report, ratio, goal, ceiling, higher, expected):
    assert report.verdict(ratio, goal, ceiling, higher) == expected


def test_a_figure_with_a_ratio_goal_carries_its_verdict_and_ceiling_into_the_table(report):
    report.begin("orders", "small")
    row = report.figure(
        "orders end to end (events/s)",
        4129.0,
        baseline=6868.0,
        goal="ratio ≥ 0.8",
        goal_ratio=0.8,
        ceiling=0.716,
        ceiling_name="what the measured work allows",
    )
    assert row["ratio"] == pytest.approx(4129 / 6868, abs=1e-4)
    assert (row["goal_ratio"], row["ceiling_ratio"], row["ceiling_name"]) == (
        0.8,
        0.716,
        "what the measured work allows",
    )
    assert row["verdict"] == "unreachable here (ceiling 0.716 < 0.8)"
    plain = report.figure("paced latency p95, s", 0.45, goal="< 2 s", higher_is_better=False)
    assert "verdict" not in plain and "goal_ratio" not in plain  # a goal that is not a ratio gets none
    lines = report.table().splitlines()
    assert lines[1].endswith("ratio ≥ 0.8  [unreachable here (ceiling 0.716 < 0.8)]")
    assert lines[2].endswith("< 2 s")
