"""The S3 data lake: order events delivered by Firehose to ``raw/``, curated into typed, partitioned Parquet.

Layout (bucket ``bucket:lake`` of ``infra/resources.yaml``)::

    raw/orders/YYYY/MM/DD/HH/<stream>-...   JSON lines exactly as Firehose delivers them (at-least-once)
    curated/order_lines/order_date=YYYY-MM-DD/*.parquet   one row per distinct order line (schema below)
    curated/set_aside/reason=<reason>/*.parquet           lines kept out of order_lines, with reason + detail
    curated/products/   curated/customers/               derived from the curated order lines

Curation rules (``curate_orders``), applied in this order to every raw line:

1. ``malformed_json``  — not a JSON object;
2. ``missing_field``   — a required key absent or null (``CustomerID`` and ``Description`` may be null);
3. ``invalid_value``   — wrong type, unparseable ``InvoiceDate``, negative ``UnitPrice``, ``Quantity`` 0, a sale with a
   negative quantity or a cancellation (``C…`` invoice) with a positive one;
4. ``duplicate``       — an event id (``<InvoiceNo>-<LineNo>``) already seen: Firehose is at-least-once, the first
   delivered copy is kept;
5. ``non_product``     — postage, fees and adjustments (POST, DOT, M, BANK CHARGES, C2, PADS, ... and any code that is
   not a 5-digit stock number with an optional letter suffix), which are not things a customer buys.

Every delivered line ends in exactly one place: ``delivered == curated + sum(set_aside.values())``. Cancellations
stay in ``order_lines`` flagged ``is_cancellation`` (money negative); guest lines (no customer) stay too, with a null
``customer_id``. The *training view* (``read_curated_order_lines(training=True)``) is the sales lines of known
customers. Re-running curation rebuilds the same partitions (``overwrite_partitions``) and replaces ``set_aside``,
``products`` and ``customers``: it never duplicates. Tables are registered in the Glue database via awswrangler;
Glue's partitions always equal the partition folders that hold files (``register_partitions``), never just this run's.

Delivery (``deliver_orders``) returns when the lake holds every record it put: Firehose buffers up to 60 s / 5 MB on
AWS (the emulator writes at once), and curating before that would read a partial lake (``wait_for_delivery``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import config, events
from shoplake._stall import StallWatch
from shoplake.errors import DataError, ShoplakeError
from shoplake.events import from_frame

log = logging.getLogger(__name__)

RAW_ORDERS_PREFIX = "raw/orders/"
CURATED_PREFIX = "curated/"
ORDERS_FIREHOSE = "orders-to-lake"
CURATED_TABLES = ("order_lines", "products", "customers", "set_aside")

REASONS = ("malformed_json", "missing_field", "invalid_value", "duplicate", "non_product")
REQUIRED_FIELDS = events.REQUIRED

# Codes of the Online Retail file that are not merchandise (postage, fees, adjustments, samples, charity).
NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "M",
        "BANK CHARGES",
        "C2",
        "PADS",
        "D",
        "S",
        "B",
        "CRUK",
        "AMAZONFEE",
        "DCGSSBOY",
        "DCGSSGIRL",
    }
)
PRODUCT_CODE = re.compile(r"^\d{5}[A-Za-z]{0,2}$")

CENT = Decimal("0.01")

# Athena/Glue types of the curated tables (the contract in docs/internals.md).
ORDER_LINE_TYPES = {
    "event_id": "string",
    "invoice_no": "string",
    "line_no": "int",
    "stock_code": "string",
    "description": "string",
    "quantity": "bigint",
    "invoice_ts": "timestamp",
    "unit_price": "decimal(12,2)",
    "line_amount": "decimal(14,2)",
    "customer_id": "string",
    "country": "string",
    "is_cancellation": "boolean",
    "order_date": "string",
}
PRODUCT_TYPES = {
    "stock_code": "string",
    "description": "string",
    "unit_price": "decimal(12,2)",
    "lines": "bigint",
    "quantity": "bigint",
    "first_order_date": "string",
    "last_order_date": "string",
}
CUSTOMER_TYPES = {
    "customer_id": "string",
    "country": "string",
    "first_order_ts": "timestamp",
    "last_order_ts": "timestamp",
    "orders": "bigint",
    "lines": "bigint",
}
SET_ASIDE_TYPES = {
    "event_id": "string",
    "detail": "string",
    "raw": "string",
    "source_key": "string",
    "reason": "string",
}


class LakeError(ShoplakeError):
    """The lake is missing, empty or cannot be written."""


@dataclass
class LakeDeliveryCounts:
    """What ``deliver_orders`` put to Firehose (``events == delivered + failed + rejected``) and what landed in S3."""

    events: int = 0
    delivered: int = 0
    failed: int = 0
    rejected: int = 0
    retried: int = 0
    landed: int = 0  # records found in the new raw objects of the lake when the wait ended (>= delivered)
    waited_s: float = 0.0
    failed_records: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "failed_records"}


@dataclass
class CurationCounts:
    """In / out / set aside by reason of one curation run (``delivered == curated + set_aside total``)."""

    raw_objects: int = 0
    delivered: int = 0
    curated: int = 0
    set_aside: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    cancellations: int = 0
    guest_lines: int = 0
    training_lines: int = 0
    partitions: int = 0
    products: int = 0
    customers: int = 0

    @property
    def set_aside_total(self) -> int:
        return sum(self.set_aside.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["set_aside_total"] = self.set_aside_total
        return out


# --------------------------------------------------------------------------- names


def bucket() -> str:
    """The lake bucket's real name (``bucket:lake`` of infra/resources.yaml)."""
    from shoplake import infra

    return infra.physical_name(infra.find("s3_bucket", "lake"))


def s3_path(*parts: str) -> str:
    """``s3://<lake>/<parts...>/`` (a folder path, as awswrangler datasets want)."""
    inner = "/".join(p.strip("/") for p in parts if p)
    return f"s3://{bucket()}/{inner}/"


def curated_path(table: str) -> str:
    return s3_path(CURATED_PREFIX, table)


def ensure_database() -> str:
    """The Glue database (created when missing, e.g. before 00_provision ran); returns its name."""
    import awswrangler as wr

    session = config.configure_wrangler()
    name = config.glue_database()
    wr.catalog.create_database(name, exist_ok=True, boto3_session=session)
    return name


def _check_bucket() -> str:
    name = bucket()
    s3 = config.client("s3")
    try:
        s3.head_bucket(Bucket=name)
    except Exception as exc:
        raise LakeError(
            f"the lake bucket {name} does not exist: run notebook 00_provision (or `shoplake infra apply`) first"
        ) from exc
    return name


# --------------------------------------------------------------------------- delivery


# Firehose buffers up to 60 s / 5 MB (orders-to-lake in infra/resources.yaml) before it writes an object; a wait that sees
# no new record for this long has stalled (delivery errors go to the stream's CloudWatch log and S3 error prefix).
DELIVERY_STALL_S = 240.0
DELIVERY_POLL_S = 5.0


def deliver_orders(
    events: pd.DataFrame | Iterable[dict[str, Any]],
    stream: str = ORDERS_FIREHOSE,
    progress: bool = False,
    *,
    wait: bool = True,
    stall_timeout_s: float = DELIVERY_STALL_S,
    poll_s: float = DELIVERY_POLL_S,
) -> LakeDeliveryCounts:
    """Put order events to the Firehose delivery stream ``orders-to-lake`` (which lands them in ``raw/orders/``).

    With ``wait`` (default) it returns only when the lake holds every delivered record (:func:`wait_for_delivery`):
    on AWS Firehose buffers for up to a minute, and curating before that would read a partial lake.
    """
    from shoplake import streams

    name = _check_bucket()
    before = set(list_keys(name, RAW_ORDERS_PREFIX)) if wait else set()
    records = from_frame(events)
    result = streams.put_firehose(stream, records, progress=progress)
    counts = LakeDeliveryCounts(
        events=len(records),
        delivered=result.sent,
        failed=result.failed,
        rejected=result.rejected,
        retried=result.retried,
        failed_records=result.failed_records + result.rejected_records,
    )
    if counts.failed or counts.rejected:
        log.warning(
            "%d order events could not be delivered to %s (after retries); see counts.failed_records",
            counts.failed + counts.rejected,
            stream,
        )
    if wait and counts.delivered:
        landed = wait_for_delivery(
            counts.delivered, before, stall_timeout_s=stall_timeout_s, poll_s=poll_s, progress=progress
        )
        counts.landed, counts.waited_s = landed.records, landed.seconds
    log.info("delivered %d of %d order events to %s", counts.delivered, counts.events, stream)
    return counts


def ship_orders(dataset: Any, source: str = "generator", progress: bool = True) -> dict[str, Any]:
    """A dataset's order lines into ``raw/orders/``, sent by ``source``, waited for until they landed; the counts.

    ``"generator"``: :func:`deliver_orders` puts the events to Firehose ``orders-to-lake``. ``"agent"``: the shop's
    web servers write their order files and the shipping agent (the Kinesis Agent's role) sends them to the same
    delivery stream. Either way the result says ``events``, ``delivered``, ``failed``, ``retried``, ``malformed``
    and ``landed`` (records found in the lake), so notebooks show one table whatever the source.
    """
    if source == "generator":
        counts = deliver_orders(dataset.order_lines, progress=progress)
        return {
            "events": counts.events,
            "delivered": counts.delivered,
            "failed": counts.failed + counts.rejected,
            "retried": counts.retried,
            "malformed": 0,
            "landed": counts.landed,
        }
    if source == "agent":
        from shoplake import agent

        name = _check_bucket()
        before = set(list_keys(name, RAW_ORDERS_PREFIX))
        shipped = agent.ship_dataset(dataset, flows=[ORDERS_FIREHOSE], progress=progress)[ORDERS_FIREHOSE]
        landed = (
            wait_for_delivery(shipped["records_sent"], before, progress=progress) if shipped["records_sent"] else None
        )
        return {
            "events": len(dataset.order_lines),
            "delivered": shipped["records_sent"],
            "failed": shipped["failed"],
            "retried": shipped["retried"],
            "malformed": shipped["malformed"],
            "landed": landed.records if landed else 0,
        }
    raise LakeError(f"source must be 'generator' or 'agent', got {source!r}")


@dataclass
class Landed:
    """What :func:`wait_for_delivery` found: records and objects new since ``before``, and how long it waited."""

    records: int
    objects: int
    seconds: float


def _count_lines(body: bytes) -> int:
    return sum(1 for line in body.decode("utf-8", errors="replace").splitlines() if line.strip())


def wait_for_delivery(
    expected: int,
    before: Collection[str] = (),
    *,
    prefix: str = RAW_ORDERS_PREFIX,
    stall_timeout_s: float = DELIVERY_STALL_S,
    poll_s: float = DELIVERY_POLL_S,
    progress: bool = False,
) -> Landed:
    """Wait until the raw objects that are new since ``before`` (keys listed before the put) hold ``expected`` records.

    Records are counted as :func:`read_raw_lines` reads them (non-blank lines). Each new object is read once. Raises
    :class:`LakeError` when no new record lands for ``stall_timeout_s`` (Firehose stopped delivering).
    """
    from tqdm.auto import tqdm

    name = bucket()
    s3 = config.client("s3")
    seen = set(before)
    counted: dict[str, int] = {}
    began = time.monotonic()
    records = 0
    watch = StallWatch(stall_timeout_s, value=records)

    def fetch(key: str) -> int:
        return _count_lines(s3.get_object(Bucket=name, Key=key)["Body"].read())

    with tqdm(total=expected, desc="landed in the lake", unit="rec", disable=not progress) as bar:
        while True:
            new_keys = [k for k in list_keys(name, prefix) if k not in seen and k not in counted]
            if new_keys:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    counted.update(zip(new_keys, pool.map(fetch, new_keys), strict=True))
                landed = sum(counted.values())
                if landed > records:
                    bar.update(min(landed, expected) - min(records, expected))
                    records = landed
            if records >= expected:
                return Landed(records, len(counted), time.monotonic() - began)
            if watch.stalled(records):
                raise LakeError(
                    f"Firehose delivered {records} of {expected} records to s3://{name}/{prefix} in "
                    f"{time.monotonic() - began:.0f} s and nothing new for {stall_timeout_s:.0f} s: check the "
                    "delivery stream (describe-delivery-stream, its CloudWatch error log, the bucket's error prefix), "
                    "then re-run"
                )
            time.sleep(min(poll_s, max(0.0, stall_timeout_s - watch.idle_s)))


def ensure_curated(
    events: Callable[[], pd.DataFrame | Iterable[dict[str, Any]]], progress: bool = False
) -> dict[str, Any] | None:
    """Deliver and curate ``events()`` when the curated lake has no order lines yet; None when it already has them.

    Returns ``{"delivery": ..., "curation": ...}`` counts. Curation is idempotent, so this never duplicates.
    """
    if curated_exists("order_lines"):
        return None
    delivery = deliver_orders(events(), progress=progress)
    curation = curate_orders(progress=progress)
    return {"delivery": delivery.as_dict(), "curation": curation.as_dict()}


# --------------------------------------------------------------------------- reading raw


def list_keys(bucket_name: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` of the bucket, sorted."""
    s3 = config.client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def read_raw_lines(prefix: str = RAW_ORDERS_PREFIX, progress: bool = False) -> tuple[int, list[tuple[str, str]]]:
    """(number of objects, [(object key, line)...]) of everything Firehose delivered under ``prefix``, in key order."""
    from tqdm.auto import tqdm

    name = _check_bucket()
    keys = list_keys(name, prefix)
    s3 = config.client("s3")

    def fetch(key: str) -> list[tuple[str, str]]:
        body = s3.get_object(Bucket=name, Key=key)["Body"].read().decode("utf-8", errors="replace")
        return [(key, line) for line in body.splitlines() if line.strip()]

    lines: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for chunk in tqdm(pool.map(fetch, keys), total=len(keys), desc="raw objects", disable=not progress):
            lines.extend(chunk)
    return len(keys), lines


# --------------------------------------------------------------------------- validation


@lru_cache(maxsize=65536)  # a catalogue has a few thousand codes; curation asks once per order line
def is_product_code(stock_code: str) -> bool:
    """True for merchandise; False for postage, fees and adjustments (see the module docstring)."""
    code = stock_code.strip()
    if code.upper() in NON_PRODUCT_CODES or code.lower().startswith("gift_"):
        return False
    return bool(PRODUCT_CODE.match(code))


def validate_event(event: Any) -> tuple[dict[str, Any] | None, str | None, str]:
    """(curated order line, None, "") or (None, reason kind, detail) for one parsed raw event.

    The verdict is :func:`shoplake.events.validate`'s, the one set of rules every consumer of order events uses.
    """
    valid, kind, detail = events.judge(event)
    if valid is None:
        return None, kind, detail
    price = Decimal(repr(valid["UnitPrice"])).quantize(CENT, rounding=ROUND_HALF_UP)
    return (
        {
            "event_id": f"{valid['InvoiceNo']}-{valid['LineNo']}",
            "invoice_no": valid["InvoiceNo"],
            "line_no": valid["LineNo"],
            "stock_code": valid["StockCode"],
            "description": valid["Description"],
            "quantity": valid["Quantity"],
            "invoice_date": valid["InvoiceDate"],
            "unit_price": price,
            "line_amount": (price * valid["Quantity"]).quantize(CENT),
            "customer_id": valid["CustomerID"],
            "country": valid["Country"],
            "is_cancellation": events.is_cancellation(valid),
        },
        None,
        "",
    )


@dataclass
class Curated:
    """The result of curating raw lines in memory (before writing): order lines, set-aside lines, counts."""

    order_lines: pd.DataFrame
    set_aside: pd.DataFrame
    counts: CurationCounts


def curate_lines(lines: list[tuple[str, str]], raw_objects: int = 0) -> Curated:
    """Apply the curation rules to (source key, raw line) pairs; pure (no I/O), so it is easy to test."""
    counts = CurationCounts(raw_objects=raw_objects, delivered=len(lines))
    good: list[dict[str, Any]] = []
    aside: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key, line in lines:
        try:
            event = json.loads(line)
        except ValueError as exc:
            aside.append(
                {"event_id": None, "reason": "malformed_json", "detail": str(exc)[:200], "raw": line, "source_key": key}
            )
            continue
        row, reason, detail = validate_event(event)
        if row is None:
            event_id = None
            if isinstance(event, dict) and event.get("InvoiceNo") is not None and event.get("LineNo") is not None:
                event_id = f"{event['InvoiceNo']}-{event['LineNo']}"
            aside.append({"event_id": event_id, "reason": reason, "detail": detail, "raw": line, "source_key": key})
            continue
        if row["event_id"] in seen:
            aside.append(
                {
                    "event_id": row["event_id"],
                    "reason": "duplicate",
                    "detail": "event id delivered before",
                    "raw": line,
                    "source_key": key,
                }
            )
            continue
        seen.add(row["event_id"])
        if not is_product_code(row["stock_code"]):
            aside.append(
                {
                    "event_id": row["event_id"],
                    "reason": "non_product",
                    "detail": f"stock code {row['stock_code']!r} is not merchandise",
                    "raw": line,
                    "source_key": key,
                }
            )
            continue
        good.append(row)

    order_lines = pd.DataFrame(
        good,
        columns=[
            "event_id",
            "invoice_no",
            "line_no",
            "stock_code",
            "description",
            "quantity",
            "invoice_date",
            "unit_price",
            "line_amount",
            "customer_id",
            "country",
            "is_cancellation",
        ],
    )
    ts = pd.to_datetime(order_lines["invoice_date"], utc=True, format="ISO8601")
    order_date = order_lines["invoice_date"].str.slice(0, 10)  # validated YYYY-MM-DDTHH:MM:SSZ: the UTC date
    order_lines = order_lines.drop(columns=["invoice_date"])
    order_lines.insert(6, "invoice_ts", ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]"))
    order_lines = order_lines.astype(
        {
            "event_id": "string",
            "invoice_no": "string",
            "line_no": "int32",
            "stock_code": "string",
            "description": "string",
            "quantity": "int64",
            "customer_id": "string",
            "country": "string",
            "is_cancellation": "bool",
        }
    )
    order_lines["order_date"] = order_date.astype("string")
    order_lines = order_lines.sort_values(["invoice_ts", "invoice_no", "line_no"], kind="stable").reset_index(drop=True)

    set_aside = pd.DataFrame(aside, columns=["event_id", "reason", "detail", "raw", "source_key"]).astype("string")
    counts.curated = len(order_lines)
    for reason, n in Counter(set_aside["reason"]).items():
        counts.set_aside[str(reason)] = int(n)
    counts.cancellations = int(order_lines["is_cancellation"].sum())
    counts.guest_lines = int(order_lines["customer_id"].isna().sum())
    counts.training_lines = int(((~order_lines["is_cancellation"]) & order_lines["customer_id"].notna()).sum())
    counts.partitions = int(order_lines["order_date"].nunique())
    if counts.curated + counts.set_aside_total != counts.delivered:  # a bug, never bad input
        raise DataError(
            f"curation lost lines: {counts.delivered} delivered, {counts.curated} curated, "
            f"{counts.set_aside_total} set aside"
        )
    return Curated(order_lines, set_aside, counts)


def derive_products(order_lines: pd.DataFrame) -> pd.DataFrame:
    """One row per stock code sold: most frequent description, latest unit price, lines, quantity, date range."""
    sales = order_lines.loc[~order_lines["is_cancellation"]]
    if sales.empty:
        sales = order_lines
    ordered = sales.sort_values(["invoice_ts", "event_id"], kind="stable")
    grouped = ordered.groupby("stock_code", sort=True)
    desc = (
        ordered.dropna(subset=["description"])
        .groupby(["stock_code", "description"])
        .size()
        .reset_index(name="n")
        .sort_values(["stock_code", "n", "description"], ascending=[True, False, True])
        .drop_duplicates("stock_code")
        .set_index("stock_code")["description"]
    )
    products = pd.DataFrame(
        {
            "unit_price": grouped["unit_price"].last(),
            "lines": grouped.size().astype("int64"),
            "quantity": grouped["quantity"].sum().astype("int64"),
            "first_order_date": grouped["order_date"].min(),
            "last_order_date": grouped["order_date"].max(),
        }
    )
    products.insert(0, "description", desc.reindex(products.index))
    products = products.reset_index().astype(
        {"stock_code": "string", "description": "string", "first_order_date": "string", "last_order_date": "string"}
    )
    return products[list(PRODUCT_TYPES)]


def derive_customers(order_lines: pd.DataFrame) -> pd.DataFrame:
    """One row per known customer: country of the first order, first/last order time, orders (sales), lines."""
    known = order_lines.loc[order_lines["customer_id"].notna()].sort_values(["invoice_ts", "event_id"], kind="stable")
    grouped = known.groupby("customer_id", sort=True)
    sales = known.loc[~known["is_cancellation"]]
    customers = pd.DataFrame(
        {
            "country": grouped["country"].first(),
            "first_order_ts": grouped["invoice_ts"].min(),
            "last_order_ts": grouped["invoice_ts"].max(),
            "orders": sales.groupby("customer_id")["invoice_no"].nunique().reindex(grouped.size().index, fill_value=0),
            "lines": grouped.size(),
        }
    ).reset_index()
    customers = customers.astype({"customer_id": "string", "country": "string", "orders": "int64", "lines": "int64"})
    return customers[list(CUSTOMER_TYPES)]


# --------------------------------------------------------------------------- writing


def arrow_type(glue_type: str) -> Any:
    """The Arrow type of a Glue/Athena column type (the few the curated tables use)."""
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "int": pa.int32(),
        "bigint": pa.int64(),
        "boolean": pa.bool_(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }
    if glue_type in simple:
        return simple[glue_type]
    match = re.fullmatch(r"decimal\((\d+),(\d+)\)", glue_type)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    raise LakeError(f"no Arrow type for Glue type {glue_type!r}")


def _parquet_bytes(df: pd.DataFrame, types: dict[str, str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, arrow_type(t)) for name, t in types.items()])
    table = pa.Table.from_pandas(df[list(types)], schema=schema, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def _to_parquet(
    df: pd.DataFrame, table: str, types: dict[str, str], mode: str, partition_col: str | None = None
) -> list[str]:
    """Write ``df`` as a Parquet dataset under ``curated/<table>/`` and register it (and its partitions) in Glue.

    ``mode="overwrite"`` replaces the whole table; ``"overwrite_partitions"`` replaces only the partitions written.
    New files are written first, then the old files of the replaced partitions are deleted, so a reader never sees
    a partition empty. (awswrangler's ``to_parquet`` does the same but builds a client per file: slow locally.)
    """
    name = bucket()
    prefix = f"{CURATED_PREFIX}{table}/"
    run_id = uuid.uuid4().hex
    data_types = {k: v for k, v in types.items() if k != partition_col}
    files: dict[str, bytes] = {}
    partitions: dict[str, list[str]] = {}
    if partition_col:
        for value, part in df.groupby(partition_col, sort=True, observed=True):
            folder = f"{prefix}{partition_col}={value}/"
            files[f"{folder}{run_id}.snappy.parquet"] = _parquet_bytes(part, data_types)
            partitions[f"s3://{name}/{folder}"] = [str(value)]
    else:
        files[f"{prefix}{run_id}.snappy.parquet"] = _parquet_bytes(df, data_types)
    existing = list_keys(name, prefix)
    s3 = config.client("s3")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: s3.put_object(Bucket=name, Key=item[0], Body=item[1]), files.items()))
    replaced = {k.rsplit("/", 1)[0] + "/" for k in files}
    stale = [k for k in existing if mode == "overwrite" or k.rsplit("/", 1)[0] + "/" in replaced]
    _delete_keys(name, stale)

    register_table(
        table,
        f"s3://{name}/{prefix}",
        data_types,
        {partition_col: types[partition_col]} if partition_col else None,
        description=f"shoplake curated {table} (shoplake.lake)",
    )
    if partition_col:  # Glue's partitions = the folders that hold files now (kept ones + this run's), as DuckDB reads
        stale_set = set(stale)
        for key in existing:
            if key not in stale_set and key.endswith(".parquet"):
                folder = key.rsplit("/", 1)[0] + "/"
                values = [p.split("=", 1)[1] for p in folder[len(prefix) :].strip("/").split("/") if "=" in p]
                partitions.setdefault(f"s3://{name}/{folder}", values)
        register_partitions(table, partitions, prune=True)
    return list(files)


def register_table(
    table: str,
    location: str,
    columns_types: dict[str, str],
    partitions_types: dict[str, str] | None = None,
    description: str | None = None,
) -> str | None:
    """Create the Glue table, or replace its definition when the columns changed; partitions are left alone.

    Returns ``"new"``, ``"changed"`` or None (unchanged: nothing is written, so no partition is ever dropped).
    awswrangler's ``create_parquet_table(mode="overwrite")`` deletes every partition of an existing table; after a
    change, :func:`register_partitions` with every partition on S3 restores them.
    """
    import awswrangler as wr

    session = config.configure_wrangler()
    database = config.glue_database()
    glue = config.client("glue")
    try:
        existing = glue.get_table(DatabaseName=database, Name=table)["Table"]
    except glue.exceptions.EntityNotFoundException:
        existing = None
    if existing is not None:
        columns = {c["Name"]: c["Type"] for c in existing["StorageDescriptor"].get("Columns", [])}
        keys = {c["Name"]: c["Type"] for c in existing.get("PartitionKeys", [])}
        same = (
            columns == columns_types
            and keys == (partitions_types or {})
            and existing["StorageDescriptor"].get("Location", "").rstrip("/") == location.rstrip("/")
        )
        if same:
            return None
    wr.catalog.create_parquet_table(
        database=database,
        table=table,
        path=location,
        columns_types=columns_types,
        partitions_types=partitions_types or None,
        compression="snappy",
        description=description,
        mode="overwrite",
        boto3_session=session,
    )
    return "new" if existing is None else "changed"


def register_partitions(table: str, partitions: dict[str, list[str]], prune: bool = False) -> int:
    """Add the partitions (``s3 path → values``) the Glue table does not know yet; returns how many were new.

    Additive: partitions Glue already has stay. ``prune=True`` (``partitions`` is then every partition on S3) also
    removes Glue partitions whose folder is gone, so Athena sees exactly the files DuckDB reads.
    """
    import awswrangler as wr

    session = config.configure_wrangler()
    database = config.glue_database()
    known = wr.catalog.get_parquet_partitions(database=database, table=table, boto3_session=session)
    new = {path: values for path, values in partitions.items() if path not in known}
    if new:
        wr.catalog.add_parquet_partitions(
            database=database, table=table, partitions_values=new, compression="snappy", boto3_session=session
        )
    gone = [values for path, values in known.items() if path not in partitions] if prune else []
    if gone:
        wr.catalog.delete_partitions(table=table, database=database, partitions_values=gone, boto3_session=session)
    return len(new)


def _delete_keys(bucket_name: str, keys: list[str]) -> None:
    s3 = config.client("s3")
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]})


def delete_prefix(prefix: str) -> None:
    """Delete every object under ``prefix`` of the lake bucket."""
    name = bucket()
    _delete_keys(name, list_keys(name, prefix))


_list_keys = list_keys  # the old private names, still used by tests of other parts
_delete_prefix = delete_prefix


def write_curated(curated: Curated) -> CurationCounts:
    """Write order lines (overwrite their partitions), set-aside lines, products and customers; register in Glue."""
    import awswrangler as wr

    ensure_database()
    counts = curated.counts
    order_lines = curated.order_lines
    if not order_lines.empty:
        _to_parquet(order_lines, "order_lines", ORDER_LINE_TYPES, "overwrite_partitions", "order_date")
        products = derive_products(order_lines)
        customers = derive_customers(order_lines)
        _to_parquet(products, "products", PRODUCT_TYPES, "overwrite")
        if not customers.empty:
            _to_parquet(customers, "customers", CUSTOMER_TYPES, "overwrite")
        counts.products, counts.customers = len(products), len(customers)
    if curated.set_aside.empty:
        delete_prefix(CURATED_PREFIX + "set_aside/")
        wr.catalog.delete_table_if_exists(
            database=config.glue_database(), table="set_aside", boto3_session=config.configure_wrangler()
        )
    else:
        _to_parquet(curated.set_aside, "set_aside", SET_ASIDE_TYPES, "overwrite", "reason")
    return counts


def curate_orders(prefix: str = RAW_ORDERS_PREFIX, progress: bool = False) -> CurationCounts:
    """Raw order events in the lake → curated order lines, set-aside lines, products, customers (idempotent)."""
    raw_objects, lines = read_raw_lines(prefix, progress=progress)
    if not lines:
        raise LakeError(
            f"no raw order events under s3://{bucket()}/{prefix}: deliver orders first "
            "(shoplake.lake.deliver_orders or notebook 03_recommendations)"
        )
    curated = curate_lines(lines, raw_objects=raw_objects)
    counts = write_curated(curated)
    log.info(
        "curated %d of %d delivered lines (%s set aside) into %d partitions",
        counts.curated,
        counts.delivered,
        counts.set_aside_total,
        counts.partitions,
    )
    return counts


# --------------------------------------------------------------------------- reading curated


def curated_exists(table: str = "order_lines") -> bool:
    """True when the curated table has at least one object in the lake."""
    try:
        name = bucket()
        response = config.client("s3").list_objects_v2(Bucket=name, Prefix=f"{CURATED_PREFIX}{table}/", MaxKeys=1)
    except Exception:
        return False
    return response.get("KeyCount", 0) > 0


def read_arrow(location: str, columns: list[str] | None = None, partition_filter: Any = None) -> Any:
    """A hive-partitioned Parquet dataset at ``s3://bucket/prefix/`` as one Arrow table (partition columns strings).

    Files are fetched in parallel threads (much faster against the emulator than a file-by-file scan);
    ``partition_filter(dict of partition values) -> bool`` prunes partitions before any file is read.
    """
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    name, _, prefix = location.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    wanted: list[tuple[str, dict[str, str]]] = []
    for key in list_keys(name, prefix):
        if not key.endswith(".parquet"):
            continue
        parts = dict(p.split("=", 1) for p in key[len(prefix) :].split("/")[:-1] if "=" in p)
        if partition_filter is None or partition_filter(parts):
            wanted.append((key, parts))
    s3 = config.client("s3")

    def fetch(item: tuple[str, dict[str, str]]) -> pa.Table:
        key, parts = item
        body = s3.get_object(Bucket=name, Key=key)["Body"].read()
        file_columns = None if columns is None else [c for c in columns if c not in parts]
        table = pq.read_table(io.BytesIO(body), columns=file_columns)
        for part, value in parts.items():
            if columns is None or part in columns:
                table = table.append_column(part, pa.array([value] * table.num_rows, pa.string()))
        return table

    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(fetch, wanted))
    if not tables:
        raise LakeError(f"no Parquet files under s3://{name}/{prefix} match")
    return pa.concat_tables(tables, promote_options="default")


def read_dataset(prefix: str, columns: list[str] | None = None, partition_filter: Any = None) -> pd.DataFrame:
    """A Parquet dataset under ``s3://<lake>/<prefix>`` as a DataFrame (see :func:`read_arrow`)."""
    table = read_arrow(f"s3://{bucket()}/{prefix}", columns=columns, partition_filter=partition_filter)
    df = table.to_pandas(types_mapper=_pandas_type)
    return _normalize(df[columns] if columns is not None else df)


def _pandas_type(arrow: Any) -> Any:
    import pyarrow as pa

    mapping = {
        pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
    }
    return mapping.get(arrow)


def _normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Partition columns back to strings, timestamps UTC-aware (Parquet stores them as UTC instants)."""
    for col in df.columns:
        dtype = df[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            df[col] = df[col].astype("string")
        elif pd.api.types.is_datetime64_dtype(dtype) and getattr(dtype, "tz", None) is None:
            df[col] = df[col].dt.tz_localize("UTC")
    return df


def read_curated(table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A curated table (``order_lines``, ``products``, ``customers``, ``set_aside``, ...) as a DataFrame."""
    if not curated_exists(table):
        raise LakeError(
            f"curated table {table!r} is missing in s3://{bucket()}/{CURATED_PREFIX}: run "
            "shoplake.lake.curate_orders() (notebook 03_recommendations or 06_warehouse) first"
        )
    return read_dataset(CURATED_PREFIX + table, columns=columns)


def read_curated_order_lines(
    columns: list[str] | None = None, training: bool = False, start_date: str | None = None, end_date: str | None = None
) -> pd.DataFrame:
    """Curated order lines, sorted by time; ``training=True`` keeps only sales (no cancellations) of known customers.

    ``start_date``/``end_date`` (``YYYY-MM-DD``, inclusive) prune partitions.
    """
    if not curated_exists("order_lines"):
        raise LakeError("the curated lake is empty: run shoplake.lake.curate_orders() first")
    wanted = (
        None
        if columns is None
        else list(dict.fromkeys([*columns, *(["is_cancellation", "customer_id"] if training else [])]))
    )

    def in_range(partition: dict[str, str]) -> bool:
        day = partition.get("order_date", "")
        return (start_date is None or day >= start_date) and (end_date is None or day <= end_date)

    df = read_dataset(
        CURATED_PREFIX + "order_lines", columns=wanted, partition_filter=in_range if (start_date or end_date) else None
    )
    if training:
        df = df.loc[~df["is_cancellation"].astype(bool) & df["customer_id"].notna()]
    if columns is not None:
        df = df[columns]
    sort = [c for c in ("invoice_ts", "invoice_no", "line_no") if c in df.columns]
    return df.sort_values(sort, kind="stable").reset_index(drop=True) if sort else df.reset_index(drop=True)


def download_curated(local_dir: str | Path, tables: Iterable[str] = ("order_lines", "products", "customers")) -> Path:
    """Copy curated tables to ``local_dir/<table>/`` (replacing what was there): a local lake for Spark."""
    import s3fs

    root = Path(local_dir)
    root.mkdir(parents=True, exist_ok=True)
    fs = s3fs.S3FileSystem(**config.storage_options())
    name = bucket()
    for table in tables:
        if not curated_exists(table):
            raise LakeError(f"curated table {table!r} is missing: run shoplake.lake.curate_orders() first")
        target = root / table
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        fs.get(f"{name}/{CURATED_PREFIX}{table}/", str(target) + "/", recursive=True)
    return root
