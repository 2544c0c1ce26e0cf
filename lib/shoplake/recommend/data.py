"""Inputs of the recommender: the curated order lines as a local Parquet folder Spark can read (no s3a offline).

``local_curated_copy`` copies the curated lake (``curated/order_lines/``, via ``shoplake.lake``) to a local folder.
``curated_from_events`` turns order events (a generated dataset) straight into the curated schema, for the unit
tests and the benchmark, which measure the recommender and not the lake; the notebook goes through the lake.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoplake import config

log = logging.getLogger(__name__)


def work_dir() -> Path:
    """``.shoplake/recommend/<prefix>/``: the local lake copy and the job's output of this prefix."""
    path = config.settings().home / "recommend" / config.settings().prefix
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    """Where the last local run wrote ``report.json``, the split and the lists."""
    return work_dir() / "run"


def curated_from_events(order_lines: pd.DataFrame, non_products: Iterable[str] = ()) -> pd.DataFrame:
    """Order events (generator/retail schema) → curated order-line columns (no dedup or set-aside accounting).

    Lines whose ``StockCode`` is in ``non_products`` (postage, bank charges, ...) are dropped, as curation would.
    """
    events = order_lines[~order_lines["StockCode"].isin(set(non_products))]
    ts = pd.to_datetime(events["InvoiceDate"], utc=True)
    customer = events["CustomerID"].astype("string")
    return pd.DataFrame(
        {
            "event_id": events["InvoiceNo"].astype(str) + "-" + events["LineNo"].astype(str),
            "invoice_no": events["InvoiceNo"].astype(str),
            "line_no": events["LineNo"].astype("int32"),
            "stock_code": events["StockCode"].astype(str),
            "description": events["Description"].astype(str),
            "quantity": events["Quantity"].astype("int64"),
            "invoice_ts": ts.astype("datetime64[us, UTC]"),
            "unit_price": events["UnitPrice"].astype(float),
            "customer_id": customer.where(customer.notna() & (customer != ""), None),
            "country": events["Country"].astype(str),
            "is_cancellation": events["InvoiceNo"].astype(str).str.startswith("C"),
            "order_date": ts.dt.strftime("%Y-%m-%d"),
        }
    ).reset_index(drop=True)


def write_local(curated: pd.DataFrame, folder: str | os.PathLike[str]) -> Path:
    """Write curated order lines as Parquet partitioned by ``order_date`` into ``folder`` (replaced)."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    table = pa.Table.from_pandas(curated, preserve_index=False)
    pq.write_to_dataset(table, root_path=str(folder), partition_cols=["order_date"])
    return folder


def local_curated_copy(folder: str | os.PathLike[str]) -> Path:
    """Copy the curated order lines of the lake to ``folder/order_lines/`` (replaced) and return that folder."""
    from shoplake import lake

    root = lake.download_curated(folder, tables=("order_lines",))
    return Path(root) / "order_lines"
