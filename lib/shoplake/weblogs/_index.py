"""The log index: one interface, two backends — OpenSearch on aws, an embedded DuckDB engine locally.

It answers what the dashboard asks: a search (query string, see ``_query``), counts, a date histogram split by
status class, terms aggregations, sum/avg/percentiles of a numeric field, the rejected lines. Ingestion is by
micro-batch; a batch carries the name of its source (a Firehose object in the lake), and a source already
ingested is skipped, so replaying the lake never duplicates documents.

The backend is chosen once, by :func:`open_index` (``config.by_target``), and it brings its own delivery leg,
:meth:`LogIndex.follower`: locally a follower that reads Firehose's S3 deliveries into DuckDB; on aws Firehose
writes to OpenSearch itself, so that follower only observes the index filling up. Same verbs on both sides.

Why DuckDB locally: it is already a dependency (the Athena stand-in), well kept, embedded (no server, no JVM),
columnar and vectorised, so the dashboard's aggregations (``time_bucket`` histograms, ``GROUP BY`` terms,
``quantile_cont`` percentiles, ``ILIKE`` search) over a million log lines answer in tens of milliseconds, and
Arrow batches go in without copying row by row. A full-text engine (Whoosh, Tantivy) would be better at relevance
ranking, which a log dashboard does not use; it would be worse at the aggregations, which it uses all the time.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import config
from shoplake.errors import ShoplakeError
from shoplake.weblogs._query import (
    FIELDS,
    KEYWORD_FIELDS,
    NUMERIC_FIELDS,
    TEXT_FIELDS,
    keyword_field,
    to_dsl,
    to_sql,
)

log = logging.getLogger(__name__)

INTERVALS = {
    "1s": "1 second",
    "10s": "10 seconds",
    "1m": "1 minute",
    "5m": "5 minutes",
    "15m": "15 minutes",
    "1h": "1 hour",
    "1d": "1 day",
}
TERMS_FIELDS = (*KEYWORD_FIELDS, *TEXT_FIELDS, "status", "bot")
DOC_COLUMNS = (
    "_id",
    "@timestamp",
    "client_ip",
    "ident",
    "user",
    "method",
    "path",
    "query",
    "protocol",
    "request",
    "status",
    "bytes",
    "referrer",
    "agent",
    "bot",
    "source",
)
INDEX_PREFIX = "weblogs"  # the Firehose IndexName (infra/resources.yaml); OneDay rotation appends -YYYY-MM-DD
TEMPLATE_PATH = config.REPO_ROOT / "infra" / "opensearch" / "weblogs-template.json"
TEMPLATE_NAME = INDEX_PREFIX


class LogIndexError(ShoplakeError):
    """The index cannot answer (bad field, unreachable domain); the message says what to do."""


@dataclass
class IngestCounts:
    """One micro-batch: documents indexed, rejected lines stored, and whether the source was already there."""

    indexed: int = 0
    rejected: int = 0
    skipped_source: bool = False


def _as_ts(value: Any) -> str | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_field(field: str, allowed: Sequence[str]) -> str:
    if field not in allowed:
        raise LogIndexError(f"cannot aggregate on {field!r}: use one of {', '.join(allowed)}")
    return field


def _check_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise LogIndexError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    return interval


class LogIndex(ABC):
    """What every backend answers; ``query`` is a search string, ``start``/``end`` bound ``@timestamp``."""

    backend = "abstract"

    @abstractmethod
    def ingest(
        self, docs: Sequence[dict[str, Any]], source: str | None = None, rejected: Sequence[dict[str, Any]] = ()
    ) -> IngestCounts:
        """Index a micro-batch of documents (and store its rejected lines) at once."""

    def ingest_many(
        self, batches: Sequence[tuple[Sequence[dict[str, Any]], str | None, Sequence[dict[str, Any]]]]
    ) -> list[IngestCounts]:
        """Several micro-batches ``(docs, source, rejected)``; one :class:`IngestCounts` each, in order."""
        return [self.ingest(docs, source=source, rejected=rejected) for docs, source, rejected in batches]

    @abstractmethod
    def count(self, query: str = "", start: Any = None, end: Any = None) -> int:
        """Number of documents matching."""

    @abstractmethod
    def search(self, query: str = "", size: int = 20, start: Any = None, end: Any = None) -> pd.DataFrame:
        """The newest matching documents."""

    @abstractmethod
    def date_histogram(
        self,
        query: str = "",
        interval: str = "1m",
        split: str | None = "status_class",
        start: Any = None,
        end: Any = None,
    ) -> pd.DataFrame:
        """Counts per time bucket (columns ``time``, ``key``, ``count``), split by status class or not at all."""

    @abstractmethod
    def terms(self, field: str, query: str = "", size: int = 10, start: Any = None, end: Any = None) -> pd.DataFrame:
        """Most frequent values of ``field`` (columns ``key``, ``count``)."""

    @abstractmethod
    def stats(
        self,
        field: str = "bytes",
        query: str = "",
        percentiles: Sequence[float] = (50, 95, 99),
        start: Any = None,
        end: Any = None,
    ) -> dict[str, Any]:
        """``count``, ``sum``, ``min``, ``max``, ``avg`` and ``p<N>`` of a numeric field."""

    @abstractmethod
    def rejected_count(self) -> int:
        """Number of lines that could not be parsed (the failed-documents place)."""

    @abstractmethod
    def rejected(self, limit: int = 20) -> pd.DataFrame:
        """Some rejected lines with their reasons."""

    @abstractmethod
    def sources(self) -> set[str]:
        """Sources (delivery objects) already ingested."""

    def total_processed(self) -> int:
        """Documents + rejected lines: every shipped line ends up in one of the two."""
        return self.count() + self.rejected_count()

    @abstractmethod
    def follower(
        self, interval_s: float = 1.0, only_new: bool = False, on_pass: Any = None
    ) -> Any:  # -> shoplake.weblogs._delivery.Follower
        """This backend's delivery leg (not started): what brings Firehose's deliveries into this index."""

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release the backend's resources."""


# --------------------------------------------------------------------------- local: DuckDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    _id VARCHAR, ts TIMESTAMP, client_ip VARCHAR, ident VARCHAR, "user" VARCHAR, method VARCHAR, path VARCHAR,
    query VARCHAR, protocol VARCHAR, request VARCHAR, status SMALLINT, bytes BIGINT, referrer VARCHAR, agent VARCHAR,
    bot BOOLEAN, source VARCHAR);
CREATE TABLE IF NOT EXISTS rejected (
    _id VARCHAR, source VARCHAR, line_no BIGINT, line VARCHAR, reason VARCHAR, received_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS sources (source VARCHAR PRIMARY KEY, ingested_at TIMESTAMP, docs BIGINT, rejected BIGINT);
"""


def _start_over_after_an_emulator_restart(path: Path) -> None:
    """A local index file mirrors what the emulator's lake held; after an emulator restart (an empty lake) it is
    rebuilt from scratch instead of counting yesterday's documents twice."""
    from shoplake import local_services

    marker = path.with_name(path.name + ".generation")
    was = config.by_target(local=lambda: local_services.restarted_since(marker), aws=lambda: None)()
    if was is not None and path.exists():
        path.unlink()
        Path(str(path) + ".wal").unlink(missing_ok=True)
        log.warning("the local emulator was restarted (its lake is empty): the log index %s starts over", path)


class LocalIndex(LogIndex):
    """The embedded index: DuckDB in memory (default) or in a file; safe to query from several threads."""

    backend = "duckdb"

    def __init__(self, path: str | Path | None = None) -> None:
        import duckdb

        self.path = str(path) if path else ":memory:"
        if path:
            Path(path).parent.mkdir(parents=True, mode=0o700, exist_ok=True)  # the index holds client IPs: private
            _start_over_after_an_emulator_restart(Path(path))
        self._con = duckdb.connect(self.path)
        self._con.execute(_SCHEMA)
        self._write = threading.Lock()
        self._local = threading.local()

    # one cursor per thread: DuckDB connections are not to be shared between threads
    def _cur(self) -> Any:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._cur().execute(sql, list(params)).fetchall()

    def _where(self, query: str, start: Any, end: Any) -> tuple[str, list[Any]]:
        cond, params = to_sql(query)
        if start is not None:
            cond += " AND ts >= CAST(? AS TIMESTAMPTZ)::TIMESTAMP"
            params.append(_as_ts(start))
        if end is not None:
            cond += " AND ts < CAST(? AS TIMESTAMPTZ)::TIMESTAMP"
            params.append(_as_ts(end))
        return cond, params

    def ingest(
        self, docs: Sequence[dict[str, Any]], source: str | None = None, rejected: Sequence[dict[str, Any]] = ()
    ) -> IngestCounts:
        return self.ingest_many([(docs, source, rejected)])[0]

    def ingest_many(
        self, batches: Sequence[tuple[Sequence[dict[str, Any]], str | None, Sequence[dict[str, Any]]]]
    ) -> list[IngestCounts]:
        """One transaction for all the batches (a follower's pass): sources already there, or repeated within
        ``batches``, are skipped; the others go in together, so a pass costs one insert, not one per object."""
        import pyarrow as pa
        import pyarrow.compute as pc

        with self._write:
            cur = self._cur()
            named = [src for _, src, _ in batches if src is not None]
            present: set[str] = set()
            if named:
                present = {
                    r[0]
                    for r in cur.execute(
                        "SELECT source FROM sources WHERE source IN (SELECT unnest(?::VARCHAR[]))", [named]
                    ).fetchall()
                }
            out: list[IngestCounts] = []
            keep: list[tuple[Sequence[dict[str, Any]], str | None, Sequence[dict[str, Any]]]] = []
            for docs, source, rejected in batches:
                if source is not None and source in present:
                    out.append(IngestCounts(skipped_source=True))
                    continue
                if source is not None:
                    present.add(source)
                keep.append((docs, source, rejected))
                out.append(IngestCounts(indexed=len(docs), rejected=len(rejected)))
            if not keep:
                return out
            cols: dict[str, list[Any]] = {name: [] for name in DOC_COLUMNS}
            for docs, source, _ in keep:
                for name in DOC_COLUMNS:
                    if name == "_id":
                        cols[name] += [d.get("_id") or f"{source or 'batch'}#{i}" for i, d in enumerate(docs)]
                    elif name == "source":
                        cols[name] += [source] * len(docs)
                    else:
                        cols[name] += [d.get(name) for d in docs]
            table = pa.table(
                {
                    "_id": pa.array(cols["_id"], pa.string()),
                    "ts": pc.strptime(pa.array(cols["@timestamp"], pa.string()), format="%Y-%m-%dT%H:%M:%SZ", unit="s"),
                    **{
                        c: pa.array(cols[c], pa.string())
                        for c in ("client_ip", "ident", "user", "method", "path", "query", "protocol", "request")
                    },
                    "status": pa.array(cols["status"], pa.int16()),
                    "bytes": pa.array(cols["bytes"], pa.int64()),
                    "referrer": pa.array(cols["referrer"], pa.string()),
                    "agent": pa.array(cols["agent"], pa.string()),
                    "bot": pa.array(cols["bot"], pa.bool_()),
                    "source": pa.array(cols["source"], pa.string()),
                }
            )
            now = datetime.now(UTC).replace(tzinfo=None)
            bad_rows = [(r, source, i) for _, source, rejected in keep for i, r in enumerate(rejected)]
            bad = pa.table(
                {
                    "_id": pa.array([r.get("_id") or f"{s or 'batch'}#r{i}" for r, s, i in bad_rows], pa.string()),
                    "source": pa.array([s for _, s, _ in bad_rows], pa.string()),
                    "line_no": pa.array([r.get("line_no") for r, _, _ in bad_rows], pa.int64()),
                    "line": pa.array([r.get("line") for r, _, _ in bad_rows], pa.string()),
                    "reason": pa.array([r.get("reason") for r, _, _ in bad_rows], pa.string()),
                    "received_at": pa.array([now] * len(bad_rows), pa.timestamp("us")),
                }
            )
            sources = pa.table(
                {
                    "source": pa.array([s for _, s, _ in keep if s is not None], pa.string()),
                    "ingested_at": pa.array([now for _, s, _ in keep if s is not None], pa.timestamp("us")),
                    "docs": pa.array([len(d) for d, s, _ in keep if s is not None], pa.int64()),
                    "rejected": pa.array([len(r) for _, s, r in keep if s is not None], pa.int64()),
                }
            )
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.register("_batch_docs", table)
                cur.register("_batch_rejected", bad)
                cur.register("_batch_sources", sources)
                cur.execute("INSERT INTO docs SELECT * FROM _batch_docs")
                cur.execute("INSERT INTO rejected SELECT * FROM _batch_rejected")
                cur.execute("INSERT INTO sources SELECT * FROM _batch_sources")
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            finally:
                cur.unregister("_batch_docs")
                cur.unregister("_batch_rejected")
                cur.unregister("_batch_sources")
            return out

    def count(self, query: str = "", start: Any = None, end: Any = None) -> int:
        cond, params = self._where(query, start, end)
        return int(self._rows(f"SELECT count(*) FROM docs WHERE {cond}", params)[0][0])

    def search(self, query: str = "", size: int = 20, start: Any = None, end: Any = None) -> pd.DataFrame:
        cond, params = self._where(query, start, end)
        cur = self._cur()
        frame = cur.execute(
            f'SELECT _id, ts AS "@timestamp", client_ip, method, path, query, protocol, status, bytes, referrer, agent, '
            f"bot, request FROM docs WHERE {cond} ORDER BY ts DESC, _id LIMIT ?",
            [*params, int(size)],
        ).df()
        if not frame.empty:
            frame["@timestamp"] = pd.to_datetime(frame["@timestamp"]).dt.tz_localize("UTC")
        return frame

    def date_histogram(
        self,
        query: str = "",
        interval: str = "1m",
        split: str | None = "status_class",
        start: Any = None,
        end: Any = None,
    ) -> pd.DataFrame:
        cond, params = self._where(query, start, end)
        bucket = f"time_bucket(INTERVAL '{INTERVALS[_check_interval(interval)]}', ts)"
        if split == "status_class":
            key = "CAST(status // 100 AS VARCHAR) || 'xx'"
        elif split is None:
            key = "'all'"
        else:
            key = f'CAST("{_check_field(split, TERMS_FIELDS)}" AS VARCHAR)'
        rows = self._rows(
            f"SELECT {bucket} AS t, {key} AS k, count(*) FROM docs WHERE {cond} GROUP BY t, k ORDER BY t, k", params
        )
        frame = pd.DataFrame(rows, columns=["time", "key", "count"])
        frame["time"] = pd.to_datetime(frame["time"]).dt.tz_localize("UTC")
        frame["count"] = frame["count"].astype("int64")
        return frame

    def terms(self, field: str, query: str = "", size: int = 10, start: Any = None, end: Any = None) -> pd.DataFrame:
        col = '"user"' if field == "user" else _check_field(field, TERMS_FIELDS)
        cond, params = self._where(query, start, end)
        rows = self._rows(
            f"SELECT {col} AS k, count(*) AS c FROM docs WHERE {cond} AND {col} IS NOT NULL "
            f"GROUP BY k ORDER BY c DESC, k LIMIT ?",
            [*params, int(size)],
        )
        frame = pd.DataFrame(rows, columns=["key", "count"])
        frame["count"] = frame["count"].astype("int64")
        return frame

    def stats(
        self,
        field: str = "bytes",
        query: str = "",
        percentiles: Sequence[float] = (50, 95, 99),
        start: Any = None,
        end: Any = None,
    ) -> dict[str, Any]:
        col = _check_field(field, NUMERIC_FIELDS)
        cond, params = self._where(query, start, end)
        qs = [float(p) / 100.0 for p in percentiles]
        row = self._rows(
            f"SELECT count({col}), sum({col}), min({col}), max({col}), avg({col}), "
            f"quantile_cont({col}, ?::DOUBLE[]) FROM docs WHERE {cond}",
            [qs, *params],
        )[0]
        out: dict[str, Any] = {
            "count": int(row[0]),
            "sum": int(row[1] or 0),
            "min": row[2],
            "max": row[3],
            "avg": float(row[4]) if row[4] is not None else None,
        }
        for p, v in zip(percentiles, row[5] or [None] * len(qs), strict=True):
            out[f"p{p:g}"] = float(v) if v is not None else None
        return out

    def rejected_count(self) -> int:
        return int(self._rows("SELECT count(*) FROM rejected")[0][0])

    def rejected(self, limit: int = 20) -> pd.DataFrame:
        return (
            self._cur()
            .execute(
                "SELECT source, line_no, reason, line FROM rejected ORDER BY received_at, source, line_no LIMIT ?",
                [int(limit)],
            )
            .df()
        )

    def sources(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT source FROM sources")}

    def follower(self, interval_s: float = 1.0, only_new: bool = False, on_pass: Any = None) -> Any:
        """A :class:`~shoplake.weblogs._delivery.LakeFollower`: indexes what Firehose delivers to ``raw/weblogs/``."""
        from shoplake.weblogs._delivery import LakeFollower

        return LakeFollower(self, interval_s=interval_s, only_new=only_new, on_pass=on_pass)

    def time_range(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        lo, hi = self._rows("SELECT min(ts), max(ts) FROM docs")[0]
        return (pd.Timestamp(lo, tz="UTC") if lo else None, pd.Timestamp(hi, tz="UTC") if hi else None)

    def close(self) -> None:
        self._con.close()


# --------------------------------------------------------------------------- aws: OpenSearch


def index_template() -> dict[str, Any]:
    """The composable index template of the daily ``weblogs-*`` indices (``infra/opensearch/weblogs-template.json``).

    Install it before the first document arrives (``infra apply`` does on aws): an index created without it maps
    ``path`` and the other keyword fields as text, and the dashboard's terms aggregations then fail with HTTP 400.
    """
    import json

    return json.loads(TEMPLATE_PATH.read_text())


def install_template(endpoint: str | None = None, client: Any = None) -> str:
    """Put :func:`index_template` on the target's OpenSearch domain as ``weblogs`` (idempotent); returns its name.

    What ``infra apply`` runs on aws once the domain is active and before Firehose ``weblogs`` delivers.
    """
    OpenSearchIndex(endpoint=endpoint, client=client).put_template()
    return TEMPLATE_NAME


def daily_index(arrival: datetime | None = None) -> str:
    """The daily index a document lands in: ``weblogs-YYYY-MM-DD`` of its *arrival* day (UTC), not of ``@timestamp``.

    That is what Firehose does with ``IndexRotationPeriod: OneDay``: it appends the UTC date at which the record
    arrived at Firehose to the index name; the document's own time plays no part (an old log shipped today lands in
    today's index). Searches use ``weblogs-*`` and filter on ``@timestamp``, so they do not depend on it; deleting
    old daily indices removes what *arrived* that day. Direct ingestion (:meth:`OpenSearchIndex.ingest`) follows
    the same rule, so both ways of filling the index look alike.
    """
    return f"{INDEX_PREFIX}-{(arrival or datetime.now(UTC)).astimezone(UTC):%Y-%m-%d}"


ACCESS_ONLY = {"bool": {"must_not": [{"term": {"rejected": True}}]}}
REJECTED_ONLY = {"term": {"rejected": True}}


def dsl_filter(query: str, start: Any = None, end: Any = None) -> dict[str, Any]:
    """The query clause of a search string plus an ``@timestamp`` range, over access documents only.

    Rejected-line documents share the daily indices (see ``lambdas/weblogs_transform``); every search leaves them out.
    """
    clauses = [to_dsl(query), ACCESS_ONLY]
    if start is not None or end is not None:
        bounds: dict[str, Any] = {}
        if start is not None:
            bounds["gte"] = _as_ts(start)
        if end is not None:
            bounds["lt"] = _as_ts(end)
        clauses.append({"range": {"@timestamp": bounds}})
    return {"bool": {"filter": clauses}}


def dsl_count(query: str, start: Any = None, end: Any = None) -> dict[str, Any]:
    """Body of the count request."""
    return {"query": dsl_filter(query, start, end)}


def dsl_search(query: str, size: int, start: Any = None, end: Any = None) -> dict[str, Any]:
    """Body of the search request: the newest matching documents."""
    return {"size": int(size), "query": dsl_filter(query, start, end), "sort": [{"@timestamp": "desc"}]}


def dsl_rejected(size: int) -> dict[str, Any]:
    """Body of the request for rejected-line documents, in arrival order (``size`` 0: only their number)."""
    body: dict[str, Any] = {"size": int(size), "track_total_hits": True, "query": {"bool": {"filter": [REJECTED_ONLY]}}}
    if size:
        body["sort"] = [{"received_at": "asc"}]
    return body


def dsl_histogram(query: str, interval: str, split: str | None, start: Any = None, end: Any = None) -> dict[str, Any]:
    """Body of the date-histogram request (status classes as a ``range`` sub-aggregation on ``status``)."""
    aggs: dict[str, Any] = {
        "t": {
            "date_histogram": {"field": "@timestamp", "fixed_interval": _check_interval(interval), "min_doc_count": 1}
        }
    }
    if split == "status_class":
        aggs["t"]["aggs"] = {
            "k": {
                "range": {
                    "field": "status",
                    "keyed": True,
                    "ranges": [{"key": f"{c}xx", "from": c * 100, "to": (c + 1) * 100} for c in range(1, 6)],
                }
            }
        }
    elif split is not None:
        aggs["t"]["aggs"] = {"k": {"terms": {"field": keyword_field(_check_field(split, TERMS_FIELDS)), "size": 20}}}
    return {"size": 0, "track_total_hits": True, "query": dsl_filter(query, start, end), "aggs": aggs}


def parse_histogram(response: dict[str, Any], split: str | None) -> pd.DataFrame:
    rows = []
    for bucket in response["aggregations"]["t"]["buckets"]:
        t = pd.Timestamp(bucket["key"], unit="ms", tz="UTC")
        if split is None:
            rows.append((t, "all", int(bucket["doc_count"])))
        elif split == "status_class":
            rows.extend((t, k, int(v["doc_count"])) for k, v in bucket["k"]["buckets"].items() if v["doc_count"])
        else:
            rows.extend((t, str(b["key"]), int(b["doc_count"])) for b in bucket["k"]["buckets"])
    return pd.DataFrame(rows, columns=["time", "key", "count"])


def dsl_terms(field: str, query: str, size: int, start: Any = None, end: Any = None) -> dict[str, Any]:
    return {
        "size": 0,
        "query": dsl_filter(query, start, end),
        "aggs": {
            "k": {
                "terms": {
                    "field": keyword_field(_check_field(field, TERMS_FIELDS)),
                    "size": int(size),
                    "order": [{"_count": "desc"}, {"_key": "asc"}],
                }
            }
        },
    }


def dsl_stats(
    field: str, query: str, percentiles: Sequence[float], start: Any = None, end: Any = None
) -> dict[str, Any]:
    field = _check_field(field, NUMERIC_FIELDS)
    return {
        "size": 0,
        "track_total_hits": True,
        "query": dsl_filter(query, start, end),
        "aggs": {
            "s": {"stats": {"field": field}},
            "p": {"percentiles": {"field": field, "percents": list(percentiles)}},
        },
    }


def parse_stats(response: dict[str, Any], percentiles: Sequence[float]) -> dict[str, Any]:
    s = response["aggregations"]["s"]
    values = response["aggregations"]["p"]["values"]
    out: dict[str, Any] = {
        "count": int(s["count"]),
        "sum": int(s["sum"] or 0),
        "min": s["min"],
        "max": s["max"],
        "avg": s["avg"],
    }
    for p in percentiles:
        v = values.get(f"{float(p)}") if f"{float(p)}" in values else values.get(str(p))
        out[f"p{p:g}"] = float(v) if v is not None else None
    return out


def _total(hits: dict[str, Any]) -> int:
    total = hits["total"]
    return int(total["value"] if isinstance(total, dict) else total)


class OpenSearchIndex(LogIndex):
    """The OpenSearch domain ``logs`` (daily indices ``weblogs-YYYY-MM-DD``), signed with the target's credentials.

    Lines the transformation refused are rejected-line documents in the same indices; records Firehose itself
    could not deliver (Lambda invocation errors, documents OpenSearch refused) are in the lake bucket's S3 backup
    ``weblogs-failed/``. :meth:`rejected_count` and :meth:`rejected` report both, so shipped = indexed + rejected.
    """

    backend = "opensearch"

    def __init__(self, endpoint: str | None = None, client: Any = None, failed_bucket: str | None = None) -> None:
        if client is None:
            from opensearchpy import OpenSearch, Urllib3AWSV4SignerAuth

            settings = config.settings()
            endpoint = endpoint or self.domain_endpoint()
            auth = Urllib3AWSV4SignerAuth(config.session().get_credentials(), settings.region, "es")
            client = OpenSearch(
                hosts=[{"host": endpoint, "port": 443}], http_auth=auth, use_ssl=True, verify_certs=True, timeout=30
            )
        self.client = client
        self.pattern = f"{INDEX_PREFIX}-*"
        self._failed_bucket = failed_bucket
        self._failed: dict[str, list[dict[str, Any]]] = {}  # S3 backup objects read so far (they never change)

    @staticmethod
    def domain_endpoint() -> str:
        from shoplake import infra

        name = infra.physical_name(infra.find("opensearch_domain", "logs"))
        try:
            status = config.client("opensearch").describe_domain(DomainName=name)["DomainStatus"]
        except Exception as exc:
            if "ResourceNotFoundException" in f"{type(exc).__name__} {exc}":
                raise LogIndexError(
                    f"OpenSearch domain {name} does not exist: run notebook 00_provision (or `shoplake infra apply`)"
                ) from exc
            raise
        endpoint = status.get("Endpoint") or (status.get("Endpoints") or {}).get("vpc")
        if not endpoint:
            raise LogIndexError(
                f"OpenSearch domain {name} has no endpoint yet: wait until it is active "
                "(aws opensearch describe-domain) and retry"
            )
        return endpoint

    def put_template(self) -> None:
        """Install :func:`index_template` as the composable template ``weblogs`` (idempotent)."""
        self.client.indices.put_index_template(name=TEMPLATE_NAME, body=index_template())

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.search(index=self.pattern, body=body, ignore_unavailable=True, allow_no_indices=True)

    def ingest(
        self, docs: Sequence[dict[str, Any]], source: str | None = None, rejected: Sequence[dict[str, Any]] = ()
    ) -> IngestCounts:
        from opensearchpy import helpers

        from shoplake.lambdas.weblogs_transform import rejected_document

        target = daily_index()
        actions = [
            {
                "_index": target,
                "_id": d.get("_id") or f"{source or 'batch'}#{i}",
                "_source": {k: v for k, v in d.items() if k != "_id"},
            }
            for i, d in enumerate(docs)
        ] + [
            {
                "_index": target,
                "_id": r.get("_id") or f"{source or 'batch'}#r{i}",
                "_source": rejected_document(r["line"], r["reason"]),
            }
            for i, r in enumerate(rejected)
        ]
        ok, errors = helpers.bulk(self.client, actions, raise_on_error=False, refresh="wait_for")
        if errors:
            raise LogIndexError(f"{len(errors)} documents were refused by OpenSearch, e.g. {errors[0]}")
        return IngestCounts(indexed=len(docs), rejected=len(rejected))

    def count(self, query: str = "", start: Any = None, end: Any = None) -> int:
        return int(
            self.client.count(
                index=self.pattern, body=dsl_count(query, start, end), ignore_unavailable=True, allow_no_indices=True
            )["count"]
        )

    def search(self, query: str = "", size: int = 20, start: Any = None, end: Any = None) -> pd.DataFrame:
        hits = self._search(dsl_search(query, size, start, end))["hits"]["hits"]
        frame = pd.DataFrame([{"_id": h["_id"], **h["_source"]} for h in hits])
        if not frame.empty:
            frame["@timestamp"] = pd.to_datetime(frame["@timestamp"], utc=True)
        return frame

    def date_histogram(
        self,
        query: str = "",
        interval: str = "1m",
        split: str | None = "status_class",
        start: Any = None,
        end: Any = None,
    ) -> pd.DataFrame:
        return parse_histogram(self._search(dsl_histogram(query, interval, split, start, end)), split)

    def terms(self, field: str, query: str = "", size: int = 10, start: Any = None, end: Any = None) -> pd.DataFrame:
        buckets = self._search(dsl_terms(field, query, size, start, end))["aggregations"]["k"]["buckets"]
        return pd.DataFrame([(b["key"], int(b["doc_count"])) for b in buckets], columns=["key", "count"])

    def stats(
        self,
        field: str = "bytes",
        query: str = "",
        percentiles: Sequence[float] = (50, 95, 99),
        start: Any = None,
        end: Any = None,
    ) -> dict[str, Any]:
        return parse_stats(self._search(dsl_stats(field, query, percentiles, start, end)), percentiles)

    def delivery_failures(self) -> list[dict[str, Any]]:
        """Records Firehose could not deliver, from the S3 backup ``weblogs-failed/`` (each object read once)."""
        from shoplake.weblogs._lake_io import FAILED_PREFIX, _list_keys, lake_bucket, read_failed_object

        bucket = self._failed_bucket = self._failed_bucket or lake_bucket()
        for key in _list_keys(bucket, FAILED_PREFIX):
            if key not in self._failed:
                self._failed[key] = read_failed_object(bucket, key)
        return [rec for key in sorted(self._failed) for rec in self._failed[key]]

    def rejected_count(self) -> int:
        return _total(self._search(dsl_rejected(0))["hits"]) + len(self.delivery_failures())

    def rejected(self, limit: int = 20) -> pd.DataFrame:
        hits = self._search(dsl_rejected(limit))["hits"]["hits"]
        rows = [
            {
                "source": h["_index"],
                "line_no": None,
                "reason": h["_source"].get("reason"),
                "line": h["_source"].get("line"),
            }
            for h in hits
        ]
        rows += self.delivery_failures()[: max(0, int(limit) - len(rows))]
        return pd.DataFrame(rows, columns=["source", "line_no", "reason", "line"])

    def sources(self) -> set[str]:
        return set()  # Firehose delivers to OpenSearch itself; documents carry their own ids

    def follower(self, interval_s: float = 1.0, only_new: bool = False, on_pass: Any = None) -> Any:
        """An :class:`~shoplake.weblogs._delivery.IndexObserver`: Firehose fills the domain; it watches the counts."""
        from shoplake.weblogs._delivery import IndexObserver

        return IndexObserver(self, interval_s=interval_s, only_new=only_new, on_pass=on_pass)


def open_index(backend: str | None = None, path: str | Path | None = None) -> LogIndex:
    """The index of the current target: OpenSearch on aws, embedded DuckDB locally (in memory unless ``path``).

    ``backend`` ("local" | "opensearch") overrides the target's choice (tests, a local copy of aws documents).
    """
    backend = backend or config.by_target(local="local", aws="opensearch")
    if backend in ("local", "duckdb"):
        return LocalIndex(path)
    if backend == "opensearch":
        return OpenSearchIndex()
    raise LogIndexError(f"unknown index backend {backend!r}: use 'local' or 'opensearch'")


__all__ = [
    "FIELDS",
    "TEMPLATE_PATH",
    "index_template",
    "install_template",
    "IngestCounts",
    "LocalIndex",
    "LogIndex",
    "OpenSearchIndex",
    "daily_index",
    "open_index",
]
