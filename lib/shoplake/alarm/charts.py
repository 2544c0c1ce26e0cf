"""Plotly figure of a detector run: order rate per window, expected rate, RCF score, incidents shaded, alarms marked."""

from __future__ import annotations

from typing import Any

import pandas as pd


def history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    """The detector's per-window history as a DataFrame with UTC timestamps."""
    frame = pd.DataFrame(history)
    for column in ("window_start", "window_end", "decided_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def day_figure(
    history: list[dict[str, Any]],
    incidents: list[dict[str, Any]],
    rule_alarm_times: list[float] = (),
    title: str = "Orders per window, random-cut-forest score and alarms",
) -> Any:
    """Two rows: orders vs expected (incidents shaded, alarms marked) and the RCF score against its threshold."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frame = history_frame(history)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    fig.add_trace(
        go.Scatter(
            x=frame["window_start"], y=frame["orders"], name="orders per window", mode="lines", line={"shape": "hv"}
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=frame["window_start"],
            y=frame["expected"],
            name="expected (time-of-day profile)",
            mode="lines",
            line={"dash": "dot"},
        ),
        row=1,
        col=1,
    )
    alarms = frame[frame["alarm"].notna()]
    fig.add_trace(
        go.Scatter(
            x=alarms["window_start"],
            y=alarms["orders"],
            name="RCF alarm",
            mode="markers",
            marker={"symbol": "triangle-down", "size": 14, "color": "red"},
        ),
        row=1,
        col=1,
    )
    if len(rule_alarm_times):
        times = pd.to_datetime(list(rule_alarm_times), unit="s", utc=True)
        fig.add_trace(
            go.Scatter(
                x=times,
                y=[0] * len(times),
                name="rule alarms (10 s ≥ threshold)",
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 10, "color": "orange"},
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(x=frame["window_start"], y=frame["score"], name="RCF score (CoDisp)", mode="lines"), row=2, col=1
    )
    fig.add_trace(
        go.Scatter(
            x=frame["window_start"], y=frame["threshold"], name="threshold", mode="lines", line={"dash": "dash"}
        ),
        row=2,
        col=1,
    )
    for incident in incidents:
        colour = "rgba(255,0,0,0.12)" if incident["kind"] == "outage" else "rgba(0,128,255,0.12)"
        for row in (1, 2):
            fig.add_vrect(x0=incident["start"], x1=incident["end"], fillcolor=colour, line_width=0, row=row, col=1)
    fig.update_yaxes(title_text="orders", row=1, col=1)
    fig.update_yaxes(title_text="score", type="log", row=2, col=1)
    fig.update_layout(title=title, height=600, legend={"orientation": "h", "y": -0.12})
    return fig


def series_figure(run: Any, title: str | None = None) -> Any:
    """A recorded series (``_series.SeriesRun``): counts and the expected rhythm, labelled windows shaded, the
    forest's and the rule's alarms marked, NAB's probation marked."""
    import plotly.graph_objects as go

    series = run.series
    frame = history_frame(run.detector.history)
    times = pd.to_datetime(list(series.timestamps))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=times, y=series.values, name="count per interval", line={"width": 1}))
    rows_per_window = run.detector.config.window_seconds / series.interval_seconds
    fig.add_trace(
        go.Scatter(
            x=frame["window_start"].dt.tz_localize(None),
            y=frame["expected"] / rows_per_window,
            name="expected per interval (time-of-day profile)",
            line={"width": 1, "dash": "dot"},
        )
    )
    for start, end in run.windows:
        fig.add_vrect(x0=start, x1=end, fillcolor="orange", opacity=0.2, line_width=0, annotation_text="labelled")
    probation = run.forest.get("probation_rows") if run.forest else None
    if probation:
        fig.add_vrect(x0=times[0], x1=times[probation - 1], fillcolor="grey", opacity=0.12, line_width=0)
    for rows, name, symbol in ((run.forest_rows, "forest alarm", "x"), (run.rule_rows, "rule alarm", "triangle-up")):
        fig.add_trace(
            go.Scatter(
                x=times[rows],
                y=series.values[rows],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 12},
            )
        )
    fig.update_layout(
        title=title or f"{series.name}: labelled windows (orange), probation (grey), alarms",
        height=420,
        margin={"t": 50, "l": 50, "r": 20, "b": 40},
    )
    return fig
