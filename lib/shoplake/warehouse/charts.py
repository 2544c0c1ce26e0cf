"""The business dashboard (the QuickSight stand-in): plotly figures from the query set's results."""

from __future__ import annotations

from typing import Any

import pandas as pd

# Online Retail country labels that plotly's "country names" do not know.


def _money(series: pd.Series) -> pd.Series:
    return series.astype(float)


def revenue_trend(daily: pd.DataFrame) -> Any:
    """Daily sales, cancellations and net revenue, with a 7-day average of net revenue."""
    import plotly.graph_objects as go

    df = daily.assign(order_date=pd.to_datetime(daily["order_date"]))
    fig = go.Figure()
    fig.add_bar(x=df["order_date"], y=_money(df["sales"]), name="sales", marker_color="#4c78a8")
    fig.add_bar(x=df["order_date"], y=_money(df["cancelled"]), name="cancelled", marker_color="#e45756")
    fig.add_scatter(
        x=df["order_date"],
        y=_money(df["net_revenue"]).rolling(7, min_periods=1).mean(),
        name="net revenue, 7-day mean",
        line={"color": "#222", "width": 2},
    )
    fig.update_layout(title="Revenue per day", barmode="relative", yaxis_title="revenue", height=380)
    return fig


def top_products_chart(top: pd.DataFrame, n: int = 10) -> Any:
    import plotly.express as px

    df = top.head(n).assign(
        sales=lambda d: _money(d["sales"]),
        label=lambda d: d["stock_code"] + " " + d["description"].fillna("").str.slice(0, 32),
    )
    fig = px.bar(
        df.iloc[::-1],
        x="sales",
        y="label",
        orientation="h",
        hover_data=["units", "orders"],
        title=f"Top {len(df)} products by sales",
    )
    fig.update_layout(yaxis_title=None, height=60 + 32 * len(df))
    return fig


def country_chart(by_country: pd.DataFrame, n: int = 15) -> Any:
    """Net revenue of the top countries as bars on a log axis (one home market dwarfs the rest).

    A bar chart rather than a world map: plotly's choropleth fetches its country outlines from a CDN when the page
    is viewed, so a map is blank in a report opened offline.
    """
    import plotly.express as px

    df = (
        by_country.assign(net_revenue=_money(by_country["net_revenue"]))
        .query("net_revenue > 0")  # a log axis shows positive revenue; a country of net refunds is in the table
        .sort_values("net_revenue", ascending=False)
        .head(n)
        .iloc[::-1]
    )
    fig = px.bar(
        df,
        x="net_revenue",
        y="country",
        orientation="h",
        log_x=True,
        hover_data=["orders", "customers"],
        labels={"net_revenue": "net revenue (log scale)", "country": ""},
        title=f"Net revenue by country (top {min(n, len(df))})",
    )
    fig.update_layout(height=120 + 26 * len(df))
    return fig


def cohort_heatmap(cohorts: pd.DataFrame) -> Any:
    import plotly.express as px

    grid = cohorts.pivot(index="cohort", columns="months_since_first", values="retention").sort_index()
    fig = px.imshow(
        grid,
        text_auto=".0%",
        color_continuous_scale="Greens",
        aspect="auto",
        labels={"x": "months since first order", "y": "cohort (first order month)", "color": "retention"},
        title="Monthly cohort retention",
    )
    fig.update_layout(
        height=max(380, 140 + 30 * len(grid)),
        coloraxis_colorbar={"tickformat": ".0%", "len": 0.8, "thickness": 14, "title": {"side": "right"}},
    )
    return fig


def rfm_chart(segments: pd.DataFrame) -> Any:
    import plotly.express as px

    df = segments.assign(sales=_money(segments["sales"]))
    fig = px.bar(
        df,
        x="segment",
        y="customers",
        color="sales",
        color_continuous_scale="Viridis",
        hover_data=["orders", "min_recency_days", "max_recency_days"],
        title="RFM segments",
    )
    fig.update_layout(height=360)
    return fig


def dashboard(results: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Every figure of the dashboard from ``run_query_set()``'s results, by name."""
    return {
        "revenue_trend": revenue_trend(results["daily_revenue"]),
        "top_products": top_products_chart(results["top_products"]),
        "revenue_by_country": country_chart(results["revenue_by_country"]),
        "cohort_retention": cohort_heatmap(results["cohort_retention"]),
        "rfm_segments": rfm_chart(results["rfm_segments"]),
    }
