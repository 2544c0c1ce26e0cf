"""The search language and the local index (DuckDB) answering the dashboard's questions; OpenSearch DSL shapes."""

from __future__ import annotations

import pytest

from shoplake import config
from shoplake.weblogs import LocalIndex, SearchQueryError, parse_file, to_dsl
from shoplake.weblogs._index import dsl_histogram, dsl_stats, parse_histogram, parse_stats

SAMPLE = config.REPO_ROOT / "data" / "samples" / "access_tricky.log"


@pytest.fixture(scope="module")
def index():
    result = parse_file(SAMPLE)
    ix = LocalIndex()
    counts = ix.ingest(result.docs, source="sample", rejected=[r.as_dict() for r in result.rejected])
    assert (counts.indexed, counts.rejected) == (21, 10)
    yield ix
    ix.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", 21),
        ("status:500", 1),
        ("status:5*", 2),
        ("status_class:4xx", 6),
        ("status:[400 TO 499]", 6),
        ("status:{400 TO 499]", 3),
        ("bytes:>=4096", 3),
        ("path:/product/*", 6),
        ("path:/product/84879", 2),
        ('"red mug"', 1),
        ("googlebot", 1),
        ("agent:Firefox", 5),
        ("bot:true", 5),
        ("-bot:true", 16),
        ("NOT path:/product/*", 15),
        ("status_class:4xx OR status:500", 7),
        ("method:GET AND path:/checkout", 1),
        ("(method:POST OR method:DELETE) status:[200 TO 599]", 3),
        ("client_ip:2001:db8::1", 1),
        ("ip:192.0.2.*", 7),
        ("@timestamp:[2024-10-10T21:00:00Z TO 2024-10-10T21:01:00Z}", 3),
        ("user:alice", 1),
        ("query:*mug*", 1),
    ],
)
def test_search_counts(index, query, expected):
    assert index.count(query) == expected
    assert len(index.search(query, size=100)) == expected


@pytest.mark.parametrize("query", ["foo:bar", '"open', "status:abc", "bytes:1*", "(status:500", "status_class:9"])
def test_bad_queries_say_what_is_wrong(index, query):
    with pytest.raises(SearchQueryError):
        index.count(query)


def test_aggregations(index):
    hist = index.date_histogram("", "1d")
    assert hist.groupby("key")["count"].sum().to_dict() == {"2xx": 11, "3xx": 2, "4xx": 6, "5xx": 2}
    assert index.date_histogram("status_class:5xx", "1m", None)["count"].tolist() == [2]  # 21:02:00 and 21:02:01
    assert index.date_histogram("status_class:5xx", "1s", None)["count"].tolist() == [1, 1]
    top = index.terms("path", size=3)
    assert list(zip(top["key"], top["count"], strict=True)) == [
        ("/checkout", 2),
        ("/product/22423", 2),
        ("/product/84879", 2),
    ]
    stats = index.stats("bytes", percentiles=(50, 100))
    assert (stats["count"], stats["sum"], stats["min"], stats["max"], stats["p100"]) == (21, 27396, 0, 5120, 5120)
    assert index.stats("bytes", "status:5*")["sum"] == 512
    assert index.count(start="2024-10-10T21:00:00Z", end="2024-10-10T22:00:00Z") == 15
    assert index.rejected_count() == 10 and index.total_processed() == 31
    assert index.rejected(3)["reason"].tolist()[0] == "empty line"


def test_ingest_is_idempotent_per_source(index):
    again = index.ingest([{"@timestamp": "2024-01-01T00:00:00Z", "status": 200, "bytes": 1}], source="sample")
    assert again.skipped_source and index.count() == 21


def test_opensearch_dsl():
    assert to_dsl("") == {"match_all": {}}
    assert to_dsl("status:500 path:/product/*") == {
        "bool": {"filter": [{"term": {"status": 500}}, {"wildcard": {"path": {"value": "/product/*"}}}]}
    }
    assert to_dsl("status:5*") == {"range": {"status": {"gte": 500, "lte": 599}}}
    assert to_dsl('"red mug"') == {
        "multi_match": {"query": "red mug", "type": "phrase", "fields": ["request", "referrer", "agent"]}
    }
    assert to_dsl("-bot:true") == {"bool": {"must_not": [{"term": {"bot": True}}]}}
    body = dsl_histogram("status:5*", "1m", "status_class")
    assert body["aggs"]["t"]["date_histogram"]["fixed_interval"] == "1m"
    response = {
        "aggregations": {
            "t": {
                "buckets": [
                    {
                        "key": 1728594000000,
                        "doc_count": 3,
                        "k": {"buckets": {"2xx": {"doc_count": 2}, "5xx": {"doc_count": 1}, "4xx": {"doc_count": 0}}},
                    }
                ]
            }
        }
    }
    frame = parse_histogram(response, "status_class")
    assert frame["key"].tolist() == ["2xx", "5xx"] and frame["count"].tolist() == [2, 1]
    assert dsl_stats("bytes", "", (50, 95))["aggs"]["p"]["percentiles"]["percents"] == [50, 95]
    stats = parse_stats(
        {
            "aggregations": {
                "s": {"count": 2, "sum": 10.0, "min": 1.0, "max": 9.0, "avg": 5.0},
                "p": {"values": {"50.0": 5.0, "95.0": 8.6}},
            }
        },
        (50, 95),
    )
    assert stats == {"count": 2, "sum": 10, "min": 1.0, "max": 9.0, "avg": 5.0, "p50": 5.0, "p95": 8.6}


def test_template_maps_every_document_field():
    import json

    from shoplake.lambdas.weblogs_transform import rejected_document
    from shoplake.weblogs import index_template, parse_line

    template = json.loads((config.REPO_ROOT / "infra" / "opensearch" / "weblogs-template.json").read_text())
    assert index_template() == template
    props = template["template"]["mappings"]["properties"]
    doc, _ = parse_line('1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "x"')
    rejected = rejected_document("x", "not an Apache common or combined log line")
    assert set(doc) | set(rejected) == set(props)  # dynamic: strict, so every field of both kinds is mapped
    assert props["client_ip"]["type"] == "ip" and props["@timestamp"]["type"] == "date"


def test_freshness_by_count_takes_the_first_count_covering_each_line():
    import numpy as np

    from shoplake.weblogs._analysis import freshness_by_count

    written = np.array([0.0, 1.0, 2.0, 2.2])
    seen = [(0, 0.4), (1, 0.5), (3, 2.5), (3, 2.6), (4, 3.0)]
    assert freshness_by_count(written, seen) == pytest.approx([0.5, 1.5, 0.5, 0.8])
    assert freshness_by_count(written, []) == []


def test_written_offsets_place_each_line_on_the_logs_clock_and_refused_lines_at_the_one_before(tmp_path):
    from shoplake.weblogs._analysis import _log_extent, _written_offsets

    def line(stamp: str) -> str:
        return f'10.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 200 5 "-" "curl/8.0"'

    log = tmp_path / "access.log"
    log.write_text(
        "\n".join(
            [
                "not a log line",  # before any time: takes the first time there is
                line("10/Oct/2000:13:55:36 -0700"),
                line("10/Oct/2000:22:55:40 +0200"),  # 20:55:40 UTC: 4 s later, in another zone
                "garbage",  # the line before's time
                line("10/Oct/2000:20:56:36 +0000"),
            ]
        )
        + "\n"
    )
    assert _written_offsets(log).tolist() == [0.0, 0.0, 4.0, 4.0, 60.0]
    # the servers' own clock: the times they write each line at, from the log's first time
    from shoplake.agent._servers import access_lines_of

    times = [ts for ts, _, _ in access_lines_of(log.read_text().splitlines())]
    assert times[1] == 971211336.0  # 2000-10-10T20:55:36Z
    assert [t - times[1] for t in times] == [0.0, 0.0, 4.0, 4.0, 60.0]
    assert _log_extent(log) == (5, 0.0)  # the first line has no time: no span to compress
    log.write_text("\n".join(log.read_text().splitlines()[1:]) + "\n")
    assert _log_extent(log) == (4, 60.0)
    log.write_text("")
    assert _log_extent(log) == (0, 0.0) and _written_offsets(log).size == 0
    log.write_text("\n".join([line("10/Oct/2000:20:55:36 +0000"), "", "   junk", line("10/Oct/2000:20:55:37 +0000")]))
    assert _written_offsets(log).tolist() == [0.0, 0.0, 1.0]  # an empty line is not written: it has no place
    log.write_text("no time\nnone either\n")
    assert _written_offsets(log).tolist() == [0.0, 0.0]
