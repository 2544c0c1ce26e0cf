"""The rate detector's decode: its shortcut for plain events gives exactly the verdicts of ``events.validate``."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest
from order_line import ORDER_LINE

from shoplake import events, streams
from shoplake.alarm import day_slice, simulate_day
from shoplake.alarm import detector as det
from shoplake.alarm._windows import parse_ts

GOOD = dict(ORDER_LINE)

# near misses per field: values at, just inside and just outside each rule, and shapes the shortcut must leave to
# the full validation (whitespace, non-ASCII digits and text, integers for strings, …)
ODD = {
    "InvoiceNo": [
        "C536365",
        "c536365",
        " 536365",
        "536365 ",
        "53#65",
        "",
        "x" * 64,
        "x" * 65,
        536365,
        True,
        None,
        "٥٣٦٣٦٥",
        "A-1",
        "ÉTÉ1",
    ],
    "StockCode": ["POST", " 85123A", "85123#A", "", 85123, 1.5, None, "x" * 65, "DOT\\u00e9"],
    "Quantity": [1, -1, 0, 10**9, 10**9 + 1, -(10**9), 1.0, "6", True, False, None],
    "InvoiceDate": [
        "2010-12-01T08:26:00",
        "2010-02-29T08:26:00Z",
        "2012-02-29T08:26:00Z",
        "2010-02-30T00:00:00Z",
        "2010-12-01T24:00:00Z",
        "2010-12-01T23:59:60Z",
        "2010-12-01T23:59:61Z",
        "1989-12-31T23:59:59Z",
        "1990-01-01T00:00:00Z",
        "2099-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2010-12-01 08:26:00Z",
        "2010-12-01T08:26:00Z\n",
        "٢٠١٠-12-01T08:26:00Z",
        "2010-12-01T08:26:00+00:00",
        "2010-13-01T08:26:00Z",
        "2010-12-01t08:26:00z",
        20101201,
        None,
        "",
    ],
    "UnitPrice": [0, 0.0, -0.0, -0.01, 10**9, 10**9 + 0.5, 1e30, float("inf"), float("nan"), "2.55", True, None],
    "LineNo": [0, 10**6, 10**6 + 1, -1, 1.0, "0", True, None],
    "Country": ["EIRE", " EIRE ", "   ", "", "Österreich", 44, None, "bad \udc80"],
    "Description": [None, "", "CRÈME BRÛLÉE", "bad \udc80 text", 5, "☕"],
    "CustomerID": [None, "", "   ", " 17850", "17850.0", 17850, True, "12#3", "x" * 65, "Ü1"],
}


def _with(**changes):
    event = dict(GOOD)
    for key, value in changes.items():
        if value is KeyError:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def _outcome(judge, data):
    try:
        ts, invoice, line = judge(data)
    except events.Rejected as rejected:
        return ("rejected", rejected.kind)
    return ("ok", ts, invoice, line)


def _reference(data):
    """events.decode's verdict; the order time as validate reads the date (strptime: any Unicode digits)."""
    event = events.decode(data)
    when = datetime.strptime(event["InvoiceDate"], events.DATE_FORMAT).replace(tzinfo=UTC)
    return when.timestamp(), event["InvoiceNo"], event["LineNo"]


def _cases():
    yield GOOD
    for key, values in ODD.items():
        yield _with(**{key: KeyError})
        for value in values:
            yield _with(**{key: value})
    # pairs of odd values: a shortcut that checks one field too loosely may hide behind another
    for (a, va), (b, vb) in itertools.combinations([(k, v) for k, vs in ODD.items() for v in vs[:4]], 2):
        if a != b:
            yield _with(**{a: va, b: vb})


def test_the_shortcut_judges_every_near_miss_as_validate_does():
    compared = 0
    for event in _cases():
        data = json.dumps(event).encode("utf-8", "surrogatepass")
        assert _outcome(det.decode, data) == _outcome(_reference, data), event
        compared += 1
    assert compared > 600


@pytest.mark.parametrize("data", [b"{broken json", b"\xff\xfe", b"[1, 2]", b"null", b'"text"', b"{}"])
def test_not_an_order_is_rejected_with_validates_kind(data):
    assert _outcome(det.decode, data) == _outcome(_reference, data) and _outcome(det.decode, data)[0] == "rejected"


def test_the_simulated_shop_takes_the_shortcut_with_the_same_results():
    sim = day_slice(simulate_day(seed=3, orders_per_day=4_000), 9, 12)
    records = [streams.encode(e) for e in events.from_frame(sim.events)]
    plain = sum(det._plain_order(json.loads(r)) is not None for r in records)
    assert plain == len(records)  # the shortcut is the common path, not a rarity
    assert [det.decode(r) for r in records] == [_reference(r) for r in records]
    assert det.decode(records[0])[0] == parse_ts(json.loads(records[0])["InvoiceDate"])


def test_a_date_in_other_digits_is_a_dead_letter_with_validates_reason():
    """validate takes ASCII digits only (Arabic-Indic digits used to pass strptime); the detector refuses the same."""
    data = json.dumps(_with(InvoiceDate="٢٠١٠-12-01T08:26:00Z")).encode()
    with pytest.raises(events.Rejected, match="InvoiceDate must be ISO 8601"):
        det.decode(data)
