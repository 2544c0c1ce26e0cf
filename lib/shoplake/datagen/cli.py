"""``shoplake data generate|load-retail``: make the synthetic shop or read the real Online Retail file."""

from __future__ import annotations

import time
from pathlib import Path

import click

from shoplake import config

MAX_REJECTS_SHOWN = 100  # --json lists at most this many rejected rows (all are in rejects.csv with --out-dir)


@click.group()
def data() -> None:
    """The shop's data: the seeded synthetic shop or the real UCI Online Retail file."""


@data.command()
@click.option("--scale", type=click.Choice(config.SCALES), default=None, help="tiny | small | full (default: settings)")
@click.option("--seed", type=int, default=None, help="random seed (default: settings, 42)")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="target folder (default data/generated/<scale>-s<seed>)",
)
@click.option("--json", "as_json", is_flag=True, help="print the manifest as one JSON object")
def generate(scale: str | None, seed: int | None, out_dir: Path | None, as_json: bool) -> None:
    """Generate the synthetic shop (same seed, same bytes) into data/generated/<scale>-s<seed>/."""
    from shoplake.cli import echo_json
    from shoplake.datagen import generate as _generate

    settings = config.settings()
    scale = scale or settings.scale
    seed = settings.seed if seed is None else seed
    began = time.perf_counter()
    dataset = _generate(scale, seed, out_dir=out_dir, progress=not as_json)
    seconds = time.perf_counter() - began
    if as_json:
        echo_json({"dir": str(dataset.dir), "seconds": round(seconds, 2), **dataset.manifest})
        return
    click.echo(f"{dataset.dir}  ({seconds:.1f} s)")
    for key, value in sorted(dataset.manifest["counts"].items()):
        click.echo(f"  {key:<22} {value:>10,}")


@data.command("load-retail")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the load report as one JSON object")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="also write the events as a dataset folder the notebooks can use (retail_file parameter)",
)
@click.option(
    "--date-order",
    type=click.Choice(["auto", "month-first", "day-first"]),
    default="auto",
    show_default=True,
    help="how slash dates read: auto decides per file (1/12/2010 is 12 January month-first, 1 December day-first)",
)
def load_retail(file: Path, as_json: bool, out_dir: Path | None, date_order: str) -> None:
    """Read a UCI Online Retail file (.csv or .xlsx) into order events; report counts and rejected rows."""
    from shoplake.cli import echo_json
    from shoplake.retail import load_retail as _load_retail

    if out_dir is not None:
        from shoplake.datagen import load_retail_dataset

        dataset = load_retail_dataset(file, out_dir=out_dir, date_order=date_order)
        report = dict(dataset.manifest["report"])
        report["dir"] = str(dataset.dir)
    else:
        _events, report = _load_retail(file, date_order=date_order)
        report = dict(report)
    rejects = report.get("rejects", [])
    if len(rejects) > MAX_REJECTS_SHOWN:
        report["rejects"] = rejects[:MAX_REJECTS_SHOWN]
        report["rejects_truncated"] = True
    if as_json:
        echo_json(report)
        return
    for key in ("rows", "line_items", "orders", "cancellations", "missing_customer", "rejected"):
        click.echo(f"  {key:<18} {report[key]:>10,}")
    ambiguous = " (every date was ambiguous: assumed)" if report["date_order_ambiguous"] else ""
    click.echo(f"  dates read {report['date_order']}{ambiguous}; edition {report['edition']}, {report['encoding']}")
    for reason, count in sorted(report["rejected_by_reason"].items()):
        click.echo(f"    rejected: {reason:<28} {count:>6,}")
    if "dir" in report:
        click.echo(f"dataset written to {report['dir']}")
