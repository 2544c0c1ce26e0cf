"""Order history end to end on the tiny dataset: stream → local mapping → table, every event accounted for,
replay unchanged; and the client (Python and CLI) checked against pandas on the source data."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pandas as pd
import pytest
from click.testing import CliRunner

from shoplake import infra, lambda_local, orders, streams

pytestmark = pytest.mark.slow  # ingests the tiny dataset twice (~30-60 s on a busy 2-core machine)

NEEDED = {
    "kinesis_stream:orders",
    "dynamodb_table:order_history",
    "dynamodb_table:checkpoints",
    "sqs_queue:order-history-dlq",
}
POISON = [
    b"this is not json",
    {"InvoiceNo": "999999", "StockCode": "X", "InvoiceDate": "2011-01-01T00:00:00Z"},
    {
        "InvoiceNo": "999998",
        "StockCode": "X",
        "Description": "",
        "Quantity": 1,
        "InvoiceDate": "yesterday",
        "UnitPrice": 1.0,
        "CustomerID": "1",
        "Country": "France",
        "LineNo": 0,
    },
]


@pytest.fixture(scope="module")
def pipeline(local_stack, tiny_dataset):
    """A prefix of this module's own with the order-history resources, the tiny dataset + 3 poison records
    ingested once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOPLAKE_PREFIX", os.environ["SHOPLAKE_PREFIX"][:14] + "-oh")
        spec = [r for r in infra.load_spec() if r.key in NEEDED]
        infra.apply(spec)
        rows = streams._records_of(tiny_dataset.order_lines)
        events = rows[:100] + [POISON[0]] + rows[100:700] + [POISON[1]] + rows[700:] + [POISON[2]]
        put = orders.publish(events, progress=False)
        stats = orders.consume(timeout=300)
        items = snapshot()
        yield {"events": events, "put": put, "stats": stats, "dataset": tiny_dataset, "items": items}
        infra.destroy(spec=spec)


def test_counts_in_equal_written_plus_dead_lettered_exactly(pipeline):
    dataset = pipeline["dataset"]
    assert pipeline["put"].sent == dataset.manifest["counts"]["order_lines"] + 3
    reconciliation = orders.reconcile(pipeline["events"], items=pipeline["items"])
    assert reconciliation.balanced and reconciliation.exactly_once, reconciliation.as_dict()
    assert reconciliation.items == dataset.manifest["counts"]["order_lines"]
    assert reconciliation.dead_lettered == 3
    dead = orders.dead_letters()
    assert dead.by_reason == {"not JSON": 1, "missing field": 1, "InvoiceDate": 1}
    stats = pipeline["stats"]
    assert stats.records_done == stats.records_in == len(pipeline["events"])
    assert stats.handler_counts["guest_lines"] == dataset.manifest["counts"]["missing_customer"]
    assert stats.handler_counts["cancellations"] == dataset.manifest["counts"]["cancellations"]
    assert stats.handler_counts["cancellations_matched"] == reconciliation.cancelled_lines > 0


def snapshot() -> pd.DataFrame:
    return orders.table_items().sort_values(["customer_id", "order_key"]).reset_index(drop=True)


def test_replaying_the_whole_stream_leaves_the_table_unchanged(pipeline):
    before = pipeline["items"]
    lambda_local.Checkpoints(orders.CONSUMER).reset()
    stats = orders.consume(timeout=300)
    assert stats.records_in == len(pipeline["events"])
    after = snapshot()
    pd.testing.assert_frame_equal(before, after)
    assert len(orders.dead_letters()) == 3  # the same 3 records, counted once


def expected_history(dataset, customer: str) -> pd.DataFrame:
    lines = dataset.order_lines[dataset.order_lines["CustomerID"] == customer]
    return lines.sort_values(["InvoiceDate", "InvoiceNo", "LineNo"], ascending=[False, False, True])


def test_client_returns_the_right_lines_in_the_right_order(pipeline):
    dataset = pipeline["dataset"]
    top = dataset.order_lines["CustomerID"].value_counts().index[:4]
    for customer in top:
        want = expected_history(dataset, customer)
        got = orders.history(customer)
        assert got.found and len(got.lines) == len(want)
        assert list(got.lines["invoice_no"]) == list(want["InvoiceNo"])
        assert list(got.lines["stock_code"]) == list(want["StockCode"])
        assert list(got.lines["quantity"]) == list(want["Quantity"])
        totals = want.assign(
            amount=[
                Decimal(str(p)).quantize(Decimal("0.01")) * q
                for p, q in zip(want["UnitPrice"], want["Quantity"], strict=True)
            ]
        )
        by_invoice = totals.groupby("InvoiceNo")["amount"].sum()
        assert {r.invoice_no: r.total for r in got.orders.itertuples()} == by_invoice.to_dict()
        assert list(got.orders["invoice_date"]) == sorted(got.orders["invoice_date"], reverse=True)


def test_limit_since_and_unknown_customer(pipeline):
    dataset = pipeline["dataset"]
    customer = dataset.order_lines["CustomerID"].value_counts().index[0]
    want = expected_history(dataset, customer)
    invoices = list(dict.fromkeys(want["InvoiceNo"]))
    limited = orders.history(customer, limit=2)
    assert list(limited.orders["invoice_no"]) == invoices[:2]
    assert len(limited.lines) == int(want["InvoiceNo"].isin(invoices[:2]).sum())
    since = sorted(want["InvoiceDate"])[len(want) // 2][:10]
    recent = orders.history(customer, since=since)
    assert len(recent.lines) == int((want["InvoiceDate"] >= since).sum())
    unknown = orders.history("no-such-customer")
    assert not unknown.found and "no orders found" in unknown.message and unknown.orders.empty
    with pytest.raises(orders.HistoryError, match="YYYY-MM-DD"):
        orders.history(customer, since="last tuesday")
    guest_invoice = dataset.order_lines.loc[dataset.order_lines["CustomerID"].isna(), "InvoiceNo"].iloc[0]
    assert orders.history(f"guest-{guest_invoice}").found


def test_cli_history_table_json_and_unknown(pipeline):
    from shoplake.cli import cli

    dataset = pipeline["dataset"]
    customer = dataset.order_lines["CustomerID"].value_counts().index[0]
    runner = CliRunner()
    result = runner.invoke(cli, ["orders", "history", customer, "--limit", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["customer_id"] == customer and len(payload["orders"]) == 1
    text = runner.invoke(cli, ["orders", "history", customer])
    assert text.exit_code == 0 and "orders (newest first)" in text.output
    unknown = runner.invoke(cli, ["orders", "history", "nobody-42"])
    assert unknown.exit_code == 0 and "no orders found for customer 'nobody-42'" in unknown.output
    bad = runner.invoke(cli, ["orders", "history", customer, "--since", "soon"])
    assert bad.exit_code != 0 and isinstance(bad.exception, orders.HistoryError)
