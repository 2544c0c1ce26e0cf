"""``shoplake alarm``: simulate and evaluate the detector, run it on the stream, read the alarm texts back."""

from __future__ import annotations

import click

from shoplake.cli import echo_json


@click.group("alarm")
def alarm() -> None:
    """The transaction-rate alarm (windows + random cut forest → SNS)."""


@alarm.command("evaluate")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--orders-per-day", type=int, default=60_000, show_default=True)
@click.option("--window-seconds", type=int, default=600, show_default=True)
def evaluate_cmd(seed: int, orders_per_day: int, window_seconds: int) -> None:
    """Run the detector in-process over a simulated day; print rule vs forest."""
    from shoplake.alarm import run_offline, simulate_day

    run = run_offline(simulate_day(seed=seed, orders_per_day=orders_per_day, window_seconds=window_seconds))
    echo_json({"rcf": run.rcf, "rule": run.rule, "counts": run.detector.counts})


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
