"""The log index on aws: template vs every query the dashboard sends, Firehose's record contract, the agent path.

OpenSearch itself cannot run here. What is checked instead:
- every request body the dashboard, the notebook and the investigation send (recorded from the real
  ``OpenSearchIndex`` code by a client that records bodies and answers empty results) uses, for aggregations, sorts,
  ranges, term-level queries and wildcards, only fields the template file maps as keyword, date or number (boolean
  for ``bot``); the check itself is shown to fail on a template that maps ``path`` as text (the defect it guards);
- the template's index patterns match the index names Firehose writes (``IndexName`` + ``OneDay`` rotation);
- the transformation Lambda answers a Firehose event with records of Firehose's documented shape, documents that
  fit the strict mapping, the parser's reason on rejected lines (its zip under python3.12: test_lambda_runtimes);
- the aws path of notebook 05 (agent → Firehose ``weblogs`` → index) runs against moto with every boto3 call
  validated, Firehose's delivery into the domain played by a stand-in that runs the transformation handler.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
import yaml

from shoplake import config
from shoplake.lambdas import weblogs_transform
from shoplake.weblogs import _index as ix
from shoplake.weblogs._query import FIELDS, KEYWORD_FIELDS, NUMERIC_FIELDS, TEXT_FIELDS

pytestmark = pytest.mark.aws

SAMPLE = config.REPO_ROOT / "data" / "samples" / "access_tricky.log"
NUMBER_TYPES = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
FIREHOSE_ROTATION_SUFFIX = {  # Firehose appends these to IndexName (CreateDeliveryStream IndexRotationPeriod)
    "NoRotation": "",
    "OneHour": "-%Y-%m-%d-%H",
    "OneDay": "-%Y-%m-%d",
    "OneWeek": "-%Y-w%V",
    "OneMonth": "-%Y-%m",
}


# --------------------------------------------------------------------------- fields used by the request bodies


def _field_type(props: dict[str, Any], field: str) -> str | None:
    """The mapped type of ``field`` (``agent.keyword`` → the sub-field's type), None when unmapped."""
    base, _, sub = field.partition(".")
    mapping = props.get(base) if field not in props else props[field]
    if mapping is None:
        return None
    if sub and field not in props:
        mapping = (mapping.get("fields") or {}).get(sub)
        if mapping is None:
            return None
    return mapping.get("type")


def uses(body: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``(use, field)`` in a request body: aggregations, sorts, and the leaves of its query clauses."""
    found: list[tuple[str, str]] = []
    if isinstance(body, list):
        for item in body:
            found += uses(item, where)
        return found
    if not isinstance(body, dict):
        return found
    for key, value in body.items():
        if key in ("terms", "date_histogram", "range", "stats", "percentiles", "histogram") and where == "aggs":
            found.append((key + "_agg", value["field"]))
            found += uses(value, where)
        elif key in ("aggs", "aggregations"):
            for agg in value.values():
                found += uses(agg, "aggs")
        elif key == "sort":
            found += [("sort", f) for item in value for f in (item if isinstance(item, dict) else {item: 1})]
        elif key == "query":
            found += uses(value, "query")
        elif where == "query" and key in ("term", "range", "wildcard", "prefix", "match_phrase", "match", "exists"):
            found += [(key, f) for f in (value if key != "exists" else [value["field"]])]
        elif where == "query" and key == "multi_match":
            found += [("multi_match", f) for f in value["fields"]]
        else:
            found += uses(value, where)
    return found


ALLOWED = {  # the mapped types each use may meet; text only where analysed matching is meant
    "terms_agg": {"keyword", "boolean", *NUMBER_TYPES},
    "date_histogram_agg": {"date"},
    "range_agg": NUMBER_TYPES,
    "stats_agg": NUMBER_TYPES,
    "percentiles_agg": NUMBER_TYPES,
    "sort": {"keyword", "date", *NUMBER_TYPES},
    "range": {"keyword", "date", *NUMBER_TYPES},
    "term": {"keyword", "boolean", *NUMBER_TYPES},
    "wildcard": {"keyword"},
    "match_phrase": {"text"},
    "multi_match": {"text"},
}


def violations(bodies: list[dict[str, Any]], template: dict[str, Any]) -> list[str]:
    props = template["template"]["mappings"]["properties"]
    out = []
    for body in bodies:
        for use, field in uses(body):
            kind = _field_type(props, field)
            if kind not in ALLOWED.get(use, set()):
                out.append(f"{use} on {field} (mapped {kind})")
    return sorted(set(out))


class RecordingDomain:
    """An OpenSearch client that records each request body and answers with empty, well-formed results."""

    def __init__(self, newest: str = "2024-10-10T21:05:00Z", rejected: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.newest = newest
        self.n_rejected = rejected
        self.indices = self

    def put_index_template(self, name: str, body: dict[str, Any]) -> None:
        self.template = (name, body)

    def count(self, index: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        return {"count": 0}

    def search(self, index: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        aggs = {
            "t": {"buckets": []},
            "k": {"buckets": []},
            "s": {"count": 0, "sum": 0, "min": None, "max": None, "avg": None},
            "p": {"values": {}},
        }
        sources: list[dict[str, Any]] = [{"@timestamp": self.newest}]
        if ix.REJECTED_ONLY in body["query"]["bool"]["filter"]:
            sources = [weblogs_transform.rejected_document("x", "not an Apache common or combined log line")]
            sources *= self.n_rejected
        hits = [{"_id": str(n), "_index": "weblogs-2024-10-10", "_source": d} for n, d in enumerate(sources)]
        total = {"value": len(hits)}
        return {"hits": {"total": total, "hits": hits[: body.get("size", 10)]}, "aggregations": aggs}


def dashboard_bodies(aws_target) -> list[dict[str, Any]]:
    """Every body the dashboard, notebook 05 and the investigation send, plus every field of the search language."""
    from shoplake.weblogs import investigate, snapshot

    domain = RecordingDomain(rejected=2)
    index = ix.OpenSearchIndex(client=domain, failed_bucket=_lake(aws_target))
    for window in ("all", "1h"):
        snapshot(index, "", window)
        snapshot(index, 'status:5* AND path:/product/* "mug"', window)
    incidents = [{"start": "2024-10-10T21:00:00Z", "end": "2024-10-10T21:10:00Z", "path": "/checkout", "requests": 3}]
    investigate(index, incidents)
    index.search('status_class:5xx AND path:"/checkout"', 5, incidents[0]["start"], incidents[0]["end"])
    index.rejected(10)
    for split in (None, "status_class", *ix.TERMS_FIELDS):
        index.date_histogram("", "1m", split)
    for field in ix.TERMS_FIELDS:
        index.terms(field)
    for field in NUMERIC_FIELDS:
        index.stats(field)
    samples = {"@timestamp": "2024-10-10T21:00:00Z", "status": "500", "bytes": "10", "bot": "true"}
    for field in FIELDS:
        value = samples.get(field, "1")
        queries = [f"{field}:{value}"]
        if field != "bot":
            queries += [f"{field}:[{value} TO *]", f"{field}:>={value}"]
        if field in (*KEYWORD_FIELDS, *TEXT_FIELDS):
            queries += [f"{field}:a*", f'{field}:"a b"']
        if field == "status_class":
            queries = ["status_class:5xx"]
        for query in queries:
            index.count(query)
    index.count("free words and wild*")
    return domain.bodies


def _lake(aws_target) -> str:
    from shoplake import lake

    name = lake.bucket()
    config.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


def test_every_field_the_dashboard_aggregates_sorts_or_filters_on_is_mapped_for_it(aws_target):
    bodies = dashboard_bodies(aws_target)
    used = {field for body in bodies for _, field in uses(body)}
    # the recorded requests do reach the fields the page is about
    assert {"@timestamp", "status", "bytes", "path", "agent.keyword", "bot", "rejected", "received_at"} <= used
    assert violations(bodies, ix.index_template()) == []


def test_the_field_check_fails_on_the_defect_it_guards(aws_target):
    bodies = dashboard_bodies(aws_target)
    broken = json.loads(json.dumps(ix.index_template()))
    broken["template"]["mappings"]["properties"]["path"] = {"type": "text"}  # what dynamic mapping would make of it
    assert "terms_agg on path (mapped text)" in violations(bodies, broken)
    assert "wildcard on path (mapped text)" in violations(bodies, broken)


def test_template_patterns_match_the_index_names_firehose_writes():
    stack = yaml.safe_load((config.REPO_ROOT / "infra" / "resources.yaml").read_text())
    weblogs = next(r for r in stack["resources"] if r["type"] == "firehose_delivery_stream" and r["name"] == "weblogs")
    search = weblogs["aws"]["opensearch"]
    assert search["index"] == ix.INDEX_PREFIX and search["index_rotation"] == "OneDay"
    assert (config.REPO_ROOT / "infra" / search["index_template"]).resolve() == ix.TEMPLATE_PATH.resolve()
    template = ix.index_template()
    for arrival in (datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC), datetime(2031, 12, 31, 23, 59, 59, tzinfo=UTC)):
        name = search["index"] + arrival.strftime(FIREHOSE_ROTATION_SUFFIX[search["index_rotation"]])
        assert any(fnmatch.fnmatchcase(name, p) for p in template["index_patterns"]), name
        assert fnmatch.fnmatchcase(name, f"{ix.INDEX_PREFIX}-*")  # what OpenSearchIndex searches
        assert ix.daily_index(arrival) == name  # direct ingestion writes where Firehose would
    # by arrival day, not @timestamp: a 2020 line arriving on 2024-01-01 goes to that day's index
    assert ix.daily_index(datetime(2024, 1, 1, tzinfo=UTC)) == "weblogs-2024-01-01"
    assert template["template"]["mappings"]["dynamic"] == "strict"


# --------------------------------------------------------------------------- the transformation Lambda


def firehose_event(lines: list[bytes], arrival_ms: int = 1728594000000) -> dict[str, Any]:
    """A Firehose data-transformation event (Direct PUT) as documented: invocationId, stream ARN, region, records."""
    return {
        "invocationId": "00540a87-5050-496a-84e4-e7d92bbaf5e2",
        "deliveryStreamArn": "arn:aws:firehose:eu-west-1:123456789012:deliverystream/shoplake-dev-weblogs",
        "region": "eu-west-1",
        "records": [
            {
                "recordId": f"4960{n:04d}",
                "approximateArrivalTimestamp": arrival_ms + n,
                "data": base64.b64encode(line).decode(),
            }
            for n, line in enumerate(lines)
        ],
    }


def _sample_lines() -> list[bytes]:
    from shoplake.agent._flows import LogToJson

    good = SAMPLE.read_bytes().split(b"\n")[:6]
    combined = '203.0.113.9 - - [10/Oct/2024:21:00:00 +0000] "GET /product/1 HTTP/1.1" 200 512 "-" "Mozilla/5.0"'
    logtojson = json.dumps(LogToJson("COMBINEDAPACHELOG")(combined)).encode() + b"\n"
    return [*good, logtojson, b"this is not a log line", b"two\nlines", b"\xff\xfe binary", b""]


def check_value(name: str, value: Any, mapping: dict[str, Any]) -> None:
    kind = mapping["type"]
    if value is None:
        return
    if kind == "date":
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    elif kind == "ip":
        ipaddress.ip_address(value)
    elif kind in ("keyword", "text"):
        assert isinstance(value, str), name
    elif kind == "boolean":
        assert isinstance(value, bool), name
    elif kind == "short":
        assert isinstance(value, int) and -32768 <= value <= 32767, name
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), name
    else:
        raise AssertionError(f"{name}: no check for type {kind}")


def check_response(event: dict[str, Any], response: dict[str, Any]) -> list[dict[str, Any]]:
    """Firehose's response contract; returns the documents it would index."""
    assert set(response) == {"records"}
    records = response["records"]
    assert [r["recordId"] for r in records] == [r["recordId"] for r in event["records"]]
    props = ix.index_template()["template"]["mappings"]["properties"]
    docs = []
    for record in records:
        assert set(record) == {"recordId", "result", "data"}
        assert record["result"] in ("Ok", "Dropped", "ProcessingFailed")
        data = base64.b64decode(record["data"], validate=True)
        assert len(data) <= 1_000 * 1024  # Firehose's record limit
        doc = json.loads(data)
        assert set(doc) <= set(props), set(doc) - set(props)  # dynamic: strict would refuse anything else
        for name, value in doc.items():
            check_value(name, value, props[name])
        docs.append(doc)
    assert len(json.dumps(response)) < 6 * 1024 * 1024  # Lambda's synchronous response limit
    return docs


def test_transform_answers_firehose_with_the_parsers_reason(aws_target):
    lines = _sample_lines()
    event = firehose_event(lines)
    with aws_target.as_role("weblogs-transform-fn"):
        response = weblogs_transform.handler(event, None)
    docs = check_response(event, response)
    assert all(r["result"] == "Ok" for r in response["records"])
    rejected = [d for d in docs if d.get("rejected")]
    parsed = [d for d in docs if not d.get("rejected")]
    expected = [weblogs_transform.parse_line(weblogs_transform.decode_record(x))[1] for x in lines]
    expected[-3] = "record holds 2 lines; send one log line per record"
    assert [d["reason"] for d in rejected] == [r for r in expected if r]
    assert len(parsed) == sum(r is None for r in expected) and any(d["path"] == "/product/1" for d in parsed)
    assert rejected[0]["received_at"] == "2024-10-10T21:00:00Z"  # Firehose's arrival time, not the line's
    # the function calls no AWS API: its role needs only what the runtime writes to CloudWatch Logs
    assert aws_target.operations("weblogs-transform-fn") == set()


# --------------------------------------------------------------------------- the aws path of notebook 05


class FirehoseIntoDomain(RecordingDomain):
    """Plays Firehose → OpenSearch: the records put to Firehose ``weblogs`` (as recorded, after moto accepted them)
    go through the transformation handler into an in-memory list of documents, which count/search answer from."""

    def __init__(self, recorder: Any) -> None:
        super().__init__()
        self.recorder = recorder
        self.docs: list[dict[str, Any]] = []
        self._taken = 0

    def _deliver(self) -> None:
        calls = [c for c in list(self.recorder.calls) if c.operation == "PutRecordBatch"]
        for call in calls[self._taken :]:
            event = firehose_event([r["Data"] for r in call.params["Records"]])
            with self.recorder.as_role("weblogs-transform-fn"):
                self.docs += check_response(event, weblogs_transform.handler(event))
        self._taken = len(calls)

    def _matching(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        clauses = body["query"]["bool"]["filter"]
        if clauses == [ix.REJECTED_ONLY]:
            return [d for d in self.docs if d.get("rejected")]
        assert clauses[:2] == [{"match_all": {}}, ix.ACCESS_ONLY], "the stand-in answers unfiltered questions only"
        return [d for d in self.docs if not d.get("rejected")]

    def count(self, index: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        self._deliver()
        return {"count": len(self._matching(body))}

    def search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self._deliver()
        if body.get("size") and not body.get("aggs"):
            self.bodies.append(body)
            docs = self._matching(body)
            hits = [{"_id": str(n), "_index": "weblogs-x", "_source": d} for n, d in enumerate(docs)]
            return {"hits": {"total": {"value": len(docs)}, "hits": hits[: body["size"]]}}
        if body.get("size") == 0 and "aggs" not in body:
            self.bodies.append(body)
            return {"hits": {"total": {"value": len(self._matching(body))}, "hits": []}}
        return super().search(index, body, **kw)


def _provision_for_weblogs(aws_target) -> None:
    """What 00_provision leaves on aws for this path, in moto: the lake, the domain, the delivery stream.

    moto cannot create a delivery stream with an OpenSearch destination, so the stream here has an S3 one: the calls
    this path makes (PutRecordBatch, DescribeDeliveryStream) have the same shapes either way.
    """
    from shoplake import infra

    lake = _lake(aws_target)
    config.client("opensearch").create_domain(
        DomainName=infra.physical_name(infra.find("opensearch_domain", "logs")), EngineVersion="OpenSearch_2.19"
    )
    config.client("firehose").create_delivery_stream(
        DeliveryStreamName=infra.physical_name(infra.find("firehose_delivery_stream", "weblogs")),
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/shoplake-dev-firehose-delivery",
            "BucketARN": f"arn:aws:s3:::{lake}",
            "Prefix": "raw/weblogs/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        },
    )
    aws_target.clear()


def test_notebook_05_agent_path_on_aws(aws_target, monkeypatch, tmp_path):
    from shoplake import weblogs

    monkeypatch.setenv("SHOPLAKE_RATE_DETECTOR_LAYER", "arn:aws:lambda:eu-west-1:123456789012:layer:krcf:1")
    _provision_for_weblogs(aws_target)
    assert ix.OpenSearchIndex.domain_endpoint().endswith(".es.amazonaws.com")
    monkeypatch.setattr(ix.OpenSearchIndex, "domain_endpoint", staticmethod(lambda: "unused"))
    domain = FirehoseIntoDomain(aws_target)
    real = ix.OpenSearchIndex
    monkeypatch.setattr(ix, "OpenSearchIndex", lambda: real(client=domain))  # only the signed HTTP client stood in
    index = weblogs.open_index()  # the notebook's call: the target chooses OpenSearch
    assert index.backend == "opensearch" and isinstance(index.follower(), weblogs.IndexObserver)
    lines = [
        f"garbage line {n}"
        if n % 7 == 3
        else f'203.0.113.{n} - - [10/Oct/2024:21:00:{n:02d} +0000] "GET /product/{n} HTTP/1.1" {500 if n % 9 else 200} '
        f'{n * 10} "-" "Mozilla/5.0"'
        for n in range(40)
    ]
    (tmp_path / "access.log").write_text("\n".join(lines) + "\n")
    dataset = type("Dataset", (), {"access_log_path": str(tmp_path / "access.log"), "dir": str(tmp_path)})()
    report = weblogs.stream_dataset(dataset, index, source="agent", seconds=1.0, stall_s=60, progress=False)
    assert report.shipped == 40 == report.indexed + report.rejected
    assert (report.indexed, report.rejected) == (34, 6)
    assert len(report.freshness_s) == 40 and min(report.freshness_s) >= 0
    assert index.rejected(3)["reason"].notna().all()
    ops = aws_target.operations(None)
    assert {"es:DescribeDomain", "firehose:PutRecordBatch", "firehose:DescribeDeliveryStream"} <= ops
    assert aws_target.operations("weblogs-transform-fn") == set()
    # nothing in the user's session beyond what the README lists for notebook 05 on aws
    assert ops <= {
        "es:DescribeDomain",
        "firehose:PutRecordBatch",
        "firehose:DescribeDeliveryStream",
        "s3:ListObjectsV2",
        "s3:GetObject",
    }, ops


def test_rejected_records_in_the_s3_backup_are_counted_with_firehoses_reason(aws_target):
    bucket = _lake(aws_target)
    record = {
        "attemptsMade": 4,
        "arrivalTimestamp": 1728594000000,
        "errorCode": "Lambda.FunctionError",
        "errorMessage": "The Lambda function was successfully invoked but it returned an error result for the record",
        "attemptEndingTimestamp": 1728594060000,
        "rawData": base64.b64encode(b"a line the function could not handle").decode(),
        "lambdaArn": "arn:aws:lambda:eu-west-1:123456789012:function:shoplake-dev-weblogs-transform:$LATEST",
    }
    key = "weblogs-failed/processing-failed/2024/10/10/21/shoplake-dev-weblogs-1-2024-10-10-21-00-00-x"
    config.client("s3").put_object(Bucket=bucket, Key=key, Body=(json.dumps(record) + "\n").encode())
    domain = RecordingDomain()
    index = ix.OpenSearchIndex(client=domain, failed_bucket=bucket)
    assert index.rejected_count() == 1 and index.rejected_count() == 1  # each backup object read once
    frame = index.rejected(5)
    assert frame["line"].tolist() == ["a line the function could not handle"]
    assert frame["reason"].tolist() == [record["errorMessage"]]
    assert [c.action for c in aws_target.calls].count("s3:GetObject") == 1


def test_buffering_is_read_from_the_stream_description_fields_botocore_defines():
    import botocore.session

    model = botocore.session.get_session().get_service_model("firehose")
    dest = model.shape_for("DestinationDescription").members["AmazonopensearchserviceDestinationDescription"]
    assert {"BufferingHints", "ProcessingConfiguration"} <= set(dest.members)
    assert "IntervalInSeconds" in dest.members["BufferingHints"].members
    names = model.shape_for("ProcessorParameterName").enum
    assert "BufferIntervalInSeconds" in names
    from shoplake.weblogs._delivery import buffering_of

    description = {
        "Destinations": [
            {
                "DestinationId": "destinationId-000000000001",
                "AmazonopensearchserviceDestinationDescription": {
                    "BufferingHints": {"IntervalInSeconds": 60, "SizeInMBs": 1},
                    "ProcessingConfiguration": {
                        "Enabled": True,
                        "Processors": [
                            {
                                "Type": "Lambda",
                                "Parameters": [
                                    {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:x"},
                                    {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "30"},
                                ],
                            }
                        ],
                    },
                    "S3DestinationDescription": {"BufferingHints": {"IntervalInSeconds": 300, "SizeInMBs": 5}},
                },
            }
        ]
    }
    assert buffering_of(description) == 90
    del description["Destinations"][0]["AmazonopensearchserviceDestinationDescription"]["BufferingHints"]
    assert buffering_of(description) == 330  # Firehose's default 300 s when the destination sets none


def test_rejected_frame_columns_match_the_local_index(aws_target):
    index = ix.OpenSearchIndex(client=RecordingDomain(), failed_bucket=_lake(aws_target))
    assert list(index.rejected(5).columns) == ["source", "line_no", "reason", "line"]
    local = ix.LocalIndex()
    assert list(local.rejected(5).columns) == list(index.rejected(5).columns)
    assert isinstance(local.rejected(5), pd.DataFrame)


def test_install_template_puts_the_template_file_under_its_name():
    from shoplake import weblogs

    domain = RecordingDomain()
    assert weblogs.install_template(client=domain) == "weblogs"
    assert domain.template == ("weblogs", json.loads(weblogs.TEMPLATE_PATH.read_text()))
