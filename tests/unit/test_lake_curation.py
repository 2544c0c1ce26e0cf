"""Curation rules of the lake on hand-built raw lines (pure: no emulator needed)."""

from __future__ import annotations

import json
from decimal import Decimal

import pandas as pd
import pytest

from shoplake import lake


def _event(
    invoice: str,
    line: int,
    code: str = "85123A",
    qty: int = 2,
    price: float = 2.55,
    customer: str | None = "17850",
    when: str = "2024-03-01T10:15:00Z",
    country: str = "France",
) -> dict:
    return {
        "InvoiceNo": invoice,
        "StockCode": code,
        "Description": "WHITE HANGING HEART",
        "Quantity": qty,
        "InvoiceDate": when,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": country,
        "LineNo": line,
    }


def _lines(*events: object) -> list[tuple[str, str]]:
    out = []
    for i, event in enumerate(events):
        out.append((f"raw/orders/2024/03/01/10/obj-{i // 3}", event if isinstance(event, str) else json.dumps(event)))
    return out


def test_every_reason_is_counted_and_delivered_equals_curated_plus_set_aside():
    good = _event("536365", 0)
    lines = _lines(
        good,
        good,  # duplicate (at-least-once delivery)
        _event("536365", 1, code="POST", price=18.0),  # non-product
        _event("536365", 2, code="BANK CHARGES", price=15.0),  # non-product
        _event("C536366", 0, qty=-1),  # cancellation: kept, flagged
        _event("536367", 0, customer=None),  # guest: kept, not in training
        "{not json",  # malformed
        json.dumps([1, 2]),  # valid JSON, not an object
        json.dumps({k: v for k, v in _event("536368", 0).items() if k != "Quantity"}),  # missing field
        _event("536369", 0, qty=0),  # invalid
        _event("536370", 0, price=-1.0),  # invalid
        _event("536371", 0, when="01/03/2024 10:15"),  # invalid date
        _event("536372", 0, qty=-3),  # a sale with a negative quantity
    )
    result = lake.curate_lines(lines, raw_objects=5)
    counts = result.counts
    assert counts.delivered == 13
    assert counts.set_aside == {
        "malformed_json": 2,
        "missing_field": 1,
        "invalid_value": 4,
        "duplicate": 1,
        "non_product": 2,
    }
    assert counts.curated == 3
    assert counts.curated + counts.set_aside_total == counts.delivered
    assert counts.cancellations == 1 and counts.guest_lines == 1 and counts.training_lines == 1
    assert sorted(result.order_lines["event_id"]) == ["536365-0", "536367-0", "C536366-0"]
    assert len(result.set_aside) == counts.set_aside_total
    assert result.set_aside["raw"].notna().all() and result.set_aside["detail"].str.len().gt(0).all()
    dup = result.set_aside.loc[result.set_aside["reason"] == "duplicate"].iloc[0]
    assert dup["event_id"] == "536365-0"


def test_curated_rows_are_typed_per_the_contract():
    result = lake.curate_lines(
        _lines(
            _event("C536366", 4, qty=-3, price=1.1, when="2024-03-01T23:59:59Z"),
            _event("536365", 0, qty=6, price=2.55, customer=None),
        )
    )
    df = result.order_lines.set_index("event_id")
    cancel = df.loc["C536366-4"]
    assert cancel["unit_price"] == Decimal("1.10") and cancel["line_amount"] == Decimal("-3.30")
    assert bool(cancel["is_cancellation"]) and cancel["order_date"] == "2024-03-01"
    assert cancel["invoice_ts"] == pd.Timestamp("2024-03-01T23:59:59Z")
    assert df.loc["536365-0", "line_amount"] == Decimal("15.30")
    assert pd.isna(df.loc["536365-0", "customer_id"])
    assert str(result.order_lines["line_no"].dtype) == "int32"
    assert str(result.order_lines["quantity"].dtype) == "int64"
    assert str(result.order_lines["invoice_ts"].dtype) == "datetime64[us, UTC]"


@pytest.mark.parametrize(
    "code, is_product",
    [
        ("85123A", True),
        ("22423", True),
        ("POST", False),
        ("DOT", False),
        ("M", False),
        ("m", False),
        ("BANK CHARGES", False),
        ("C2", False),
        ("PADS", False),
        ("gift_0001_20", False),
        ("AMAZONFEE", False),
    ],
)
def test_non_product_codes(code, is_product):
    assert lake.is_product_code(code) is is_product


def test_products_and_customers_are_derived_from_curated_lines():
    result = lake.curate_lines(
        _lines(
            _event("536365", 0, code="22423", qty=2, price=12.75, when="2024-03-01T10:00:00Z"),
            _event("536366", 0, code="22423", qty=1, price=10.95, when="2024-03-02T10:00:00Z", customer="12583"),
            _event("C536367", 0, code="22423", qty=-1, price=10.95, when="2024-03-03T10:00:00Z"),
        )
    )
    products = lake.derive_products(result.order_lines)
    assert products.to_dict("records") == [
        {
            "stock_code": "22423",
            "description": "WHITE HANGING HEART",
            "unit_price": Decimal("10.95"),
            "lines": 2,
            "quantity": 3,
            "first_order_date": "2024-03-01",
            "last_order_date": "2024-03-02",
        }
    ]
    customers = lake.derive_customers(result.order_lines).set_index("customer_id")
    assert customers.loc["17850", "orders"] == 1 and customers.loc["17850", "lines"] == 2
    assert customers.loc["12583", "orders"] == 1
