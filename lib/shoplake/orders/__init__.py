"""Order history (issue 3): order events → Kinesis → ``order_history`` handler → DynamoDB → customer lookups.

Verbs: ``publish`` (replay events to the stream), ``consume`` (run the handler's local event-source mapping until
caught up), ``ingest`` (both), ``history`` (one customer's orders, newest first), ``dead_letters``, ``reconcile``
(every event written exactly once or dead-lettered), ``table_items``, ``item_count``.
"""

from shoplake.orders._history import History, HistoryError, compare_with_source, history, parse_since
from shoplake.orders._ingest import (
    CONSUMER,
    DeadLetters,
    IngestReport,
    OrdersError,
    Reconciliation,
    consume,
    dead_letters,
    dlq_url,
    expected_items,
    handler,
    ingest,
    item_count,
    malformed_samples,
    mapping,
    publish,
    purge_dead_letters,
    reconcile,
    reset,
    table_items,
    table_name,
    wait_for,
    with_malformed,
)

__all__ = [
    "CONSUMER",
    "DeadLetters",
    "History",
    "HistoryError",
    "IngestReport",
    "OrdersError",
    "Reconciliation",
    "compare_with_source",
    "consume",
    "malformed_samples",
    "with_malformed",
    "dead_letters",
    "dlq_url",
    "expected_items",
    "handler",
    "history",
    "ingest",
    "item_count",
    "mapping",
    "parse_since",
    "publish",
    "purge_dead_letters",
    "reconcile",
    "reset",
    "table_items",
    "table_name",
    "wait_for",
]
