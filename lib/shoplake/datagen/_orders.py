"""Synthetic order lines: invoices in the daily/weekly rhythm, taste-driven baskets, postage, guests, cancellations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shoplake.datagen._catalogue import N_GROUPS
from shoplake.datagen._customers import COUNTRIES
from shoplake.datagen._profile import rate_profile

FIRST_INVOICE_NO = 536365
OWN_GROUP_SHARE = 0.75  # a customer's lines from its own taste group; the rest follow global popularity
GUEST_INVOICE_SHARE = 0.072  # invoices without a CustomerID (≈ 8 % of the lines)
CANCELLED_LINE_SHARE = 0.02
MEAN_EXTRA_ITEMS = 4.0  # basket size = 1 + negative binomial with this mean
QUANTITIES = np.array([1, 2, 3, 4, 6, 8, 10, 12, 24, 48])
QUANTITY_P = np.array([0.25, 0.15, 0.08, 0.12, 0.12, 0.04, 0.06, 0.12, 0.04, 0.02])

INTERNAL_COLUMNS = ["_ts", "_customer", "_is_product", "_invoice", "_row"]


@dataclass(frozen=True)
class Period:
    """The dataset's time span in UTC seconds since the epoch, ``[start, end)``."""

    start: int
    end: int

    @property
    def minutes(self) -> int:
        return (self.end - self.start) // 60


def sample_times(n: int, period: Period, incidents: list[dict], rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted event times (UTC seconds) drawn from the rate profile over ``period``."""
    grid = pd.to_datetime(period.start + 60 * np.arange(period.minutes) + 30, unit="s", utc=True)
    weight = rate_profile(grid, incidents)
    minutes = rng.choice(period.minutes, size=n, p=weight / weight.sum())
    times = period.start + 60 * minutes + rng.integers(0, 60, size=n)
    return np.sort(times)


def iso_seconds(seconds: np.ndarray) -> np.ndarray:
    """UTC seconds → ``YYYY-MM-DDTHH:MM:SSZ`` strings (formats each distinct value once)."""
    unique, inverse = np.unique(seconds, return_inverse=True)
    text = pd.to_datetime(unique, unit="s").strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)
    return text[inverse]


def _pick_products(groups: np.ndarray, own: np.ndarray, products: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Product row for each line: from the line's taste group when ``own``, else by global popularity."""
    real = products[products["is_product"]]
    popularity = real["popularity"].to_numpy()
    rows = real.index.to_numpy()
    picked = np.empty(len(groups), dtype=np.int64)
    u = rng.random(len(groups))
    global_cdf = np.cumsum(popularity)
    glob = ~own
    picked[glob] = rows[np.minimum(np.searchsorted(global_cdf, u[glob] * global_cdf[-1]), len(rows) - 1)]
    taste = real["taste_group"].to_numpy()
    for g in range(N_GROUPS):
        mine = own & (groups == g)
        if not mine.any():
            continue
        in_group = taste == g
        cdf = np.cumsum(popularity[in_group])
        group_rows = rows[in_group]
        picked[mine] = group_rows[np.minimum(np.searchsorted(cdf, u[mine] * cdf[-1]), len(group_rows) - 1)]
    return picked


def _basket_lines(
    n_invoices: int, products: pd.DataFrame, customers: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Product lines (``_invoice``, ``_row``) of ``n_invoices`` baskets, the guest mask and each invoice's customer."""
    guest = rng.random(n_invoices) < GUEST_INVOICE_SHARE
    inv_customer = rng.choice(len(customers), size=n_invoices, p=customers["activity"].to_numpy())
    inv_customer = np.where(guest, -1, inv_customer)
    nb_n = 1.3
    basket = 1 + rng.negative_binomial(nb_n, nb_n / (nb_n + MEAN_EXTRA_ITEMS), size=n_invoices)
    basket = np.minimum(basket, 60)
    line_inv = np.repeat(np.arange(n_invoices), basket)
    cust_group = customers["taste_group"].to_numpy()
    line_group = np.where(guest[line_inv], -1, cust_group[np.maximum(inv_customer[line_inv], 0)])
    own = (rng.random(len(line_inv)) < OWN_GROUP_SHARE) & (line_group >= 0)
    line_product = _pick_products(line_group, own, products, rng)
    lines = pd.DataFrame({"_invoice": line_inv, "_row": line_product})
    lines = lines.drop_duplicates(["_invoice", "_row"], keep="first").reset_index(drop=True)
    return lines, guest, inv_customer


def make_order_lines(
    target_lines: int,
    products: pd.DataFrame,
    customers: pd.DataFrame,
    incidents: list[dict],
    period: Period,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Order lines in the order-event schema, plus internal columns (``INTERNAL_COLUMNS``) for the web log."""
    code_row = {code: i for i, code in enumerate(products["StockCode"])}
    mean_lines = 1 + MEAN_EXTRA_ITEMS + 0.1  # items + postage
    n_invoices = max(10, round(target_lines * (1 - CANCELLED_LINE_SHARE) / mean_lines))

    # --- invoices: customer (or guest), basket size; a pilot run calibrates the count to the target line count
    pilot = np.random.default_rng(int(rng.integers(2**63)))
    n_pilot = max(200, min(20_000, n_invoices))
    pilot_lines = _basket_lines(n_pilot, products, customers, pilot)[0]
    lines_per_invoice = len(pilot_lines) / n_pilot + 0.1  # + postage
    n_invoices = max(10, round(target_lines * (1 - CANCELLED_LINE_SHARE) / lines_per_invoice))
    lines, guest, inv_customer = _basket_lines(n_invoices, products, customers, rng)
    inv_time = sample_times(n_invoices, period, incidents, rng)
    country_names = np.array([c for c, _ in COUNTRIES], dtype=object)
    guest_country = np.where(
        rng.random(n_invoices) < 0.9, "United Kingdom", country_names[rng.integers(0, len(country_names), n_invoices)]
    )
    cust_country = customers["Country"].to_numpy(dtype=object)
    inv_country = np.where(guest, guest_country, cust_country[np.maximum(inv_customer, 0)])

    price = products["UnitPrice"].to_numpy()
    lines["Quantity"] = rng.choice(QUANTITIES, size=len(lines), p=QUANTITY_P)
    lines["UnitPrice"] = price[lines["_row"].to_numpy()]
    lines["_is_product"] = True

    # --- non-product lines at the end of an invoice: POST abroad, DOT for guests, rare M and BANK CHARGES
    subtotal = (
        (lines["Quantity"] * lines["UnitPrice"])
        .groupby(lines["_invoice"])
        .sum()
        .reindex(range(n_invoices), fill_value=0.0)
        .to_numpy()
    )
    extra_inv, extra_row, extra_qty, extra_price = [], [], [], []
    abroad = (~guest) & (inv_country != "United Kingdom") & (rng.random(n_invoices) < 0.6)
    dot = guest & (rng.random(n_invoices) < 0.5)
    manual = (~guest) & (rng.random(n_invoices) < 0.004)
    bank = (~guest) & (rng.random(n_invoices) < 0.002)
    for mask, code in ((abroad, "POST"), (dot, "DOT"), (manual, "M"), (bank, "BANK CHARGES")):
        idx = np.flatnonzero(mask)
        extra_inv.append(idx)
        extra_row.append(np.full(len(idx), code_row[code]))
        if code == "POST":
            extra_qty.append(rng.integers(1, 4, len(idx)))
            extra_price.append(np.full(len(idx), 18.0))
        elif code == "DOT":
            extra_qty.append(np.ones(len(idx), dtype=np.int64))
            extra_price.append(np.round(2.0 + 0.08 * subtotal[idx], 2))
        elif code == "M":
            extra_qty.append(np.ones(len(idx), dtype=np.int64))
            extra_price.append(np.round(np.exp(rng.normal(np.log(5.0), 1.0, len(idx))), 2))
        else:
            extra_qty.append(np.ones(len(idx), dtype=np.int64))
            extra_price.append(np.full(len(idx), 15.0))
    extras = pd.DataFrame(
        {
            "_invoice": np.concatenate(extra_inv),
            "_row": np.concatenate(extra_row),
            "Quantity": np.concatenate(extra_qty).astype(np.int64),
            "UnitPrice": np.concatenate(extra_price),
            "_is_product": False,
        }
    )
    lines = pd.concat([lines, extras], ignore_index=True)
    lines = lines.sort_values(["_invoice", "_is_product"], ascending=[True, False], kind="stable").reset_index(
        drop=True
    )
    lines["LineNo"] = lines.groupby("_invoice").cumcount().astype(np.int64)

    # --- cancellations: a later invoice of the same customer taking back some product lines
    n_cancel_lines = round(CANCELLED_LINE_SHARE * len(lines))
    n_cancels = max(1, round(n_cancel_lines / 1.6))
    cancel_time = sample_times(n_cancels, period, incidents, rng)
    known = np.flatnonzero(~guest)
    known_time = inv_time[known]
    pos = np.searchsorted(known_time, cancel_time - 600)  # the original is at least 10 minutes older
    back = rng.geometric(0.02, size=n_cancels) - 1
    ok = pos > 0
    original = np.where(ok, known[np.maximum(pos - 1 - np.minimum(back, np.maximum(pos - 1, 0)), 0)], -1)
    product_lines = lines[lines["_is_product"]]
    starts = np.searchsorted(product_lines["_invoice"].to_numpy(), np.arange(n_invoices + 1))
    c_inv, c_row, c_qty, c_price, c_line, c_of = [], [], [], [], [], []
    pl_row = product_lines["_row"].to_numpy()
    pl_qty = product_lines["Quantity"].to_numpy()
    pl_price = product_lines["UnitPrice"].to_numpy()
    for k in range(n_cancels):
        orig = int(original[k])
        if orig < 0:
            continue
        first, last = starts[orig], starts[orig + 1]
        if last == first:
            continue
        take = min(int(rng.integers(1, 4)), last - first)
        chosen = np.sort(rng.choice(np.arange(first, last), size=take, replace=False))
        for j, line in enumerate(chosen):
            qty = int(pl_qty[line])
            back_qty = qty if rng.random() < 0.85 else int(rng.integers(1, qty + 1))
            c_inv.append(k)
            c_row.append(pl_row[line])
            c_qty.append(-back_qty)
            c_price.append(pl_price[line])
            c_line.append(j)
            c_of.append(orig)
    cancel_lines = pd.DataFrame(
        {
            "_cancel": np.array(c_inv, dtype=np.int64),
            "_row": np.array(c_row, dtype=np.int64),
            "Quantity": np.array(c_qty, dtype=np.int64),
            "UnitPrice": np.array(c_price, dtype=float),
            "LineNo": np.array(c_line, dtype=np.int64),
            "_of": np.array(c_of, dtype=np.int64),
        }
    )
    used_cancels = np.unique(cancel_lines["_cancel"].to_numpy())

    # --- invoice numbers in time order across orders and cancellations
    all_time = np.concatenate([inv_time, cancel_time[used_cancels]])
    is_cancel = np.concatenate([np.zeros(n_invoices, bool), np.ones(len(used_cancels), bool)])
    order = np.lexsort((np.arange(len(all_time)), all_time))
    number = np.empty(len(all_time), dtype=np.int64)
    number[order] = FIRST_INVOICE_NO + np.arange(len(all_time))
    invoice_no = np.array([f"C{n}" if c else str(n) for n, c in zip(number, is_cancel, strict=True)], dtype=object)
    cancel_slot = np.full(n_cancels, -1)
    cancel_slot[used_cancels] = n_invoices + np.arange(len(used_cancels))

    customer_ids = customers["CustomerID"].to_numpy(dtype=object)
    inv_customer_id = np.where(inv_customer >= 0, customer_ids[np.maximum(inv_customer, 0)], None)
    slot = np.concatenate([lines["_invoice"].to_numpy(), cancel_slot[cancel_lines["_cancel"].to_numpy()]])
    source = np.concatenate([lines["_invoice"].to_numpy(), cancel_lines["_of"].to_numpy()])  # whose customer
    rows = np.concatenate([lines["_row"].to_numpy(), cancel_lines["_row"].to_numpy()])
    line_no = np.concatenate([lines["LineNo"].to_numpy(), cancel_lines["LineNo"].to_numpy()]).astype(np.int64)
    quantity = np.concatenate([lines["Quantity"].to_numpy(), cancel_lines["Quantity"].to_numpy()]).astype(np.int64)
    unit_price = np.round(np.concatenate([lines["UnitPrice"].to_numpy(), cancel_lines["UnitPrice"].to_numpy()]), 2)
    is_product = np.concatenate([lines["_is_product"].to_numpy(bool), np.ones(len(cancel_lines), bool)])
    # Sort by InvoiceDate, InvoiceNo (as strings: 'C…' after digits, numbers all have 6 digits), LineNo,
    # on integer keys before any string column exists (much faster than sorting strings).
    order = np.lexsort((line_no, number[slot], is_cancel[slot], all_time[slot]))
    slot, source, rows = slot[order], source[order], rows[order]
    return pd.DataFrame(
        {
            "InvoiceNo": invoice_no[slot],
            "StockCode": products["StockCode"].to_numpy(dtype=object)[rows],
            "Description": products["Description"].to_numpy(dtype=object)[rows],
            "Quantity": quantity[order],
            "InvoiceDate": iso_seconds(all_time[slot]),
            "UnitPrice": unit_price[order],
            "CustomerID": inv_customer_id[source],
            "Country": inv_country[source],
            "LineNo": line_no[order],
            "_ts": all_time[slot],
            "_customer": inv_customer[source],
            "_is_product": is_product[order],
            "_invoice": slot,
            "_row": rows,
        }
    )
