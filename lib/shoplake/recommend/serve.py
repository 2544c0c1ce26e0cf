"""Serving recommendations: publish the job's top-k lists to DynamoDB and look up one customer's list.

Documented choice: lists exclude items the customer had bought when the model was trained (a shop recommends
what to buy *next*; re-purchase reminders are a different feature). A customer the model has never seen
(cold start) gets the popularity list, flagged ``cold_start: true``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pandas as pd

from shoplake import config
from shoplake.errors import DataError, ShoplakeError
from shoplake.recommend.als_job import POPULAR_KEY

log = logging.getLogger(__name__)

TABLE = "recommendations"


def table_name() -> str:
    """The physical name of the ``recommendations`` DynamoDB table."""
    return config.resource_name(TABLE)


def publish(items: list[dict[str, Any]], table: str | None = None) -> int:
    """Batch-write the job's items (one per customer, plus ``#popular``); returns the number written."""
    name = table or table_name()
    resource = config.resource("dynamodb")
    try:
        with resource.Table(name).batch_writer(overwrite_by_pkeys=["customer_id"]) as batch:
            for item in items:
                batch.put_item(Item=item)
    except resource.meta.client.exceptions.ResourceNotFoundException as exc:
        raise ShoplakeError(
            f"DynamoDB table {name} does not exist: provision first (notebook 00 or infra.apply())"
        ) from exc
    log.info("published %d recommendation lists to %s", len(items), name)
    return len(items)


def _plain(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (int(value) if key == "rank" else float(value) if isinstance(value, Decimal) else value)
        for key, value in entry.items()
    }


def recommendations_for(customer_id: str, k: int = 10, table: str | None = None) -> dict[str, Any]:
    """Top-``k`` for one customer: ``{customer_id, cold_start, model, generated_at, items: [...]}``.

    ``items`` are ``{rank, stock_code, description, score}``, best first, without already-bought items.
    """
    if not isinstance(k, int) or k < 1:
        raise ShoplakeError(f"k must be a positive integer, got {k!r}")
    customer_id = str(customer_id).strip()
    if not customer_id or customer_id == POPULAR_KEY:
        raise ShoplakeError(f"give a customer id (e.g. 12347), got {customer_id!r}")
    ddb = config.client("dynamodb")
    name = table or table_name()
    resource = config.resource("dynamodb").Table(name)
    try:
        found = resource.get_item(Key={"customer_id": customer_id}).get("Item")
        cold_start = found is None
        if cold_start:
            found = resource.get_item(Key={"customer_id": POPULAR_KEY}).get("Item")
    except ddb.exceptions.ResourceNotFoundException as exc:
        raise ShoplakeError(f"DynamoDB table {name} does not exist: provision first (notebook 00)") from exc
    if found is None:
        raise DataError(f"no recommendations in {name}: train first (shoplake recommend train)")
    items = [_plain(entry) for entry in sorted(found["items"], key=lambda e: int(e["rank"]))][:k]
    if len(items) < k:
        log.warning(
            "only %d recommendations stored for %s (asked for %d): retrain with a larger --k",
            len(items),
            customer_id,
            k,
        )
    return {
        "customer_id": customer_id,
        "cold_start": cold_start,
        "model": found.get("model"),
        "generated_at": found.get("generated_at"),
        "items": items,
    }


def beside_history(customer_ids: list[str], order_lines: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """For each customer: what they bought (most often first) beside their served list, one row per rank.

    ``order_lines`` are curated order lines (``customer_id``, ``stock_code``, ``description``, ``invoice_no``).
    Columns: customer_id, rank, bought, recommended, cold_start, recommended_was_bought (must be False).
    """
    rows = []
    for customer in customer_ids:
        mine = order_lines.loc[order_lines["customer_id"] == customer]
        history = (
            mine.groupby(["stock_code", "description"])["invoice_no"]
            .nunique()
            .sort_values(ascending=False)
            .reset_index()
        )
        served = recommendations_for(customer, k=k)
        bought_codes = set(mine["stock_code"])
        for rank in range(k):
            entry = served["items"][rank] if rank < len(served["items"]) else None
            rows.append(
                {
                    "customer_id": customer,
                    "rank": rank + 1,
                    "bought": history["description"].iloc[rank] if rank < len(history) else "",
                    "recommended": entry["description"] if entry else "",
                    "recommended_code": entry["stock_code"] if entry else "",
                    "cold_start": served["cold_start"],
                    "recommended_was_bought": bool(entry and entry["stock_code"] in bought_codes),
                }
            )
    return pd.DataFrame(rows)


def check_served(customer_ids: list[str], order_lines: pd.DataFrame, k: int = 10) -> dict[str, int]:
    """Serve ``customer_ids`` and count lists that are short of ``k`` or hold an item the customer bought."""
    bought = {c: set(codes) for c, codes in order_lines.groupby("customer_id")["stock_code"]}
    short = violations = cold = 0
    for customer in customer_ids:
        served = recommendations_for(customer, k=k)
        codes = [entry["stock_code"] for entry in served["items"]]
        short += len(codes) != k or len(set(codes)) != k
        violations += bool(set(codes) & bought.get(customer, set()))
        cold += served["cold_start"]
    return {"checked": len(customer_ids), "short_lists": short, "bought_items_served": violations, "cold_start": cold}
