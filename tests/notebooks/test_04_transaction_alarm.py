"""Notebook 04_transaction_alarm: the recorded metrics of the workbook run (scale tiny)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(workbook_metrics):
    return workbook_metrics["04_transaction_alarm"]


def test_forest_catches_every_incident_of_the_simulated_day(metrics):
    rcf = metrics["rcf"]
    assert metrics["incidents"] >= 4 and metrics["day_events"] > 50_000
    assert rcf["recall"] == 1.0 and rcf["precision"] >= 0.9 and rcf["max_delay_windows"] <= 2.0


def test_rule_is_the_weaker_baseline(metrics):
    assert metrics["rule"]["recall"] < metrics["rcf"]["recall"]


def test_live_replay_alarms_reach_sns_once_per_incident(metrics):
    stream = metrics["stream"]
    assert stream["recall"] == 1.0 and stream["precision"] == 1.0
    assert stream["counts"]["published"] == stream["incidents"] == stream["sns_messages"]
    assert stream["counts"]["malformed"] == 1 and stream["counts"]["late"] == 1
    assert stream["counts"]["accepted"] == stream["events"]


def test_real_nab_series_forest_finds_the_labelled_windows_and_beats_the_rule(metrics):
    series = metrics["series"]
    rcf, rule = series["rcf"], series["rule"]
    assert series["series"] == "nab_twitter_volume_amzn_excerpt.csv" and series["rows"] == 4348
    assert series["windows"] == 2 and rcf["recall"] == 1.0 and rcf["false_alarms"] == 0
    assert rcf["nab_raw"] > 1.6 and rcf["nab_raw"] > rule["nab_raw"]
    assert rule["false_alarms"] > rcf["false_alarms"]
    for window in series["rcf_windows"]:
        assert window["detected"] and window["position"] < -0.3  # before the last third of the labelled window
