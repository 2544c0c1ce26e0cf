"""``shoplake orders``: look up a customer's order history; ingest the dataset through the stream."""

from __future__ import annotations

import click

from shoplake import config


def _positive_finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A click callback: NaN, ±inf, zero or negative numbers are one clear usage error (not an endless replay)."""
    import math

    if value is not None and (not math.isfinite(value) or value <= 0):
        raise click.BadParameter(f"must be a positive, finite number, got {value}")
    return value


def _at_least_one(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"must be at least 1, got {value}")
    return value


def _non_negative(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 0:
        raise click.BadParameter(f"must be ≥ 0, got {value}")
    return value


@click.group("orders")
def orders() -> None:
    """Order history: ingest the orders stream, look up a customer."""


@orders.command("history")
@click.argument("customer_id")
@click.option("--limit", type=int, default=None, callback=_at_least_one, help="only the N most recent orders")
@click.option("--since", default=None, help="only orders on or after this date (YYYY-MM-DD or ISO 8601 UTC)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
def history_cmd(customer_id: str, limit: int | None, since: str | None, as_json: bool) -> None:
    """Orders of CUSTOMER_ID, newest first, with totals per order."""
    import pandas as pd

    from shoplake.cli import echo_json
    from shoplake.orders import history

    result = history(customer_id, limit=limit, since=since)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(result.message)
    if not result.found:
        return
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 500):
        click.echo("\norders (newest first):")
        click.echo(result.orders.to_string(index=False))
        click.echo("\nlines:")
        click.echo(result.lines.drop(columns=["country"]).fillna("").to_string(index=False))


@orders.command("ingest")
@click.option("--scale", type=click.Choice(config.SCALES), default=None, help="dataset scale (default: settings)")
@click.option("--seed", type=int, default=None, callback=_non_negative)
@click.option(
    "--speed",
    type=float,
    default=None,
    callback=_positive_finite,
    help="event seconds per wall second (default: as fast as possible)",
)
@click.option("--json", "as_json", is_flag=True)
def ingest_cmd(scale: str | None, seed: int | None, speed: float | None, as_json: bool) -> None:
    """Replay the generated dataset to the orders stream and wait until the consumer has accounted for it."""
    from shoplake import datagen
    from shoplake.cli import echo_json
    from shoplake.orders import dead_letters, ingest, item_count

    dataset = datagen.load(scale=scale, seed=seed)
    report = ingest(dataset.order_lines, speed=speed)
    summary = {**report.as_dict(), "table_items": item_count(), "dead_lettered": len(dead_letters())}
    if as_json:
        echo_json(summary)
        return
    put, mapped = report.put, report.mapping
    click.echo(f"put {put.sent} events ({put.failed} failed, {put.rejected} rejected) in {put.elapsed_s:.1f} s")
    if mapped:
        click.echo(
            f"handled {mapped.records_done} records in {mapped.invocations} invocations "
            f"({mapped.retries} retries, {mapped.records_to_on_failure} to the on-failure queue)"
        )
    click.echo(f"table now holds {summary['table_items']} items; {summary['dead_lettered']} records dead-lettered")
