"""The ``shoplake`` command: local, infra, data, run, and one group per data product (loaded on first use)."""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from typing import Any

import click

from shoplake.errors import ShoplakeError

# name -> "module:attribute" of a click command/group, imported only when that command runs,
# so `shoplake local up` does not pay for Spark or Dash imports.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "local": (
        "shoplake.local_services_cli:local",
        "start, stop and inspect the local services (emulator + PostgreSQL)",
    ),
    "infra": ("shoplake.infra:cli", "plan, apply or destroy the resources in infra/resources.yaml"),
    "data": ("shoplake.datagen.cli:data", "generate the synthetic shop or load the real Online Retail file"),
    "run": ("shoplake.workbook:cli", "run the notebooks in order and write HTML reports"),
    "orders": ("shoplake.orders.cli:orders", "order history: ingest the stream, look up a customer"),
    "recommend": ("shoplake.recommend.cli:recommend", "train, evaluate and show product recommendations"),
    "alarm": ("shoplake.alarm.cli:alarm", "the transaction-rate alarm"),
    "logs": ("shoplake.weblogs.cli:logs", "parse and index Apache access logs"),
    "dashboard": ("shoplake.weblogs.cli:dashboard", "serve the live log dashboard page"),
    "warehouse": ("shoplake.warehouse.cli:warehouse", "Glue catalog, Athena SQL and the Redshift warehouse"),
    "agent": ("shoplake.agent.cli:agent", "ship log files to Kinesis and Firehose (like the Kinesis Agent)"),
    "simulate-servers": ("shoplake.agent.cli:simulate_servers", "play the shop as web servers writing log files"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return None
        target, _help = LAZY_COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, LAZY_COMMANDS[name][1]) for name in sorted(LAZY_COMMANDS)])


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="log at INFO level")
def cli(verbose: bool) -> None:
    """shoplake: the e-commerce data platform workbook (local emulator or a real AWS account)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def echo_json(obj: Any) -> None:
    """Print one JSON object (the ``--json`` output of every command)."""
    click.echo(json.dumps(obj, indent=2, default=str, sort_keys=True))


class FiniteNumber(click.ParamType):
    """A finite number within bounds: ``nan``, ``inf`` and out-of-range values are a one-line usage error."""

    def __init__(self, kind: type = float, low: float | None = None, high: float | None = None, open_low: bool = False):
        self.kind, self.low, self.high, self.open_low = kind, low, high, open_low
        bounds = [f"> {low}" if open_low else f">= {low}"] if low is not None else []
        bounds += [f"<= {high}"] if high is not None else []
        self.name = f"{kind.__name__} {' and '.join(bounds)}".strip()

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}", param, ctx)
        if self.kind is float and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.low is not None and (number <= self.low if self.open_low else number < self.low)
        if too_low or (self.high is not None and number > self.high):
            self.fail(f"{value!r} must be {self.name.split(' ', 1)[1]}", param, ctx)
        return number


POSITIVE = FiniteNumber(float, 0, open_low=True)  # seconds, speeds, rates
POSITIVE_INT = FiniteNumber(int, 1)  # sizes, counts of things to show or make
PORT = FiniteNumber(int, 1, 65535)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ShoplakeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
