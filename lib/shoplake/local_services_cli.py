"""``shoplake local up|down|status``."""

from __future__ import annotations

import time

import click

from shoplake import local_services as _services


@click.group()
def local() -> None:
    """The local services: AWS emulator + embedded PostgreSQL, shared by notebooks, JupyterLab and tests."""


@local.command()
def up() -> None:
    """Start the local services (no-op when it is already up)."""
    started = time.perf_counter()
    status = _services.ensure()
    for line in status.lines():
        click.echo(line)
    click.echo(f"ready in {time.perf_counter() - started:.1f} s")


@local.command()
@click.option("--purge", is_flag=True, help="also delete the PostgreSQL data and the local state")
def down(purge: bool) -> None:
    """Stop every process of the local services."""
    _services.down(purge=purge)
    click.echo("local services stopped" + (" and purged" if purge else ""))


@local.command()
def status() -> None:
    """Print endpoints and health; exit 1 when something is down."""
    st = _services.status()
    for line in st.lines():
        click.echo(line)
    raise SystemExit(0 if st.up else 1)
