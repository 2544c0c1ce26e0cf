"""Notebook 05 (log analytics) at scale tiny: counts add up, freshness, the 5xx bursts found by search."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(workbook_metrics):
    return workbook_metrics["05_log_analytics"]


def test_lines_shipped_equal_indexed_plus_rejected(metrics):
    assert metrics["shipped"] == metrics["lines_in_log"] > 0
    assert metrics["shipped"] == metrics["indexed"] + metrics["rejected"]
    assert metrics["index_count"] == metrics["indexed"] and metrics["index_rejected"] == metrics["rejected"]
    assert metrics["dashboard"]["requests"] == metrics["indexed"]


def test_default_run_uses_the_agent_path(metrics):
    assert metrics["source"] == "agent"


def test_freshness_under_a_few_seconds(metrics):
    assert 0 <= metrics["freshness_p50_s"] <= metrics["freshness_p95_s"] < 10.0


def test_5xx_bursts_match_ground_truth(metrics):
    assert metrics["incidents"] >= 1
    assert metrics["incidents_found"] == metrics["incidents"]
    assert metrics["incident_requests_found"] == metrics["incident_requests_expected"]
    assert metrics["false_spikes"] == 0
    assert metrics["dashboard"]["errors_5xx"] >= metrics["incident_requests_expected"]
