"""The Apache log parser on the committed tricky sample: exact counts and fields, rejected lines with reasons."""

from __future__ import annotations

import base64
import json

import pytest
from click.testing import CliRunner

from shoplake import config
from shoplake.lambdas import weblogs_transform
from shoplake.weblogs import parse_file, parse_line, parse_lines

SAMPLE = config.REPO_ROOT / "data" / "samples" / "access_tricky.log"


@pytest.fixture(scope="module")
def sample():
    return parse_file(SAMPLE)


def test_sample_counts_hand_checked(sample):
    summary = sample.summary()
    assert (summary["lines"], summary["parsed"], summary["rejected"]) == (31, 21, 10)
    assert summary["status_counts"] == {
        "200": 10,
        "204": 1,
        "302": 1,
        "304": 1,
        "400": 3,
        "404": 1,
        "405": 1,
        "408": 1,
        "500": 1,
        "503": 1,
    }
    # 2326+5120+1234+4096+4096+226+226+226+812+2326+512+196+3000+3000; every "-" counts 0
    assert summary["bytes"] == 27396
    assert summary["bots"] == 5  # curl, Googlebot, Pingdom, bingbot, python-requests


def test_rejected_lines_are_kept_with_reasons(sample):
    got = [(r.line_no, r.reason.split(": ")[0]) for r in sample.rejected]
    assert got == [
        (22, "empty line"),
        (23, "not an Apache common or combined log line"),
        (24, "client is not an IPv4/IPv6 address"),
        (25, "client is not an IPv4/IPv6 address"),
        (26, "bad timestamp"),
        (27, "bad timestamp"),
        (28, "bad status"),
        (29, "bad bytes"),
        (30, "not an Apache common or combined log line"),
        (31, "not an Apache common or combined log line"),
    ]
    assert sample.rejected[1].line == "this is not a log line"
    assert "'2000'" in sample.rejected[6].reason


def test_fields_of_tricky_lines(sample):
    d = sample.docs
    assert d[0]["@timestamp"] == "2024-10-10T20:55:36Z"  # -0700 → UTC
    assert (d[0]["method"], d[0]["path"], d[0]["query"], d[0]["protocol"]) == (
        "GET",
        "/product/85123A",
        "ref=home&utm=x",
        "HTTP/1.1",
    )
    assert d[0]["referrer"] == "https://shop.example.com/" and d[0]["bot"] is False
    assert d[1]["client_ip"] == "2001:db8::1" and d[1]["referrer"] is None
    assert d[2]["client_ip"] == "2001:0db8:85a3:0000:0000:8a2e:0370:7334" and d[2]["user"] == "alice"
    assert d[2]["bytes"] == 0 and d[2]["status"] == 302
    assert d[3]["agent"] is None and d[3]["referrer"] is None and d[3]["@timestamp"] == "2024-10-10T23:00:00Z"
    assert d[4]["query"] == 'q="red mug"' and d[4]["path"] == "/search" and d[4]["bot"] is True
    assert d[5]["agent"].endswith('"quoted" part') and d[5]["bot"] is True
    assert d[6]["referrer"] == 'https://search.example.org/?q="mug"&x=\\'
    assert (d[7]["method"], d[8]["method"], d[8]["path"], d[9]["method"], d[9]["path"]) == (
        "PROPFIND",
        "M-SEARCH",
        "*",
        "CONNECT",
        "shop.example.com:443",
    )
    assert d[10]["request"] == "-" and d[10]["method"] is None and d[10]["status"] == 408
    assert d[11]["method"] is None and d[11]["request"].startswith("\x16\x03\x01")
    assert d[12]["@timestamp"] == "2024-10-10T18:29:59Z"  # +0530
    assert d[13]["@timestamp"] == "2025-01-01T00:30:00Z"  # -0100 crosses the new year
    assert d[18]["protocol"] == "HTTP/2" and d[18]["method"] == "DELETE"
    assert d[19]["method"] == "get"
    assert d[20]["agent"] == "Mozilla/5.0 (Windows NT 10.0) Edge/120.0"  # CRLF line


def test_line_counting_and_numbers():
    result = parse_lines(["", "x", '1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5'])
    assert (result.lines, result.parsed, len(result.rejected)) == (3, 1, 2)
    assert parse_line('1.2.3.4 - - [01/Jan/2024:00:00:60 +0000] "GET / HTTP/1.1" 200 5')[1].startswith("bad timestamp")
    assert parse_line('1.2.3.4 - - [01/Jan/2024:00:00:00 +1500] "GET / HTTP/1.1" 200 5')[1].startswith("bad timestamp")
    assert parse_line('1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 099 5')[1].startswith("bad status")
    assert parse_line('1.2.3.4 - - [29/Feb/2023:00:00:00 +0000] "GET / HTTP/1.1" 200 5')[1].startswith("bad timestamp")
    assert parse_line('1.2.3.4 - - [01/Jan/2024:24:00:00 +0000] "GET / HTTP/1.1" 200 5')[1].startswith("bad timestamp")
    assert parse_line('1.2.3.4 - - [29/Feb/2024:23:59:59 -0000] "GET / HTTP/1.1" 200 5')[0]["@timestamp"] == (
        "2024-02-29T23:59:59Z"
    )


def test_firehose_transformation_contract():
    lines = ['1.2.3.4 - - [01/Jan/2024:10:00:00 +0100] "GET /a?b=1 HTTP/1.1" 200 5 "-" "curl/8.0"', "garbage"]
    event = {
        "records": [{"recordId": str(i), "data": base64.b64encode(x.encode()).decode()} for i, x in enumerate(lines)]
    }
    event["records"][1]["approximateArrivalTimestamp"] = 1704103200123  # 2024-01-01T10:00:00.123Z
    out = weblogs_transform.handler(event)["records"]
    assert [(r["recordId"], r["result"]) for r in out] == [("0", "Ok"), ("1", "Ok")]
    doc = json.loads(base64.b64decode(out[0]["data"]))
    assert doc["@timestamp"] == "2024-01-01T09:00:00Z" and doc["path"] == "/a" and doc["bot"] is True
    # a refused line becomes a rejected-line document carrying the parser's reason (not Firehose's generic error)
    assert json.loads(base64.b64decode(out[1]["data"])) == {
        "rejected": True,
        "reason": "not an Apache common or combined log line",
        "line": "garbage",
        "line_chars": 7,
        "received_at": "2024-01-01T10:00:00Z",
    }


def test_agent_logtojson_records_are_accepted():
    line = '1.2.3.4 - - [01/Jan/2024:10:00:00 +0000] "GET /q?x=\\"y\\" HTTP/1.1" 404 - "-" "Mozilla/5.0"'
    from shoplake.agent._flows import LogToJson

    record = LogToJson("COMBINEDAPACHELOG")(line)
    text = weblogs_transform.decode_record(json.dumps(record).encode())
    assert parse_line(text) == parse_line(line)


def test_cli_parse_json():
    from shoplake.weblogs.cli import logs

    result = CliRunner().invoke(logs, ["parse", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["lines"], out["parsed"], out["rejected"], out["bytes"]) == (31, 21, 10, 27396)
    assert out["status_counts"]["400"] == 3


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("²", "a Unicode digit"),
        ("1" + "0" * 29, "beyond int64"),
        ("١٢٣", "Arabic-Indic digits"),
        ("12a", "not a number"),
    ],
)
def test_poison_bytes_fields_are_rejected_with_a_reason(size, why):
    line = f'203.0.113.9 - - [01/Dec/2010:08:26:00 +0000] "GET /cart HTTP/1.1" 200 {size} "-" "curl/8"'
    result = parse_lines([line])
    assert not result.docs, why
    assert result.rejected and "bad bytes" in result.rejected[0].reason


def test_a_status_of_unicode_digits_is_rejected():
    result = parse_lines(['203.0.113.9 - - [01/Dec/2010:08:26:00 +0000] "GET / HTTP/1.1" ２００ 5 "-" "curl/8"'])
    assert not result.docs and "status" in result.rejected[0].reason


def test_local_delivery_indexes_what_the_lambda_returns_for_each_line():
    """transform_object skips only the wire round trip: its documents are the handler's, decoded, line for line."""
    from shoplake.weblogs._delivery import transform_object

    body = SAMPLE.read_bytes()
    lines = body.rstrip(b"\n").split(b"\n")
    event = {"records": [{"recordId": str(n), "data": base64.b64encode(x).decode()} for n, x in enumerate(lines)]}
    returned = [json.loads(base64.b64decode(r["data"])) for r in weblogs_transform.handler(event)["records"]]
    docs, rejected = transform_object("raw/weblogs/k", body)
    assert len(docs) + len(rejected) == len(lines) and docs and rejected
    by_id = {d["_id"]: d for d in docs}
    refused = {r["_id"]: r for r in rejected}
    for n, expected in enumerate(returned):
        key = f"raw/weblogs/k#{n}"
        if weblogs_transform.is_rejected(expected):
            assert refused[key]["reason"] == expected["reason"] and refused[key]["line_no"] == n + 1
        else:
            assert {k: v for k, v in by_id[key].items() if k != "_id"} == expected
