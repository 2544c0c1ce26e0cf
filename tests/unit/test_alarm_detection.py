"""Detection quality on a dense simulated day (seed 42): the forest catches every incident, the rule does not."""

from __future__ import annotations

import pytest

from shoplake.alarm import run_offline, simulate_day


@pytest.fixture(scope="module")
def offline_run():
    return run_offline(simulate_day(seed=42))


@pytest.mark.slow
def test_forest_recall_precision_and_delay(offline_run):
    rcf = offline_run.rcf
    assert rcf["recall"] == 1.0, rcf["incidents"]
    assert rcf["precision"] >= 0.9, rcf
    assert rcf["max_delay_windows"] <= 2.0, rcf["incidents"]
    kinds = {p["kind"] for p in rcf["incidents"]}
    assert kinds == {"surge", "outage"}  # a night surge and a noon outage are both among them
    counts = offline_run.detector.counts
    assert counts["windows"] == 144 and counts["malformed"] == 0 and counts["late"] == 0


@pytest.mark.slow
def test_classic_rule_misses_what_a_fixed_threshold_cannot_see(offline_run):
    rule = offline_run.rule
    assert rule["recall"] < 1.0  # outages (and the night surge) never reach a fixed surge threshold
    missed = {p["kind"] for p in rule["incidents"] if not p["detected"]}
    assert "outage" in missed
    table = offline_run.table()
    assert list(table.index) == ["rule", "rcf"] and table.loc["rcf", "recall"] > table.loc["rule", "recall"]
