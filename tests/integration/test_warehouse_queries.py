"""The Athena query set: every file translates to DuckDB and runs; results equal pandas; errors name file and line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from shoplake import lake, warehouse
from shoplake.warehouse import _athena

QUERY_FILES = sorted(_athena.QUERY_DIR.glob("*.sql"))
EXPECTED_QUERIES = {
    "daily_revenue",
    "revenue_by_country",
    "top_products",
    "basket_size",
    "repeat_customer_rate",
    "cohort_retention",
    "rfm_segments",
    "france_best_sellers",
}
LAKE_RESOURCES = {"s3_bucket", "iam_role", "firehose_delivery_stream", "glue_database"}


def _fixture_lines() -> pd.DataFrame:
    """A few hand-made curated order lines (two countries, a cancellation, a guest, two months)."""
    rows = [
        ("536365", 0, "85123A", 6, "2024-01-03T08:26:00Z", "2.55", "17850", "France", False),
        ("536365", 1, "71053", 6, "2024-01-03T08:26:00Z", "3.39", "17850", "France", False),
        ("536366", 0, "85123A", 2, "2024-01-04T09:00:00Z", "2.55", None, "Germany", False),
        ("C536367", 0, "71053", -1, "2024-01-05T10:00:00Z", "3.39", "17850", "France", True),
        ("536368", 0, "22423", 1, "2024-02-10T11:00:00Z", "12.75", "17850", "France", False),
        ("536369", 0, "22423", 3, "2024-02-11T12:00:00Z", "12.75", "13047", "Germany", False),
    ]
    df = pd.DataFrame(
        rows,
        columns=[
            "invoice_no",
            "line_no",
            "stock_code",
            "quantity",
            "ts",
            "unit_price",
            "customer_id",
            "country",
            "is_cancellation",
        ],
    )
    df["event_id"] = df["invoice_no"] + "-" + df["line_no"].astype(str)
    df["description"] = "ITEM " + df["stock_code"]
    df["invoice_ts"] = pd.to_datetime(df.pop("ts"), utc=True)
    df["unit_price"] = df["unit_price"].map(Decimal)
    df["line_amount"] = [p * q for p, q in zip(df["unit_price"], df["quantity"], strict=True)]
    df["order_date"] = df["invoice_ts"].dt.strftime("%Y-%m-%d")
    return df


def test_the_query_set_is_complete():
    assert {p.stem for p in QUERY_FILES} == EXPECTED_QUERIES == set(warehouse.list_queries())


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.stem)
def test_translation_of_every_query_runs_on_duckdb(path):
    """Walks the queries folder: trino → duckdb with sqlglot, run on tables shaped like the curated lake."""
    import pyarrow as pa

    from shoplake.lake import ORDER_LINE_TYPES, PRODUCT_TYPES, arrow_type

    lines = _fixture_lines()
    products = lake.derive_products(lines)
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    for name, frame, types in (("order_lines", lines, ORDER_LINE_TYPES), ("products", products, PRODUCT_TYPES)):
        schema = pa.schema([(c, arrow_type(t)) for c, t in types.items()])
        con.register(name, pa.Table.from_pandas(frame[list(types)], schema=schema, preserve_index=False))
    query = warehouse.load_query(path)
    result = _athena.arrow_to_frame(con.sql(warehouse.translate(query)).arrow().read_all())
    expected = warehouse.run_reference(query.name, lines, products)
    assert_same_result(result, expected)


def assert_same_result(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns, same rows in the same order: counts exact, money to the cent, rates to 1e-4."""
    assert list(result.columns) == list(expected.columns)
    assert len(result) == len(expected), f"{len(result)} rows, pandas has {len(expected)}"
    for column in result.columns:
        got, want = result[column].tolist(), expected[column].tolist()
        if any(isinstance(v, float) for v in want):
            assert got == pytest.approx(want, abs=1e-4), column
        elif any(isinstance(v, Decimal) for v in want):
            assert [Decimal(v).quantize(Decimal("0.01")) for v in got] == want, column
        else:
            assert [None if pd.isna(v) else v for v in got] == [None if pd.isna(v) else v for v in want], column


@pytest.fixture(scope="module")
def curated_lake(local_stack, tiny_dataset):
    """A curated lake in the emulator (curated here from the tiny shop if no earlier test left one)."""
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type in LAKE_RESOURCES])
    if not lake.curated_exists("order_lines"):
        lake.deliver_orders(tiny_dataset.order_lines)
        lake.curate_orders()
    warehouse.crawl()
    return lake.read_curated_order_lines(), lake.read_curated("products")


def test_every_query_on_the_lake_equals_pandas(curated_lake):
    order_lines, products = curated_lake
    results = warehouse.run_query_set()
    assert set(results) == EXPECTED_QUERIES
    for name, result in results.items():
        assert_same_result(result, warehouse.run_reference(name, order_lines, products))
    daily = results["daily_revenue"]
    assert sum(daily["net_revenue"]) == sum(order_lines["line_amount"])
    assert daily["orders"].sum() > 0 and len(daily) == order_lines["order_date"].nunique()


def test_a_query_file_by_path(curated_lake, tmp_path):
    path = tmp_path / "lines_per_country.sql"
    path.write_text("SELECT country, count(*) AS lines\nFROM order_lines\nGROUP BY country\nORDER BY country\n")
    result = warehouse.run_query(path)
    expected = curated_lake[0].groupby("country").size()
    assert dict(zip(result["country"], result["lines"], strict=True)) == expected.to_dict()


def test_unknown_table_names_file_and_line(curated_lake, tmp_path):
    path = tmp_path / "typo.sql"
    path.write_text("SELECT count(*)\nFROM order_lines AS l\nJOIN productz AS p ON p.stock_code = l.stock_code\n")
    with pytest.raises(warehouse.SqlQueryError, match=r"typo\.sql line 3: unknown table 'productz'"):
        warehouse.run_query(path)


def test_bad_sql_names_file_and_line(tmp_path):
    path = tmp_path / "broken.sql"
    path.write_text("SELECT country,\n       sum(line_amount AS revenue\nFROM order_lines\nGROUP BY country\n")
    with pytest.raises(warehouse.SqlQueryError, match=r"broken\.sql line \d+: SQL does not parse"):
        warehouse.run_query(path)


def test_unknown_column_names_file_and_line(curated_lake, tmp_path):
    path = tmp_path / "column.sql"
    path.write_text("SELECT country,\n       sum(revenu) AS revenue\nFROM order_lines\nGROUP BY country\n")
    with pytest.raises(warehouse.SqlQueryError, match=r"column\.sql line 2: the query failed"):
        warehouse.run_query(path)


def test_unknown_query_name_lists_the_set():
    with pytest.raises(warehouse.SqlQueryError, match="daily_revenue"):
        warehouse.load_query("no_such_query")
    assert isinstance(warehouse.load_query("daily_revenue").path, Path)
