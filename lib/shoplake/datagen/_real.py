"""The real UCI Online Retail file as a Dataset folder (same layout as the generator's, no ground truth)."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from shoplake import config
from shoplake.datagen._dataset import (
    CUSTOMER_SCHEMA,
    PRODUCT_SCHEMA,
    Dataset,
    _sha256,
    _write_json,
    _write_parquet,
    finish_manifest,
    publish,
    write_order_files,
)
from shoplake.errors import DataError

PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]{0,2}$")  # real products: 5 digits + optional variant letters


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "file"


def load_retail_dataset(
    path: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None, date_order: str = "auto"
) -> Dataset:
    """Load the real Online Retail file once into ``data/generated/retail-<name>-<sha>/`` and return it as a Dataset.

    Same files as a generated dataset (order_lines.parquet/.csv, products, customers, manifest with the load
    report) plus ``rejects.csv``; ``taste_group`` is -1 (unknown), there are no incidents and no access log.
    """
    from shoplake.retail import load_retail

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file: pass the Online Retail .csv or .xlsx file")
    digest = _sha256(path)
    suffix = "" if date_order == "auto" else f"-{date_order}"
    final = (
        Path(out_dir)
        if out_dir is not None
        else (Path(config.settings().data_dir) / f"retail-{_slug(path.stem)}-{digest[:10]}{suffix}")
    )
    if (final / "manifest.json").exists():
        existing = Dataset(final)
        same = existing.manifest.get("source_sha256") == digest and (
            existing.manifest.get("date_order_requested", "auto") == date_order
        )
        if not same:
            raise DataError(
                f"{final} already holds another dataset ({existing.manifest.get('source_file') or 'generated'}): "
                "choose an empty or new --out-dir"
            )
        return existing
    if final.exists() and any(final.iterdir()):
        raise DataError(f"{final} is not empty and is not a dataset folder: choose an empty or new --out-dir")
    events, report = load_retail(path, date_order=date_order)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        order_lines = events.sort_values(["InvoiceDate", "InvoiceNo", "LineNo"], kind="stable").reset_index(drop=True)
        write_order_files(order_lines, tmp)
        products = (
            order_lines.groupby("StockCode", sort=True)
            .agg(
                Description=("Description", lambda d: d.mode().iat[0] if len(d.mode()) else ""),
                UnitPrice=("UnitPrice", "median"),
            )
            .reset_index()
        )
        products["UnitPrice"] = products["UnitPrice"].round(2)
        products["taste_group"] = np.int64(-1)
        products["is_product"] = products["StockCode"].str.match(PRODUCT_CODE)
        _write_parquet(products, PRODUCT_SCHEMA, tmp / "products.parquet")
        known = order_lines[order_lines["CustomerID"].notna()]
        customers = known.groupby("CustomerID", sort=True).agg(Country=("Country", "first")).reset_index()
        customers["taste_group"] = np.int64(-1)
        customers["ip"] = None
        _write_parquet(customers, CUSTOMER_SCHEMA, tmp / "customers.parquet")
        _write_json([], tmp / "incidents.json")
        _write_json([], tmp / "weblog_incidents.json")
        pd.DataFrame(report["rejects"], columns=["line", "reason", "raw"]).to_csv(tmp / "rejects.csv", index=False)
        is_cancel = order_lines["InvoiceNo"].str.startswith("C")
        summary = {k: v for k, v in report.items() if k != "rejects"}
        manifest = {
            "source": "online-retail",
            "source_file": str(path.resolve()),
            "source_sha256": digest,
            "date_order_requested": date_order,
            "scale": None,
            "seed": None,
            "counts": {
                "order_lines": len(order_lines),
                "invoices": int(order_lines["InvoiceNo"].nunique()),
                "orders": report["orders"],
                "cancellation_invoices": int(order_lines.loc[is_cancel, "InvoiceNo"].nunique()),
                "cancellations": report["cancellations"],
                "missing_customer": report["missing_customer"],
                "customers": len(customers),
                "active_customers": len(customers),
                "products": int(products["is_product"].sum()),
                "catalogue_codes": len(products),
                "access_log_lines": 0,
                "incidents": 0,
                "weblog_incidents": 0,
                "rejected": report["rejected"],
            },
            "time_range": report["time_range"],
            "report": summary,
        }
        finish_manifest(manifest, tmp)
        published = publish(tmp, final, replace=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Dataset(published)
