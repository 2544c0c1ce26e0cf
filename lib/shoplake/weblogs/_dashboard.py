"""The live log dashboard (the Kibana stand-in): a Dash page that re-asks the index every few seconds.

Every number and chart on the page is an answer of the index (:func:`snapshot`); the notebook draws the same
plotly figures (:func:`figures`). ``shoplake dashboard`` serves it while the index's follower (``index.follower()``)
keeps bringing in what Firehose delivers: locally from the lake, on aws by watching OpenSearch fill up.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from shoplake.weblogs._index import LogIndex

log = logging.getLogger(__name__)

WINDOWS = {
    "all": None,
    "30d": pd.Timedelta(days=30),
    "1d": pd.Timedelta(days=1),
    "1h": pd.Timedelta(hours=1),
    "15m": pd.Timedelta(minutes=15),
}
AUTO_INTERVALS = (
    ("1m", pd.Timedelta(minutes=1)),
    ("5m", pd.Timedelta(minutes=5)),
    ("15m", pd.Timedelta(minutes=15)),
    ("1h", pd.Timedelta(hours=1)),
    ("1d", pd.Timedelta(days=1)),
)
MAX_BUCKETS = 400
STATUS_COLOURS = {"1xx": "#9e9e9e", "2xx": "#2e7d32", "3xx": "#1565c0", "4xx": "#f9a825", "5xx": "#c62828"}


def combine(query: str, extra: str) -> str:
    """``query AND extra`` (either may be empty)."""
    query = (query or "").strip()
    return f"({query}) AND ({extra})" if query else extra


def auto_interval(start: pd.Timestamp | None, end: pd.Timestamp | None) -> str:
    """The finest histogram interval giving at most ``MAX_BUCKETS`` buckets over ``[start, end]``."""
    if start is None or end is None:
        return "1m"
    span = end - start
    for name, width in AUTO_INTERVALS:
        if span / width <= MAX_BUCKETS:
            return name
    return "1d"


def find_spikes(
    errors: pd.DataFrame,
    interval: str,
    min_count: int = 3,
    factor: float = 5.0,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """5xx spikes: buckets with ``count ≥ max(min_count, factor × mean 5xx per bucket)``, adjacent buckets merged.

    ``errors`` is a 5xx date histogram (columns ``time``, ``count``). Returns ``start``, ``end``, ``count``, ``peak``.
    """
    cols = ["start", "end", "count", "peak"]
    if errors.empty:
        return pd.DataFrame(columns=cols)
    width = dict(AUTO_INTERVALS).get(interval) or pd.Timedelta(interval)
    series = errors.groupby("time")["count"].sum().sort_index()
    lo = start if start is not None else series.index.min()
    hi = end if end is not None else series.index.max() + width
    buckets = max(1, int((hi - lo) / width))
    threshold = max(min_count, factor * series.sum() / buckets)
    hot = series[series >= threshold]
    episodes: list[list[Any]] = []
    for t, n in hot.items():
        if episodes and t - episodes[-1][1] <= pd.Timedelta(0):
            episodes[-1][1] = t + width
            episodes[-1][2] += int(n)
            episodes[-1][3] = max(episodes[-1][3], int(n))
        else:
            episodes.append([t, t + width, int(n), int(n)])
    return pd.DataFrame(episodes, columns=cols)


@dataclass
class Snapshot:
    """Everything the page shows, as the index answered it."""

    query: str
    window: str
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    interval: str
    requests: int
    errors_5xx: int
    bots: int
    rejected: int
    bytes: dict[str, Any]
    histogram: pd.DataFrame
    errors: pd.DataFrame
    spikes: pd.DataFrame
    top_paths: pd.DataFrame
    top_agents: pd.DataFrame
    top_bots: pd.DataFrame
    taken_at: str

    def kpis(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "bytes": self.bytes["sum"],
            "bots": self.bots,
            "rejected": self.rejected,
            "p95_bytes": self.bytes.get("p95"),
        }


def snapshot(index: LogIndex, query: str = "", window: str = "all", top: int = 10) -> Snapshot:
    """Ask the index everything the dashboard shows (time window relative to the newest document)."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {list(WINDOWS)}")
    latest = index.search("", size=1)
    newest = latest["@timestamp"].iloc[0] if not latest.empty else None
    start = end = None
    if newest is not None and WINDOWS[window] is not None:
        end = newest + pd.Timedelta(seconds=1)
        start = end - WINDOWS[window]
    interval = auto_interval(_oldest(index), newest) if start is None else auto_interval(start, end)
    errors_query = combine(query, "status_class:5xx")
    errors = index.date_histogram(errors_query, interval, None, start, end)
    return Snapshot(
        query=query,
        window=window,
        start=start,
        end=end,
        interval=interval,
        requests=index.count(query, start, end),
        errors_5xx=index.count(errors_query, start, end),
        bots=index.count(combine(query, "bot:true"), start, end),
        rejected=index.rejected_count(),
        bytes=index.stats("bytes", query, (50, 95), start, end),
        histogram=index.date_histogram(query, interval, "status_class", start, end),
        errors=errors,
        spikes=find_spikes(errors, interval, start=start, end=end),
        top_paths=index.terms("path", query, top, start, end),
        top_agents=index.terms("agent", combine(query, "bot:false"), top, start, end),
        top_bots=index.terms("agent", combine(query, "bot:true"), top, start, end),
        taken_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _oldest(index: LogIndex) -> pd.Timestamp | None:
    hist = index.date_histogram("", "1d", None)
    return hist["time"].min() if not hist.empty else None


def _labels(agents: pd.Series, width: int = 56) -> list[str]:
    """Ranked, shortened user-agent labels (the rank keeps two agents with the same beginning apart)."""
    return [f"{rank}. " + (a if len(a) <= width else a[: width - 1] + "…") for rank, a in enumerate(agents, 1)]


def figures(snap: Snapshot) -> dict[str, Any]:
    """The dashboard's plotly figures: status classes over time, 5xx with spikes, top paths, agents, bots."""
    import plotly.graph_objects as go

    per = dict(AUTO_INTERVALS)[snap.interval] / pd.Timedelta(minutes=1)
    status = go.Figure()
    for key in sorted(snap.histogram["key"].unique()) if not snap.histogram.empty else []:
        part = snap.histogram[snap.histogram["key"] == key]
        status.add_bar(x=part["time"], y=part["count"] / per, name=key, marker_color=STATUS_COLOURS.get(key))
    status.update_layout(
        barmode="stack",
        title=f"Requests per minute by status class ({snap.interval} buckets)",
        yaxis_title="requests / minute",
        height=320,
        margin={"t": 40, "b": 30, "l": 50, "r": 10},
    )
    errors = go.Figure()
    errors.add_scatter(
        x=snap.errors["time"],
        y=snap.errors["count"],
        mode="lines+markers",
        name="5xx",
        line_color=STATUS_COLOURS["5xx"],
    )
    for row in snap.spikes.itertuples():
        errors.add_vrect(x0=row.start, x1=row.end, fillcolor="red", opacity=0.15, line_width=0)
    errors.update_layout(
        title=f"5xx per {snap.interval} bucket ({len(snap.spikes)} spikes shaded)",
        height=320,
        margin={"t": 40, "b": 30, "l": 50, "r": 10},
    )
    paths = go.Figure(go.Bar(x=snap.top_paths["count"][::-1], y=snap.top_paths["key"][::-1], orientation="h"))
    paths.update_layout(title="Top paths", height=320, margin={"t": 40, "b": 30, "l": 140, "r": 10})
    agents = go.Figure(
        go.Bar(x=snap.top_agents["count"][::-1], y=_labels(snap.top_agents["key"])[::-1], orientation="h")
    )
    agents.update_layout(title="Top user agents (people)", height=320, margin={"t": 40, "b": 30, "l": 320, "r": 10})
    bots = go.Figure(
        go.Bar(
            x=snap.top_bots["count"][::-1],
            y=_labels(snap.top_bots["key"])[::-1],
            orientation="h",
            marker_color="#6a1b9a",
        )
    )
    bots.update_layout(title="Bots and scripts", height=320, margin={"t": 40, "b": 30, "l": 320, "r": 10})
    return {"status": status, "errors": errors, "paths": paths, "agents": agents, "bots": bots}


# --------------------------------------------------------------------------- the Dash app


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{int(value):,}"


def create_app(index: LogIndex, refresh_s: float = 3.0, title: str = "shoplake — web logs") -> Any:
    """The Dash app over ``index``: KPIs, charts, top-paths table, 5xx spikes and a search box; refreshes itself."""
    from dash import Dash, Input, Output, State, dcc, html

    app = Dash(__name__, title=title, update_title=None)
    kpi_names = [
        ("requests", "Requests"),
        ("errors_5xx", "5xx errors"),
        ("bytes", "Bytes served"),
        ("bots", "Bot requests"),
        ("rejected", "Rejected lines"),
        ("p95_bytes", "p95 response bytes"),
    ]
    card = {
        "display": "inline-block",
        "padding": "8px 16px",
        "margin": "4px",
        "border": "1px solid #ddd",
        "borderRadius": "6px",
        "minWidth": "140px",
        "fontFamily": "sans-serif",
    }
    app.layout = html.Div(
        style={"fontFamily": "sans-serif", "margin": "12px"},
        children=[
            html.H2(title),
            html.Div(
                [
                    dcc.Input(
                        id="search",
                        type="text",
                        debounce=True,
                        placeholder='search: status:500, path:/product/*, "mug"',
                        style={"width": "420px", "padding": "6px"},
                    ),
                    html.Button("Search", id="search-button", n_clicks=0, style={"marginLeft": "6px"}),
                    dcc.Dropdown(
                        id="window",
                        options=[{"label": w, "value": w} for w in WINDOWS],
                        value="all",
                        clearable=False,
                        style={
                            "width": "100px",
                            "display": "inline-block",
                            "marginLeft": "12px",
                            "verticalAlign": "middle",
                        },
                    ),
                    html.Span(id="status-line", style={"marginLeft": "12px", "color": "#666"}),
                ]
            ),
            html.Div(id="error", style={"color": "#c62828"}),
            html.Div(
                [
                    html.Div(
                        [
                            html.Div(label, style={"color": "#666", "fontSize": "12px"}),
                            html.Div(
                                "…",
                                id=f"kpi-{name}",
                                className="kpi",
                                **{"data-kpi": name},
                                style={"fontSize": "22px", "fontWeight": "bold"},
                            ),
                        ],
                        style=card,
                    )
                    for name, label in kpi_names
                ]
            ),
            html.Div(
                [
                    dcc.Graph(id="graph-status", style={"width": "50%", "display": "inline-block"}),
                    dcc.Graph(id="graph-errors", style={"width": "50%", "display": "inline-block"}),
                ]
            ),
            html.Div(
                [
                    dcc.Graph(id="graph-paths", style={"width": "33%", "display": "inline-block"}),
                    dcc.Graph(id="graph-agents", style={"width": "33%", "display": "inline-block"}),
                    dcc.Graph(id="graph-bots", style={"width": "33%", "display": "inline-block"}),
                ]
            ),
            html.Div(
                [
                    html.Div(
                        [html.H4("Top paths"), html.Table(id="table-paths")],
                        style={"width": "48%", "display": "inline-block", "verticalAlign": "top"},
                    ),
                    html.Div(
                        [html.H4("5xx spikes"), html.Ul(id="spikes")],
                        style={"width": "48%", "display": "inline-block", "verticalAlign": "top"},
                    ),
                ]
            ),
            dcc.Interval(id="tick", interval=int(refresh_s * 1000), n_intervals=0),
        ],
    )
    lock = threading.Lock()

    @app.callback(
        [Output(f"kpi-{name}", "children") for name, _ in kpi_names]
        + [
            Output("graph-status", "figure"),
            Output("graph-errors", "figure"),
            Output("graph-paths", "figure"),
            Output("graph-agents", "figure"),
            Output("graph-bots", "figure"),
            Output("table-paths", "children"),
            Output("spikes", "children"),
            Output("status-line", "children"),
            Output("error", "children"),
        ],
        [
            Input("tick", "n_intervals"),
            Input("search-button", "n_clicks"),
            Input("search", "value"),
            Input("window", "value"),
        ],
        [State("search", "value")],
    )
    def refresh(_tick: int, _clicks: int, _value: str | None, window: str, query: str | None) -> list[Any]:
        from dash import no_update

        try:
            with lock:
                snap = snapshot(index, query or "", window or "all")
        except Exception as exc:  # a bad search string: show the message, keep the last charts
            return [no_update] * (len(kpi_names) + 8) + [str(exc)]
        kpis = snap.kpis()
        figs = figures(snap)
        rows = [html.Tr([html.Th("path"), html.Th("requests")])] + [
            html.Tr([html.Td(r.key, className="path"), html.Td(_fmt(r.count), className="count")])
            for r in snap.top_paths.itertuples()
        ]
        spikes = [
            html.Li(
                f"{r.start:%Y-%m-%d %H:%M} – {r.end:%Y-%m-%d %H:%M} UTC: {r.count} errors (peak {r.peak})",
                className="spike",
            )
            for r in snap.spikes.itertuples()
        ] or [html.Li("none")]
        line = f"{snap.requests:,} documents · {index.backend} · buckets {snap.interval} · refreshed {snap.taken_at}"
        return [_fmt(kpis[name]) for name, _ in kpi_names] + [
            figs["status"],
            figs["errors"],
            figs["paths"],
            figs["agents"],
            figs["bots"],
            rows,
            spikes,
            line,
            "",
        ]

    return app


class DashboardServer:
    """Serve a Dash app on a loopback port in a thread (``shoplake dashboard``, the browser test)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import make_server

        self.server = make_server(host, port, app.server, threaded=True)
        self.host = host
        self.port = self.server.server_port
        self._thread = threading.Thread(target=self.server.serve_forever, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> DashboardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(timeout=10)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
