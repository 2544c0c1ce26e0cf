"""Web-server access logs: parse (Apache common/combined), deliver through Firehose, index, search, dashboard.

Verbs: ``parse_file`` / ``parse_lines`` / ``parse_line``; ``open_index`` (OpenSearch on aws, DuckDB locally);
``ship_lines`` (to Firehose ``weblogs``), ``deliver_new`` / ``Follower`` (lake → index, locally), ``stream_log``
(steady-rate producer measuring freshness), ``stream_dataset`` / ``investigate`` (notebook 05); ``snapshot`` / ``figures`` / ``create_app`` (the dashboard).
"""

from shoplake.weblogs._analysis import investigate, load_incidents, stream_dataset
from shoplake.weblogs._dashboard import DashboardServer, Snapshot, create_app, figures, find_spikes, snapshot
from shoplake.weblogs._delivery import (
    DeliveryCounts,
    DeliveryError,
    Follower,
    StreamReport,
    deliver_new,
    read_failed,
    ship_lines,
    stream_log,
    transform_object,
)
from shoplake.weblogs._index import IngestCounts, LocalIndex, LogIndex, LogIndexError, OpenSearchIndex, open_index
from shoplake.weblogs._parser import ParseResult, Rejected, iter_lines, parse_file, parse_line, parse_lines
from shoplake.weblogs._query import QueryError, parse_query, to_dsl, to_sql

__all__ = [
    "DashboardServer",
    "DeliveryCounts",
    "DeliveryError",
    "Follower",
    "IngestCounts",
    "LocalIndex",
    "LogIndex",
    "LogIndexError",
    "OpenSearchIndex",
    "ParseResult",
    "QueryError",
    "Rejected",
    "Snapshot",
    "StreamReport",
    "create_app",
    "investigate",
    "load_incidents",
    "stream_dataset",
    "deliver_new",
    "figures",
    "find_spikes",
    "iter_lines",
    "open_index",
    "parse_file",
    "parse_line",
    "parse_lines",
    "parse_query",
    "read_failed",
    "ship_lines",
    "snapshot",
    "stream_log",
    "to_dsl",
    "to_sql",
    "transform_object",
]
