"""The Redshift warehouse: a star schema (fact_order_line, dim_customer, dim_product, dim_date) loaded from the lake.

On aws: tables with DISTKEY/SORTKEY, loaded by ``awswrangler.redshift.copy`` (staged in S3, then COPY), queried with
``wr.redshift``, plus a Spectrum external schema over the Glue database. Locally: the same tables in the embedded
PostgreSQL, loaded and queried with ``wr.postgresql``. The Redshift-only clauses live in :func:`create_table_sql`
and nowhere else. Loads are idempotent: each load truncates and refills every table in one transaction.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shoplake import config, lake
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

SPECTRUM_SCHEMA = "lake_spectrum"


class WarehouseError(ShoplakeError):
    """The warehouse cannot be reached or loaded."""


@dataclass(frozen=True)
class TableSpec:
    """One table of the star schema: typed columns, primary key, and its Redshift distribution and sort keys."""

    name: str
    columns: tuple[tuple[str, str], ...]
    primary_key: str
    diststyle: str = "ALL"  # ALL for the small dimensions, KEY for the fact table
    distkey: str | None = None
    sortkey: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]


STAR_SCHEMA: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "dim_date",
            (
                ("date_key", "INTEGER NOT NULL"),
                ("full_date", "DATE NOT NULL"),
                ("year", "SMALLINT NOT NULL"),
                ("quarter", "SMALLINT NOT NULL"),
                ("month", "SMALLINT NOT NULL"),
                ("day", "SMALLINT NOT NULL"),
                ("day_of_week", "SMALLINT NOT NULL"),
                ("is_weekend", "BOOLEAN NOT NULL"),
            ),
            "date_key",
            sortkey=("date_key",),
        ),
        TableSpec(
            "dim_customer",
            (
                ("customer_id", "VARCHAR(32) NOT NULL"),
                ("country", "VARCHAR(64)"),
                ("first_order_ts", "TIMESTAMP"),
                ("last_order_ts", "TIMESTAMP"),
                ("orders", "INTEGER NOT NULL"),
                ("lines", "INTEGER NOT NULL"),
            ),
            "customer_id",
            sortkey=("customer_id",),
        ),
        TableSpec(
            "dim_product",
            (
                ("stock_code", "VARCHAR(32) NOT NULL"),
                ("description", "VARCHAR(256)"),
                ("unit_price", "NUMERIC(12,2)"),
                ("lines", "INTEGER NOT NULL"),
                ("quantity", "BIGINT NOT NULL"),
                ("first_order_date", "DATE"),
                ("last_order_date", "DATE"),
            ),
            "stock_code",
            sortkey=("stock_code",),
        ),
        TableSpec(
            "fact_order_line",
            (
                ("event_id", "VARCHAR(64) NOT NULL"),
                ("invoice_no", "VARCHAR(32) NOT NULL"),
                ("line_no", "INTEGER NOT NULL"),
                ("date_key", "INTEGER NOT NULL"),
                ("stock_code", "VARCHAR(32) NOT NULL"),
                ("customer_id", "VARCHAR(32)"),
                ("country", "VARCHAR(64) NOT NULL"),
                ("invoice_ts", "TIMESTAMP NOT NULL"),
                ("quantity", "BIGINT NOT NULL"),
                ("unit_price", "NUMERIC(12,2) NOT NULL"),
                ("line_amount", "NUMERIC(14,2) NOT NULL"),
                ("is_cancellation", "BOOLEAN NOT NULL"),
            ),
            "event_id",
            diststyle="KEY",
            distkey="customer_id",
            sortkey=("date_key",),
        ),
    )
}


@dataclass
class LoadResult:
    """Rows loaded per table, lake counts they came from, and the load time."""

    rows: dict[str, int] = field(default_factory=dict)
    lake_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "lake_rows": self.lake_rows,
            "seconds": round(self.seconds, 3),
            "total_rows": self.total_rows,
            "rows_per_s": round(self.rows_per_s, 1),
        }


def warehouse_schema() -> str:
    """The schema holding this prefix's star (``shoplake_<prefix>``, like the Glue database)."""
    return config.glue_database()


def create_table_sql(spec: TableSpec, schema: str, target: str) -> str:
    """CREATE TABLE for ``target`` — the ONE place Redshift-only clauses (DISTSTYLE/DISTKEY/SORTKEY) are added."""
    columns = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in spec.columns)
    sql = f"CREATE TABLE IF NOT EXISTS {schema}.{spec.name} (\n    {columns},\n    PRIMARY KEY ({spec.primary_key})\n)"
    if target == "aws":
        sql += f"\nDISTSTYLE {spec.diststyle}"
        if spec.distkey:
            sql += f" DISTKEY ({spec.distkey})"
        if spec.sortkey:
            sql += f"\nCOMPOUND SORTKEY ({', '.join(spec.sortkey)})"
    return sql


# --------------------------------------------------------------------------- frames from the lake


def _naive_utc(series: pd.Series) -> pd.Series:
    series = pd.to_datetime(series, utc=True)
    return series.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")


def build_star(order_lines: pd.DataFrame, products: pd.DataFrame, customers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four tables as DataFrames, from the curated lake tables."""
    days = pd.to_datetime(order_lines["order_date"].astype(str))
    calendar = pd.date_range(days.min(), days.max(), freq="D") if len(days) else pd.DatetimeIndex([])
    dim_date = pd.DataFrame(
        {
            "date_key": (calendar.year * 10000 + calendar.month * 100 + calendar.day).astype("int32"),
            "full_date": calendar.date,
            "year": calendar.year.astype("int16"),
            "quarter": calendar.quarter.astype("int16"),
            "month": calendar.month.astype("int16"),
            "day": calendar.day.astype("int16"),
            "day_of_week": (calendar.dayofweek + 1).astype("int16"),
            "is_weekend": calendar.dayofweek >= 5,
        }
    )
    dim_customer = pd.DataFrame(
        {
            "customer_id": customers["customer_id"].astype(str),
            "country": customers["country"].astype(object),
            "first_order_ts": _naive_utc(customers["first_order_ts"]),
            "last_order_ts": _naive_utc(customers["last_order_ts"]),
            "orders": customers["orders"].astype("int64"),
            "lines": customers["lines"].astype("int64"),
        }
    )
    dim_product = pd.DataFrame(
        {
            "stock_code": products["stock_code"].astype(str),
            "description": products["description"].astype(object).where(products["description"].notna(), None),
            "unit_price": products["unit_price"].astype(object),
            "lines": products["lines"].astype("int64"),
            "quantity": products["quantity"].astype("int64"),
            "first_order_date": pd.to_datetime(products["first_order_date"].astype(str)).dt.date,
            "last_order_date": pd.to_datetime(products["last_order_date"].astype(str)).dt.date,
        }
    )
    fact = pd.DataFrame(
        {
            "event_id": order_lines["event_id"].astype(str),
            "invoice_no": order_lines["invoice_no"].astype(str),
            "line_no": order_lines["line_no"].astype("int64"),
            "date_key": (days.dt.year * 10000 + days.dt.month * 100 + days.dt.day).astype("int64"),
            "stock_code": order_lines["stock_code"].astype(str),
            "customer_id": order_lines["customer_id"].astype(object).where(order_lines["customer_id"].notna(), None),
            "country": order_lines["country"].astype(str),
            "invoice_ts": _naive_utc(order_lines["invoice_ts"]),
            "quantity": order_lines["quantity"].astype("int64"),
            "unit_price": order_lines["unit_price"].astype(object),
            "line_amount": order_lines["line_amount"].astype(object),
            "is_cancellation": order_lines["is_cancellation"].astype(bool),
        }
    )
    return {"dim_date": dim_date, "dim_customer": dim_customer, "dim_product": dim_product, "fact_order_line": fact}


def read_lake_tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(order lines, products, customers) from the curated lake."""
    return lake.read_curated_order_lines(), lake.read_curated("products"), lake.read_curated("customers")


# --------------------------------------------------------------------------- connections


def connect() -> Any:
    """A connection to the warehouse: the embedded PostgreSQL locally, Redshift on aws."""
    if config.settings().is_local:
        from shoplake import stack

        return stack.postgres_connection()
    import awswrangler as wr

    secret = os.environ.get("SHOPLAKE_REDSHIFT_SECRET_ID")
    if not secret:
        raise WarehouseError(
            "target aws needs SHOPLAKE_REDSHIFT_SECRET_ID: the Secrets Manager secret of the "
            "Redshift cluster or workgroup (host, port, username, password, dbname)"
        )
    return wr.redshift.connect(secret_id=secret, boto3_session=config.configure_wrangler())


def _execute(con: Any, sql: str) -> None:
    cursor = con.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def create_schema(con: Any, schema: str | None = None) -> None:
    """Create the schema and the star's tables when missing (and, on aws, the Spectrum schema over Glue)."""
    schema = schema or warehouse_schema()
    target = config.settings().target
    _execute(con, f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for spec in STAR_SCHEMA.values():
        _execute(con, create_table_sql(spec, schema, target))
    if target == "aws":
        role = os.environ.get("SHOPLAKE_REDSHIFT_IAM_ROLE")
        if role:
            _execute(
                con,
                f"CREATE EXTERNAL SCHEMA IF NOT EXISTS {SPECTRUM_SCHEMA} FROM DATA CATALOG "
                f"DATABASE '{config.glue_database()}' IAM_ROLE '{role}'",
            )
    con.commit()


# --------------------------------------------------------------------------- loads


def load_warehouse(frames: dict[str, pd.DataFrame] | None = None, progress: bool = False) -> LoadResult:
    """Load the star schema from the curated lake; re-loading replaces the rows (never duplicates)."""
    import awswrangler as wr
    from tqdm.auto import tqdm

    if frames is None:
        order_lines, products, customers = read_lake_tables()
        frames = build_star(order_lines, products, customers)
        lake_rows = {"fact_order_line": len(order_lines), "dim_product": len(products), "dim_customer": len(customers)}
    else:
        lake_rows = {}
    schema = warehouse_schema()
    result = LoadResult(lake_rows=lake_rows)
    began = time.perf_counter()
    con = connect()
    try:
        create_schema(con, schema)
        for name in tqdm(list(STAR_SCHEMA), desc="load warehouse", unit="table", disable=not progress):
            df = frames[name][STAR_SCHEMA[name].column_names]
            if config.settings().is_local:
                wr.postgresql.to_sql(
                    df,
                    con,
                    table=name,
                    schema=schema,
                    mode="overwrite",
                    overwrite_method="truncate",
                    use_column_names=True,
                    chunksize=2000,
                    commit_transaction=False,
                )
            else:
                _copy_to_redshift(df, con, STAR_SCHEMA[name], schema)
            result.rows[name] = len(df)
        con.commit()
    except Exception:
        con.rollback()
        raise
    finally:
        con.close()
    result.seconds = time.perf_counter() - began
    log.info("loaded %d rows into %s in %.1f s", result.total_rows, schema, result.seconds)
    return result


def _copy_to_redshift(df: pd.DataFrame, con: Any, spec: TableSpec, schema: str) -> None:
    import awswrangler as wr

    from shoplake import infra

    role = os.environ.get("SHOPLAKE_REDSHIFT_IAM_ROLE")
    staging = f"s3://{infra.outputs()['bucket:artifacts']}/redshift-staging/{spec.name}/"
    wr.redshift.copy(
        df,
        path=staging,
        con=con,
        table=spec.name,
        schema=schema,
        iam_role=role,
        mode="overwrite",
        overwrite_method="truncate",
        commit_transaction=False,
        boto3_session=config.configure_wrangler(),
    )


def query_warehouse(sql: str) -> pd.DataFrame:
    """Run SQL on the warehouse (PostgreSQL locally, Redshift on aws)."""
    import awswrangler as wr

    con = connect()
    try:
        if config.settings().is_local:
            return wr.postgresql.read_sql_query(sql, con)
        return wr.redshift.read_sql_query(sql, con)
    finally:
        con.close()


def warehouse_counts() -> dict[str, int]:
    """Rows per star-schema table (0 for a table not created yet)."""
    schema = warehouse_schema()
    con = connect()
    counts: dict[str, int] = {}
    try:
        for name in STAR_SCHEMA:
            cursor = con.cursor()
            try:
                cursor.execute(f"SELECT count(*) FROM {schema}.{name}")
                counts[name] = int(cursor.fetchone()[0])
            except Exception:
                con.rollback()
                counts[name] = 0
            finally:
                cursor.close()
    finally:
        con.close()
    return counts
