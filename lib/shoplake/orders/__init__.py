"""Order history: order events → Kinesis → ``order_history`` handler → DynamoDB → customer lookups.

Verbs: ``publish`` (replay events to the stream), ``consume`` (let the consumer catch up: locally the handler run by
the in-process event-source mapping, on aws the deployed function watched until the table and DLQ account for the
stream — ``shoplake.lambda_runtime``), ``ingest`` (both), ``ship`` (a dataset by the generator or the agent, plus
malformed events), ``history`` (one customer's orders, newest first), ``dead_letters``, ``reconcile`` (every event
written exactly once or dead-lettered), ``reset``, ``table_items``, ``item_count``.
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
    expected_total,
    handler,
    ingest,
    item_count,
    malformed_samples,
    mapping,
    progress,
    publish,
    purge_dead_letters,
    reconcile,
    reset,
    runtime,
    ship,
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
    "expected_total",
    "handler",
    "history",
    "ingest",
    "item_count",
    "mapping",
    "parse_since",
    "progress",
    "publish",
    "purge_dead_letters",
    "reconcile",
    "reset",
    "runtime",
    "ship",
    "table_items",
    "table_name",
    "wait_for",
]
