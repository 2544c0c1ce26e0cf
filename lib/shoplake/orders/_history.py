"""Look up one customer's order history: a paginated DynamoDB query, newest first, with totals per order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from shoplake import config
from shoplake.errors import ShoplakeError

LINE_COLUMNS = [
    "invoice_date",
    "invoice_no",
    "line_no",
    "stock_code",
    "description",
    "quantity",
    "unit_price",
    "line_amount",
    "status",
    "cancelled_by",
    "country",
]
ORDER_COLUMNS = ["invoice_date", "invoice_no", "lines", "quantity", "total", "is_cancellation", "cancelled_lines"]
PAGE_SIZE = 500


class HistoryError(ShoplakeError):
    """A lookup's parameters are wrong (bad date, bad limit) or the table is missing."""


@dataclass
class History:
    """One customer's order lines (newest first) and orders with their totals (newest first)."""

    customer_id: str
    lines: Any  # DataFrame, LINE_COLUMNS
    orders: Any  # DataFrame, ORDER_COLUMNS
    pages: int = 0

    @property
    def found(self) -> bool:
        return not self.lines.empty

    @property
    def message(self) -> str:
        if self.found:
            return f"customer {self.customer_id}: {len(self.orders)} orders, {len(self.lines)} lines"
        return (
            f"no orders found for customer {self.customer_id!r} (unknown customer, or nothing in the chosen "
            "period); guest orders are under 'guest-<InvoiceNo>'"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "message": self.message,
            "orders": _records(self.orders),
            "lines": _records(self.lines),
        }


def _records(frame: Any) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (str(v) if isinstance(v, Decimal) else (None if v != v else v)) for k, v in row.items()})
    return out


def parse_since(since: str | datetime | None) -> str | None:
    """``since`` as the ISO prefix the sort key starts with (``YYYY-MM-DD`` or full ISO UTC); None passes."""
    if since is None or since == "":
        return None
    if isinstance(since, datetime):
        since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        return since.strftime("%Y-%m-%dT%H:%M:%SZ")
    text = str(since).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            datetime.strptime(text, "%Y-%m-%d")
        except ValueError as exc:
            raise HistoryError(f"--since {text!r} is not a real date (use YYYY-MM-DD)") from exc
        return text
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HistoryError(
            f"--since {text!r} is not a date: use YYYY-MM-DD or ISO 8601 like 2011-01-05T10:00:00Z"
        ) from exc
    return parse_since(parsed)


def history(
    customer_id: str, limit: int | None = None, since: str | datetime | None = None, table: str | None = None
) -> History:
    """Orders of ``customer_id`` newest first: the last ``limit`` orders (all if None), on or after ``since``.

    Queries the partition page by page (newest first) and stops as soon as ``limit`` orders are complete.
    An unknown customer gives an empty :class:`History` whose ``message`` says so.
    """
    import pandas as pd
    from boto3.dynamodb.types import TypeDeserializer
    from botocore.exceptions import ClientError

    customer_id = str(customer_id).strip()
    if not customer_id:
        raise HistoryError("a customer id is needed, e.g. 12645 (or guest-<InvoiceNo> for a guest order)")
    if limit is not None and limit < 1:
        raise HistoryError(f"--limit must be at least 1, got {limit}")
    table = table or config.resource_name("order_history")
    start = parse_since(since)
    values: dict[str, Any] = {":c": {"S": customer_id}}
    condition = "customer_id = :c"
    if start:
        condition += " AND order_key >= :since"
        values[":since"] = {"S": start}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
        "Limit": PAGE_SIZE,
    }
    deserialize = TypeDeserializer().deserialize
    client = config.client("dynamodb")
    items: list[dict[str, Any]] = []
    invoices: list[str] = []
    pages = 0
    while True:
        try:
            page = client.query(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise HistoryError(
                    f"table {table} does not exist: run notebook 00_provision (or `shoplake infra "
                    "apply`) and ingest orders (notebook 02_order_history)"
                ) from exc
            raise
        pages += 1
        for raw in page.get("Items", []):
            item = {k: deserialize(v) for k, v in raw.items()}
            if item["invoice_no"] not in invoices:
                if limit is not None and len(invoices) >= limit:
                    break
                invoices.append(item["invoice_no"])
            items.append(item)
        else:
            if "LastEvaluatedKey" in page:
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
                continue
        break
    lines = pd.DataFrame(items)
    for column in LINE_COLUMNS:
        if column not in lines.columns:
            lines[column] = None
    if not lines.empty:
        lines["line_no"] = lines["line_no"].astype(int)
        lines["quantity"] = lines["quantity"].astype(int)
        lines = lines.sort_values(
            ["invoice_date", "invoice_no", "line_no"], ascending=[False, False, True], kind="stable"
        ).reset_index(drop=True)
    lines = lines[LINE_COLUMNS + ["is_cancellation"]] if not lines.empty else lines.reindex(columns=LINE_COLUMNS)
    return History(customer_id, lines.drop(columns=["is_cancellation"], errors="ignore"), _orders(lines), pages)


def _orders(lines: Any) -> Any:
    import pandas as pd

    if lines.empty:
        return pd.DataFrame(columns=ORDER_COLUMNS)
    grouped = lines.groupby(["invoice_date", "invoice_no"], sort=False)
    orders = grouped.agg(
        lines=("line_no", "size"),
        quantity=("quantity", "sum"),
        total=("line_amount", lambda amounts: sum(amounts, Decimal("0.00"))),
        is_cancellation=("is_cancellation", "first"),
        cancelled_lines=("cancelled_by", lambda marks: int(marks.notna().sum())),
    ).reset_index()
    orders = orders.sort_values(["invoice_date", "invoice_no"], ascending=False, kind="stable").reset_index(drop=True)
    return orders[ORDER_COLUMNS]


def compare_with_source(order_lines: Any, customer_id: str, found: History | None = None) -> dict[str, Any]:
    """Check a lookup against pandas on the source lines: same lines, same order (newest first), same totals."""
    from decimal import Decimal as D

    found = found or history(customer_id)
    want = order_lines[order_lines["CustomerID"] == customer_id]
    want = want.sort_values(["InvoiceDate", "InvoiceNo", "LineNo"], ascending=[False, False, True])
    totals = {}
    for row in want.itertuples():
        amount = D(str(row.UnitPrice)).quantize(D("0.01")) * row.Quantity
        totals[row.InvoiceNo] = totals.get(row.InvoiceNo, D("0.00")) + amount
    same_lines = (
        list(found.lines["invoice_no"]) == list(want["InvoiceNo"])
        and list(found.lines["stock_code"]) == list(want["StockCode"])
        and [int(q) for q in found.lines["quantity"]] == [int(q) for q in want["Quantity"]]
    )
    same_totals = {r.invoice_no: r.total for r in found.orders.itertuples()} == totals
    return {
        "customer_id": customer_id,
        "lines": len(found.lines),
        "expected_lines": len(want),
        "orders": len(found.orders),
        "same_lines_in_order": bool(same_lines),
        "same_totals": bool(same_totals),
        "match": bool(same_lines and same_totals),
    }
