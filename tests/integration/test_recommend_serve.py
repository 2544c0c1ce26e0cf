"""Serving from DynamoDB (emulator) and the ``shoplake recommend show`` command; the curated-schema conversion."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from shoplake.errors import ShoplakeError
from shoplake.recommend import als_job, data, serve
from shoplake.recommend.cli import recommend


@pytest.fixture(scope="module")
def published(local_stack):
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type == "dynamodb_table" and r.name == "recommendations"])
    serving = pd.DataFrame(
        {
            "customer_id": ["c1"] * 3 + ["c2"] * 3,
            "rank": [2, 1, 3, 1, 2, 3],  # deliberately out of order
            "stock_code": ["B", "A", "C", "D", "E", "F"],
            "score": [0.5, 0.9, 0.1, 0.8, 0.7, 0.2],
            "description": ["BEE", "AYE", "SEA", "DEE", "EE", "EFF"],
        }
    )
    popular = pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "stock_code": ["P", "Q", "R"],
            "description": ["PEA", "CUE", "ARE"],
            "score": [30.0, 20.0, 10.0],
        }
    )
    items = als_job.dynamodb_items(serving, popular, "2026-11-30T12:00:00Z")
    assert serve.publish(items) == 3
    return items


def test_lists_come_back_in_rank_order(published):
    found = serve.recommendations_for("c1", k=3)
    assert found["cold_start"] is False
    assert [(e["rank"], e["stock_code"]) for e in found["items"]] == [(1, "A"), (2, "B"), (3, "C")]
    assert all(type(e["rank"]) is int and type(e["score"]) is float for e in found["items"])
    assert found["items"][0]["score"] == pytest.approx(0.9)
    assert found["generated_at"] == "2026-11-30T12:00:00Z"
    assert [e["stock_code"] for e in serve.recommendations_for("c2", k=2)["items"]] == ["D", "E"]


def test_unknown_customer_gets_the_popular_list_flagged(published):
    found = serve.recommendations_for("nobody", k=3)
    assert found["cold_start"] is True and found["model"] == "most-popular"
    assert [e["stock_code"] for e in found["items"]] == ["P", "Q", "R"]


def test_bad_arguments(published):
    with pytest.raises(ShoplakeError, match="positive integer"):
        serve.recommendations_for("c1", k=0)
    with pytest.raises(ShoplakeError, match="customer id"):
        serve.recommendations_for("  ")


def test_show_command(published):
    runner = CliRunner()
    result = runner.invoke(recommend, ["show", "c1", "--k", "2", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert [e["stock_code"] for e in shown["items"]] == ["A", "B"]
    text = runner.invoke(recommend, ["show", "nobody", "--k", "3"])
    assert text.exit_code == 0, text.output
    assert "most popular" in text.output
    assert "  1. P          PEA" in text.output


def test_curated_from_events():
    events = pd.DataFrame(
        {
            "InvoiceNo": ["536365", "536365", "C536366", "536367"],
            "StockCode": ["85123A", "POST", "85123A", "22423"],
            "Description": ["HEART", "POSTAGE", "HEART", "CAKE STAND"],
            "Quantity": [6, 1, -6, 2],
            "InvoiceDate": [
                "2010-12-01T08:26:00Z",
                "2010-12-01T08:26:00Z",
                "2010-12-02T09:00:00Z",
                "2010-12-03T23:59:59Z",
            ],
            "UnitPrice": [2.55, 18.0, 2.55, 12.75],
            "CustomerID": ["17850", "17850", "17850", None],
            "Country": ["United Kingdom"] * 4,
            "LineNo": [0, 1, 0, 0],
        }
    )
    curated = data.curated_from_events(events, non_products=["POST"])
    assert curated["event_id"].tolist() == ["536365-0", "C536366-0", "536367-0"]
    assert curated["is_cancellation"].tolist() == [False, True, False]
    assert curated["customer_id"].isna().tolist() == [False, False, True]
    assert curated["order_date"].tolist() == ["2010-12-01", "2010-12-02", "2010-12-03"]
    assert str(curated["invoice_ts"].dt.tz) == "UTC"
