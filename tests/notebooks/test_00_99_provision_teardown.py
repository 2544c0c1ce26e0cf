"""The provisioning and teardown notebooks, read back from their recorded metrics."""

import pytest

pytestmark = pytest.mark.slow


def test_provision_creates_everything_then_is_idempotent(workbook_metrics):
    from shoplake import infra

    m = workbook_metrics["00_provision"]
    assert m["target"] == "local"
    assert m["resources"] == len(infra.load_spec(target="local"))
    assert m["second_apply_changes"] == 0
    assert m["outputs"] > 0


def test_every_notebook_ran(workbook_run):
    failed = {name: r.error for name, r in workbook_run.items() if not r.ok}
    assert not failed, f"notebooks failed: {failed}"


def test_teardown_removes_everything_it_created(workbook_metrics):
    m = workbook_metrics["99_teardown"]
    assert m["deleted"] == workbook_metrics["00_provision"]["created"]
    assert m["still_present"] == 0
