"""The star schema in the embedded PostgreSQL: row counts equal the lake's, re-loading keeps them, money exact."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from shoplake import lake, warehouse

LAKE_RESOURCES = {"s3_bucket", "iam_role", "firehose_delivery_stream", "glue_database"}


def test_redshift_only_clauses_live_in_one_place():
    fact = warehouse.STAR_SCHEMA["fact_order_line"]
    aws = warehouse.create_table_sql(fact, "s", "redshift")
    local = warehouse.create_table_sql(fact, "s", "postgresql")
    assert "DISTKEY (customer_id)" in aws and "SORTKEY (date_key)" in aws
    assert "DIST" not in local and "SORTKEY" not in local
    assert "DISTSTYLE ALL" in warehouse.create_table_sql(warehouse.STAR_SCHEMA["dim_date"], "s", "redshift")


@pytest.fixture(scope="module")
def loaded(local_stack, tiny_dataset):
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type in LAKE_RESOURCES])
    if not lake.curated_exists("order_lines"):
        lake.deliver_orders(tiny_dataset.order_lines)
        lake.curate_orders()
    first = warehouse.load_warehouse()
    return first


def test_warehouse_row_counts_equal_lake_counts_and_reload_keeps_them(loaded):
    order_lines = lake.read_curated_order_lines()
    days = order_lines["order_date"].astype(str)
    expected = {
        "fact_order_line": len(order_lines),
        "dim_product": len(lake.read_curated("products")),
        "dim_customer": len(lake.read_curated("customers")),
        "dim_date": (max(pd_date(d) for d in days) - min(pd_date(d) for d in days)).days + 1,
    }
    assert warehouse.warehouse_counts() == expected == loaded.rows
    again = warehouse.load_warehouse()
    assert warehouse.warehouse_counts() == expected == again.rows


def pd_date(text: str):
    import datetime

    return datetime.date.fromisoformat(text)


def test_money_and_keys_survive_the_load(loaded):
    order_lines = lake.read_curated_order_lines()
    schema = warehouse.warehouse_schema()
    totals = warehouse.query_warehouse(
        f"SELECT sum(line_amount) AS amount, count(DISTINCT event_id) AS events, "
        f"count(*) FILTER (WHERE customer_id IS NULL) AS guests FROM {schema}.fact_order_line"
    )
    assert Decimal(totals["amount"][0]) == sum(order_lines["line_amount"])
    assert int(totals["events"][0]) == len(order_lines)
    assert int(totals["guests"][0]) == int(order_lines["customer_id"].isna().sum())
    orphans = warehouse.query_warehouse(
        f"SELECT count(*) AS n FROM {schema}.fact_order_line f LEFT JOIN {schema}.dim_date d "
        f"ON d.date_key = f.date_key LEFT JOIN {schema}.dim_product p ON p.stock_code = f.stock_code "
        f"WHERE d.date_key IS NULL OR p.stock_code IS NULL"
    )
    assert int(orphans["n"][0]) == 0


def test_a_failed_load_changes_nothing(loaded):
    """The load is one transaction: a row PostgreSQL rejects (a repeated primary key) rolls back every table."""
    before = warehouse.warehouse_counts()
    frames = warehouse.build_star(*_redshift_lake_tables())
    fact = frames["fact_order_line"]
    frames["fact_order_line"] = pd.concat([fact, fact.iloc[:1]], ignore_index=True)
    frames["dim_date"] = frames["dim_date"].iloc[:1]  # the earlier tables of the load shrink, then the fact fails
    with pytest.raises(
        warehouse.WarehouseError, match=r"postgresql load failed at `COPY .*fact_order_line.*rolled back"
    ):
        warehouse.load_warehouse(frames)
    assert warehouse.warehouse_counts() == before


def test_postgresql_load_is_one_transaction():
    statements = warehouse.load_sql("postgresql", "s")
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert not [s for s in statements[1:-1] if s.split()[0] in ("BEGIN", "COMMIT", "END", "ROLLBACK", "DROP")]
    truncate = next(i for i, s in enumerate(statements) if s.startswith("TRUNCATE"))
    copies = [i for i, s in enumerate(statements) if s.startswith("COPY ")]
    assert len(copies) == len(warehouse.STAR_SCHEMA) and truncate < min(copies)


def _redshift_lake_tables():
    return lake.read_curated_order_lines(), lake.read_curated("products"), lake.read_curated("customers")
