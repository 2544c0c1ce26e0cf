"""Run the numbered notebooks in order with papermill, collect their recorded metrics, export HTML reports.

Notebooks call :func:`start` in their first cell (parameters → settings, local services up) and
:func:`record_metrics` once at the end; tests and ``shoplake run`` read ``<out_dir>/<notebook>.metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from shoplake import config
from shoplake._json import plain
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"
REPORT_DIR = config.REPO_ROOT / "reports"


class NotebookFailed(ShoplakeError):
    """A notebook of the workbook raised; the message names the notebook and the failing cell."""


# --------------------------------------------------------------------------- inside a notebook


def start(target: str = "local", scale: str = "small", seed: int = 42, **_: Any) -> config.Settings:
    """First call of every notebook: make the parameters the settings, bring the local services up, set up plotly."""
    settings = config.apply_parameters(target=target, scale=scale, seed=seed)
    config.ensure_ready()
    setup_plotly()
    return settings


def setup_plotly() -> None:
    """Figures render in JupyterLab and are embedded (with plotly.js, offline) in the exported HTML."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"


def record_metrics(out_dir: str | os.PathLike[str], notebook: str, metrics: dict[str, Any]) -> Path:
    """Write ``<out_dir>/<notebook>.metrics.json`` — the checkable results of one notebook run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{notebook}.metrics.json"
    payload = {
        "notebook": notebook,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "target": config.settings().target,
            "scale": config.settings().scale,
            "seed": config.settings().seed,
            "prefix": config.settings().prefix,
        },
        "metrics": plain(metrics),
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    return path


def read_metrics(out_dir: str | os.PathLike[str], notebook: str) -> dict[str, Any]:
    path = Path(out_dir) / f"{notebook}.metrics.json"
    if not path.exists():
        raise ShoplakeError(
            f"{path} does not exist: run notebook {notebook} first (shoplake run --only {notebook[:2]})"
        )
    return json.loads(path.read_text())["metrics"]


# --------------------------------------------------------------------------- running the workbook


@dataclass
class NotebookResult:
    name: str
    seconds: float
    ok: bool
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def notebooks(only: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The workbook's notebooks ``NN_name.ipynb`` in order, optionally only those whose number or name is given."""
    found = sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    wanted = {w.strip() for w in only if w.strip()}
    picked = [p for p in found if p.stem[:2] in wanted or p.stem in wanted]
    unknown = wanted - {p.stem[:2] for p in picked} - {p.stem for p in picked}
    if unknown:
        raise ShoplakeError(f"no notebook matches {sorted(unknown)}; available: {[p.stem for p in found]}")
    return picked


@contextlib.contextmanager
def held_for_run(keep: bool = False) -> Iterator[config.Settings]:
    """The target made ready for one run (``shoplake run``); afterwards the local services are stopped only if this
    call started it, so a JupyterLab session or a test session sharing the local services keeps its data. On aws: nothing
    to start or stop."""
    from shoplake import local_services

    settings = config.settings()
    started_here = config.by_target(local=lambda: not local_services.status().up, aws=lambda: False)()
    config.ensure_ready()
    try:
        yield settings
    finally:
        if started_here and not keep:
            local_services.down()


def _failing_cell(exc: Exception) -> str:
    name = getattr(exc, "ename", type(exc).__name__)
    value = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    source = (getattr(exc, "source", "") or "").strip().splitlines()
    where = f"cell [{cell}]" if cell is not None else "a cell"
    if source:
        where += f" `{source[0][:80]}`"
    return f"{where}: {name}: {value}"


# Notices the JDK itself prints that no setting can silence at the source (Spark's launcher always passes
# --add-modules=jdk.incubator.vector): dropped from the reports' stderr, exactly these lines and nothing else.
JDK_NOTICES = ("WARNING: Using incubator modules: jdk.incubator.vector",)


def _drop_jdk_notices(executed: Path) -> None:
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    changed = False
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = output["text"].splitlines(keepends=True)
                clean = [line for line in lines if line.rstrip("\r\n") not in JDK_NOTICES]
                if len(clean) != len(lines):
                    changed = True
                    output["text"] = "".join(clean)
                if not output["text"]:
                    continue
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    if changed:
        nbformat.write(nb, executed)


def _without_machine_paths(body: str) -> str:
    """Reports are shared: this machine's folders become ``.`` (the repository), ``$SHOPLAKE_HOME`` and ``~``."""
    places = {str(config.REPO_ROOT): ".", str(config.settings().home): "$SHOPLAKE_HOME", str(Path.home()): "~"}
    for path in sorted(places, key=len, reverse=True):  # the most specific first (home may lie inside the repo)
        if len(path) > 1:
            body = body.replace(path, places[path])
    return body


def _share_plotlyjs(body: str, report_dir: Path) -> str:
    """Reports stay openable offline, but share one plotly.js (~4.8 MB) written next to them instead of one each."""
    import plotly
    import plotly.offline

    inline = "<script>" + plotly.offline.get_plotlyjs() + "</script>"
    if inline not in body:
        return body
    name = f"plotly-{plotly.__version__}.min.js"
    shared = report_dir / name
    if not shared.exists():
        tmp = shared.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
        os.replace(tmp, shared)
    return body.replace(inline, f'<script src="{name}"></script>', 1)


def export_html(executed: Path, report_dir: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    report_dir.mkdir(parents=True, exist_ok=True)
    _drop_jdk_notices(executed)
    nb = nbformat.read(executed, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    body = _share_plotlyjs(body, report_dir)
    body = _without_machine_paths(body)
    path = report_dir / f"{executed.stem}.html"
    path.write_text(body, encoding="utf-8")
    return path


def run_notebooks(
    scale: str = "small",
    seed: int = 42,
    target: str | None = None,
    only: list[str] | None = None,
    out_dir: Path | None = None,
    report_dir: Path | None = None,
    keep_going: bool = False,
    extra_parameters: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> list[NotebookResult]:
    """Execute the notebooks in order; stop at the first failure unless ``keep_going``."""
    import papermill as pm
    from tqdm.auto import tqdm

    target = target or config.settings().target
    out_dir = Path(out_dir or config.REPO_ROOT / "build")
    report_dir = Path(report_dir or REPORT_DIR)
    executed_dir = out_dir / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    results: list[NotebookResult] = []
    paths = notebooks(only)
    bar = tqdm(paths, desc="workbook", unit="notebook", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.stem)
        # relative to the notebook's folder (papermill's cwd): reports carry no machine paths
        notebook_out_dir = os.path.relpath(out_dir.resolve(), path.parent.resolve())
        params = {"target": target, "scale": scale, "seed": seed, "out_dir": notebook_out_dir}
        params.update((extra_parameters or {}).get(path.stem, {}))
        executed = executed_dir / path.name
        began = time.perf_counter()
        try:
            pm.execute_notebook(
                str(path),
                str(executed),
                parameters=params,
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                log_output=False,
                # the kernel's own start-up warnings (loopback TCP) are noise in `make run`
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell and traceback
            results.append(NotebookResult(path.stem, time.perf_counter() - began, False, _failing_cell(exc)))
            if executed.exists():
                export_html(executed, report_dir)
            if not keep_going:
                break
            continue
        metrics_path = out_dir / f"{path.stem}.metrics.json"
        metrics = json.loads(metrics_path.read_text())["metrics"] if metrics_path.exists() else {}
        export_html(executed, report_dir)
        results.append(NotebookResult(path.stem, time.perf_counter() - began, True, metrics=metrics))
    (out_dir / "run.json").write_text(json.dumps([r.__dict__ for r in results], indent=2, default=str))
    return results


def _get(metrics: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


# per notebook: (label, path into its recorded metrics); a figure a notebook did not record is left out
HEADLINES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "00_provision": [("resources", ("resources",)), ("second apply changes", ("second_apply_changes",))],
    "01_generate_data": [("order lines", ("order_lines",)), ("customers", ("customers",))],
    "02_order_history": [
        ("events in", ("events_in",)),
        ("written", ("items",)),
        ("dead-lettered", ("dead_lettered",)),
        ("balanced", ("balanced",)),
        ("exactly once", ("exactly_once",)),
    ],
    "03_recommendations": [
        ("MAP@k ALS", ("models", "spark-als", "map@10")),
        ("× most-popular", ("map_ratio_vs_popular",)),
    ],
    "04_transaction_alarm": [
        ("forest recall", ("rcf", "recall")),
        ("precision", ("rcf", "precision")),
        ("rule recall", ("rule", "recall")),
    ],
    "05_log_analytics": [
        ("indexed", ("indexed",)),
        ("rejected", ("rejected",)),
        ("freshness p95 s", ("freshness_p95_s",)),
        ("incidents found", ("incidents_found",)),
    ],
    "06_warehouse": [
        ("lake revenue", ("revenue", "lake_net")),
        ("warehouse revenue", ("revenue", "warehouse_net")),
    ],
}


def summary_lines(results: list[NotebookResult]) -> list[str]:
    """The one-screen summary ``shoplake run`` prints: per notebook its time and headline figures."""
    lines = []
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        figures = [
            f"{label} {_fmt(value)}"
            for label, path in HEADLINES.get(r.name, [])
            if (value := _get(r.metrics or {}, *path)) is not None
        ]
        detail = r.error if r.error else ", ".join(figures)
        lines.append(f"{mark} {r.name:<22} {r.seconds:7.1f} s  {detail}".rstrip())
    return lines


@click.command("run")
@click.option("--scale", type=click.Choice(config.SCALES), default="small", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--only", default=None, help="comma-separated notebook numbers or names, e.g. 00,01,02")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None, help="executed notebooks + metrics (build/)")
@click.option("--keep-local", is_flag=True, help="leave the local services running afterwards")
@click.option("--keep-going", is_flag=True, help="run the remaining notebooks after a failure")
def cli(scale: str, seed: int, only: str | None, out_dir: Path | None, keep_local: bool, keep_going: bool) -> None:
    """Run the notebooks in order (papermill) and write HTML reports to reports/."""
    names = only.split(",") if only else None
    notebooks(names)  # a typo in --only fails here, before anything is started
    with held_for_run(keep=keep_local):
        results = run_notebooks(scale=scale, seed=seed, only=names, out_dir=out_dir, keep_going=keep_going)
    for line in summary_lines(results):
        click.echo(line)
    click.echo(f"reports in {os.path.relpath(REPORT_DIR)}")
    failed = [r for r in results if not r.ok]
    if failed:
        raise NotebookFailed(
            f"notebook {failed[0].name} failed at {failed[0].error}; open "
            f"reports/{failed[0].name}.html to see the traceback"
        )
