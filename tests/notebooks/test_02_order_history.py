"""Notebook 02_order_history, read back from its recorded metrics (tiny dataset, generator source)."""

import pytest

pytestmark = pytest.mark.slow


def test_every_event_is_written_once_or_dead_lettered(workbook_metrics):
    m = workbook_metrics["02_order_history"]
    assert m["events_in"] == m["dataset_order_lines"] + m["dead_lettered"]
    assert m["items"] == m["valid"] == m["dataset_order_lines"]
    assert m["balanced"] and m["exactly_once"]
    assert m["missing"] == m["duplicates"] == m["content_mismatches"] == 0
    assert m["dead_lettered"] == sum(m["dead_by_reason"].values()) == 5  # the injected malformed events


def test_mapping_handled_every_record_and_handler_counts_agree(workbook_metrics):
    m = workbook_metrics["02_order_history"]
    mapping = m["mapping"]
    assert mapping["records_done"] == mapping["records_in"] == m["events_in"]
    assert mapping["records_to_on_failure"] == 0
    counts = mapping["handler_counts"]
    assert counts["written"] == m["items"] and counts["dead_lettered"] == m["dead_lettered"]
    assert counts["guest_lines"] == m["guest_lines"] > 0
    assert counts["cancellations"] == m["cancellations"] > 0
    assert counts["cancellations_matched"] == m["cancelled_lines"] > 0


def test_histories_match_pandas_and_latency_is_measured(workbook_metrics):
    m = workbook_metrics["02_order_history"]
    assert m["histories_checked"] >= 3 and m["histories_matching"] == m["histories_checked"]
    assert 0 < m["latency_p50_s"] <= m["latency_p95_s"]
