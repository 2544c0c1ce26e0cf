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
from shoplake.events import from_frame

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
        rows = from_frame(tiny_dataset.order_lines)
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
    # issue 13: the orders mapping checkpoints once a second (and at the end), not after every batch
    assert orders.mapping().settings.checkpoint_interval_seconds == orders._ingest.CHECKPOINT_INTERVAL_SECONDS > 0
    assert len(stats.shards) <= stats.checkpoints_written < stats.invocations
    assert stats.handler_counts["guest_lines"] == dataset.manifest["counts"]["missing_customer"]
    assert stats.handler_counts["cancellations"] == dataset.manifest["counts"]["cancellations"]
    assert stats.handler_counts["cancellations_matched"] == reconciliation.cancelled_lines > 0


def test_reconciliation_reads_keys_and_hashes_and_still_catches_a_wrong_write(pipeline):
    """issue 13: the default reconciliation reads only keys, content hashes and marks (a projection) and agrees
    with the full comparison; an item written with other content at the right key is a content mismatch."""
    from shoplake import config
    from shoplake.lambdas import order_history

    projected = orders.table_items(orders._ingest.RECONCILE_COLUMNS)
    assert list(projected.columns) == list(orders._ingest.RECONCILE_COLUMNS) and len(projected) == len(
        pipeline["items"]
    )
    cheap = orders.reconcile(pipeline["events"])
    assert cheap.as_dict() == orders.reconcile(pipeline["events"], items=pipeline["items"]).as_dict()
    assert cheap.exactly_once and cheap.balanced
    # a handler bug: the right key, another quantity (its hash is the hash of what it wrote)
    row = next(r for r in from_frame(pipeline["dataset"].order_lines) if not r["InvoiceNo"].startswith("C"))
    key = order_history.to_item(order_history.parse_event(streams.encode(row)))
    wrong = order_history.to_item(order_history.parse_event(streams.encode({**row, "Quantity": row["Quantity"] + 1})))
    assert (wrong["customer_id"], wrong["order_key"]) == (key["customer_id"], key["order_key"])
    ddb = config.client("dynamodb")
    original = ddb.get_item(
        TableName=orders.table_name(), Key={"customer_id": key["customer_id"], "order_key": key["order_key"]}
    )["Item"]
    ddb.put_item(TableName=orders.table_name(), Item=wrong)
    try:
        caught = orders.reconcile(pipeline["events"])
        assert len(caught.content_mismatches) == 1 and not caught.exactly_once
        assert caught.content_mismatches[0].startswith(f"{key['event_id']['S']}.content_sha256")
    finally:
        ddb.put_item(TableName=orders.table_name(), Item=original)
    assert orders.reconcile(pipeline["events"]).exactly_once


def test_a_large_reconciliation_computes_the_expected_items_in_a_second_process_with_the_same_answer(
    pipeline, monkeypatch
):
    """issue 13: from RECONCILE_IN_WORKER_FROM events on, a spawned process computes the expected items while this one
    reads the table; its answer is the in-process one, field for field, and it still catches a missing item."""
    from shoplake import config

    in_process = orders.reconcile(pipeline["events"])
    monkeypatch.setattr(orders._ingest, "RECONCILE_IN_WORKER_FROM", 1)
    spawned = []
    original = orders._ingest._expected_while_reading
    monkeypatch.setattr(
        orders._ingest, "_expected_while_reading", lambda records: spawned.append(len(records)) or original(records)
    )
    assert orders.reconcile(pipeline["events"]) == in_process and in_process.exactly_once
    assert spawned == [len(pipeline["events"])]
    victim = pipeline["items"].iloc[0]
    ddb = config.client("dynamodb")
    key = {"customer_id": {"S": victim["customer_id"]}, "order_key": {"S": victim["order_key"]}}
    original_item = ddb.get_item(TableName=orders.table_name(), Key=key)["Item"]
    ddb.delete_item(TableName=orders.table_name(), Key=key)
    try:
        caught = orders.reconcile(pipeline["events"])
        assert caught.missing == [victim["event_id"]] and not caught.exactly_once
    finally:
        ddb.put_item(TableName=orders.table_name(), Item=original_item)


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


def test_replaying_part_of_the_stream_keeps_every_cancellation_mark(pipeline):
    """issue 16 #5: replaying the first half of the tiny dataset re-put original lines without the marks their
    (unreplayed) cancellations had put on them (6 of 35 lost). Any part, in any order: the table stays as it was."""
    before = pipeline["items"]
    assert before["cancelled_by"].notna().sum() > 0
    handler = orders.handler()
    by_shard: dict[str, list[streams.StreamRecord]] = {}
    for record in streams.read_all(orders._ingest.STREAM):
        by_shard.setdefault(record.shard_id, []).append(record)

    def replay(records: list[streams.StreamRecord], size: int = 100) -> None:
        for start in range(0, len(records), size):
            event = lambda_local.kinesis_event(records[start : start + size], "arn:aws:kinesis:x:1:stream/o", "x", "r")
            assert handler(event)["batchItemFailures"] == []

    for records in by_shard.values():
        replay(records[: len(records) // 2])  # the probe's case: the first half of each shard
    pd.testing.assert_frame_equal(before, snapshot())
    for records in by_shard.values():
        replay(records[len(records) // 3 :][::-1], size=37)  # the last two thirds, newest first
    pd.testing.assert_frame_equal(before, snapshot())
    assert len(orders.dead_letters()) == 3  # the poison records dead-lettered again, counted once


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


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["ingest", "--speed", "nan"], "--speed"),
        (["ingest", "--speed", "-1"], "--speed"),
        (["ingest", "--speed", "0"], "--speed"),
        (["ingest", "--speed", "inf"], "--speed"),
        (["ingest", "--seed", "-3"], "--seed"),
        (["history", "12345", "--limit", "0"], "--limit"),
        (["history", "12345", "--limit", "-2"], "--limit"),
    ],
)
def test_cli_rejects_bad_numbers_with_one_clear_line(args, option):
    """issue 16: before any work (no dataset load, no stream), one usage error naming the option."""
    from shoplake.orders.cli import orders as orders_cli

    result = CliRunner().invoke(orders_cli, args)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and "Traceback" not in result.output
