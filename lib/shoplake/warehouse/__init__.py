"""The warehouse: Glue catalog + crawler, the SQL engine over the lake (DuckDB | Athena), the star schema (PostgreSQL |
Redshift).

Verbs: :func:`crawl`, :func:`run_query`, :func:`run_query_set`, :func:`list_queries`, :func:`load_warehouse`,
:func:`warehouse_counts`, :func:`query_warehouse`, :func:`monthly_revenue`, :func:`revenue_reconciliation`,
:func:`run_reference` (the pandas yardstick of each query). Backends: :func:`open_engine` (``DuckDBEngine`` |
``AthenaEngine``) and :func:`open_warehouse` (``PostgresWarehouse`` | ``RedshiftWarehouse``), each chosen once.
"""

from shoplake.warehouse._athena import (
    AthenaEngine,
    DuckDBEngine,
    SqlEngine,
    SqlQueryError,
    athena_workgroup,
    list_queries,
    load_query,
    open_engine,
    run_query,
    run_query_set,
    translate,
)
from shoplake.warehouse._catalog import catalog_tables, crawl
from shoplake.warehouse._reconcile import revenue_reconciliation
from shoplake.warehouse._redshift import (
    STAR_SCHEMA,
    PostgresWarehouse,
    RedshiftWarehouse,
    Warehouse,
    WarehouseError,
    arrow_schema,
    build_star,
    create_table_sql,
    load_sql,
    load_warehouse,
    monthly_revenue,
    open_warehouse,
    query_warehouse,
    star_tables,
    warehouse_counts,
    warehouse_schema,
)
from shoplake.warehouse._reference import run_reference

__all__ = [
    "STAR_SCHEMA",
    "AthenaEngine",
    "DuckDBEngine",
    "PostgresWarehouse",
    "SqlQueryError",
    "RedshiftWarehouse",
    "SqlEngine",
    "Warehouse",
    "WarehouseError",
    "arrow_schema",
    "athena_workgroup",
    "build_star",
    "catalog_tables",
    "crawl",
    "create_table_sql",
    "list_queries",
    "load_query",
    "load_sql",
    "load_warehouse",
    "monthly_revenue",
    "open_engine",
    "open_warehouse",
    "query_warehouse",
    "revenue_reconciliation",
    "run_query",
    "run_query_set",
    "run_reference",
    "star_tables",
    "translate",
    "warehouse_counts",
    "warehouse_schema",
]
