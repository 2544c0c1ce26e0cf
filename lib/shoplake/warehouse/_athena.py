"""Athena SQL over the lake: the query files (Trino dialect, written once), run by Athena on aws, by DuckDB locally.

Locally each query is translated with sqlglot (trino → duckdb); every table it names is looked up in the Glue
database (its S3 location) and its Parquet files are read from the emulator's S3 with boto3 + pyarrow into an
Arrow table DuckDB scans (DuckDB's httpfs extension is not needed, so it works offline).
Results come back as pandas DataFrames with decimals kept as ``Decimal`` (exact to the cent) on both targets.
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
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

QUERY_DIR = Path(__file__).with_name("queries")


class QueryError(ShoplakeError):
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
            raise QueryError(f"no query {str(name_or_file)!r}: give a .sql file path or one of {list_queries()}")
    sql = path.read_text(encoding="utf-8").strip().rstrip(";")
    if not sql:
        raise QueryError(f"{path.name} is empty: write one SELECT statement in Athena (Trino) SQL")
    return Query(path.stem, path, sql)


# --------------------------------------------------------------------------- parsing and translation


def _parse(query: Query) -> Any:
    from sqlglot.errors import ParseError, TokenError

    try:
        statements = _parse_sql(query.sql)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        raise QueryError(
            f"{query.where(first.get('line'))}: SQL does not parse (Athena/Trino dialect): "
            f"{first.get('description', exc)}"
        ) from exc
    except TokenError as exc:
        raise QueryError(f"{query.where(_line_of_token_error(str(exc)))}: SQL does not parse: {exc}") from exc
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise QueryError(f"{query.path.name}: expected exactly one statement, found {len(statements)}")
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


# --------------------------------------------------------------------------- running


def run_query(name_or_file: str | Path, connection: LocalConnection | None = None) -> pd.DataFrame:
    """Run a query of the set (or a .sql file) on the current target; returns a DataFrame."""
    query = load_query(name_or_file)
    if config.settings().is_local:
        return _run_duckdb(query, connection)
    return _run_athena(query)


def run_query_set(names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Every query of the set (or ``names``) → its result; locally one DuckDB connection serves them all."""
    connection = local_connection() if config.settings().is_local else None
    return {name: run_query(name, connection) for name in (names or list_queries())}


def _run_athena(query: Query) -> pd.DataFrame:
    import awswrangler as wr

    referenced_tables(query)  # parse errors are reported with the file and line before anything is sent
    session = config.configure_wrangler()
    from shoplake import infra

    output = f"s3://{infra.outputs()['bucket:artifacts']}/athena-results/"
    try:
        return wr.athena.read_sql_query(
            query.sql, database=config.glue_database(), ctas_approach=False, s3_output=output, boto3_session=session
        )
    except Exception as exc:  # Athena reports "line L:C: message" in the original SQL's coordinates
        message = str(exc)
        match = re.search(r"line (\d+):\d+", message)
        raise QueryError(f"{query.where(int(match[1]) if match else None)}: Athena failed: {message}") from exc


# --------------------------------------------------------------------------- local: DuckDB over the lake


class LocalConnection:
    """A DuckDB connection in UTC plus the Glue tables already attached to it (each is attached once)."""

    def __init__(self) -> None:
        import duckdb

        self.con = duckdb.connect()
        self.con.sql("SET TimeZone = 'UTC'")
        self.attached: set[str] = set()

    def close(self) -> None:
        self.con.close()


def local_connection() -> LocalConnection:
    """A DuckDB connection for :func:`run_query` locally (tables are attached from Glue on first use)."""
    return LocalConnection()


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


def _run_duckdb(query: Query, local: LocalConnection | None = None) -> pd.DataFrame:
    import duckdb

    local = local or local_connection()
    con = local.con
    tables = referenced_tables(query)
    for table, line in tables.items():
        if table in local.attached:
            continue
        definition = glue_table(table)
        if definition is None:
            raise QueryError(
                f"{query.where(line)}: unknown table {table!r}: it is not in the Glue database "
                f"{config.glue_database()} (tables there: {_catalog_tables() or 'none'}). Curate the "
                "lake (shoplake.lake.curate_orders) and run `shoplake warehouse crawl`, or fix the name"
            )
        attach_table(con, table, definition)
        local.attached.add(table)
    sql = translate(query)
    try:
        reader = con.sql(sql).arrow()
    except duckdb.Error as exc:
        message = str(exc).splitlines()[0]
        quoted = re.findall(r'"([^"]+)"', message)
        line = next((_locate(query, q) for q in quoted if _locate(query, q)), None)
        raise QueryError(f"{query.where(line)}: the query failed: {message}") from exc
    table = reader.read_all() if hasattr(reader, "read_all") else reader
    return arrow_to_frame(table)


def arrow_to_frame(table: Any) -> pd.DataFrame:
    """Arrow result → DataFrame: whole-number decimals (DuckDB's HUGEINT sums) become int64, money stays Decimal."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if (pa.types.is_decimal(f.type) and f.type.scale == 0) or pa.types.is_integer(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get)
