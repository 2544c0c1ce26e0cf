"""The query set computed with plain pandas: the yardstick the SQL results are tested against, and the bench baseline.

One function per ``queries/<name>.sql``, same columns, same row order. Money is summed in integer cents (exact)
and returned as ``Decimal``; rates are rounded to 4 decimals like the SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pandas as pd


def _cents(amounts: pd.Series) -> pd.Series:
    """Decimal money → int64 cents (exact)."""
    return amounts.map(lambda d: int(d.scaleb(2))).astype("int64")


def _money(cents: pd.Series) -> pd.Series:
    return cents.map(lambda c: Decimal(int(c)).scaleb(-2)).astype(object)


def prepare(order_lines: pd.DataFrame) -> pd.DataFrame:
    """The columns every reference query uses, with plain numpy dtypes and money in cents."""
    df = pd.DataFrame(
        {
            "order_date": order_lines["order_date"].astype(str).to_numpy(),
            "invoice_no": order_lines["invoice_no"].astype(str).to_numpy(),
            "stock_code": order_lines["stock_code"].astype(str).to_numpy(),
            "description": order_lines["description"].astype(object).to_numpy(),
            "customer_id": order_lines["customer_id"]
            .astype(object)
            .where(order_lines["customer_id"].notna(), None)
            .to_numpy(),
            "country": order_lines["country"].astype(str).to_numpy(),
            "quantity": order_lines["quantity"].astype("int64").to_numpy(),
            "is_cancellation": order_lines["is_cancellation"].astype(bool).to_numpy(),
            "cents": _cents(order_lines["line_amount"]).to_numpy(),
        }
    )
    return df


def daily_revenue(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    sales = lines.loc[~lines["is_cancellation"]]
    by_day = lines.groupby("order_date")
    out = (
        pd.DataFrame(
            {
                "orders": sales.groupby("order_date")["invoice_no"].nunique(),
                "customers": sales.groupby("order_date")["customer_id"].nunique(),
                "sales": sales.groupby("order_date")["cents"].sum(),
                "cancelled": lines.loc[lines["is_cancellation"]].groupby("order_date")["cents"].sum(),
                "net_revenue": by_day["cents"].sum(),
            }
        )
        .reindex(sorted(by_day.groups))
        .fillna(0)
    )
    out = out.rename_axis("order_date").reset_index()
    for col in ("sales", "cancelled", "net_revenue"):
        out[col] = _money(out[col])
    return out.astype({"orders": "int64", "customers": "int64"})


def revenue_by_country(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    sales = lines.loc[~lines["is_cancellation"]]
    grouped = lines.groupby("country")
    out = (
        pd.DataFrame(
            {
                "orders": sales.groupby("country")["invoice_no"].nunique(),
                "customers": grouped["customer_id"].nunique(),
                "cents": grouped["cents"].sum(),
            }
        )
        .reindex(sorted(grouped.groups))
        .fillna(0)
        .rename_axis("country")
        .reset_index()
    )
    out = out.sort_values(["cents", "country"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out["net_revenue"] = _money(out.pop("cents"))
    return out.astype({"orders": "int64", "customers": "int64"})


def top_products(lines: pd.DataFrame, products: pd.DataFrame | None = None, limit: int = 20) -> pd.DataFrame:
    sales = lines.loc[~lines["is_cancellation"]]
    grouped = sales.groupby("stock_code")
    out = (
        pd.DataFrame(
            {
                "units": grouped["quantity"].sum(),
                "orders": grouped["invoice_no"].nunique(),
                "cents": grouped["cents"].sum(),
            }
        )
        .rename_axis("stock_code")
        .reset_index()
    )
    out = out.sort_values(["cents", "stock_code"], ascending=[False, True], kind="stable").head(limit)
    descriptions = (
        {} if products is None else dict(zip(products["stock_code"].astype(str), products["description"], strict=True))
    )
    out.insert(1, "description", out["stock_code"].map(descriptions))
    out["sales"] = _money(out.pop("cents"))
    return out.reset_index(drop=True).astype({"units": "int64", "orders": "int64"})


def basket_size(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    sales = lines.loc[~lines["is_cancellation"]]
    baskets = sales.groupby("invoice_no").agg(
        lines=("cents", "size"), units=("quantity", "sum"), cents=("cents", "sum")
    )
    out = baskets.groupby("lines").agg(orders=("units", "size"), units=("units", "sum"), cents=("cents", "sum"))
    out = out.rename_axis("basket_lines").reset_index().sort_values("basket_lines").reset_index(drop=True)
    out["sales"] = _money(out.pop("cents"))
    return out.astype({"basket_lines": "int64", "orders": "int64", "units": "int64"})


def _known_sales(lines: pd.DataFrame) -> pd.DataFrame:
    return lines.loc[~lines["is_cancellation"] & pd.notna(lines["customer_id"])]


def repeat_customer_rate(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    orders = _known_sales(lines).groupby("customer_id")["invoice_no"].nunique()
    customers, repeat = len(orders), int((orders >= 2).sum())
    return pd.DataFrame(
        {
            "customers": [customers],
            "repeat_customers": [repeat],
            "repeat_rate": [round(repeat / customers, 4) if customers else np.nan],
        }
    )


def _month_index(dates: pd.Series) -> pd.Series:
    return dates.str.slice(0, 4).astype(int) * 12 + dates.str.slice(5, 7).astype(int) - 1


def cohort_retention(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    known = _known_sales(lines)
    activity = pd.DataFrame(
        {"customer_id": known["customer_id"], "month": _month_index(known["order_date"])}
    ).drop_duplicates()
    first = activity.groupby("customer_id")["month"].min().rename("cohort_month")
    activity = activity.join(first, on="customer_id")
    activity["months_since_first"] = activity["month"] - activity["cohort_month"]
    sizes = first.value_counts().rename("cohort_size")
    out = activity.groupby(["cohort_month", "months_since_first"]).size().rename("customers").reset_index()
    out = out.join(sizes, on="cohort_month")
    out["retention"] = (out["customers"] / out["cohort_size"]).round(4)
    out.insert(0, "cohort", out.pop("cohort_month").map(lambda m: f"{m // 12:04d}-{m % 12 + 1:02d}"))
    out = out.sort_values(["cohort", "months_since_first"]).reset_index(drop=True)
    return out[["cohort", "months_since_first", "cohort_size", "customers", "retention"]].astype(
        {"months_since_first": "int64", "cohort_size": "int64", "customers": "int64"}
    )


def rfm_segment(recency_days: int, frequency: int) -> str:
    """The RFM naming rules of rfm_segments.sql."""
    if recency_days <= 30 and frequency >= 4:
        return "champions"
    if frequency >= 4:
        return "loyal"
    if recency_days <= 30 and frequency == 1:
        return "new"
    if recency_days <= 30:
        return "promising"
    if recency_days > 90 and frequency >= 2:
        return "at risk"
    if recency_days > 90:
        return "lost"
    return "needs attention"


def rfm_segments(lines: pd.DataFrame, products: pd.DataFrame | None = None) -> pd.DataFrame:
    known = _known_sales(lines)
    as_of = pd.Timestamp(lines["order_date"].max()) + pd.Timedelta(days=1)
    per = known.groupby("customer_id").agg(
        last_order=("order_date", "max"), frequency=("invoice_no", "nunique"), cents=("cents", "sum")
    )
    per["recency_days"] = (as_of - pd.to_datetime(per["last_order"])).dt.days
    per["segment"] = [rfm_segment(r, f) for r, f in zip(per["recency_days"], per["frequency"], strict=True)]
    out = (
        per.groupby("segment")
        .agg(
            customers=("frequency", "size"),
            orders=("frequency", "sum"),
            cents=("cents", "sum"),
            min_recency_days=("recency_days", "min"),
            max_recency_days=("recency_days", "max"),
        )
        .reset_index()
    )
    out = out.sort_values(["cents", "segment"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out.insert(3, "sales", _money(out.pop("cents")))
    return out.astype(
        {"customers": "int64", "orders": "int64", "min_recency_days": "int64", "max_recency_days": "int64"}
    )


def france_best_sellers(lines: pd.DataFrame, products: pd.DataFrame | None = None, limit: int = 10) -> pd.DataFrame:
    france = lines.loc[(lines["country"] == "France") & ~lines["is_cancellation"]]
    grouped = france.groupby("stock_code")
    out = (
        pd.DataFrame(
            {
                "description": grouped["description"].max(),
                "units": grouped["quantity"].sum(),
                "cents": grouped["cents"].sum(),
            }
        )
        .rename_axis("stock_code")
        .reset_index()
    )
    out = out.sort_values(["units", "stock_code"], ascending=[False, True], kind="stable").head(limit)
    out["sales"] = _money(out.pop("cents"))
    return out.reset_index(drop=True).astype({"units": "int64"})


REFERENCE: dict[str, Callable[..., pd.DataFrame]] = {
    "daily_revenue": daily_revenue,
    "revenue_by_country": revenue_by_country,
    "top_products": top_products,
    "basket_size": basket_size,
    "repeat_customer_rate": repeat_customer_rate,
    "cohort_retention": cohort_retention,
    "rfm_segments": rfm_segments,
    "france_best_sellers": france_best_sellers,
}


def run_reference(
    name: str, order_lines: pd.DataFrame, products: pd.DataFrame | None = None, prepared: bool = False
) -> pd.DataFrame:
    """The pandas result of query ``name`` on curated order lines (``prepared=True``: already :func:`prepare`d)."""
    lines = order_lines if prepared else prepare(order_lines)
    return REFERENCE[name](lines, products)
