"""The agent against the emulator: rotation mid-run, SIGKILL + restart, malformed lines, ship_dataset.

Every test ships into destinations of its own (a Kinesis stream and Firehose streams into its own lake prefix),
so what it reads back is exactly what it shipped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from shoplake import config, streams
from shoplake.agent import Agent, load_config, ship_dataset, simulate_servers
from shoplake.agent._agent import CRASH_AFTER_SENDS_ENV, CRASH_AT_ENV
from shoplake.agent._flows import ORDER_FIELDS
from shoplake.agent._servers import order_line_csv
from shoplake.events import from_frame

ORDER_CSV = """
      - optionName: CSVTOJSON
        customFieldNames: [InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country, LineNo]
        fieldTypes: {Quantity: int, InvoiceDate: retail_datetime, UnitPrice: float, CustomerID: optional_string, LineNo: int}
"""
BASE = {
    ("s3_bucket", "lake"),
    ("kinesis_stream", "orders"),
    ("iam_role", "firehose-delivery"),
    ("firehose_delivery_stream", "orders-to-lake"),
    ("firehose_delivery_stream", "weblogs"),
}


@pytest.fixture(scope="module")
def agent_infra(local_stack):
    """The resources of infra/resources.yaml the agent ships to (applied alone, so other parts' state does not matter)."""
    from shoplake import infra

    spec = [r for r in infra.load_spec() if (r.type, r.name) in BASE]
    infra.apply(spec)
    infra.lake_bucket = infra.outputs(spec)["bucket:lake"]
    return infra


@pytest.fixture
def destinations(agent_infra):
    """A Kinesis stream and a Firehose delivery stream of this test's own (short names), deleted afterwards.

    (One Firehose only: the emulator allows 50 per account and every test session shares it.)
    """
    uid = uuid.uuid4().hex[:6]
    names = {
        "stream": f"agt-{uid}",
        "firehose": f"agt-{uid}-lake",
        "prefix": f"raw/agt-{uid}/",
        "uid": uid,
        "bucket": agent_infra.lake_bucket,
    }
    agent_infra.apply(
        [
            agent_infra.Resource("kinesis_stream", names["stream"], {"shards": 2, "retention_hours": 24}),
            agent_infra.Resource(
                "firehose_delivery_stream",
                names["firehose"],
                {
                    "role": "firehose-delivery",
                    "s3": {"bucket": "lake", "prefix": names["prefix"], "error_prefix": f"raw-errors/agt-{uid}/"},
                },
            ),
        ]
    )
    yield names
    config.client("firehose").delete_delivery_stream(DeliveryStreamName=config.resource_name(names["firehose"]))
    config.client("kinesis").delete_stream(StreamName=config.resource_name(names["stream"]))


def _config(tmp_path: Path, dest: dict[str, str], log_dir: Path, batch: int = 2000) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"""
pollIntervalSeconds: 0.1
flows:
  - name: orders
    filePattern: {log_dir}/*/orders.csv*
    kinesisStream: {dest["stream"]}
    partitionKeyOption: CUSTOMER
    maxBatchRecords: {batch}
    dataProcessingOptions:{ORDER_CSV}
  - name: orders-to-lake
    filePattern: {log_dir}/*/orders.csv*
    deliveryStream: {dest["firehose"]}
    maxBatchRecords: {batch}
    dataProcessingOptions:{ORDER_CSV}
  - name: weblogs
    filePattern: {log_dir}/*/access.log*
    deliveryStream: {dest["firehose"]}
    maxBatchRecords: {batch}
""")
    return path


def _kinesis(stream: str) -> Counter[bytes]:
    return Counter(r.data for r in streams.read_all(stream))


def _lake(bucket: str, prefix: str) -> Counter[bytes]:
    s3 = config.client("s3")
    found: Counter[bytes] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found.update(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines(keepends=True))
    return found


def _events(dataset) -> list[dict]:
    return from_frame(dataset.order_lines[list(ORDER_FIELDS)])


def test_lines_written_equal_records_received_with_rotation_mid_run(tmp_path, destinations, tiny_dataset):
    """Servers write and rotate (rename and copytruncate) while the agent ships: every line lands exactly once."""
    log_dir = tmp_path / "servers"
    agent = Agent(
        load_config(_config(tmp_path, destinations, log_dir, batch=200)),
        ["orders", "weblogs"],
        state_dir=tmp_path / "state",
        fsync=False,
    )
    done = threading.Event()
    outcome = {}

    access = tiny_dataset.access_log_path.read_text().splitlines()[:2500]

    def write():
        outcome["run"] = simulate_servers(
            tiny_dataset.order_lines, access, log_dir, servers=2, rotation="both", rotate_lines=250
        )
        done.set()

    writer = threading.Thread(target=write)
    agent.acquire()
    try:
        writer.start()
        counts = agent.run(follow=True, until=done.is_set, max_errors=1)
    finally:
        writer.join()
        agent.release()
    run = outcome["run"]
    assert run.rotations["rename"] >= 2 and run.rotations["copytruncate"] >= 2
    events = _events(tiny_dataset)
    assert run.lines == {"orders": len(events), "access": len(access)}

    assert _kinesis(destinations["stream"]) == Counter(streams.encode(e) for e in events)
    assert _lake(destinations["bucket"], destinations["prefix"]) == Counter(line.encode() + b"\n" for line in access)
    for flow, n in (("orders", len(events)), ("weblogs", len(access))):
        assert counts[flow] == {"lines_read": n, "records_sent": n, "failed": 0, "retried": 0, "malformed": 0}


def test_malformed_line_is_counted_dead_lettered_and_does_not_block(tmp_path, destinations, tiny_dataset):
    events = _events(tiny_dataset)[:40]
    server = tmp_path / "servers" / "server-0"
    server.mkdir(parents=True)
    bad = "536999,85123A,BROKEN LINE,six,12/1/2010 8:26,2.55,17850,United Kingdom,0"
    lines = [order_line_csv(e) for e in events[:20]] + [bad] + [order_line_csv(e) for e in events[20:]]
    (server / "orders.csv").write_text("\n".join(lines) + "\n")
    agent = Agent(
        load_config(_config(tmp_path, destinations, tmp_path / "servers")),
        ["orders"],
        state_dir=tmp_path / "state",
        fsync=False,
    )
    counts = agent.run()
    assert counts["orders"] == {"lines_read": 41, "records_sent": 40, "failed": 0, "retried": 0, "malformed": 1}
    assert _kinesis(destinations["stream"]) == Counter(streams.encode(e) for e in events)
    dead = [json.loads(x) for x in (tmp_path / "state" / "dead-letter" / "orders.jsonl").read_text().splitlines()]
    assert [(d["kind"], d["line"]) for d in dead] == [("malformed", bad)]
    assert "Quantity" in dead[0]["reason"]
    # a second run ships nothing again (the bad line is behind the checkpoint too)
    assert (
        Agent(
            load_config(_config(tmp_path, destinations, tmp_path / "servers")),
            ["orders"],
            state_dir=tmp_path / "state",
            fsync=False,
        ).run()["orders"]["lines_read"]
        == 0
    )


def _agent_cmd(cfg: Path, state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "shoplake.agent", "run", "--config", str(cfg), "--state-dir", str(state), *args]


def _write_orders(tmp_path: Path, events: list[dict]) -> Path:
    server = tmp_path / "servers" / "server-0"
    server.mkdir(parents=True)
    path = server / "orders.csv"
    path.write_text("".join(order_line_csv(e) + "\n" for e in events))
    return path


def test_sigkill_mid_file_then_restart_loses_and_repeats_nothing(tmp_path, destinations, tiny_dataset):
    """A following agent is SIGKILLed while shipping a file in small batches; a restart finishes the file."""
    events = _events(tiny_dataset)[:800]
    path = _write_orders(tmp_path, events)
    cfg = _config(tmp_path, destinations, tmp_path / "servers", batch=40)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        _agent_cmd(cfg, state, "--follow", "--flow", "orders", "--flow", "orders-to-lake"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    checkpoint = state / "checkpoints.json"
    deadline = time.monotonic() + 60
    offset = 0
    while time.monotonic() < deadline and offset == 0:
        time.sleep(0.02)
        if checkpoint.exists():
            flows = json.loads(checkpoint.read_text())["flows"]
            offset = sum(f["offset"] for flow in flows.values() for f in flow["files"].values())
    os.kill(proc.pid, signal.SIGKILL)
    output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    flows = json.loads(checkpoint.read_text())["flows"]
    offsets = [f["offset"] for flow in flows.values() for f in flow["files"].values()]
    assert 0 < max(offsets) and min(offsets) < path.stat().st_size, f"not killed mid-file: {offsets}"

    done = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--json", "--flow", "orders", "--flow", "orders-to-lake"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _kinesis(destinations["stream"]) == Counter(streams.encode(e) for e in events)
    lake = _lake(destinations["bucket"], destinations["prefix"])
    assert lake == Counter(streams.encode(e, newline=True) for e in events)
    totals = json.loads(checkpoint.read_text())["flows"]["orders"]["totals"]
    assert totals["lines_read"] == totals["records_sent"] == len(events)


@pytest.mark.parametrize("flow", ["orders", "orders-to-lake"])
def test_crash_between_send_and_checkpoint_neither_loses_nor_resends(tmp_path, destinations, tiny_dataset, flow):
    """SIGKILL right after a batch was sent but before its checkpoint: the restart sends only what did not land."""
    events = _events(tiny_dataset)[:600]
    _write_orders(tmp_path, events)
    cfg = _config(tmp_path, destinations, tmp_path / "servers", batch=100)
    state = tmp_path / "state"
    crashed = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--flow", flow),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, CRASH_AFTER_SENDS_ENV: "3"},
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    saved = json.loads((state / "checkpoints.json").read_text())["flows"][flow]
    assert saved["pending"] is not None and len(saved["pending"]["hashes"]) == 100
    assert [f["offset"] for f in saved["files"].values()] == [sum(len(order_line_csv(e)) + 1 for e in events[:200])]

    done = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--json", "--flow", flow), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if flow == "orders":
        assert _kinesis(destinations["stream"]) == Counter(streams.encode(e) for e in events)
    else:
        lake = _lake(destinations["bucket"], destinations["prefix"])
        assert lake == Counter(streams.encode(e, newline=True) for e in events)
    counts = json.loads(done.stdout)[flow]
    assert counts["lines_read"] == counts["records_sent"] == 400  # 100 recovered + 300 new
    assert "100 records had landed, sending 0" in done.stderr


def _runs_of_identical_lines(events: list[dict], n: int, run: int = 10, kinds: int = 5) -> list[dict]:
    """``n`` events in runs of ``run`` identical ones, cycling through ``kinds`` events: every batch of the agent holds
    the very records the batches before it held (the case content matching cannot tell apart)."""
    return [events[(i // run) % kinds] for i in range(n)]


def _landed(flow: str, destinations: dict[str, str]) -> Counter[bytes]:
    if flow == "orders":
        return _kinesis(destinations["stream"])
    lake = _lake(destinations["bucket"], destinations["prefix"])
    return Counter({line.rstrip(b"\n"): n for line, n in lake.items()})


@pytest.mark.parametrize("flow", ["orders", "orders-to-lake"])
@pytest.mark.parametrize("point", ["before-send", "mid-send", "after-send"])
def test_identical_lines_and_a_crash_between_send_and_checkpoint_deliver_each_line_once(
    tmp_path, destinations, tiny_dataset, flow, point
):
    """Runs of identical lines; SIGKILL before / in the middle of / after the send of batch 2, before its commit.

    Batch 1 landed the same records batch 2 holds, moments before: the restart must still send exactly what of
    batch 2 did not land (all of it, the second half, nothing) — identified by file and offset, not by content."""
    events = _runs_of_identical_lines(_events(tiny_dataset), 300)
    _write_orders(tmp_path, events)
    cfg = _config(tmp_path, destinations, tmp_path / "servers", batch=100)
    state = tmp_path / "state"
    crashed = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--flow", flow),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, CRASH_AT_ENV: f"{point}:2"},
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    landed_before = sum(_landed(flow, destinations).values())
    assert landed_before == {"before-send": 100, "mid-send": 150, "after-send": 200}[point]

    done = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--json", "--flow", flow), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _landed(flow, destinations) == Counter(streams.encode(e) for e in events)
    counts = json.loads(done.stdout)[flow]
    assert counts["lines_read"] == counts["records_sent"] == 200  # batch 2 recovered + batch 3
    totals = json.loads((state / "checkpoints.json").read_text())["flows"][flow]["totals"]
    assert totals["lines_read"] == totals["records_sent"] == len(events)
    missing = {"before-send": 100, "mid-send": 50, "after-send": 0}[point]
    assert f"{100 - missing} records had landed, sending {missing}" in done.stderr


def test_kill_at_random_moments_with_runs_of_identical_lines_delivers_every_line_once(
    tmp_path, destinations, tiny_dataset
):
    """Servers keep appending runs of identical lines while a following agent (both order flows) is SIGKILLed at
    random moments and restarted; at the end every line is in Kinesis and in the lake exactly once, and the
    checkpointed counters say so."""
    rng = random.Random(16)
    kills_wanted = int(os.environ.get("SHOPLAKE_TEST_AGENT_KILLS", "6"))
    distinct = _events(tiny_dataset)
    runs = _runs_of_identical_lines(distinct, 2400, run=7, kinds=3)
    # stretches of runs of identical lines, and stretches of distinct lines (batches that share nothing with the
    # ones before them: the agent need not list the lake for those)
    events = [runs[i] if (i // 60) % 2 == 0 else distinct[3 + i % (len(distinct) - 3)] for i in range(2400)]
    server = tmp_path / "servers" / "server-0"
    server.mkdir(parents=True)
    path = server / "orders.csv"
    path.touch()
    cfg = _config(tmp_path, destinations, tmp_path / "servers", batch=25)
    state = tmp_path / "state"
    flows = ("--flow", "orders", "--flow", "orders-to-lake")
    written = threading.Event()

    def write() -> None:
        for start in range(0, len(events), 40):
            with open(path, "a") as handle:
                handle.write("".join(order_line_csv(e) + "\n" for e in events[start : start + 40]))
            time.sleep(0.15)
        written.set()

    writer = threading.Thread(target=write)
    writer.start()
    kills = pending = 0
    checkpoint = state / "checkpoints.json"
    try:
        while kills < kills_wanted or not written.is_set():
            proc = subprocess.Popen(
                _agent_cmd(cfg, state, "--follow", *flows), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            # wait until this agent has made progress (a checkpoint write), then kill it at a random moment
            before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
            deadline = time.monotonic() + 10  # no progress (caught up, or slow): kill it anyway
            while (
                time.monotonic() < deadline and (checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0) == before
            ):
                time.sleep(0.005)
            # mostly moments after it started; some after it has run for seconds (lines keep coming)
            time.sleep(rng.uniform(0.0, 0.25) if rng.random() < 0.6 else rng.uniform(0.25, 4.0))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            saved = json.loads(checkpoint.read_text())["flows"]
            pending += sum(1 for f in saved.values() if f.get("pending"))
    finally:
        writer.join()
    done = subprocess.run(
        _agent_cmd(cfg, state, "--once", "--json", *flows), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = Counter(streams.encode(e) for e in events)
    assert _landed("orders", destinations) == expected, f"{kills} kills, {pending} with a batch in flight"
    assert _landed("orders-to-lake", destinations) == expected, f"{kills} kills, {pending} with a batch in flight"
    totals = json.loads(checkpoint.read_text())["flows"]
    for flow in ("orders", "orders-to-lake"):
        assert totals[flow]["totals"]["lines_read"] == totals[flow]["totals"]["records_sent"] == len(events)
    print(f"{kills} kills ({pending} with a batch in flight), {len(events)} lines per flow, each landed once")


def test_ship_dataset_through_infra_agent_yaml(agent_infra, tiny_dataset, tmp_path):
    """The notebooks' call: the real config and resource names; counts match what landed."""
    before = _kinesis("orders")
    counts = ship_dataset(tiny_dataset, ["orders", "weblogs"], work_dir=tmp_path / "run", progress=False)
    n_orders = len(tiny_dataset.order_lines)
    n_access = len(tiny_dataset.access_log_path.read_text().splitlines())
    assert counts == {
        "orders": {"lines_read": n_orders, "records_sent": n_orders, "failed": 0, "retried": 0, "malformed": 0},
        "weblogs": {"lines_read": n_access, "records_sent": n_access, "failed": 0, "retried": 0, "malformed": 0},
    }
    shipped = _kinesis("orders") - before
    assert shipped == Counter(streams.encode(e) for e in _events(tiny_dataset))
    assert sorted(p.name for p in (tmp_path / "run" / "servers" / "server-0").iterdir())[:2] == [
        "access.log",
        "access.log.1",
    ]
