"""The warehouse: Glue catalog + crawler, Athena SQL over the lake (DuckDB locally), the Redshift star schema.

Verbs: :func:`crawl`, :func:`run_query`, :func:`run_query_set`, :func:`list_queries`, :func:`load_warehouse`,
:func:`warehouse_counts`, :func:`query_warehouse`, :func:`run_reference` (the pandas yardstick of each query).
"""

from shoplake.warehouse._athena import QueryError, list_queries, load_query, run_query, run_query_set, translate
from shoplake.warehouse._catalog import catalog_tables, crawl
from shoplake.warehouse._redshift import (
    STAR_SCHEMA,
    build_star,
    create_table_sql,
    load_warehouse,
    query_warehouse,
    warehouse_counts,
)
from shoplake.warehouse._reference import run_reference

__all__ = [
    "STAR_SCHEMA",
    "QueryError",
    "build_star",
    "catalog_tables",
    "crawl",
    "create_table_sql",
    "list_queries",
    "load_query",
    "load_warehouse",
    "query_warehouse",
    "run_query",
    "run_query_set",
    "run_reference",
    "translate",
    "warehouse_counts",
]
