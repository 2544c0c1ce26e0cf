"""Figures and checks of notebook 01: rhythm with incidents, basket sizes, countries, top products, ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from shoplake.datagen._dataset import Dataset
from shoplake.datagen._profile import rate_profile

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _orders(dataset: Dataset) -> pd.DataFrame:
    """One row per non-cancelled invoice with its UTC timestamp."""
    lines = dataset.order_lines
    invoices = lines[~lines["InvoiceNo"].str.startswith("C")].drop_duplicates("InvoiceNo").copy()
    invoices["ts"] = pd.to_datetime(invoices["InvoiceDate"], utc=True)
    return invoices


def order_rate_figure(dataset: Dataset, freq: str = "1h") -> Any:
    """Orders per ``freq`` over the whole period, injected incidents shaded (red surge, grey outage)."""
    import plotly.graph_objects as go

    orders = _orders(dataset)
    rate = orders.set_index("ts").resample(freq).size()
    fig = go.Figure(
        go.Scatter(x=rate.index, y=rate.to_numpy(), mode="lines", name=f"orders per {freq}", line={"width": 1})
    )
    for incident in dataset.incidents.itertuples():
        color = "crimson" if incident.kind == "surge" else "grey"
        fig.add_vrect(
            x0=incident.start,
            x1=incident.end,
            fillcolor=color,
            opacity=0.35,
            line_width=0,
            annotation_text=f"{incident.kind} ×{incident.multiplier:g}",
            annotation_position="top left",
        )
    fig.update_layout(
        title="Order rate with the injected incidents",
        xaxis_title="time (UTC)",
        yaxis_title=f"orders per {freq}",
        height=380,
    )
    return fig


def rhythm_figure(dataset: Dataset) -> Any:
    """Share of orders by hour of day and by weekday, observed (bars) against the generator's model (line)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    orders = _orders(dataset)
    by_hour = orders["ts"].dt.hour.value_counts(normalize=True).reindex(range(24), fill_value=0)
    by_day = orders["ts"].dt.day_of_week.value_counts(normalize=True).reindex(range(7), fill_value=0)
    week = pd.date_range("2011-01-03", periods=7 * 24 * 60, freq="min", tz="UTC")
    model = pd.Series(rate_profile(week), index=week)
    model_hour = model.groupby(week.hour).sum() / model.sum()
    model_day = model.groupby(week.day_of_week).sum() / model.sum()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("hour of day (UTC)", "weekday"))
    fig.add_bar(x=list(range(24)), y=by_hour.to_numpy(), name="observed", marker_color="steelblue", row=1, col=1)
    fig.add_trace(
        go.Scatter(x=list(range(24)), y=model_hour.to_numpy(), name="rate_profile model", line={"color": "orange"}),
        row=1,
        col=1,
    )
    fig.add_bar(
        x=WEEKDAYS, y=by_day.to_numpy(), name="observed ", marker_color="steelblue", showlegend=False, row=1, col=2
    )
    fig.add_trace(
        go.Scatter(x=WEEKDAYS, y=model_day.to_numpy(), name="model ", line={"color": "orange"}, showlegend=False),
        row=1,
        col=2,
    )
    fig.update_layout(title="Daily and weekly rhythm of orders", yaxis_title="share of orders", height=360)
    return fig


def basket_size_figure(dataset: Dataset) -> Any:
    """Distribution of lines per invoice (orders only)."""
    import plotly.express as px

    lines = dataset.order_lines
    sizes = lines[~lines["InvoiceNo"].str.startswith("C")].groupby("InvoiceNo").size()
    return px.histogram(
        x=sizes.to_numpy(),
        nbins=min(60, int(sizes.max())),
        labels={"x": "lines per invoice"},
        title=f"Basket sizes (mean {sizes.mean():.1f} lines)",
        height=340,
        log_y=True,
    )


def revenue_by_country(dataset: Dataset, top: int = 12) -> pd.DataFrame:
    """Net revenue (cancellations subtract) and order count per country, largest first."""
    lines = dataset.order_lines.assign(amount=lambda d: d["Quantity"] * d["UnitPrice"])
    table = lines.groupby("Country").agg(revenue=("amount", "sum"), invoices=("InvoiceNo", "nunique"))
    return table.sort_values("revenue", ascending=False).head(top).round(2)


def revenue_by_country_figure(dataset: Dataset, top: int = 12) -> Any:
    import plotly.express as px

    table = revenue_by_country(dataset, top).reset_index()
    return px.bar(
        table,
        x="Country",
        y="revenue",
        log_y=True,
        title="Net revenue by country (log scale)",
        height=360,
        hover_data=["invoices"],
    )


def top_products(dataset: Dataset, top: int = 15) -> pd.DataFrame:
    """Best-selling products by net quantity (non-product codes excluded)."""
    products = dataset.products.set_index("StockCode")
    lines = dataset.order_lines
    lines = lines[lines["StockCode"].map(products["is_product"]).fillna(False).astype(bool)]
    table = lines.groupby("StockCode").agg(quantity=("Quantity", "sum"), customers=("CustomerID", "nunique"))
    table["Description"] = products["Description"].reindex(table.index)
    return table.sort_values("quantity", ascending=False).head(top)


def top_products_figure(dataset: Dataset, top: int = 15) -> Any:
    import plotly.express as px

    table = top_products(dataset, top).reset_index()
    return px.bar(
        table, x="quantity", y="Description", orientation="h", title=f"Top {top} products by quantity", height=420
    ).update_yaxes(autorange="reversed")


def own_group_share(dataset: Dataset) -> float | None:
    """Share of customers' product purchases from their own hidden taste group (None without ground truth)."""
    group_of_product = dataset.products.set_index("StockCode")["taste_group"]
    group_of_customer = dataset.customers.set_index("CustomerID")["taste_group"]
    if (group_of_customer < 0).all():
        return None
    lines = dataset.order_lines
    bought = lines[lines["CustomerID"].notna() & ~lines["InvoiceNo"].str.startswith("C")]
    bought = bought[bought["StockCode"].map(group_of_product) >= 0]
    own = bought["StockCode"].map(group_of_product).to_numpy() == bought["CustomerID"].map(group_of_customer).to_numpy()
    return float(own.mean()) if len(own) else None


def incident_rates(dataset: Dataset) -> pd.DataFrame:
    """Per incident: orders inside, the usual count in the same clock window on other weekdays, their ratio."""
    orders = _orders(dataset)
    ts = orders["ts"]
    weekday = ts.dt.day_of_week < 5
    clock = ts.dt.hour * 60 + ts.dt.minute
    n_days = max(2, ts[weekday].dt.date.nunique())
    rows = []
    for incident in dataset.incidents.itertuples():
        inside = int(((ts >= incident.start) & (ts < incident.end)).sum())
        begin = incident.start.hour * 60 + incident.start.minute
        length = (incident.end - incident.start).total_seconds() / 60
        window = int((weekday & (clock >= begin) & (clock < begin + length)).sum())
        usual = (window - inside) / (n_days - 1)
        rows.append(
            {
                "incident_id": incident.incident_id,
                "kind": incident.kind,
                "multiplier": incident.multiplier,
                "start": incident.start,
                "minutes": length,
                "orders_inside": inside,
                "usual_orders": round(usual, 2),
                "ratio": round(inside / usual, 2) if usual > 0 else np.nan,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["incident_id", "kind", "multiplier", "start", "minutes", "orders_inside", "usual_orders", "ratio"],
    )
