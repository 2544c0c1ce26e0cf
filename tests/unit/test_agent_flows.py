"""Agent flows: the CSV the servers write converts back to exactly the order events; malformed lines; config."""

from __future__ import annotations

import pytest

from shoplake import streams
from shoplake.agent._flows import ORDER_FIELDS, LogToJson, Malformed, load_config
from shoplake.agent._servers import order_line_csv
from shoplake.errors import ConfigError
from shoplake.events import from_frame


@pytest.fixture(scope="module")
def flows():
    return {flow.name: flow for flow in load_config().flows}


def test_order_csv_converts_back_to_the_very_same_event_bytes(tiny_dataset, flows):
    """What the agent sends for a CSV line is byte-for-byte what the plain producer sends for the event."""
    events = from_frame(tiny_dataset.order_lines[list(ORDER_FIELDS)])
    assert any(e["CustomerID"] is None for e in events), "the tiny shop should have guest lines"
    assert any(e["InvoiceNo"].startswith("C") for e in events), "the tiny shop should have cancellations"
    for flow_name in ("orders", "orders-to-lake"):
        flow = flows[flow_name]
        for event in events:
            record = flow.process(order_line_csv(event))
            assert streams.encode(record) == streams.encode(event)
            assert list(record) == list(ORDER_FIELDS)


def test_awkward_descriptions_and_seconds_round_trip(flows):
    event = {
        "InvoiceNo": "C536379",
        "StockCode": "D",
        "Description": 'Discount, "special"',
        "Quantity": -1,
        "InvoiceDate": "2010-12-01T09:41:07Z",
        "UnitPrice": 27.5,
        "CustomerID": None,
        "Country": "United Kingdom",
        "LineNo": 3,
    }
    line = order_line_csv(event)
    assert line == 'C536379,D,"Discount, ""special""",-1,12/1/2010 9:41:07,27.5,,United Kingdom,3'
    assert flows["orders"].process(line) == event
    assert order_line_csv({**event, "InvoiceDate": "2011-01-02T13:05:00Z"}).split(",")[-5] == "1/2/2011 13:05"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom", "expected 9 fields, got 8"),
        ("536365,85123A,HEART,six,12/1/2010 8:26,2.55,17850,United Kingdom,0", "field Quantity"),
        ("536365,85123A,HEART,6,2010-13-45 8:26,2.55,17850,United Kingdom,0", "field InvoiceDate"),
        ("536365,85123A,HEART,6,12/1/2010 8:26,nan,17850,United Kingdom,0", "field UnitPrice"),
        ('536365,85123A,"HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom,0', "not a valid CSV line"),
        ("   ", "empty line"),
    ],
)
def test_malformed_csv_lines_are_refused_with_a_reason(flows, line, reason):
    with pytest.raises(Malformed, match=reason):
        flows["orders"].process(line)


def test_access_log_lines_ship_raw_or_as_json(tiny_dataset, flows):
    lines = tiny_dataset.access_log_path.read_text().splitlines()
    assert [flows["weblogs"].process(line) for line in lines[:50]] == lines[:50]
    parse = LogToJson("COMBINEDAPACHELOG")
    parsed = [parse(line) for line in lines]
    assert {p["response"][0] for p in parsed} >= {"2", "5"}
    first = parsed[0]
    assert set(first) == {"host", "ident", "authuser", "datetime", "request", "response", "bytes", "referrer", "agent"}
    assert lines[0].startswith(first["host"] + " ") and first["request"] in lines[0]
    with pytest.raises(Malformed):
        parse('1.2.3.4 - - [01/Dec/2010:08:47:04 +0000] "GET / HTTP/1.1" 200')


def test_partition_key_matches_the_plain_producer(flows):
    key = flows["orders"].partition_key()
    assert key({"InvoiceNo": "536365", "CustomerID": "17850"}) == "17850"
    assert key({"InvoiceNo": "536366", "CustomerID": None}) == "guest-536366"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flows: []", "non-empty list"),
        ("flows: [{name: a, filePattern: x, kinesisStream: s, deliveryStream: d}]", "exactly one of"),
        ("flows: [{name: a, kinesisStream: s}]", "filePattern"),
        ("flows: [{name: a, filePattern: x, kinesisStream: s, partitionKeyOption: SOMETIMES}]", "partitionKeyOption"),
        (
            "flows: [{name: a, filePattern: x, kinesisStream: s, dataProcessingOptions: [{optionName: XML}]}]",
            "CSVTOJSON",
        ),
        ("flows: [{name: a, filePattern: '${P6_UNSET_VAR}/x', kinesisStream: s}]", "P6_UNSET_VAR"),
        (
            "flows: [{name: a, filePattern: x, kinesisStream: s, dataProcessingOptions: "
            "[{optionName: CSVTOJSON, customFieldNames: [a], fieldTypes: {a: decimal}}]}]",
            "fieldTypes",
        ),
    ],
)
def test_config_mistakes_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_unknown_flow_names_are_refused():
    with pytest.raises(ConfigError, match="the flows are"):
        load_config().select(["orders", "ordres"])


def test_agent_order_fields_are_the_order_event_schema():
    from shoplake.retail import EVENT_COLUMNS

    assert list(ORDER_FIELDS) == EVENT_COLUMNS
