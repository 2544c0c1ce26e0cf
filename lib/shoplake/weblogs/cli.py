"""``shoplake logs parse|ship|index|search`` and ``shoplake dashboard``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from shoplake.cli import PORT, POSITIVE, POSITIVE_INT, FiniteNumber, echo_json

log = logging.getLogger(__name__)


@click.group("logs")
def logs() -> None:
    """Parse, ship, index and search Apache access logs."""


@logs.command("parse")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--show-rejected", type=FiniteNumber(int, 0), default=5, show_default=True, help="rejected lines to list")
def parse_cmd(file: Path, as_json: bool, show_rejected: int) -> None:
    """Parse FILE and print lines, parsed, rejected (with reasons), status counts and bytes."""
    from shoplake.weblogs._parser import parse_file

    result = parse_file(file)
    summary = result.summary()
    if as_json:
        summary["rejected_lines"] = [_shown(r.as_dict()) for r in result.rejected[:show_rejected]]
        echo_json(summary)
        return
    click.echo(
        f"{file}: {summary['lines']} lines, {summary['parsed']} parsed, {summary['rejected']} rejected, "
        f"{summary['bytes']:,} bytes, {summary['bots']} bot requests"
    )
    click.echo("status: " + ", ".join(f"{k}={v}" for k, v in summary["status_counts"].items()))
    for r in result.rejected[:show_rejected]:
        click.echo(f"  line {r.line_no}: {r.reason}")


SHOWN_CHARS = 500  # a rejected line is echoed up to this many characters (a 50 MB line is not printed whole)


def _shown(rejected: dict) -> dict:
    line = rejected.get("line") or ""
    if len(line) > SHOWN_CHARS:
        rejected = {**rejected, "line": line[:SHOWN_CHARS] + f"… ({len(line):,} characters)"}
    return rejected


@logs.command("ship")
@click.argument("file", type=click.Path(path_type=Path))
def ship_cmd(file: Path) -> None:
    """Put the lines of FILE to Firehose ``weblogs`` (one line per record)."""
    from shoplake import config
    from shoplake.weblogs._delivery import ship_lines
    from shoplake.weblogs._parser import iter_lines

    config.ensure_ready()
    result = ship_lines(iter_lines(file))
    echo_json({"sent": result.sent, "calls": result.calls, "seconds": round(result.elapsed_s, 3)})


@logs.command("index")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path),
    default=None,
    help="index FILE directly (parsed here) instead of what Firehose delivered to the lake",
)
@click.option(
    "--index-path",
    type=click.Path(path_type=Path),
    default=None,
    help="local index file (DuckDB); default .shoplake/weblogs/<prefix>.duckdb",
)
def index_cmd(file: Path | None, index_path: Path | None) -> None:
    """Bring what Firehose delivered into the index (one pass of its follower), or index a log FILE; print counts.

    Locally the pass indexes the lake's ``raw/weblogs/`` objects not indexed yet; on aws Firehose writes to
    OpenSearch itself and the pass reports what the domain holds.
    """
    from shoplake import config
    from shoplake.weblogs._index import open_index
    from shoplake.weblogs._parser import parse_file

    config.ensure_ready()
    index = open_index(path=index_path or _default_index_path())
    began = time.perf_counter()
    if file is not None:
        result = parse_file(file)
        counts = index.ingest(
            result.docs, source=f"file:{Path(file).resolve()}", rejected=[r.as_dict() for r in result.rejected]
        )
        out = {
            "lines": result.lines,
            "indexed": counts.indexed,
            "rejected": counts.rejected,
            "already_indexed": counts.skipped_source,
        }
    else:
        out = index.follower().run_once(progress=True).as_dict()
    out.update(
        {
            "backend": index.backend,
            "documents_in_index": index.count(),
            "rejected_in_index": index.rejected_count(),
            "seconds": round(time.perf_counter() - began, 3),
        }
    )
    echo_json(out)


@logs.command("search")
@click.argument("query", default="")
@click.option("--size", type=POSITIVE_INT, default=20, show_default=True)
@click.option("--index-path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True)
def search_cmd(query: str, size: int, index_path: Path | None, as_json: bool) -> None:
    """Search the index: ``status:500``, ``path:/product/*``, ``"phrase"``, AND/OR/NOT (``--index-path``: an
    existing local index file; default the prefix's)."""
    from shoplake import config
    from shoplake.weblogs._index import open_index

    config.ensure_ready()
    index = open_index(path=index_path or _default_index_path())
    hits = index.search(query, size=size)
    total = index.count(query)
    if as_json:
        echo_json({"total": total, "hits": hits.to_dict(orient="records")})
        return
    click.echo(f"{total} matching documents")
    for hit in hits.to_dict(orient="records"):
        click.echo(f"{hit['@timestamp']:%Y-%m-%dT%H:%M:%SZ} {hit['status']} {hit['client_ip']} {hit['request']}")


def _default_index_path() -> Path:
    """Where the local index file lives (``.shoplake/weblogs/<prefix>.duckdb``); the OpenSearch backend ignores it."""
    from shoplake import config

    s = config.settings()
    return s.home / "weblogs" / f"{s.prefix}.duckdb"


@click.command("dashboard")
@click.option("--port", type=PORT, default=8050, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="127.0.0.1: this machine only")
@click.option("--refresh", type=POSITIVE, default=3.0, show_default=True, help="seconds between page refreshes")
def dashboard(port: int, host: str, refresh: float) -> None:
    """Serve the live log dashboard; the index's follower keeps bringing in what Firehose delivers."""
    from shoplake import config
    from shoplake.weblogs._dashboard import DashboardServer, create_app
    from shoplake.weblogs._index import open_index

    settings = config.ensure_ready()
    if not config.is_loopback_url(f"http://{host}/"):
        click.secho(
            f"warning: --host {host} serves the dashboard (every log line it shows) beyond this machine", err=True
        )
    index = open_index()  # locally in memory, rebuilt from the lake by the follower: one writer, no file locks
    follower = index.follower(interval_s=1.0).start()
    server = DashboardServer(create_app(index, refresh_s=refresh), host=host, port=port).start()
    click.echo(f"dashboard on {server.url} ({index.backend}, prefix {settings.prefix}); Ctrl-C stops it")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        follower.stop()
