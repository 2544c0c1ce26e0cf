"""The SQL engine over the lake: query files in Athena's (Trino) dialect, written once, run by one of two backends.

:func:`open_engine` chooses once (``config.by_target``): :class:`DuckDBEngine` locally — each query is translated
with sqlglot (trino → duckdb); every table it names is looked up in the Glue database (its S3 location) and its
Parquet files are read from S3 with boto3 + pyarrow into an Arrow table DuckDB scans (no httpfs, works offline) —
or :class:`AthenaEngine` on aws (``wr.athena`` in the workgroup ``SHOPLAKE_ATHENA_WORKGROUP``, default ``primary``,
results under ``s3://<artifacts bucket>/athena-results/``). Both have the same verbs (``run``, ``close``) and return
pandas DataFrames with money kept as ``Decimal`` (exact to the cent) and counts as integers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import config
from shoplake.errors import ShoplakeError, read_user_text

log = logging.getLogger(__name__)

QUERY_DIR = Path(__file__).with_name("queries")


class SqlQueryError(ShoplakeError):
    """A query file is missing, does not parse, names an unknown table or fails to run; says file and line."""


@dataclass(frozen=True)
class Query:
    """One query file: its name (file stem), path and Athena (Trino) SQL text."""

    name: str
    path: Path
    sql: str

    def where(self, line: int | None) -> str:
        return f"{self.path.name}" + (f" line {line}" if line else "")


def list_queries() -> list[str]:
    """Names of the query set (the ``queries/*.sql`` files), sorted."""
    return sorted(p.stem for p in QUERY_DIR.glob("*.sql"))


def load_query(name_or_file: str | Path) -> Query:
    """A query of the set by name (``daily_revenue``) or any ``.sql`` file by path."""
    candidate = Path(name_or_file)
    if candidate.suffix == ".sql" and candidate.exists():
        path = candidate
    else:
        path = QUERY_DIR / f"{candidate.stem if candidate.suffix == '.sql' else name_or_file}.sql"
        if not path.exists():
            raise SqlQueryError(f"no query {str(name_or_file)!r}: give a .sql file path or one of {list_queries()}")
    sql = read_user_text(path, "the SQL file", SqlQueryError).strip().rstrip(";")
    if not sql:
        raise SqlQueryError(f"{path.name} is empty: write one SELECT statement in Athena (Trino) SQL")
    return Query(path.stem, path, sql)


# --------------------------------------------------------------------------- parsing and translation


def _parse(query: Query) -> Any:
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = _parse_sql(query.sql)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise SqlQueryError(
            f"{query.where(first.get('line'))}: SQL does not parse (Athena/Trino dialect): "
            f"{first.get('description', exc)}"
        ) from exc
    except TokenError as exc:
        raise SqlQueryError(f"{query.where(_line_of_token_error(str(exc)))}: SQL does not parse: {exc}") from exc
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise SqlQueryError(f"{query.path.name}: expected exactly one statement, found {len(statements)}")
    return statements[0]


@lru_cache(maxsize=128)
def _parse_sql(sql: str) -> list[Any]:
    import sqlglot

    return sqlglot.parse(sql, read="trino")


def _line_of_token_error(message: str) -> int | None:
    match = re.search(r"[Ll]ine (\d+)", message)
    return int(match[1]) if match else None


def referenced_tables(query: Query) -> dict[str, int | None]:
    """Tables the query reads (CTE names excluded) → the line of their first mention."""
    from sqlglot import exp

    tree = _parse(query)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables: dict[str, int | None] = {}
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or name in ctes or name in tables:
            continue
        tables[name] = (table.this.meta or {}).get("line") if table.this is not None else None
    return tables


def translate(query: Query) -> str:
    """The query in DuckDB's dialect (sqlglot trino → duckdb)."""
    return _translate_sql(query)


@lru_cache(maxsize=128)
def _translate_sql(query: Query) -> str:
    return _parse(query).sql(dialect="duckdb", pretty=True)


def _locate(query: Query, needle: str) -> int | None:
    """The first line of the original SQL that mentions ``needle`` (for errors raised on the translated SQL)."""
    pattern = re.compile(rf"\b{re.escape(needle)}\b", re.IGNORECASE)
    for number, line in enumerate(query.sql.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


# --------------------------------------------------------------------------- the engines

ATHENA_RESULTS_PREFIX = "athena-results/"


class SqlEngine:
    """A SQL engine over the Glue catalog of the lake; :func:`open_engine` picks the target's."""

    name = "sql"

    def run(self, query: Query) -> pd.DataFrame:
        """The query's result as a DataFrame (raises :class:`SqlQueryError` saying file and line)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine holds (connections, attached tables)."""

    def __enter__(self) -> SqlEngine:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


class DuckDBEngine(SqlEngine):
    """Local: DuckDB in UTC; each Glue table a query names is read from S3 once and attached (zero copy)."""

    name = "duckdb"

    def __init__(self) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.sql("SET TimeZone = 'UTC'")
        self.attached: set[str] = set()

    def close(self) -> None:
        self.con.close()

    def run(self, query: Query) -> pd.DataFrame:
        import duckdb

        tables = referenced_tables(query)
        for table, line in tables.items():
            if table in self.attached:
                continue
            definition = glue_table(table)
            if definition is None:
                raise SqlQueryError(
                    f"{query.where(line)}: unknown table {table!r}: it is not in the Glue database "
                    f"{config.glue_database()} (tables there: {_catalog_tables() or 'none'}). Curate the "
                    "lake (shoplake.lake.curate_orders) and run `shoplake warehouse crawl`, or fix the name"
                )
            attach_table(self.con, table, definition)
            self.attached.add(table)
        sql = translate(query)
        try:
            reader = self.con.sql(sql).arrow()
        except duckdb.Error as exc:
            message = str(exc).splitlines()[0]
            quoted = re.findall(r'"([^"]+)"', message)
            line = next((_locate(query, q) for q in quoted if _locate(query, q)), None)
            raise SqlQueryError(f"{query.where(line)}: the query failed: {message}") from exc
        table = reader.read_all() if hasattr(reader, "read_all") else reader
        return arrow_to_frame(table)


def athena_workgroup() -> str:
    """The Athena workgroup queries run in (``SHOPLAKE_ATHENA_WORKGROUP``, default ``primary``)."""
    return config.settings().athena_workgroup


class AthenaEngine(SqlEngine):
    """aws: ``wr.athena.read_sql_query`` in the workgroup, results written under the artifacts bucket."""

    name = "athena"

    def __init__(self, workgroup: str | None = None, output: str | None = None) -> None:
        from shoplake import infra

        self.workgroup = workgroup or athena_workgroup()
        self.output = output or f"s3://{infra.bucket_name('artifacts')}/{ATHENA_RESULTS_PREFIX}"
        self.session = config.configure_wrangler()

    def run(self, query: Query) -> pd.DataFrame:
        import awswrangler as wr

        referenced_tables(query)  # parse errors are reported with the file and line before anything is sent
        try:
            df = wr.athena.read_sql_query(
                query.sql,
                database=config.glue_database(),
                ctas_approach=False,
                workgroup=self.workgroup,
                s3_output=self.output,
                keep_files=False,
                boto3_session=self.session,
            )
        except Exception as exc:  # Athena reports "line L:C: message" in the original SQL's coordinates
            message = str(exc)
            match = re.search(r"line (\d+):\d+", message)
            raise SqlQueryError(
                f"{query.where(int(match[1]) if match else None)}: Athena failed (workgroup {self.workgroup}): "
                f"{message}"
            ) from exc
        return _plain_frame(df)


def _plain_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Athena's nullable dtypes → the local engine's: integers without nulls int64, strings ``string``."""
    out = df.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if pd.api.types.is_integer_dtype(dtype) and not out[col].isna().any():
            out[col] = out[col].astype("int64")
        elif pd.api.types.is_object_dtype(dtype) and out[col].map(lambda v: v is None or isinstance(v, str)).all():
            out[col] = out[col].astype(pd.StringDtype())
    return out


def open_engine() -> SqlEngine:
    """The target's SQL engine: DuckDB over the lake locally, Athena on aws (the one place that chooses)."""
    return config.by_target(local=DuckDBEngine, aws=AthenaEngine)()


# --------------------------------------------------------------------------- running


def run_query(name_or_file: str | Path, engine: SqlEngine | None = None) -> pd.DataFrame:
    """Run a query of the set (or a .sql file) on the target's engine (or ``engine``); returns a DataFrame."""
    query = load_query(name_or_file)
    if engine is not None:
        return engine.run(query)
    with open_engine() as own:
        return own.run(query)


def run_query_set(names: list[str] | None = None, engine: SqlEngine | None = None) -> dict[str, pd.DataFrame]:
    """Every query of the set (or ``names``) → its result, all on one engine (DuckDB reads each table once)."""
    if engine is not None:
        return {name: run_query(name, engine) for name in (names or list_queries())}
    with open_engine() as own:
        return {name: run_query(name, own) for name in (names or list_queries())}


def glue_table(table: str) -> dict[str, Any] | None:
    """The Glue table of the shoplake database (location, partition keys), or None when it is not registered."""
    glue = config.client("glue")
    try:
        return glue.get_table(DatabaseName=config.glue_database(), Name=table)["Table"]
    except glue.exceptions.EntityNotFoundException:
        return None


def _catalog_tables() -> list[str]:
    glue = config.client("glue")
    names: list[str] = []
    try:
        for page in glue.get_paginator("get_tables").paginate(DatabaseName=config.glue_database()):
            names.extend(t["Name"] for t in page["TableList"])
    except glue.exceptions.EntityNotFoundException:
        pass
    return sorted(names)


def attach_table(con: Any, table: str, definition: dict[str, Any]) -> None:
    """Expose a Glue table to DuckDB as ``table``: its Parquet files at the Glue location, read from S3 once.

    The files are fetched in parallel into one Arrow table that DuckDB scans in place (zero copy), so a connection
    running the whole query set reads the lake once, not once per query.
    """
    from shoplake.lake import read_arrow

    con.register(table, read_arrow(definition["StorageDescriptor"]["Location"]))


def arrow_to_frame(table: Any) -> pd.DataFrame:
    """Arrow result → DataFrame: whole-number decimals (DuckDB's HUGEINT sums) become int64, money stays Decimal."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if (pa.types.is_decimal(f.type) and f.type.scale == 0) or pa.types.is_integer(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get)


def local_connection() -> DuckDBEngine:
    """A local DuckDB engine (kept for bench/bench_warehouse.py, which attaches in-memory tables to ``.con``)."""
    return DuckDBEngine()
