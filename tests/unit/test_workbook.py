"""The workbook runner: order, metrics, and a failing notebook named with its cell."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from shoplake import workbook
from shoplake.errors import ShoplakeError


def _notebook(path, *sources):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [new_code_cell(s) for s in sources]
    cells[0].metadata["tags"] = ["parameters"]
    nb.cells = cells
    nbformat.write(nb, path)


@pytest.fixture()
def tiny_workbook(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    record = (
        "from shoplake import workbook\nworkbook.record_metrics(out_dir, '{name}', {{'scale': scale, 'seed': seed}})"
    )
    _notebook(
        nbdir / "00_first.ipynb", "target='local'\nscale='small'\nseed=1\nout_dir='x'", record.format(name="00_first")
    )
    _notebook(nbdir / "01_broken.ipynb", "target='local'\nscale='small'\nseed=1\nout_dir='x'", "x = 1", "1 / 0")
    _notebook(
        nbdir / "02_after.ipynb", "target='local'\nscale='small'\nseed=1\nout_dir='x'", record.format(name="02_after")
    )
    monkeypatch.setattr(workbook, "NOTEBOOK_DIR", nbdir)
    original = workbook.notebooks
    monkeypatch.setattr(workbook, "notebooks", lambda only=None, notebook_dir=nbdir: original(only, nbdir))
    return tmp_path


def test_runner_stops_at_a_failure_naming_notebook_and_cell(tiny_workbook):
    out = tiny_workbook / "build"
    results = workbook.run_notebooks(
        scale="tiny", seed=7, out_dir=out, report_dir=tiny_workbook / "reports", progress=False
    )
    assert [r.name for r in results] == ["00_first", "01_broken"]
    assert results[0].ok and results[0].metrics == {"scale": "tiny", "seed": 7}
    assert not results[1].ok and "ZeroDivisionError" in results[1].error and "`1 / 0`" in results[1].error
    assert (tiny_workbook / "reports" / "00_first.html").exists()
    assert (tiny_workbook / "reports" / "01_broken.html").exists()
    assert json.loads((out / "00_first.metrics.json").read_text())["metrics"]["seed"] == 7


def test_keep_going_and_only(tiny_workbook):
    results = workbook.run_notebooks(
        scale="tiny", out_dir=tiny_workbook / "b", report_dir=tiny_workbook / "r", keep_going=True, progress=False
    )
    assert [r.ok for r in results] == [True, False, True]
    only = workbook.run_notebooks(
        scale="tiny", only=["02"], out_dir=tiny_workbook / "c", report_dir=tiny_workbook / "r", progress=False
    )
    assert [r.name for r in only] == ["02_after"]
    with pytest.raises(ShoplakeError, match="no notebook matches"):
        workbook.notebooks(["42"], tiny_workbook / "notebooks")


def test_record_metrics_makes_values_json_safe(tmp_path):
    from decimal import Decimal

    import numpy as np

    path = workbook.record_metrics(tmp_path, "nb", {"a": np.int64(3), "b": Decimal("1.50"), "c": float("nan")})
    assert json.loads(path.read_text())["metrics"] == {"a": 3, "b": 1.5, "c": None}
    assert workbook.read_metrics(tmp_path, "nb")["a"] == 3
    with pytest.raises(ShoplakeError, match="run notebook"):
        workbook.read_metrics(tmp_path, "missing")


def test_reports_carry_no_machine_paths_and_share_one_plotlyjs(tiny_workbook):
    nbdir = tiny_workbook / "notebooks"
    _notebook(
        nbdir / "03_figure.ipynb",
        "target='local'\nscale='small'\nseed=1\nout_dir='x'",
        "from shoplake import workbook\nimport plotly.express as px\nworkbook.setup_plotly()\n"
        "px.bar(x=[1, 2], y=[3, 4]).show()\nprint(out_dir)\nfrom shoplake import config\nprint(config.REPO_ROOT / 'data')",
    )
    reports = tiny_workbook / "reports"
    results = workbook.run_notebooks(
        only=["00", "03"], out_dir=tiny_workbook / "build", report_dir=reports, progress=False
    )
    assert all(r.ok for r in results), results
    html = (reports / "03_figure.html").read_text()
    from shoplake import config

    assert str(tiny_workbook) not in html, "the report shows a machine path"
    assert str(config.REPO_ROOT) not in html and "./data" in html
    shared = list(reports.glob("plotly-*.min.js"))
    assert len(shared) == 1 and shared[0].stat().st_size > 1_000_000
    assert f'<script src="{shared[0].name}"></script>' in html and len(html) < 1_000_000


def test_run_summary_shows_headline_figures():
    results = [
        workbook.NotebookResult("02_order_history", 12.5, True, metrics={"events_in": 1931, "balanced": True}),
        workbook.NotebookResult("03_recommendations", 30.0, False, error="cell 4: ValueError: bad"),
    ]
    lines = workbook.summary_lines(results)
    assert (
        lines[0].startswith("ok   02_order_history") and "events in 1,931" in lines[0] and "balanced True" in lines[0]
    )
    assert lines[1].startswith("FAIL 03_recommendations") and "cell 4: ValueError" in lines[1]


def test_reports_drop_only_the_jdk_notice_no_setting_can_silence(tiny_workbook):
    nbdir = tiny_workbook / "notebooks"
    _notebook(
        nbdir / "03_jvm.ipynb",
        "target='local'\nscale='small'\nseed=1\nout_dir='x'",
        # built at run time, so the cell's own source does not contain the notice
        "import sys\nsys.stderr.write('WARNING: Using incubator modules: jdk.' + 'incubator.vector\\nreal trouble\\n')",
    )
    reports = tiny_workbook / "reports"
    results = workbook.run_notebooks(only=["03"], out_dir=tiny_workbook / "build", report_dir=reports, progress=False)
    assert results[0].ok
    html = (reports / "03_jvm.html").read_text()
    assert "jdk.incubator.vector" not in html and "real trouble" in html


def test_one_json_sanitiser_for_metrics_and_events():
    import decimal

    import numpy as np
    import pandas as pd

    from shoplake._json import plain

    got = plain(
        {
            "n": np.int64(3),
            "nan": np.float64("nan"),
            "naive": pd.Timestamp("2010-12-01 08:26"),
            "paris": pd.Timestamp("2010-12-01 08:26", tz="Europe/Paris"),
            "nat": pd.NaT,
            "na": pd.NA,
            "money": decimal.Decimal("2.50"),
            "flags": (np.bool_(True),),
        }
    )
    assert got == {
        "n": 3,
        "nan": None,
        "naive": "2010-12-01T08:26:00Z",
        "paris": "2010-12-01T07:26:00Z",
        "nat": None,
        "na": None,
        "money": 2.5,
        "flags": [True],
    }
