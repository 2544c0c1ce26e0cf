"""Notebook 06 (warehouse & dashboard) at scale tiny: lake = warehouse counts, every query ran, revenue agrees."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

QUERIES = {
    "daily_revenue",
    "revenue_by_country",
    "top_products",
    "basket_size",
    "repeat_customer_rate",
    "cohort_retention",
    "rfm_segments",
    "france_best_sellers",
}


@pytest.fixture(scope="module")
def metrics(workbook_metrics):
    return workbook_metrics["06_warehouse"]


def test_warehouse_rows_equal_lake_rows(metrics):
    rows = metrics["warehouse_rows"]
    assert rows["fact_order_line"] == metrics["lake_rows"] > 0
    assert rows["dim_product"] == metrics["lake_products"] > 0
    assert rows["dim_customer"] == metrics["lake_customers"] > 0
    assert rows["dim_date"] >= metrics["query_rows"]["daily_revenue"]


def test_every_query_of_the_set_returned_rows(metrics):
    assert set(metrics["query_rows"]) == QUERIES
    assert all(n > 0 for n in metrics["query_rows"].values())
    assert metrics["query_rows"]["top_products"] == 20 and metrics["query_rows"]["repeat_customer_rate"] == 1


def test_revenue_agrees_to_the_cent_everywhere(metrics):
    revenue = metrics["revenue"]
    lake_net = revenue["lake_net"]
    for key in ("daily_revenue_net", "by_country_net", "warehouse_net"):
        assert revenue[key] == pytest.approx(lake_net, abs=0.005), key
    assert revenue["rfm_sales"] == pytest.approx(revenue["known_customer_sales"], abs=0.005)
    assert revenue["daily_revenue_sales"] >= revenue["known_customer_sales"]
    assert (
        revenue["agrees"] is True
    )  # the same comparisons in exact Decimal arithmetic (warehouse.revenue_reconciliation)


def test_catalog_and_dashboard(metrics):
    assert {"order_lines", "products", "customers"} <= set(metrics["crawl"]["tables"])
    assert metrics["figures"] == [
        "cohort_retention",
        "revenue_by_country",
        "revenue_trend",
        "rfm_segments",
        "top_products",
    ]
    assert 0 <= metrics["repeat_rate"] <= 1
