"""Revenue reconciliation: the lake's money against every place the warehouse part reports it (to the cent)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pandas as pd


def _total(values: Any) -> Decimal:
    return sum((Decimal(str(v)) for v in values if v is not None and not pd.isna(v)), Decimal(0))


def revenue_reconciliation(
    order_lines: pd.DataFrame, results: dict[str, pd.DataFrame], monthly: pd.DataFrame
) -> dict[str, Any]:
    """Net revenue of the lake vs the SQL engine's query set and the warehouse star, and sales of known customers.

    ``agrees`` is True when the three net totals equal the lake's and RFM's sales equal the known customers' sales
    exactly (Decimal arithmetic, no rounding); the figures are floats for the metrics file.
    """
    lake_net = _total(order_lines["line_amount"])
    known = order_lines.loc[~order_lines["is_cancellation"].astype(bool) & order_lines["customer_id"].notna()]
    figures = {
        "lake_net": lake_net,
        "daily_revenue_net": _total(results["daily_revenue"]["net_revenue"]),
        "by_country_net": _total(results["revenue_by_country"]["net_revenue"]),
        "warehouse_net": _total(monthly["net_revenue"]),
        "daily_revenue_sales": _total(results["daily_revenue"]["sales"]),
        "rfm_sales": _total(results["rfm_segments"]["sales"]),
        "known_customer_sales": _total(known["line_amount"]),
    }
    agrees = all(figures[k] == lake_net for k in ("daily_revenue_net", "by_country_net", "warehouse_net")) and (
        figures["rfm_sales"] == figures["known_customer_sales"] <= figures["daily_revenue_sales"]
    )
    out: dict[str, Any] = {k: float(v) for k, v in figures.items()}
    out["agrees"] = bool(agrees)
    return out
