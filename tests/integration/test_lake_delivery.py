"""The lake end to end on the emulator: Firehose delivery → raw/ → curated Parquet + Glue, counts and idempotency."""

from __future__ import annotations

import json
from decimal import Decimal

import pandas as pd
import pytest

from shoplake import config, lake

LAKE_RESOURCES = {"s3_bucket", "iam_role", "firehose_delivery_stream", "glue_database"}


@pytest.fixture(scope="module")
def lake_stack(local_stack):
    """Only the resources the lake needs (bucket, delivery stream, role, Glue database), under this session's prefix."""
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type in LAKE_RESOURCES])
    # a clean slate: earlier tests of this session may have delivered into the same lake
    for prefix in (lake.RAW_ORDERS_PREFIX, lake.CURATED_PREFIX):
        lake._delete_prefix(prefix)
    return lake.bucket()


@pytest.fixture(scope="module")
def delivered(lake_stack, tiny_dataset):
    """The tiny shop delivered once in full, a slice of it delivered again (at-least-once), plus broken lines."""
    events = tiny_dataset.order_lines
    first = lake.deliver_orders(events)
    again = lake.deliver_orders(events.iloc[100:250])
    broken = ["{this is not json", json.dumps({"InvoiceNo": "999999", "StockCode": "22423"})]
    from shoplake import streams

    result = streams.put_firehose(lake.ORDERS_FIREHOSE, broken)
    assert result.sent == 2
    return {"events": events, "first": first, "again": again, "broken": len(broken)}


def test_delivery_lands_in_firehose_layout(delivered, lake_stack):
    assert delivered["first"].delivered == len(delivered["events"]) and delivered["first"].failed == 0
    keys = lake._list_keys(lake_stack, lake.RAW_ORDERS_PREFIX)
    assert keys, "Firehose delivered nothing"
    # raw/orders/YYYY/MM/DD/HH/<object>
    parts = keys[0][len(lake.RAW_ORDERS_PREFIX) :].split("/")
    assert len(parts) == 5 and len(parts[0]) == 4 and all(len(p) == 2 for p in parts[1:4])
    _, lines = lake.read_raw_lines()
    assert len(lines) == len(delivered["events"]) + 150 + delivered["broken"]


def test_delivered_equals_curated_plus_set_aside_per_reason(delivered, tiny_dataset):
    counts = lake.curate_orders()
    events = delivered["events"]
    non_product_codes = set(tiny_dataset.products.loc[~tiny_dataset.products["is_product"], "StockCode"])
    expected_non_product = int(events["StockCode"].isin(non_product_codes).sum())
    assert counts.delivered == len(events) + 150 + 2
    assert counts.set_aside == {
        "malformed_json": 1,
        "missing_field": 1,
        "invalid_value": 0,
        "duplicate": 150,
        "non_product": expected_non_product,
    }
    assert counts.curated == len(events) - expected_non_product
    assert counts.curated + counts.set_aside_total == counts.delivered
    products = events.loc[~events["StockCode"].isin(non_product_codes)]
    assert counts.cancellations == int(products["InvoiceNo"].str.startswith("C").sum())
    assert counts.guest_lines == int(products["CustomerID"].isna().sum())
    # what the lake holds equals the counts
    curated = lake.read_curated_order_lines()
    assert len(curated) == counts.curated and curated["event_id"].is_unique
    set_aside = lake.read_curated("set_aside")
    assert set_aside["reason"].value_counts().to_dict() == {k: v for k, v in counts.set_aside.items() if v}


def test_curated_lake_matches_the_source_to_the_cent(delivered, tiny_dataset):
    events = delivered["events"]
    products = events.loc[
        tiny_dataset.products.set_index("StockCode").loc[events["StockCode"], "is_product"].to_numpy()
    ]
    curated = lake.read_curated_order_lines()
    expected = sum(
        Decimal(repr(price)).quantize(Decimal("0.01")) * qty
        for price, qty in zip(products["UnitPrice"], products["Quantity"], strict=True)
    )
    assert sum(curated["line_amount"]) == expected
    assert str(curated["invoice_ts"].dt.tz) == "UTC"
    training = lake.read_curated_order_lines(training=True)
    expected_training = products.loc[~products["InvoiceNo"].str.startswith("C") & products["CustomerID"].notna()]
    assert len(training) == len(expected_training)


def test_recuration_does_not_duplicate(delivered):
    first = lake.read_curated_order_lines()
    counts = lake.curate_orders()
    again = lake.read_curated_order_lines()
    assert len(again) == len(first) == counts.curated
    assert again["event_id"].is_unique
    pd.testing.assert_frame_equal(first, again)
    assert len(lake.read_curated("set_aside")) == counts.set_aside_total


def test_curated_tables_are_in_the_glue_catalog(delivered):
    import awswrangler as wr

    session = config.configure_wrangler()
    db = config.glue_database()
    tables = set(wr.catalog.tables(database=db, boto3_session=session)["Table"])
    assert {"order_lines", "products", "customers", "set_aside"} <= tables
    partitions = wr.catalog.get_parquet_partitions(database=db, table="order_lines", boto3_session=session)
    assert len(partitions) == lake.read_curated_order_lines(columns=["order_date"])["order_date"].nunique()
    types = wr.catalog.get_table_types(database=db, table="order_lines", boto3_session=session)
    assert types == lake.ORDER_LINE_TYPES


def test_download_curated_gives_a_local_copy(delivered, tmp_path):
    root = lake.download_curated(tmp_path / "lake")
    local = pd.read_parquet(root / "order_lines")
    assert len(local) == len(lake.read_curated_order_lines())
    assert (root / "products").is_dir() and (root / "customers").is_dir()


def test_delivery_waits_until_the_lake_holds_every_record(delivered):
    first = delivered["first"]
    assert first.landed >= first.delivered == len(delivered["events"])
    # nothing new lands: the wait reports the stall with the counts instead of returning a partial lake
    keys = set(lake.list_keys(lake.bucket(), lake.RAW_ORDERS_PREFIX))
    with pytest.raises(lake.LakeError, match=r"delivered 0 of 5 records .* nothing new for 0 s"):
        lake.wait_for_delivery(5, keys, stall_timeout_s=0.0, poll_s=0.0)


def _glue_partitions(table: str) -> set[str]:
    import awswrangler as wr

    found = wr.catalog.get_parquet_partitions(
        database=config.glue_database(), table=table, boto3_session=config.configure_wrangler()
    )
    return {path.rstrip("/").rsplit("=", 1)[1] for path in found}


def test_glue_partitions_are_what_the_files_are(lake_stack):
    """A run that rewrites some partitions keeps the others registered; a full overwrite drops the gone ones."""
    table = "partition_probe"
    types = {"n": "bigint", "day": "string"}
    lake.delete_prefix(f"{lake.CURATED_PREFIX}{table}/")
    frame = pd.DataFrame({"n": [1, 2, 3], "day": ["2024-01-01", "2024-01-02", "2024-01-03"]})
    lake._to_parquet(frame.iloc[:2], table, types, "overwrite_partitions", "day")
    lake._to_parquet(frame.iloc[2:], table, types, "overwrite_partitions", "day")
    assert _glue_partitions(table) == {"2024-01-01", "2024-01-02", "2024-01-03"}
    assert lake.read_dataset(f"{lake.CURATED_PREFIX}{table}")["n"].sort_values().tolist() == [1, 2, 3]
    lake._to_parquet(frame.iloc[1:2], table, types, "overwrite", "day")
    assert _glue_partitions(table) == {"2024-01-02"}
    assert lake.read_dataset(f"{lake.CURATED_PREFIX}{table}")["n"].tolist() == [2]
    lake.delete_prefix(f"{lake.CURATED_PREFIX}{table}/")
    import awswrangler as wr

    wr.catalog.delete_table_if_exists(
        database=config.glue_database(), table=table, boto3_session=config.configure_wrangler()
    )


@pytest.mark.parametrize("source", ["generator", "agent"])
def test_ship_orders_gives_one_table_whatever_the_source(lake_stack, tiny_dataset, source):
    shipped = lake.ship_orders(tiny_dataset, source=source, progress=False)
    assert set(shipped) == {"events", "delivered", "failed", "retried", "malformed", "landed"}
    assert shipped["events"] == len(tiny_dataset.order_lines)
    assert shipped["delivered"] + shipped["failed"] + shipped["malformed"] == shipped["events"]
    assert shipped["landed"] >= shipped["delivered"] > 0
    with pytest.raises(lake.LakeError, match="source must be"):
        lake.ship_orders(tiny_dataset, source="carrier pigeon")
