"""Shared fixtures: one local services for the whole session, a resource prefix of this session's own."""

from __future__ import annotations

import os
import uuid

import pytest

# Each pytest session gets its own resource prefix, so parallel sessions on the one shared stack never collide.
# A developer can pin it (SHOPLAKE_PREFIX=p1 pytest ...) to look at the resources afterwards.
os.environ.setdefault("SHOPLAKE_PREFIX", "t" + uuid.uuid4().hex[:6])
os.environ["SHOPLAKE_TARGET"] = "local"
os.environ.pop("SHOPLAKE_RETAIL_FILE", None)  # tests run on the seeded synthetic shop, never a user's real file
for _key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_key]


def pytest_collection_modifyitems(items):
    """Markers follow the folders (tests/README.md): integration needs the local services; aws needs no account."""
    for item in items:
        folder = item.path.parent.name
        if folder == "integration":
            item.add_marker(pytest.mark.integration)
        elif folder == "aws":
            item.add_marker(pytest.mark.aws)


@pytest.fixture(scope="session")
def local_stack():
    """The shared local services; started if down, and stopped again at the end only if this session started it."""
    from shoplake import config, local_services

    was_up = local_services.status().up
    status = local_services.ensure()
    config.clear_caches()
    yield status
    if not was_up:
        local_services.down()


@pytest.fixture(scope="session")
def provisioned(local_stack):
    """Every resource of infra/resources.yaml applied under this session's prefix; yields infra outputs."""
    from shoplake import infra

    infra.apply()
    yield infra.outputs()
    infra.destroy()  # the emulator caps some resources per account (e.g. 50 Firehose streams): leave none behind


@pytest.fixture(scope="session")
def tiny_dataset():
    """The seeded synthetic shop at scale tiny (generated once, cached in data/generated/)."""
    from shoplake import datagen

    return datagen.load(scale="tiny", seed=42)


@pytest.fixture(scope="session")
def workbook_dir(tmp_path_factory):
    """Where the tiny workbook run writes: build/ (executed notebooks, metrics) and reports/ (HTML)."""
    return tmp_path_factory.mktemp("workbook")


@pytest.fixture(scope="session")
def workbook_run(local_stack, workbook_dir):
    """Executes every notebook in order at scale tiny; returns {notebook name: NotebookResult}."""
    from shoplake import workbook

    out = workbook_dir
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
