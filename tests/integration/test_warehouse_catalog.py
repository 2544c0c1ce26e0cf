"""The crawler: Parquet dropped in the lake becomes Glue tables and partitions; a second crawl finds nothing new."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoplake import config, lake, warehouse

LAKE_RESOURCES = {"s3_bucket", "iam_role", "firehose_delivery_stream", "glue_database"}


@pytest.fixture(scope="module")
def lake_bucket(local_stack):
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type in LAKE_RESOURCES])
    return lake.bucket()


def _put_parquet(bucket: str, key: str, frame: pd.DataFrame) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    config.client("s3").put_object(Bucket=bucket, Key=key, Body=sink.getvalue())


def test_crawl_finds_new_tables_and_partitions(lake_bucket):
    table = "crawl_probe"
    lake._delete_prefix(f"curated/{table}/")
    frame = pd.DataFrame({"customer_id": ["17850", "13047"], "rank": [1, 2], "score": [0.9, 0.5]})
    _put_parquet(lake_bucket, f"curated/{table}/run_date=2024-01-01/part-0.parquet", frame)
    first = warehouse.crawl()
    assert table in first.new_tables
    tables = warehouse.catalog_tables()
    assert tables[table]["columns"] == {"customer_id": "string", "rank": "bigint", "score": "double"}
    assert tables[table]["partition_keys"] == {"run_date": "string"} and tables[table]["partitions"] == 1

    _put_parquet(lake_bucket, f"curated/{table}/run_date=2024-01-02/part-0.parquet", frame)
    second = warehouse.crawl()
    assert table not in second.new_tables and second.new_partitions == 1
    assert warehouse.catalog_tables()[table]["partitions"] == 2
    third = warehouse.crawl()
    assert third.new_partitions == 0 and not third.new_tables and not third.changed_tables

    lake._delete_prefix(f"curated/{table}/")
    import awswrangler as wr

    wr.catalog.delete_table_if_exists(
        database=config.glue_database(), table=table, boto3_session=config.configure_wrangler()
    )
