"""``shoplake warehouse``: crawl the lake into Glue, run an Athena query of the set, load the star schema."""

from __future__ import annotations

from pathlib import Path

import click

from shoplake.cli import echo_json


@click.group("warehouse")
def warehouse() -> None:
    """Glue catalog, Athena SQL over the lake and the Redshift (locally PostgreSQL) star schema."""


@warehouse.command("crawl")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def crawl_cmd(as_json: bool) -> None:
    """Register the Parquet tables and new partitions under curated/ in the Glue database."""
    from shoplake.warehouse import crawl

    result = crawl()
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"tables: {', '.join(result.tables) or '-'}; new: {', '.join(result.new_tables) or '-'}; "
        f"new partitions: {result.new_partitions} of {result.partitions}"
    )


@warehouse.command("query")
@click.argument("name_or_file")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
@click.option("--limit", type=int, default=50, show_default=True, help="rows to print (table output)")
def query_cmd(name_or_file: str, as_json: bool, limit: int) -> None:
    """Run a query of the set (e.g. daily_revenue) or a .sql file; `shoplake warehouse query list` lists them."""
    from shoplake.warehouse import list_queries, run_query

    if name_or_file == "list":
        for name in list_queries():
            click.echo(name)
        return
    result = run_query(Path(name_or_file) if name_or_file.endswith(".sql") else name_or_file)
    if as_json:
        echo_json(result.to_dict(orient="records"))
        return
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        click.echo(result.head(limit).to_string(index=False))
    if len(result) > limit:
        click.echo(f"... {len(result)} rows in all")


@warehouse.command("load")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def load_cmd(as_json: bool) -> None:
    """Load the star schema from the curated lake (idempotent: a re-load replaces the rows)."""
    from shoplake.warehouse import load_warehouse

    result = load_warehouse(progress=not as_json)
    if as_json:
        echo_json(result.as_dict())
        return
    for table, rows in result.rows.items():
        click.echo(f"{table:<16} {rows:>10,} rows")
    click.echo(f"{result.total_rows:,} rows in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s)")
