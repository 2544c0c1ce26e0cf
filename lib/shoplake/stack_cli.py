"""``shoplake stack up|down|status``."""

from __future__ import annotations

import time

import click

from shoplake import stack as _stack


@click.group()
def stack() -> None:
    """The local stack: AWS emulator + embedded PostgreSQL, shared by notebooks, JupyterLab and tests."""


@stack.command()
def up() -> None:
    """Start the local stack (no-op when it is already up)."""
    started = time.perf_counter()
    status = _stack.ensure()
    for line in status.lines():
        click.echo(line)
    click.echo(f"ready in {time.perf_counter() - started:.1f} s")


@stack.command()
@click.option("--purge", is_flag=True, help="also delete the PostgreSQL data and the stack state")
def down(purge: bool) -> None:
    """Stop every process of the local stack."""
    _stack.down(purge=purge)
    click.echo("local stack stopped" + (" and purged" if purge else ""))


@stack.command()
def status() -> None:
    """Print endpoints and health; exit 1 when something is down."""
    st = _stack.status()
    for line in st.lines():
        click.echo(line)
    raise SystemExit(0 if st.up else 1)
