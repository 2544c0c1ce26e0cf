"""``ship_dataset``: the realistic input path of the notebooks — servers write log files, the agent ships them."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from shoplake import config
from shoplake.agent._agent import Agent
from shoplake.agent._flows import load_config
from shoplake.agent._servers import simulate_servers
from shoplake.errors import ConfigError

log = logging.getLogger(__name__)

MARKER = ".shoplake-agent-run"
KEEP_RUNS = 3
ORDER_FLOW_FILES = {"orders": "orders", "orders-to-lake": "orders", "weblogs": "access"}


def _work_dir(work_dir: Path | None) -> Path:
    if work_dir is None:
        s = config.settings()
        runs = s.home / "agent-runs" / s.prefix
        runs.mkdir(parents=True, exist_ok=True)
        old = sorted(p for p in runs.iterdir() if (p / MARKER).exists())
        for stale in old[: max(0, len(old) - (KEEP_RUNS - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
        work_dir = runs / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    work_dir = Path(work_dir)
    for sub in ("servers", "agent-state"):
        if (work_dir / sub).exists():
            if not (work_dir / MARKER).exists():
                raise ConfigError(
                    f"{work_dir / sub} exists but was not made by ship_dataset: give an empty work_dir "
                    "(or None for a fresh folder under .shoplake/agent-runs/)"
                )
            shutil.rmtree(work_dir / sub)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / MARKER).touch()
    return work_dir


def ship_dataset(
    dataset: Any,
    flows: list[str],
    work_dir: Path | None = None,
    speed: float | None = None,
    servers: int = 2,
    config_path: Path | None = None,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Play ``dataset`` (a ``shoplake.datagen.Dataset``) as ``servers`` web servers writing log files into
    ``work_dir`` (rotating them, both styles), run the agent on those files until it has caught up, and return the
    counts per flow: ``{"orders": {"lines_read", "records_sent", "failed", "retried", "malformed"}, ...}``.

    ``flows``: names from ``infra/agent.yaml`` — ``orders`` (→ Kinesis ``orders``), ``orders-to-lake`` (→ Firehose
    ``orders-to-lake``), ``weblogs`` (→ Firehose ``weblogs``). ``speed=None`` writes as fast as possible; ``speed=s``
    plays ``s`` shop seconds per wall second. Each call ships everything once (fresh files and checkpoints).
    """
    if not flows:
        raise ConfigError("ship_dataset needs at least one flow, e.g. ['orders'] or ['orders-to-lake', 'weblogs']")
    work_dir = _work_dir(work_dir)
    log_dir = work_dir / "servers"
    agent_config = load_config(config_path, variables={"SHOPLAKE_LOG_DIR": str(log_dir)})
    selected = agent_config.select(list(flows))
    wants = {ORDER_FLOW_FILES.get(f.name, "orders") for f in selected}
    order_lines = dataset.order_lines if "orders" in wants else None
    access_path = None
    if "access" in wants:
        raw_path = getattr(dataset, "access_log_path", None)
        if not raw_path or not Path(raw_path).exists():
            raise ConfigError(
                f"flow weblogs needs the dataset's access log, but it has none ({raw_path}): the real "
                "Online Retail file comes without one; use the synthetic shop (`shoplake data generate`)"
            )
        access_path = Path(raw_path)

    agent = Agent(agent_config, [f.name for f in selected], state_dir=work_dir / "agent-state", fsync=False)
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def write() -> None:
        try:
            outcome["run"] = simulate_servers(
                order_lines, access_path, log_dir, servers=servers, speed=speed, rotation="both", progress=progress
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc
        finally:
            done.set()

    writer = threading.Thread(target=write, name="simulated-servers", daemon=True)
    agent.acquire()
    stop = threading.Event()
    try:
        writer.start()
        counts = agent.run(follow=True, stop=stop, until=done.is_set, max_errors=3)
    finally:
        stop.set()
        writer.join()
        agent.release()
    if "error" in outcome:
        raise outcome["error"]
    written = outcome["run"].lines
    for flow in selected:
        expected = written[ORDER_FLOW_FILES.get(flow.name, "orders")]
        if counts[flow.name]["lines_read"] != expected:
            log.warning(
                "flow %s read %d lines but the servers wrote %d", flow.name, counts[flow.name]["lines_read"], expected
            )
    log.info(
        "ship_dataset: servers wrote %s (rotations %s) into %s; agent counts %s",
        written,
        outcome["run"].rotations,
        log_dir,
        counts,
    )
    return counts
