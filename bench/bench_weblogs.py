"""Web logs: parse rate vs a plain ``re`` loop, index rate, dashboard query latency on 1M lines, freshness p95 at a
paced rate and, apart, the backlog of an unpaced burst."""

from __future__ import annotations

import re
import statistics
import time

from bench import _report

BASELINE_RE = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\S+)(?: "([^"]*)" "([^"]*)")?$')
TARGET_DOCS = 1_000_000
PACED_LINES_PER_S = 2000.0  # the freshness figure's stated rate
PARSE_ROUNDS = 3  # the parse timings alternate baseline and parsers, and keep each one's median (a busy machine)


def _re_loop(lines: list[str]) -> int:
    """The baseline: a plain ``re`` match loop, nothing extracted, nothing checked."""
    return sum(1 for line in lines if BASELINE_RE.match(line))


def _groups_only(lines: list[str], pattern: re.Pattern[str] = BASELINE_RE) -> list[tuple]:
    """The floor of any ``re`` parser that takes the fields out of a line: ``pattern``'s match and its groups,
    nothing checked, converted or built (each group is a new string: ~60 ns a piece in CPython). With the baseline's
    regex, nine groups; with the parser's own fast regex (:func:`_validating_groups`), the floor of any parser that
    checks the line's shapes in its regex as the parser does."""
    return [m.groups() for m in map(pattern.match, lines) if m is not None]


def _validating_groups(lines: list[str]) -> list[tuple]:
    """:func:`_groups_only` with the parser's own fast regex (status 100-599, bytes of ASCII digits, seconds and
    minutes 00-59, a ±hhmm zone checked; 11 groups)."""
    from shoplake.lambdas.weblogs_transform import _FAST_RE

    return _groups_only(lines, _FAST_RE)


ARROW_PATTERN = (
    r'^(?P<client>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
    r'(?P<bytes>\S+)(?: "(?P<referrer>[^"]*)" "(?P<agent>[^"]*)")?$'
)


def _arrow_groups(lines: list[str]) -> object:
    """A vectorised alternative: Arrow's regex extract (RE2, C++) of the baseline's nine groups into columns, no
    Python object per field (the lines' conversion into an Arrow array included), nothing checked or converted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.extract_regex(pa.array(lines, pa.string()), ARROW_PATTERN)


def _documents_only(lines: list[str]) -> list[dict]:
    """The floor of any parser that returns these documents in CPython: the baseline's match, its groups and the
    14-field document, with no check, no time-zone conversion, no unescaping, no bot flag (wrong answers, fast)."""
    docs = []
    append = docs.append
    match = BASELINE_RE.match
    for line in lines:
        m = match(line)
        if m is None:
            continue
        client, ident, user, stamp, request, status, size, referrer, agent = m.groups()
        append(
            {
                "@timestamp": stamp,
                "client_ip": client,
                "ident": ident,
                "user": user,
                "method": None,
                "path": None,
                "query": None,
                "protocol": None,
                "request": request,
                "status": status,
                "bytes": size,
                "referrer": referrer,
                "agent": agent,
                "bot": None,
            }
        )
    return docs


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

    # 1. parse: the parser vs a plain regex match loop over the same lines, same run; also the reference parser (the
    #    line-by-line one the fast path falls back to: the "before") and the floor of building the documents at all
    from shoplake.lambdas.weblogs_transform import parse_line_reference

    names = ("re", "parser", "reference", "groups", "floor", "validating", "arrow")
    timings: dict[str, list[float]] = {name: [] for name in names}
    result = None
    for _ in range(PARSE_ROUNDS):
        for name, fn in (
            ("re", _re_loop),
            ("parser", parse_lines),
            ("reference", lambda ls: [parse_line_reference(x) for x in ls]),
            ("groups", _groups_only),
            ("floor", _documents_only),
            ("validating", _validating_groups),
            ("arrow", _arrow_groups),
        ):
            began = time.perf_counter()
            out = fn(lines)
            timings[name].append(time.perf_counter() - began)
            if name == "parser":
                result = out
            del out
    re_s, parse_s, ref_s, groups_s, floor_s, validating_s, arrow_s = (statistics.median(timings[k]) for k in names)
    matched = _re_loop(lines)
    print(
        f"parse      {n:,} lines: shoplake parser {n / parse_s:,.0f} lines/s, plain re loop {n / re_s:,.0f} lines/s "
        f"(ratio {re_s / parse_s:.2f}x; the parser also converts time zones, checks IPs, unescapes, flags bots; "
        f"re matched {matched:,}, parser parsed {result.parsed:,})\n"
        f"           reference parser (line by line, before the fast path) {n / ref_s:,.0f} lines/s "
        f"(ratio {re_s / ref_s:.2f}x); floor: re + groups + the 14-field dict, no checks, {n / floor_s:,.0f} lines/s "
        f"(ratio {re_s / floor_s:.2f}x); parser / floor {floor_s / parse_s:.2f}\n"
        f"           floor of taking the fields out at all: re + its 9 groups, nothing checked or built, "
        f"{n / groups_s:,.0f} lines/s (ratio {re_s / groups_s:.2f}x); with the parser's own checking regex (11 groups) "
        f"{n / validating_s:,.0f} lines/s (ratio {re_s / validating_s:.2f}x)\n"
        f"           vectorised: Arrow's RE2 extract of the 9 groups into columns, nothing checked, "
        f"{n / arrow_s:,.0f} lines/s (ratio {re_s / arrow_s:.2f}x)"
    )
    floors = {  # what each floor or alternative is, as bench.json names it
        "floor": (floor_s, "re + groups + the 14-field dict, no checks"),
        "groups_floor": (groups_s, "re + its 9 groups, nothing checked or built"),
        "validating_floor": (
            validating_s,
            "the parser's own checking regex + its 11 groups, nothing converted or built",
        ),
        "arrow_extract": (arrow_s, "pyarrow.compute.extract_regex (RE2) of the 9 groups into columns, nothing checked"),
    }
    _report.figure(
        "log parser (lines/s)",
        n / parse_s,
        unit="lines/s",
        baseline=n / re_s,
        baseline_name="plain re loop",
        goal="ratio ≥ 0.5",
        goal_ratio=0.5,
        ceiling=re_s / floor_s,
        ceiling_name="the floor: re + groups + the 14-field dict, nothing checked (no CPython parser that returns "
        "these documents is faster)",
        reference_parser_lines_per_s=n / ref_s,
        reference_ratio=re_s / ref_s,
        lines=n,
        **{
            f"{key}_{figure}": value
            for key, (seconds, name) in floors.items()
            for figure, value in (("lines_per_s", n / seconds), ("ratio", re_s / seconds), ("name", name))
        },
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

    # 4. freshness while a producer writes at a steady, stated rate through the emulator's Firehose; then, apart,
    #    the backlog of a burst written as fast as the producer can (how long the index takes to drain it)
    spec = [
        r
        for r in infra.load_spec()
        if r.name in ("lake", "weblogs", "firehose-delivery", "weblogs-transform", "weblogs-transform-fn")
    ]
    infra.apply(spec)
    rate = PACED_LINES_PER_S
    n_paced = int(rate * stream_seconds)
    stream_lines = lines[:n_paced]
    report = stream_log(stream_lines, LocalIndex(), lines_per_batch=200, lines_per_second=rate, progress=False)
    fresh = report.as_dict()
    print(
        f"freshness  {report.shipped:,} lines at {rate:,.0f} lines/s (written at {fresh['written_lines_per_s']:,.0f}): "
        f"p50 {fresh['freshness_p50_s']:.2f} s, p95 {fresh['freshness_p95_s']:.2f} s, max {fresh['freshness_max_s']:.2f} s "
        f"(shipped {report.shipped} = indexed {report.indexed} + rejected {report.rejected})"
    )
    _report.figure(
        "log freshness p95 (s)",
        fresh["freshness_p95_s"],
        unit="s",
        goal=f"< 2 s at a paced rate ≥ 2,000 lines/s (stated: {rate:,.0f})",
        higher_is_better=False,
        stated_lines_per_s=rate,
        written_lines_per_s=fresh["written_lines_per_s"],
        lines=report.shipped,
        p50_s=fresh["freshness_p50_s"],
        max_s=fresh["freshness_max_s"],
    )
    burst_lines = lines[n_paced : n_paced * 2]
    burst = stream_log(burst_lines, LocalIndex(), lines_per_batch=500, lines_per_second=None, progress=False)
    drain_s = burst.seconds - burst.write_seconds
    print(
        f"backlog    {burst.shipped:,} lines unpaced: written in {burst.write_seconds:.1f} s "
        f"({burst.shipped / burst.write_seconds:,.0f} lines/s), all searchable after {burst.seconds:.1f} s "
        f"(drain {drain_s:.1f} s after the last put; {burst.shipped / burst.seconds:,.0f} lines/s end to end), "
        f"lag p95 {burst.percentile(95):.2f} s, max {max(burst.freshness_s):.2f} s"
    )
    _report.figure(
        "log backlog drain after an unpaced burst (s)",
        drain_s,
        unit="s",
        goal="report",
        higher_is_better=False,
        lines=burst.shipped,
        written_lines_per_s=burst.shipped / burst.write_seconds,
        end_to_end_lines_per_s=burst.shipped / burst.seconds,
        lag_p95_s=burst.percentile(95),
        lag_max_s=max(burst.freshness_s),
    )
    return {
        "parse_lines_per_s": n / parse_s,
        "re_lines_per_s": n / re_s,
        "index_docs_per_s": total / index_s,
        "dashboard_refresh_ms_1m": refresh_ms,
        "reference_parse_lines_per_s": n / ref_s,
        "floor_lines_per_s": n / floor_s,
        "groups_floor_lines_per_s": n / groups_s,
        "freshness_p95_s": fresh["freshness_p95_s"],
        "freshness_lines_per_s": rate,
        "backlog_drain_s": drain_s,
        "backlog_lines_per_s": burst.shipped / burst.seconds,
    }


if __name__ == "__main__":
    main()
