"""Web logs: parse rate vs a plain ``re`` loop, index rate, dashboard query latency on 1M lines, freshness p95."""

from __future__ import annotations

import re
import statistics
import time

BASELINE_RE = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\S+)(?: "([^"]*)" "([^"]*)")?$')
TARGET_DOCS = 1_000_000


def _timed(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(scale: str = "small", stream_seconds: float = 10.0) -> dict:
    from shoplake import datagen, infra
    from shoplake.weblogs import LocalIndex, iter_lines, parse_lines, snapshot, stream_log

    dataset = datagen.load(scale=scale, seed=42)
    lines = list(iter_lines(dataset.access_log_path))
    n = len(lines)

    # 1. parse: the full parser vs a plain regex match loop over the same lines, same run
    began = time.perf_counter()
    matched = sum(1 for line in lines if BASELINE_RE.match(line))
    re_s = time.perf_counter() - began
    began = time.perf_counter()
    result = parse_lines(lines)
    parse_s = time.perf_counter() - began
    print(
        f"parse      {n:,} lines: shoplake parser {n / parse_s:,.0f} lines/s, plain re loop {n / re_s:,.0f} lines/s "
        f"(ratio {re_s / parse_s:.2f}x; the parser also converts time zones, checks IPs, unescapes, flags bots; "
        f"re matched {matched:,}, parser parsed {result.parsed:,})"
    )

    # 2. index: Arrow micro-batches of 10k documents into DuckDB, up to 1M documents (the log repeated)
    index = LocalIndex()
    docs = result.docs
    batches = [docs[i : i + 10_000] for i in range(0, len(docs), 10_000)]
    began = time.perf_counter()
    total, k = 0, 0
    while total < TARGET_DOCS:
        batch = batches[k % len(batches)][: TARGET_DOCS - total]
        index.ingest(batch, source=f"bench-{k}")
        total += len(batch)
        k += 1
    index_s = time.perf_counter() - began
    print(
        f"index      {total:,} docs in {index_s:.1f} s: {total / index_s:,.0f} docs/s "
        f"(parse+index {total / (index_s + parse_s * total / n):,.0f} lines/s)"
    )

    # 3. dashboard query latency on 1M documents
    queries = {
        "count": lambda: index.count(),
        "search status:5* (20 newest)": lambda: index.search("status:5*", size=20),
        "search path:/product/*": lambda: index.count("path:/product/*"),
        'phrase "Googlebot"': lambda: index.count('"Googlebot"'),
        "date_histogram 1h by status class": lambda: index.date_histogram("", "1h"),
        "terms path top 10": lambda: index.terms("path", size=10),
        "stats bytes p50/p95/p99": lambda: index.stats("bytes"),
        "whole dashboard refresh": lambda: snapshot(index),
    }
    for name, fn in queries.items():
        print(f"query      {name:<36} {_timed(fn) * 1000:8.1f} ms (median of 5, {total:,} docs)")
    refresh_ms = _timed(queries["whole dashboard refresh"]) * 1000
    index.close()

    # 4. freshness while a producer streams at a steady rate through the emulator's Firehose
    spec = [
        r
        for r in infra.load_spec()
        if r.name in ("lake", "weblogs", "firehose-delivery", "weblogs-transform", "weblogs-transform-fn")
    ]
    infra.apply(spec)
    rate = 1000.0
    stream_lines = lines[: int(rate * stream_seconds)]
    report = stream_log(stream_lines, LocalIndex(), lines_per_batch=100, lines_per_second=rate, progress=False)
    fresh = report.as_dict()
    print(
        f"freshness  {report.shipped:,} lines at {rate:,.0f} lines/s: p50 {fresh['freshness_p50_s']:.2f} s, "
        f"p95 {fresh['freshness_p95_s']:.2f} s, max {fresh['freshness_max_s']:.2f} s "
        f"(shipped {report.shipped} = indexed {report.indexed} + rejected {report.rejected})"
    )
    return {
        "parse_lines_per_s": n / parse_s,
        "re_lines_per_s": n / re_s,
        "index_docs_per_s": total / index_s,
        "dashboard_refresh_ms_1m": refresh_ms,
        "freshness_p95_s": fresh["freshness_p95_s"],
    }


if __name__ == "__main__":
    main()
