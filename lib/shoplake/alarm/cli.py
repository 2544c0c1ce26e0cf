"""``shoplake alarm``: simulate and evaluate the detector, run it on the stream, read the alarm texts back."""

from __future__ import annotations

import click

from shoplake.cli import POSITIVE_INT, FiniteNumber, echo_json


@click.group("alarm")
def alarm() -> None:
    """The transaction-rate alarm (windows + random cut forest → SNS)."""


@alarm.command("evaluate")
@click.option("--seed", type=FiniteNumber(int, 0), default=42, show_default=True)
@click.option("--orders-per-day", type=POSITIVE_INT, default=60_000, show_default=True)
@click.option("--window-seconds", type=FiniteNumber(int, 10, 86_400), default=600, show_default=True)
def evaluate_cmd(seed: int, orders_per_day: int, window_seconds: int) -> None:
    """Run the detector in-process over a simulated day; print rule vs forest."""
    from shoplake.alarm import run_offline, simulate_day

    run = run_offline(simulate_day(seed=seed, orders_per_day=orders_per_day, window_seconds=window_seconds))
    echo_json({"rcf": run.rcf, "rule": run.rule, "counts": run.detector.counts})


@alarm.command("evaluate-series")
@click.argument("series_file", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--windows",
    "windows_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="labelled windows: [[start, end], ...] or NAB's {file name: [[start, end], ...]}",
)
@click.option(
    "--detections-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="write timestamp,value,anomaly_score,label (NAB's results layout) here",
)
@click.option("--json", "as_json", is_flag=True, help="print the whole evaluation as JSON")
def evaluate_series_cmd(series_file: str, windows_file: str | None, detections_out: str | None, as_json: bool) -> None:
    """Stream a recorded rate series (NAB format: timestamp,value) through the detector; score its alarms."""
    from shoplake.alarm import _series

    run = _series.evaluate_series(series_file, windows_file)
    if detections_out:
        _series.write_detections(run, detections_out)
    summary = run.summary()
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"{summary['series']}: {summary['rows']:,} rows every {summary['interval_seconds']} s "
        f"({summary['missing_intervals']} missing), detector window {summary['detector_window_seconds']} s, "
        f"{summary['points_per_s']:,.0f} rows/s"
    )
    click.echo(f"forest alarms at: {', '.join(str(run.series.timestamps[r]) for r in run.forest_rows) or 'none'}")
    if summary["alarms_possible_from"] is None:
        click.echo(
            f"note: the series is too short to alarm: the detector's bar needs {run.detector.config.rcf.min_peak_days} "
            "days of daily peaks after its first day; give it a longer series"
        )
    if not run.windows:
        return
    for name in ("forest", "rule"):
        ev = summary[name]
        click.echo(
            f"{name:6}: NAB raw {ev['nab_raw']:+.3f} | recall {_fmt(ev['recall'])} precision {_fmt(ev['precision'])} | "
            f"{ev['alarms']} alarms, {ev['false_alarms']} false (after the {ev['probation_rows']}-row probation)"
        )
        for w in ev["windows"]:
            found = f"first alarm {w['first_alarm']} (+{w['delay_s'] / 3600:.1f} h)" if w["detected"] else "missed"
            click.echo(f"        window {w['start']} … {w['end']}: {found}, NAB {w['nab']:+.3f}")
    if detections_out:
        click.echo(f"detections written to {detections_out}")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


@alarm.command("consume")
@click.option("--consumer", default="rate-detector", show_default=True)
@click.option("--reset", "reset_first", is_flag=True, help="forget checkpoints and state first")
@click.option("--live", is_flag=True, help="do not close the last open windows at the end")
def consume_cmd(consumer: str, reset_first: bool, live: bool) -> None:
    """Run the detector over the orders stream until caught up (from its checkpoints)."""
    from shoplake.alarm import consume

    result = consume(consumer, reset_first=reset_first, final=not live)
    echo_json({"counts": result.counts, "mapping": result.mapping, "alarms": result.alarms})


@alarm.command("messages")
def messages_cmd() -> None:
    """The alarm texts the SNS topic sent (read back through the alarm-inbox queue)."""
    from shoplake.alarm import sent_messages

    echo_json(sent_messages())
