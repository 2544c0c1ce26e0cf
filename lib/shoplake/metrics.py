"""Shortcut: ``from shoplake.metrics import record`` inside notebooks."""

from shoplake.workbook import read_metrics, record_metrics

record = record_metrics

__all__ = ["record", "record_metrics", "read_metrics"]
