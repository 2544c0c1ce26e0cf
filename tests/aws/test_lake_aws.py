"""The lake's aws paths against moto in-process: delivery waits for late Firehose objects; Glue partitions additive.

On AWS Firehose buffers (up to 60 s / 5 MB for orders-to-lake) before it writes an object. moto writes at once, so
the tests make its Firehose late: each PutRecordBatch's object is written by a timer thread after a delay (or never,
for a stalled stream), which is what curation would otherwise race against.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from shoplake import config, lake, streams

pytestmark = pytest.mark.aws

REGION = "eu-west-1"


@pytest.fixture
def lake_on_aws(aws_target) -> str:
    name = lake.bucket()
    config.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    config.client("firehose").create_delivery_stream(
        DeliveryStreamName=streams.stream_name(lake.ORDERS_FIREHOSE),
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/shoplake-firehose-delivery",
            "BucketARN": f"arn:aws:s3:::{name}",
            "Prefix": lake.RAW_ORDERS_PREFIX,
            "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60},
        },
    )
    lake.ensure_database()
    return name


@pytest.fixture
def late_firehose(monkeypatch) -> Iterator[dict[str, Any]]:
    """moto's Firehose writes each batch's object after ``delay(i)`` seconds (None: never), i = batch number."""
    from moto.firehose.models import FirehoseBackend

    original = FirehoseBackend.put_s3_records
    control: dict[str, Any] = {"delay": lambda i: 0.2, "timers": [], "batches": 0}

    def late(self: Any, name: str, version: str, destination: dict[str, Any], records: list[Any]) -> Any:
        delay = control["delay"](control["batches"])
        control["batches"] += 1
        if delay is not None:
            timer = threading.Timer(delay, original, args=(self, name, version, destination, records))
            timer.start()
            control["timers"].append(timer)
        return [{"RecordId": str(uuid.uuid4())} for _ in records]

    monkeypatch.setattr(FirehoseBackend, "put_s3_records", late)
    yield control
    for timer in control["timers"]:  # objects not written yet never will be (the test is over)
        timer.cancel()
        timer.join()


def _events(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "InvoiceNo": [str(536365 + i // 4) for i in range(n)],
            "StockCode": ["85123A"] * n,
            "Description": ["WHITE HANGING HEART T-LIGHT HOLDER"] * n,
            "Quantity": [6] * n,
            "InvoiceDate": ["2024-03-01T08:26:00Z"] * n,
            "UnitPrice": [2.55] * n,
            "CustomerID": ["17850"] * n,
            "Country": ["United Kingdom"] * n,
            "LineNo": [i % 4 for i in range(n)],
        }
    )


def test_delivery_waits_for_late_firehose_objects(lake_on_aws, late_firehose):
    late_firehose["delay"] = lambda i: 0.5 + 0.3 * i  # 3 batches land one after another, well after the put
    counts = lake.deliver_orders(_events(1200), stall_timeout_s=30, poll_s=0.1)
    assert counts.delivered == counts.events == 1200 and counts.failed == 0
    # on return the lake holds every record, so curation sees a complete lake
    objects, lines = lake.read_raw_lines()
    assert counts.landed == len(lines) == 1200 and objects == 3
    curated = lake.curate_orders()
    assert curated.delivered == 1200 and curated.curated + curated.set_aside_total == 1200


def test_without_waiting_the_lake_is_partial(lake_on_aws, late_firehose):
    """The premise of the wait: right after the put, a late Firehose has written nothing yet."""
    late_firehose["delay"] = lambda i: 3.0
    counts = lake.deliver_orders(_events(600), wait=False)
    assert counts.delivered == 600 and counts.landed == 0
    assert lake.read_raw_lines()[1] == []


def test_a_stalled_delivery_is_a_clear_error(lake_on_aws, late_firehose):
    late_firehose["delay"] = lambda i: 0.2 if i == 0 else None  # the second batch never lands
    with pytest.raises(lake.LakeError, match=r"Firehose delivered 500 of 700 records .* nothing new for 1 s"):
        lake.deliver_orders(_events(700), stall_timeout_s=1.0, poll_s=0.1)


def _partitions(table: str) -> set[str]:
    import awswrangler as wr

    found = wr.catalog.get_parquet_partitions(
        database=config.glue_database(), table=table, boto3_session=config.configure_wrangler()
    )
    return {path.rstrip("/").rsplit("=", 1)[1] for path in found}


def test_glue_partitions_are_additive_on_aws(lake_on_aws, aws_target):
    """A curation run that rewrites some days leaves the other days registered: Athena sees what DuckDB reads."""
    from shoplake.warehouse import crawl

    types = {"n": "bigint", "order_date": "string"}
    days = pd.DataFrame({"n": [1, 2, 3], "order_date": ["2024-03-01", "2024-03-02", "2024-03-03"]})
    lake._to_parquet(days.iloc[:2], "probe", types, "overwrite_partitions", "order_date")
    aws_target.clear()
    lake._to_parquet(days.iloc[2:], "probe", types, "overwrite_partitions", "order_date")
    assert _partitions("probe") == {"2024-03-01", "2024-03-02", "2024-03-03"}
    # nothing was dropped and re-added: the table definition was left alone, one partition added
    assert not {"glue:DeleteTable", "glue:BatchDeletePartition", "glue:UpdateTable"} & aws_target.operations()
    assert "glue:BatchCreatePartition" in aws_target.operations()
    result = crawl()
    assert (
        "probe" in result.tables
        and result.new_partitions == 0
        and _partitions("probe")
        == {
            "2024-03-01",
            "2024-03-02",
            "2024-03-03",
        }
    )
    lake._to_parquet(days.iloc[1:2], "probe", types, "overwrite", "order_date")
    assert _partitions("probe") == {"2024-03-02"}
