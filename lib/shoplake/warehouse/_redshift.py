"""The warehouse database: a star schema (fact_order_line, dim_customer, dim_product, dim_date) loaded from the lake.

Two backends with the same verbs (``load``, ``query``, ``counts``), chosen once by :func:`open_warehouse`
(``config.by_target``): :class:`PostgresWarehouse` — the embedded PostgreSQL locally, loaded with ``COPY ... FROM
STDIN`` (CSV) over pg8000 and queried with ``wr.postgresql`` — and :class:`RedshiftWarehouse` on aws — Parquet staged
in the artifacts bucket, loaded with ``COPY ... FORMAT AS PARQUET``, queried with ``wr.redshift``, plus a Spectrum
external schema over the Glue database. :data:`STAR_SCHEMA` is the ONE definition of the tables: the DDL, the Arrow
schema of what is loaded (types, precision/scale, nullability) and Redshift's DISTKEY/SORTKEY all derive from it.
A load is one transaction (:func:`load_sql`): every table is emptied and refilled, or nothing changes.
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shoplake import config, lake
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

SPECTRUM_SCHEMA = "lake_spectrum"
REDSHIFT_STAGING_PREFIX = "redshift-staging/"
DIALECTS = ("postgresql", "redshift")


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


def create_table_sql(spec: TableSpec, schema: str, dialect: str = "postgresql") -> str:
    """CREATE TABLE in ``dialect`` — the ONE place Redshift-only clauses (DISTSTYLE/DISTKEY/SORTKEY) are added."""
    if dialect not in DIALECTS:
        raise WarehouseError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    columns = ",\n    ".join(f"{name} {sql_type}" for name, sql_type in spec.columns)
    sql = f"CREATE TABLE IF NOT EXISTS {schema}.{spec.name} (\n    {columns},\n    PRIMARY KEY ({spec.primary_key})\n)"
    if dialect == "redshift":
        sql += f"\nDISTSTYLE {spec.diststyle}"
        if spec.distkey:
            sql += f" DISTKEY ({spec.distkey})"
        if spec.sortkey:
            sql += f"\nCOMPOUND SORTKEY ({', '.join(spec.sortkey)})"
    return sql


def arrow_type(sql_type: str) -> Any:
    """The Arrow type that loads into the SQL column type exactly (``NUMERIC(12,2)`` → ``decimal128(12, 2)``)."""
    import pyarrow as pa

    base = sql_type.upper().replace("NOT NULL", "").strip()
    simple = {
        "SMALLINT": pa.int16(),
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "BOOLEAN": pa.bool_(),
        "DATE": pa.date32(),
        "TIMESTAMP": pa.timestamp("us"),
    }
    if base in simple:
        return simple[base]
    if re.fullmatch(r"VARCHAR\(\d+\)", base):
        return pa.string()
    match = re.fullmatch(r"NUMERIC\((\d+),\s*(\d+)\)", base)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    raise WarehouseError(f"no Arrow type for the column type {sql_type!r}: add it to shoplake.warehouse.arrow_type")


def arrow_schema(spec: TableSpec) -> Any:
    """The Arrow schema of ``spec`` (column order, types, NOT NULL → non-nullable): what every load writes."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(name, arrow_type(sql_type), nullable="NOT NULL" not in sql_type.upper())
            for name, sql_type in spec.columns
        ]
    )


def star_table(spec: TableSpec, df: pd.DataFrame) -> Any:
    """``df`` as an Arrow table of exactly :func:`arrow_schema` (a clear error for a null in a NOT NULL column)."""
    import pyarrow as pa

    schema = arrow_schema(spec)
    missing = [c for c in spec.column_names if c not in df.columns]
    if missing:
        raise WarehouseError(f"{spec.name}: the frame lacks the columns {missing}")
    for f in schema:
        if not f.nullable and df[f.name].isna().any():
            raise WarehouseError(
                f"{spec.name}.{f.name} is NOT NULL but {int(df[f.name].isna().sum())} rows are null: fix the lake"
            )
    try:
        return pa.Table.from_pandas(df[spec.column_names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise WarehouseError(f"{spec.name}: a value does not fit its column type: {exc}") from exc


def star_tables(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Every table of :data:`STAR_SCHEMA` as an Arrow table of its schema, in load order."""
    return {name: star_table(spec, frames[name]) for name, spec in STAR_SCHEMA.items()}


def load_sql(
    dialect: str, schema: str, sources: dict[str, str] | None = None, iam_role: str | None = None
) -> list[str]:
    """The statements of one load, in order: ONE transaction (``BEGIN`` … ``COMMIT``) that creates what is missing,
    empties and refills every table of the star.

    postgresql: ``TRUNCATE`` (transactional there) and ``COPY … FROM STDIN`` (CSV with a header);
    redshift: ``DELETE`` (Redshift's TRUNCATE commits at once) and ``COPY … FROM '<sources[table]>' FORMAT AS
    PARQUET`` with ``IAM_ROLE`` (the role's ARN, or ``default``: the role set as the cluster's default).
    """
    if dialect not in DIALECTS:
        raise WarehouseError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    statements = ["BEGIN", f"CREATE SCHEMA IF NOT EXISTS {schema}"]
    statements += [create_table_sql(spec, schema, dialect) for spec in STAR_SCHEMA.values()]
    if dialect == "postgresql":
        statements.append("TRUNCATE " + ", ".join(f"{schema}.{name}" for name in STAR_SCHEMA))
    for name, spec in STAR_SCHEMA.items():
        columns = ", ".join(spec.column_names)
        if dialect == "postgresql":
            statements.append(f"COPY {schema}.{name} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER true)")
        else:
            if not sources or name not in sources:
                raise WarehouseError(f"no staged Parquet for {name}: stage the star before loading Redshift")
            role = "default" if not iam_role or iam_role == "default" else f"'{iam_role}'"
            statements.append(f"DELETE FROM {schema}.{name}")
            statements.append(f"COPY {schema}.{name} FROM '{sources[name]}' IAM_ROLE {role} FORMAT AS PARQUET")
    statements.append("COMMIT")
    return statements


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


# --------------------------------------------------------------------------- the two backends


class Warehouse:
    """The warehouse database; :func:`open_warehouse` picks the target's. Same verbs on both sides."""

    dialect = "postgresql"

    def __init__(self, schema: str | None = None) -> None:
        self.schema = schema or warehouse_schema()

    def connect(self) -> Any:
        """A DB-API connection (pg8000 / redshift_connector)."""
        raise NotImplementedError

    def load(self, tables: dict[str, Any]) -> None:
        """Replace every table of the star with ``tables`` (Arrow tables of :func:`arrow_schema`) in one transaction."""
        raise NotImplementedError

    def read_sql(self, sql: str, con: Any) -> pd.DataFrame:
        raise NotImplementedError

    def query(self, sql: str) -> pd.DataFrame:
        """Run SQL on the warehouse; a DataFrame."""
        con = self.connect()
        try:
            return self.read_sql(sql, con)
        finally:
            con.close()

    def counts(self) -> dict[str, int]:
        """Rows per star-schema table (0 for a table not created yet)."""
        con = self.connect()
        counts: dict[str, int] = {}
        try:
            for name in STAR_SCHEMA:
                cursor = con.cursor()
                try:
                    cursor.execute(f"SELECT count(*) FROM {self.schema}.{name}")
                    counts[name] = int(cursor.fetchone()[0])
                except Exception:
                    con.rollback()
                    counts[name] = 0
                finally:
                    cursor.close()
        finally:
            con.close()
        return counts

    def _run_script(self, con: Any, statements: list[str], streams: dict[str, Any] | None = None) -> None:
        """Execute :func:`load_sql`'s statements in autocommit mode, so BEGIN/COMMIT are exactly the script's;
        on any error the transaction is rolled back and nothing changed."""
        streams = streams or {}
        con.autocommit = True
        cursor = con.cursor()
        sql = ""
        try:
            for sql in statements:
                stream = next(
                    (data for name, data in streams.items() if sql.startswith(f"COPY {self.schema}.{name} ")), None
                )
                if stream is not None:
                    cursor.execute(sql, stream=stream)
                else:
                    cursor.execute(sql)
        except Exception as exc:
            try:
                cursor.execute("ROLLBACK")
            except Exception:  # the connection itself failed: the server rolls back the open transaction
                log.debug("rollback after a failed load did not reach the server", exc_info=True)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WarehouseError(
                f"the {self.dialect} load failed at `{sql.splitlines()[0][:80]}`: {first_line[:300]} "
                "(rolled back: the warehouse is as it was before the load)"
            ) from exc
        finally:
            cursor.close()


class PostgresWarehouse(Warehouse):
    """Local: the embedded PostgreSQL; loaded with COPY FROM STDIN (CSV), queried with ``wr.postgresql``."""

    dialect = "postgresql"

    def connect(self) -> Any:
        from shoplake import local_services

        return local_services.postgres_connection()

    def load(self, tables: dict[str, Any]) -> None:
        streams = {name: _csv_stream(table) for name, table in tables.items()}
        con = self.connect()
        try:
            self._run_script(con, load_sql(self.dialect, self.schema), streams)
        finally:
            con.close()

    def read_sql(self, sql: str, con: Any) -> pd.DataFrame:
        import awswrangler as wr

        return wr.postgresql.read_sql_query(sql, con)


COPY_CHUNK_BYTES = 1 << 20


def _csv_stream(table: Any) -> list[bytes]:
    """An Arrow table as CSV for PostgreSQL's COPY (a header, every value quoted, a null an empty unquoted field), in
    1 MiB messages: pg8000 sends an iterable's items as they are, but a file object in 8 KiB reads."""
    import pyarrow.csv as pacsv

    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=True, quoting_style="all_valid"))
    data = sink.getbuffer()
    return [bytes(data[i : i + COPY_CHUNK_BYTES]) for i in range(0, len(data), COPY_CHUNK_BYTES)]


class RedshiftWarehouse(Warehouse):
    """aws: Redshift (provisioned or Serverless) through ``wr.redshift``; loads are Parquet COPYs from S3.

    Needs ``SHOPLAKE_REDSHIFT_SECRET_ID`` (a Secrets Manager secret with host, port, username, password, dbname)
    and a role Redshift may assume to read the staging prefix (``SHOPLAKE_REDSHIFT_IAM_ROLE``, or the cluster's
    default IAM role). ``SHOPLAKE_REDSHIFT_IAM_ROLE`` also creates the Spectrum schema over the Glue database.
    """

    dialect = "redshift"

    def __init__(self, schema: str | None = None, secret_id: str | None = None, iam_role: str | None = None) -> None:
        super().__init__(schema)
        knobs = config.settings()
        self.secret_id = secret_id or knobs.redshift_secret_id
        self.iam_role = iam_role or knobs.redshift_iam_role

    def connect(self) -> Any:
        import awswrangler as wr

        if not self.secret_id:
            raise WarehouseError(
                "target aws needs SHOPLAKE_REDSHIFT_SECRET_ID: the Secrets Manager secret of the Redshift cluster "
                "or Serverless workgroup (host, port, username, password, dbname)"
            )
        try:
            return wr.redshift.connect(secret_id=self.secret_id, boto3_session=config.configure_wrangler())
        except Exception as exc:
            raise WarehouseError(
                f"cannot connect to Redshift with the secret {self.secret_id} ({type(exc).__name__}: "
                f"{str(exc)[:200]}): check the secret's host/port/dbname, that the cluster or Serverless workgroup "
                "is available and reachable from here (publicly accessible or via VPN), and your secretsmanager "
                "permission"
            ) from exc

    def staging_root(self) -> str:
        from shoplake import infra

        return f"s3://{infra.bucket_name('artifacts')}/{REDSHIFT_STAGING_PREFIX}{self.schema}/"

    def stage(self, tables: dict[str, Any]) -> dict[str, str]:
        """Write each table as one Parquet file of its exact schema under a fresh staging prefix; table → prefix."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        run = f"{self.staging_root()}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}/"
        bucket, _, root = run.removeprefix("s3://").partition("/")
        s3 = config.client("s3")
        sources: dict[str, str] = {}
        for name, table in tables.items():
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="snappy", coerce_timestamps="us")
            s3.put_object(
                Bucket=bucket, Key=f"{root}{name}/part-00000.snappy.parquet", Body=sink.getvalue().to_pybytes()
            )
            sources[name] = f"{run}{name}/"
        return sources

    def unstage(self, sources: dict[str, str]) -> None:
        """Delete the staged files (they are copies; nothing is left to pay for)."""
        s3 = config.client("s3")
        for path in sources.values():
            bucket, _, prefix = path.removeprefix("s3://").partition("/")
            keys = lake.list_keys(bucket, prefix)
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})

    def load(self, tables: dict[str, Any]) -> None:
        sources = self.stage(tables)
        try:
            con = self.connect()
            try:
                self._create_spectrum_schema(con)
                self._run_script(con, load_sql(self.dialect, self.schema, sources, self.iam_role))
            finally:
                con.close()
        finally:
            self.unstage(sources)

    def _create_spectrum_schema(self, con: Any) -> None:
        """Spectrum over the Glue database (outside the load's transaction: external DDL cannot run inside one)."""
        if not self.iam_role:
            return
        con.autocommit = True
        cursor = con.cursor()
        try:
            cursor.execute(
                f"CREATE EXTERNAL SCHEMA IF NOT EXISTS {SPECTRUM_SCHEMA} FROM DATA CATALOG "
                f"DATABASE '{config.glue_database()}' IAM_ROLE '{self.iam_role}'"
            )
        finally:
            cursor.close()

    def read_sql(self, sql: str, con: Any) -> pd.DataFrame:
        import awswrangler as wr

        return wr.redshift.read_sql_query(sql, con)


def open_warehouse() -> Warehouse:
    """The target's warehouse database: PostgreSQL locally, Redshift on aws (the one place that chooses)."""
    return config.by_target(local=PostgresWarehouse, aws=RedshiftWarehouse)()


# --------------------------------------------------------------------------- verbs


def load_warehouse(frames: dict[str, pd.DataFrame] | None = None, progress: bool = False) -> LoadResult:
    """Load the star schema from the curated lake (or ``frames``); re-loading replaces the rows (never duplicates)."""
    from tqdm.auto import tqdm

    if frames is None:
        order_lines, products, customers = read_lake_tables()
        frames = build_star(order_lines, products, customers)
        lake_rows = {"fact_order_line": len(order_lines), "dim_product": len(products), "dim_customer": len(customers)}
    else:
        lake_rows = {}
    db = open_warehouse()
    result = LoadResult(lake_rows=lake_rows)
    began = time.perf_counter()
    with tqdm(total=2, desc=f"load {db.dialect}", unit="step", disable=not progress) as bar:
        tables = star_tables(frames)
        bar.update()
        db.load(tables)
        bar.update()
    result.rows = {name: table.num_rows for name, table in tables.items()}
    result.seconds = time.perf_counter() - began
    log.info("loaded %d rows into %s in %.1f s", result.total_rows, db.schema, result.seconds)
    return result


def query_warehouse(sql: str) -> pd.DataFrame:
    """Run SQL on the warehouse (PostgreSQL locally, Redshift on aws)."""
    return open_warehouse().query(sql)


def warehouse_counts() -> dict[str, int]:
    """Rows per star-schema table (0 for a table not created yet)."""
    return open_warehouse().counts()


def monthly_revenue() -> pd.DataFrame:
    """Order lines and net revenue per month, from the star (fact joined to dim_date): year, month, lines, net."""
    schema = warehouse_schema()
    df = query_warehouse(
        f"SELECT d.year, d.month, count(*) AS lines, sum(f.line_amount) AS net_revenue "
        f"FROM {schema}.fact_order_line f JOIN {schema}.dim_date d ON d.date_key = f.date_key "
        f"GROUP BY d.year, d.month ORDER BY d.year, d.month"
    )
    return df.astype({"year": "int64", "month": "int64", "lines": "int64"})
