"""Run the whole workbook once at scale tiny (papermill) and hand each test the recorded metrics."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def workbook_run(local_stack, tmp_path_factory):
    """Executes every notebook in order at scale tiny; returns {notebook name: NotebookResult}."""
    from shoplake import workbook

    out = tmp_path_factory.mktemp("workbook")
    # a smaller hyper-parameter grid keeps Spark to a few fits; the full grid runs in `make run`
    extra = {"03_recommendations": {"ranks": [8], "alphas": [2.0]}}
    results = workbook.run_notebooks(
        scale="tiny",
        seed=42,
        target="local",
        out_dir=out / "build",
        report_dir=out / "reports",
        keep_going=True,
        progress=False,
        extra_parameters=extra,
    )
    return {r.name: r for r in results}


@pytest.fixture(scope="session")
def workbook_metrics(workbook_run):
    """{notebook name: recorded metrics}; a failed notebook fails the tests that ask for it, with its error."""

    class Metrics(dict):
        def __missing__(self, name: str):
            result = workbook_run.get(name)
            if result is None:
                pytest.fail(f"notebook {name} did not run (known: {sorted(workbook_run)})")
            pytest.fail(f"notebook {name} failed: {result.error}")

    return Metrics({name: r.metrics for name, r in workbook_run.items() if r.ok})
