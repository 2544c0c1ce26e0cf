"""The Glue catalog of the lake, and a crawler: infer tables and new partitions from the Parquet under ``curated/``.

The emulator runs no Glue crawlers, and on aws a crawler is one more thing to pay for and wait on; ``crawl`` does
the same job with awswrangler catalog calls on both targets: every ``curated/<table>/`` folder becomes (or updates)
a Glue table with the schema of its Parquet files, and every ``key=value/`` folder a partition.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from shoplake import config, lake
from shoplake.errors import ShoplakeError
from shoplake.warehouse._athena import glue_table

log = logging.getLogger(__name__)


class CatalogError(ShoplakeError):
    """The lake cannot be crawled or the Glue database is missing."""


@dataclass
class CrawlResult:
    """What one crawl found: tables seen, tables created or changed, partitions added."""

    tables: list[str] = field(default_factory=list)
    new_tables: list[str] = field(default_factory=list)
    changed_tables: list[str] = field(default_factory=list)
    new_partitions: int = 0
    partitions: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def glue_type(arrow: Any) -> str:
    """The Glue/Athena column type of an Arrow type."""
    import pyarrow as pa

    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_dictionary(arrow):
        return "string"
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_int8(arrow) or pa.types.is_int16(arrow) or pa.types.is_int32(arrow):
        return "int"
    if pa.types.is_integer(arrow):
        return "bigint"
    if pa.types.is_float32(arrow):
        return "float"
    if pa.types.is_floating(arrow):
        return "double"
    if pa.types.is_decimal(arrow):
        return f"decimal({arrow.precision},{arrow.scale})"
    if pa.types.is_timestamp(arrow):
        return "timestamp"
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_list(arrow):
        return f"array<{glue_type(arrow.value_type)}>"
    raise CatalogError(f"no Glue type for Arrow type {arrow}: write that column as a simpler type")


def _folders(bucket: str, prefix: str) -> list[str]:
    s3 = config.client("s3")
    folders: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return sorted(folders)


def _schema_of(bucket: str, key: str) -> Any:
    import io

    import pyarrow.parquet as pq

    s3 = config.client("s3")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return pq.read_schema(io.BytesIO(body))


def infer_table(bucket: str, prefix: str) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]] | None:
    """(column types, partition types, partitions {s3 path: values}) of the Parquet dataset under ``prefix``."""
    keys = [k for k in lake.list_keys(bucket, prefix) if k.endswith(".parquet")]
    if not keys:
        return None
    partition_names: list[str] = []
    partitions: dict[str, list[str]] = {}
    for key in keys:
        parts = [p.split("=", 1) for p in key[len(prefix) :].split("/")[:-1] if "=" in p]
        if parts and not partition_names:
            partition_names = [name for name, _ in parts]
        if parts:
            folder = prefix + "".join(f"{n}={v}/" for n, v in parts)
            partitions[f"s3://{bucket}/{folder}"] = [v for _, v in parts]
    schema = _schema_of(bucket, keys[-1])
    columns = {f.name: glue_type(f.type) for f in schema if f.name not in partition_names}
    return columns, dict.fromkeys(partition_names, "string"), partitions


def crawl(prefix: str = lake.CURATED_PREFIX) -> CrawlResult:
    """Register every Parquet table under ``s3://<lake>/<prefix>`` in Glue, with new partitions; idempotent."""
    lake.ensure_database()
    bucket = lake.bucket()
    result = CrawlResult()
    for folder in _folders(bucket, prefix):
        table = folder[len(prefix) :].strip("/").lower()
        inferred = infer_table(bucket, folder)
        if inferred is None:
            continue
        columns, partition_types, partitions = inferred
        result.tables.append(table)
        change = lake.register_table(
            table,
            f"s3://{bucket}/{folder}",
            columns,
            partition_types or None,
            description=f"shoplake {table} (found by shoplake warehouse crawl)",
        )
        if change == "new":
            result.new_tables.append(table)
        elif change == "changed":
            result.changed_tables.append(table)
        if partitions:
            result.new_partitions += lake.register_partitions(table, partitions, prune=True)
        result.partitions += len(partitions)
    log.info(
        "crawled %d tables (%d new), %d new partitions",
        len(result.tables),
        len(result.new_tables),
        result.new_partitions,
    )
    return result


def _types_of(definition: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    columns = {c["Name"]: c["Type"] for c in definition["StorageDescriptor"].get("Columns", [])}
    partitions = {c["Name"]: c["Type"] for c in definition.get("PartitionKeys", [])}
    return columns, partitions


def catalog_tables() -> dict[str, dict[str, Any]]:
    """The Glue database's tables → {location, columns, partition keys, partitions}."""
    import awswrangler as wr

    session = config.configure_wrangler()
    database = config.glue_database()
    out: dict[str, dict[str, Any]] = {}
    for name in wr.catalog.tables(database=database, limit=None, boto3_session=session)["Table"]:
        definition = glue_table(name)
        if definition is None:
            continue
        columns, partition_keys = _types_of(definition)
        partitions = (
            wr.catalog.get_parquet_partitions(database=database, table=name, boto3_session=session)
            if partition_keys
            else {}
        )
        out[name] = {
            "location": definition["StorageDescriptor"]["Location"],
            "columns": columns,
            "partition_keys": partition_keys,
            "partitions": len(partitions),
        }
    return out
