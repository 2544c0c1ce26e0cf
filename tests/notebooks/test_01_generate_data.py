"""Notebook 01_generate_data, read back from its recorded metrics (workbook run at scale tiny, seed 42)."""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_generate_data_records_the_manifest_counts(workbook_metrics):
    m = workbook_metrics["01_generate_data"]
    assert m["source"] == "synthetic"
    manifest = json.loads((Path(m["dir"]) / "manifest.json").read_text())
    assert manifest["scale"] == "tiny" and manifest["seed"] == 42
    for key, value in manifest["counts"].items():
        assert m[key] == value, key
    assert 1_600 <= m["order_lines"] <= 2_400
    assert m["customers"] == 150 and m["products"] == 200 and m["incidents"] == 4


def test_generate_data_shares_and_ground_truth(workbook_metrics):
    m = workbook_metrics["01_generate_data"]
    assert 0.01 <= m["cancellation_share"] <= 0.035
    assert 0.05 <= m["missing_customer_share"] <= 0.12
    assert 1.5 <= m["log_lines_per_order_line"] <= 3.0
    assert m["own_group_share"] > 0.65
    assert m["countries"] >= 5
    # even at tiny the incidents show: surges above, outages below the usual rate of their clock window
    assert m["surge_min_ratio"] > 1.5
    assert m["outage_max_ratio"] < 0.5
    assert 0 < m["seconds"] < 60
