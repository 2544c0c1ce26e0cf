"""``shoplake agent run|status|stop`` and ``shoplake simulate-servers``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from shoplake import config
from shoplake.cli import POSITIVE, POSITIVE_INT, FiniteNumber
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)


def _state_dir(value: str | None) -> Path:
    from shoplake.agent._agent import default_state_dir

    return Path(value) if value else default_state_dir()


@click.group()
def agent() -> None:
    """Ship log files to Kinesis and Firehose like the Kinesis Agent (flows in infra/agent.yaml)."""


@agent.command("run")
@click.option("--config", "config_path", default=None, help="agent config (default infra/agent.yaml)")
@click.option("--flow", "flows", multiple=True, help="run only these flows (repeatable)")
@click.option("--once", "mode", flag_value="once", default=True, help="ship what is there, then exit (default)")
@click.option("--follow", "mode", flag_value="follow", help="keep tailing until SIGTERM / Ctrl-C")
@click.option(
    "--state-dir", default=None, help="checkpoints, dead letters, pid file (default .shoplake/agent/<prefix>)"
)
@click.option("--log-dir", default=None, help="sets SHOPLAKE_LOG_DIR for the config's file patterns")
@click.option("--background", is_flag=True, help="with --follow: detach, log to <state-dir>/agent.log, print the pid")
@click.option(
    "--no-fsync", is_flag=True, help="do not fsync checkpoints (faster; safe against crashes, not power loss)"
)
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def run_cmd(
    config_path: str | None,
    flows: tuple[str, ...],
    mode: str,
    state_dir: str | None,
    log_dir: str | None,
    background: bool,
    no_fsync: bool,
    as_json: bool,
) -> None:
    """Tail the flows' files and ship new lines; prints counts per flow."""
    from shoplake.agent._agent import Agent, read_pid
    from shoplake.agent._flows import load_config
    from shoplake.cli import echo_json

    folder = _state_dir(state_dir)
    variables = {"SHOPLAKE_LOG_DIR": str(Path(log_dir).resolve())} if log_dir else None
    agent_config = load_config(config_path, variables=variables)
    agent_config.select(list(flows) or None)  # fail early on unknown flow names
    if background:
        if mode != "follow":
            raise click.UsageError("--background needs --follow")
        folder.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "shoplake.agent", "run", "--follow", "--state-dir", str(folder)]
        args += ["--config", str(agent_config.source)] + [a for f in flows for a in ("--flow", f)]
        args += (["--log-dir", str(Path(log_dir).resolve())] if log_dir else []) + (["--no-fsync"] if no_fsync else [])
        with open(folder / "agent.log", "ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and read_pid(folder) != proc.pid:
            if proc.poll() is not None:
                raise ShoplakeError(f"the agent exited at start (code {proc.returncode}); see {folder / 'agent.log'}")
            time.sleep(0.1)
        click.echo(
            f"agent running in the background, pid {proc.pid} (pid file {folder / 'agent.pid'}, "
            f"log {folder / 'agent.log'}); stop it with `shoplake agent stop`"
        )
        return

    runner = Agent(agent_config, list(flows) or None, state_dir=folder, fsync=not no_fsync)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch, then stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    runner.acquire()
    try:
        counts = runner.run(follow=mode == "follow", stop=stop)
    finally:
        runner.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        echo_json(counts)
    else:
        for name, flow_counts in counts.items():
            click.echo(f"{name:16s} " + "  ".join(f"{k}={v}" for k, v in flow_counts.items()))


@agent.command("status")
@click.option("--state-dir", default=None, help="the agent's state folder (default .shoplake/agent/<prefix>)")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(state_dir: str | None, as_json: bool) -> None:
    """Is an agent running; per flow: totals, files with offsets, pending batch, lag."""
    from shoplake.agent._agent import read_pid
    from shoplake.agent._checkpoint import read_checkpoint
    from shoplake.cli import echo_json

    folder = _state_dir(state_dir)
    pid = read_pid(folder)
    status_path = folder / "status.json"
    last = json.loads(status_path.read_text()) if status_path.exists() else {}
    flows = {}
    for name, state in read_checkpoint(folder / "checkpoints.json").items():
        lag = sum(
            max(0, os.path.getsize(fs.path) - fs.offset) for fs in state.files.values() if os.path.exists(fs.path)
        )
        flows[name] = {
            "totals": state.totals,
            "pending_batch": bool(state.pending),
            "lag_bytes": lag,
            "files": {fs.path: fs.offset for fs in state.files.values()},
            "last_run": (last.get("flows", {}).get(name) or {}).get("run"),
        }
    report = {"state_dir": str(folder), "running": pid is not None, "pid": pid, "flows": flows}
    if as_json:
        echo_json(report)
        return
    click.echo(f"agent      : {f'running, pid {pid}' if pid else 'not running'}  (state {folder})")
    for name, info in flows.items():
        totals = "  ".join(f"{k}={v}" for k, v in info["totals"].items())
        click.echo(
            f"{name:16s} {totals}  lag={info['lag_bytes']}B  files={len(info['files'])}"
            + ("  PENDING batch" if info["pending_batch"] else "")
        )


@agent.command("stop")
@click.option("--state-dir", default=None, help="the agent's state folder (default .shoplake/agent/<prefix>)")
def stop_cmd(state_dir: str | None) -> None:
    """Stop the background agent of this state folder (SIGTERM: it finishes its batch and checkpoints)."""
    from shoplake.agent._agent import read_pid

    folder = _state_dir(state_dir)
    pid = read_pid(folder)
    if pid is None:
        click.echo(f"no agent is running with {folder}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and read_pid(folder) == pid:
        time.sleep(0.1)
    click.echo(f"agent {pid} stopped" if read_pid(folder) != pid else f"agent {pid} did not stop within 30 s")


@click.command("simulate-servers")
@click.option("--scale", type=click.Choice(config.SCALES), default=None, help="dataset scale (default SHOPLAKE_SCALE)")
@click.option("--seed", type=FiniteNumber(int, 0), default=None)
@click.option("--log-dir", default=None, help="where the servers write (default .shoplake/servers)")
@click.option("--servers", type=FiniteNumber(int, 1, 64), default=2, show_default=True)
@click.option(
    "--speed", type=POSITIVE, default=None, help="shop seconds per wall second (default: as fast as possible)"
)
@click.option(
    "--rotation", type=click.Choice(["rename", "copytruncate", "both", "none"]), default="both", show_default=True
)
@click.option(
    "--rotate-lines", type=POSITIVE_INT, default=None, help="rotate every N lines (default: ~3 rotations per file)"
)
@click.option("--only", type=click.Choice(["orders", "access"]), default=None, help="write only one kind of file")
def simulate_servers(
    scale: str | None,
    seed: int | None,
    log_dir: str | None,
    servers: int,
    speed: float | None,
    rotation: str,
    rotate_lines: int | None,
    only: str | None,
) -> None:
    """Play the generated shop as web servers writing orders.csv and access.log (with log rotation)."""
    from shoplake import datagen
    from shoplake.agent._servers import simulate_servers as simulate
    from shoplake.cli import echo_json

    dataset = datagen.load(scale=scale, seed=seed)
    run = simulate(
        None if only == "access" else dataset.order_lines,
        None if only == "orders" else dataset.access_log_path,
        Path(log_dir) if log_dir else None,
        servers=servers,
        speed=speed,
        rotation=rotation,
        rotate_lines=rotate_lines,
        progress=True,
    )
    echo_json(run.counts())


def main() -> int:
    """Entry of ``python -m shoplake.agent``."""
    logging.basicConfig(
        level=logging.INFO if os.environ.get("SHOPLAKE_AGENT_VERBOSE") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        agent.main(standalone_mode=False)
    except click.exceptions.Abort:
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ShoplakeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 2
    return 0
