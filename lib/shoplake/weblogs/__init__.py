"""Web-server access logs: parse (Apache common/combined), deliver through Firehose, index, search, dashboard.

Verbs: ``parse_file`` / ``parse_lines`` / ``parse_line``; ``open_index`` (OpenSearch on aws, DuckDB locally,
chosen once) and its ``index.follower()`` (locally a ``LakeFollower`` indexing Firehose's lake deliveries, on aws an
``IndexObserver``: Firehose writes to OpenSearch itself); ``ship_lines`` (to Firehose ``weblogs``), ``stream_log``
(steady-rate producer measuring freshness), ``measure_freshness`` (notebook 05: freshness at a paced rate, then the
backlog of the rest, reported apart), ``stream_dataset`` / ``investigate``; ``snapshot`` /
``figures`` / ``create_app`` (the dashboard); ``index_template`` / ``TEMPLATE_PATH`` / ``install_template`` (the
OpenSearch index template ``infra apply`` installs on aws).
"""

from shoplake.weblogs._analysis import FreshnessReport, investigate, load_incidents, measure_freshness, stream_dataset
from shoplake.weblogs._dashboard import DashboardServer, Snapshot, create_app, figures, find_spikes, snapshot
from shoplake.weblogs._delivery import (
    Follower,
    IndexDeliveryCounts,
    IndexObserver,
    LakeFollower,
    StreamReport,
    buffering_seconds,
    deliver_new,
    ship_lines,
    stream_log,
    transform_object,
)
from shoplake.weblogs._index import (
    TEMPLATE_NAME,
    TEMPLATE_PATH,
    IngestCounts,
    LocalIndex,
    LogIndex,
    LogIndexError,
    OpenSearchIndex,
    daily_index,
    index_template,
    install_template,
    open_index,
)
from shoplake.weblogs._lake_io import DeliveryError, read_failed
from shoplake.weblogs._parser import ParseResult, Rejected, iter_lines, parse_file, parse_line, parse_lines
from shoplake.weblogs._query import SearchQueryError, parse_query, to_dsl, to_sql

__all__ = [
    "TEMPLATE_NAME",
    "TEMPLATE_PATH",
    "DashboardServer",
    "IndexDeliveryCounts",
    "DeliveryError",
    "Follower",
    "IndexObserver",
    "LakeFollower",
    "FreshnessReport",
    "IngestCounts",
    "LocalIndex",
    "LogIndex",
    "LogIndexError",
    "OpenSearchIndex",
    "ParseResult",
    "SearchQueryError",
    "Rejected",
    "Snapshot",
    "StreamReport",
    "create_app",
    "investigate",
    "load_incidents",
    "measure_freshness",
    "stream_dataset",
    "buffering_seconds",
    "daily_index",
    "deliver_new",
    "figures",
    "find_spikes",
    "index_template",
    "install_template",
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
