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


# values each field takes in the mutated events below: the common shape, and every way out of it
_MUTATIONS = {
    "InvoiceNo": [
        "536365",
        "C536379",
        "c536379",
        " 536365 ",
        "",
        "   ",
        "5#1",
        "x" * 64,
        "x" * 65,
        536365,
        True,
        None,
        KeyError,
        "Ç536379",
        "５３６",
    ],
    "StockCode": ["85123A", " 85123A", "", "85#", "y" * 65, 85123, None, KeyError, "ÄB", 1.5],
    "Description": ["A MUG", "", None, KeyError, "CRÈME", "bad \udc80", 7, "  padded  "],
    "Quantity": [6, -6, 0, 1, -1, 10**9, -(10**9), 10**9 + 1, True, 1.0, "6", None, KeyError],
    "InvoiceDate": [
        "2010-12-01T08:26:00Z",
        "1990-01-01T00:00:00Z",
        "1989-12-31T23:59:59Z",
        "2099-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2010-02-30T08:26:00Z",
        "2010-12-01T24:00:00Z",
        "2010-12-01T08:26:00",
        "2010-12-01T08:26:00Z\n",
        "",
        None,
        20101201,
        KeyError,
    ],
    "UnitPrice": [
        2.55,
        0,
        0.0,
        -0.0,
        3,
        10**9,
        10**9 + 0.5,
        -0.01,
        float("nan"),
        float("inf"),
        True,
        "2.55",
        None,
        KeyError,
    ],
    "CustomerID": ["17850", " 17850 ", "", "  ", None, KeyError, 17850, True, "17#50", "z" * 65, "Ü1", 1.5],
    "Country": ["United Kingdom", " France ", "", "  ", "Österreich", 44, None, KeyError],
    "LineNo": [0, 3, 10**6, 10**6 + 1, -1, True, 2.0, "3", None, KeyError],
}


def _outcome(judge, event):
    try:
        return "ok", judge(event)
    except events.Rejected as rejected:
        return rejected.kind, rejected.reason


def test_the_common_path_gives_the_full_rules_answer_on_mutated_events():
    """validate's one-pass path for common events (``_common_event``) against the rules checked in turn
    (``_validate``): every single- and double-field mutation of a good event, same answer or same rejection."""
    import itertools

    singles = [{name: value} for name, values in _MUTATIONS.items() for value in values]
    pairs = [
        {a: va, b: vb} for a, b in itertools.combinations(_MUTATIONS, 2) for va in _MUTATIONS[a] for vb in _MUTATIONS[b]
    ]
    took_common = 0
    for changes in singles + pairs:
        event = _with(**changes)
        full = _outcome(events._validate, event)
        assert _outcome(events.validate, event) == full, changes
        common = events._common_event(event)
        if common is not None:
            took_common += 1
            assert full == ("ok", common), changes
    assert took_common > 500  # the common path is taken (and checked) for many of them
