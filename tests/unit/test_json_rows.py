"""The one frame → JSON-ready rows conversion (``shoplake._json.rows``, ``shoplake.events.from_frame``)."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd

from shoplake import events
from shoplake._json import json_default, plain, rows


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "InvoiceNo": ["536365", "C536379", "536366"],
            "Quantity": np.array([6, -1, 2**40], dtype="int64"),
            "UnitPrice": [2.55, float("nan"), float("inf")],
            "CustomerID": ["17850", None, np.nan],
            "InvoiceDate": pd.to_datetime(["2010-12-01 08:26:00", None, "2011-12-09 12:50:30"]),
            "Zoned": pd.to_datetime(["2010-12-01T09:26:00+01:00"] * 3, utc=False),
            "Flag": [True, False, True],
            "Nullable": pd.array([1, None, 3], dtype="Int64"),
            "Mixed": [Decimal("1.50"), np.float32(0.5), "text"],
        }
    )


def test_columnar_rows_match_plain_cell_by_cell():
    frame = _frame()
    expected = [{k: plain(v) for k, v in row.items()} for row in frame.astype(object).to_dict(orient="records")]
    got = rows(frame)
    assert got == expected
    assert got[0]["InvoiceDate"] == "2010-12-01T08:26:00Z" and got[1]["InvoiceDate"] is None
    assert got[0]["Zoned"] == "2010-12-01T08:26:00Z"
    assert got[1]["CustomerID"] is None and got[2]["CustomerID"] is None  # NaN and None: a guest
    assert got[1]["UnitPrice"] is None and got[2]["UnitPrice"] is None  # NaN and inf are not JSON numbers
    assert type(got[2]["Quantity"]) is int and got[2]["Quantity"] == 2**40
    assert got[1]["Nullable"] is None and got[2]["Nullable"] == 3
    json.dumps(got, allow_nan=False)  # every row is valid JSON as it is


def test_dicts_go_through_the_same_rules_and_events_use_them():
    dicts = [{"a": np.int64(3), "b": float("nan"), "c": pd.Timestamp("2010-12-01 08:26")}]
    assert rows(dicts) == [{"a": 3, "b": None, "c": "2010-12-01T08:26:00Z"}]
    assert events.from_frame(_frame()) == rows(_frame())


def test_json_default_falls_back_to_text():
    class Odd:
        def __str__(self) -> str:
            return "odd"

    text = json.dumps({"t": pd.Timestamp("2010-12-01 08:26"), "n": np.int32(4), "o": Odd()}, default=json_default)
    assert json.loads(text) == {"t": "2010-12-01T08:26:00Z", "n": 4, "o": "odd"}
