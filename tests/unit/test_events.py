"""One order event, one set of rules: a table of edge events judged by shoplake.events (and by every consumer)."""

from __future__ import annotations

import json

import pytest
from order_line import ORDER_LINE

from shoplake import events

GOOD = dict(ORDER_LINE)


def _with(**changes):
    event = dict(GOOD)
    for key, value in changes.items():
        if value is KeyError:
            event.pop(key)
        else:
            event[key] = value
    return event


# (name, event, verdict): verdict "ok" or the rejection kind every consumer must give
EDGE_EVENTS = [
    ("a plain sale", GOOD, "ok"),
    ("a guest line (CustomerID null)", _with(CustomerID=None), "ok"),
    ("a guest line (CustomerID missing)", _with(CustomerID=KeyError), "ok"),
    ("a cancellation", _with(InvoiceNo="C536379", Quantity=-1), "ok"),
    ("an integer InvoiceNo and CustomerID", _with(InvoiceNo=536365, CustomerID=17850), "ok"),
    ("a zero price (free sample)", _with(UnitPrice=0), "ok"),
    ("unicode text", _with(Description="CRÈME BRÛLÉE SET ☕", Country="Österreich"), "ok"),
    ("no Description", _with(Description=None), "ok"),
    ("not an object", [GOOD], events.MALFORMED_JSON),
    ("a missing StockCode", _with(StockCode=KeyError), events.MISSING_FIELD),
    ("an empty InvoiceNo", _with(InvoiceNo=""), events.MISSING_FIELD),
    ("a null Quantity", _with(Quantity=None), events.MISSING_FIELD),
    ("a string Quantity", _with(Quantity="6"), events.INVALID_VALUE),
    ("a fractional Quantity", _with(Quantity=1.5), events.INVALID_VALUE),
    ("a boolean Quantity", _with(Quantity=True), events.INVALID_VALUE),
    ("a zero Quantity", _with(Quantity=0), events.INVALID_VALUE),
    ("a sale with a negative Quantity", _with(Quantity=-6), events.INVALID_VALUE),
    ("a cancellation with a positive Quantity", _with(InvoiceNo="C536379", Quantity=1), events.INVALID_VALUE),
    ("a huge Quantity", _with(Quantity=10**40), events.INVALID_VALUE),
    ("a negative price", _with(UnitPrice=-0.01), events.INVALID_VALUE),
    ("a price of NaN", _with(UnitPrice=float("nan")), events.INVALID_VALUE),
    ("a huge price", _with(UnitPrice=1e30), events.INVALID_VALUE),
    ("a huge LineNo", _with(LineNo=10**40), events.INVALID_VALUE),
    ("a negative LineNo", _with(LineNo=-1), events.INVALID_VALUE),
    ("a date without zone", _with(InvoiceDate="2010-12-01T08:26:00"), events.INVALID_VALUE),
    ("a date that does not exist", _with(InvoiceDate="2010-02-30T08:26:00Z"), events.INVALID_VALUE),
    ("a date far in the future", _with(InvoiceDate="2999-12-01T08:26:00Z"), events.INVALID_VALUE),
    ("a date in full-width digits", _with(InvoiceDate="２０１０-12-01T08:26:00Z"), events.INVALID_VALUE),
    ("a date in Arabic-Indic digits", _with(InvoiceDate="٢٠١٠-12-01T08:26:00Z"), events.INVALID_VALUE),
    ("a date with a trailing line break", _with(InvoiceDate="2010-12-01T08:26:00Z\n"), events.INVALID_VALUE),
    ("a '#' in a key field", _with(StockCode="85123#A"), events.INVALID_VALUE),
    ("a boolean CustomerID", _with(CustomerID=True), events.INVALID_VALUE),
    ("a lone surrogate in Description", _with(Description="bad \udc80 text"), events.INVALID_VALUE),
    ("a numeric Country", _with(Country=44), events.INVALID_VALUE),
]


@pytest.mark.parametrize(("name", "event", "verdict"), EDGE_EVENTS, ids=[e[0] for e in EDGE_EVENTS])
def test_edge_events(name, event, verdict):
    valid, kind, reason = events.judge(event)
    assert (kind or "ok") == verdict, reason
    if verdict == "ok":
        assert set(valid) == set(events.FIELDS) and isinstance(valid["InvoiceNo"], str)
        assert valid["CustomerID"] is None or isinstance(valid["CustomerID"], str)
    else:
        assert reason and len(reason) < 200, "a reason a person can act on, never the whole value"


def test_bytes_decode_and_round_trip():
    assert events.decode(events.encode(GOOD)) == GOOD
    with pytest.raises(events.Rejected) as rejected:
        events.decode(b"\xff\xfe not json")
    assert rejected.value.kind == events.MALFORMED_JSON
    assert events.decode(json.dumps(_with(Description="☕")).encode())["Description"] == "☕"


def test_partition_key_guests_by_invoice():
    assert events.partition_key(GOOD) == "17850"
    assert events.partition_key(_with(CustomerID=None)) == "guest-536365"


def test_a_huge_rejected_value_is_not_echoed():
    _, _, reason = events.judge(_with(StockCode="x" * 5_000_000))
    assert len(reason) < 200


def _verdicts(event):
    """What each consumer of order events does with ``event``: "ok" or "rejected"."""
    from shoplake import lake
    from shoplake.alarm import detector
    from shoplake.lambdas import order_history

    data = json.dumps(event).encode()
    out = {}
    row, kind, _ = lake.validate_event(json.loads(data))
    out["lake"] = "ok" if row is not None else "rejected"
    for name, judge in (("order-history handler", order_history.parse_event), ("rate detector", detector.decode)):
        try:
            judge(data)
            out[name] = "ok"
        except events.Rejected:
            out[name] = "rejected"
    return out


@pytest.mark.parametrize(("name", "event", "verdict"), EDGE_EVENTS, ids=[e[0] for e in EDGE_EVENTS])
def test_every_consumer_judges_each_edge_event_the_same_way(name, event, verdict):
    expected = "ok" if verdict == "ok" else "rejected"
    assert _verdicts(event) == dict.fromkeys(("lake", "order-history handler", "rate detector"), expected)


def test_partition_key_of_pandas_rows_and_blanks():
    assert events.partition_key(_with(CustomerID=float("nan"))) == "guest-536365"
    assert events.partition_key(_with(CustomerID="  ")) == "guest-536365"
    assert events.partition_key(_with(CustomerID=" 17850 ")) == "17850"


def _strptime_answer(text):
    """How validate read an InvoiceDate before invoice_time: its shape (events._DATE), then datetime.strptime."""
    from datetime import datetime

    if not events._DATE.fullmatch(text):
        return ValueError
    try:
        return datetime.strptime(text, events.DATE_FORMAT)
    except ValueError:
        return ValueError


def _invoice_time_answer(text):
    try:
        return events.invoice_time(text)
    except ValueError:
        return ValueError


INVOICE_TIMES = [
    f"{year}-{month}-{day}T{hour}:{minute}:{second}Z"
    for year in ("0000", "0001", "1990", "2000", "2010", "2012", "2100", "9999")
    for month, day in (
        ("00", "01"),
        ("01", "00"),
        ("01", "31"),
        ("02", "28"),
        ("02", "29"),
        ("02", "30"),
        ("04", "30"),
        ("04", "31"),
        ("12", "31"),
        ("12", "32"),
        ("13", "01"),
    )
    for hour, minute, second in (("00", "00", "00"), ("23", "59", "59"), ("24", "00", "00"), ("12", "60", "00"))
    + (("12", "00", "60"), ("12", "00", "61"), ("99", "99", "99"))
] + [
    "2010-12-01T08:26:00",  # no zone
    "2010-12-01 08:26:00Z",
    "2010-12-1T08:26:00Z",
    "２０１０-12-01T08:26:00Z",
    "٢٠١٠-12-01T08:26:00Z",
    "2010-12-01T08:26:00Z\n",
    "2010-12-01T08:26:00.5Z",
    "2010-12-01T08:26:00+00:00",
    "",
]


def test_invoice_time_reads_what_strptime_reads_and_refuses_what_it_refuses():
    """events.invoice_time (validate's reading of InvoiceDate) against the shape check and datetime.strptime it
    replaces, on every combination of edge years, days of the month, hours, minutes and seconds, and on other shapes
    (strptime alone takes "2010-12-1T08:26:00Z"; the shape check never let it through)."""
    answers = [(text, _strptime_answer(text), _invoice_time_answer(text)) for text in INVOICE_TIMES]
    assert [(t, want) for t, want, got in answers if want != got] == []
    assert sum(a is ValueError for _, a, _ in answers) > 100 and sum(a is not ValueError for _, a, _ in answers) > 50
