"""The web logs' lake I/O: where Firehose delivers raw lines and failed records, and reading them back.

Shared by the local follower (``_delivery``) and the indexes (``_index``), so neither has to import the other.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from shoplake import config
from shoplake.errors import ShoplakeError

RAW_PREFIX = "raw/weblogs/"
FAILED_PREFIX = "weblogs-failed/"


class DeliveryError(ShoplakeError):
    """Log delivery cannot go on; the message says what to fix."""


def lake_bucket() -> str:
    from shoplake import lake

    return lake.bucket()


def _list_keys(bucket: str, prefix: str, start_after: str | None = None) -> list[str]:
    return sorted(_iter_keys(bucket, prefix, start_after))


def _iter_keys(bucket: str, prefix: str, start_after: str | None = None, page_size: int | None = None) -> Iterator[str]:
    """Keys under ``prefix`` (after ``start_after``) in the listing's order, one page of ``page_size`` at a time:
    a caller that stops early lists no further."""
    s3 = config.client("s3")
    extra: dict[str, Any] = {"StartAfter": start_after} if start_after else {}
    if page_size is not None:
        extra["PaginationConfig"] = {"PageSize": page_size}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, **extra):
            yield from (obj["Key"] for obj in page.get("Contents", []))
    except Exception as exc:
        if "NoSuchBucket" in str(exc):
            raise DeliveryError(
                f"the lake bucket {bucket} does not exist: run notebook 00_provision (or `shoplake infra apply`) first"
            ) from exc
        raise


def _object_lines(body: bytes) -> list[bytes]:
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def read_failed_object(bucket: str, key: str) -> list[dict[str, Any]]:
    """The failed records of one S3 backup object: ``source``, ``line_no``, ``reason``, ``line``.

    Firehose's backup records (``processing-failed/``, ``opensearch-failed/``) hold ``errorMessage`` and the base64
    ``rawData``; keys it does not write (``sourceObject``, ``lineNo``) are read when present.
    """
    out: list[dict[str, Any]] = []
    body = config.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    for raw in _object_lines(body):
        rec = json.loads(raw)
        out.append(
            {
                "source": rec.get("sourceObject", key),
                "line_no": rec.get("lineNo"),
                "reason": rec.get("errorMessage") or rec.get("ErrorMessage") or rec.get("errorCode"),
                "line": base64.b64decode(rec.get("rawData", "")).decode("utf-8", errors="backslashreplace"),
            }
        )
    return out


def read_failed(bucket: str | None = None) -> list[dict[str, Any]]:
    """Every record Firehose could not deliver, from the S3 backup ``weblogs-failed/`` (see :func:`read_failed_object`)."""
    bucket = bucket or lake_bucket()
    return [rec for key in _list_keys(bucket, FAILED_PREFIX) for rec in read_failed_object(bucket, key)]
