"""Order history ingestion: end-to-end rate (producer → stream → handler → table) as a ratio of the emulator's raw
ceiling measured in the same run (plain PutRecords and plain BatchWriteItem of the same items at the same time: with
DynamoDB in an emulator process of its own, the most the emulator set accepts; the one-at-a-time figure the bench
reported before is printed beside it), p50/p95
event → readable latency, and the reconciliation (keys + content hashes) against a plain full-table Scan.
Every run asserts the counts: in = written + dead-lettered, each valid line exactly once."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

NEEDED = {
    "kinesis_stream:orders",
    "dynamodb_table:order_history",
    "dynamodb_table:checkpoints",
    "sqs_queue:order-history-dlq",
}


def _raw_ceiling(rows: list[dict], items: list[dict], writers: int) -> dict[str, float]:
    """The emulator's raw rate for the same events: plain PutRecords (batches of 500) to a fresh stream and plain
    BatchWriteItem (25) of the same items to a fresh table, measured two ways —

    - ``sequential``: the puts, then the writes (the figure this bench always reported: one request at a time);
    - ``concurrent``: the puts (one thread) and the writes (``writers`` threads: as many requests in flight as the
      pipeline may have, one batch per shard with ``order_history.CONCURRENCY`` writes each) at the same time, to a
      fresh stream and table. The local emulator is more than one process (DynamoDB has its own,
      ``local_services.DEDICATED``), so this is the most the emulator set accepts with all its processes busy — the
      ceiling the pipeline, which also overlaps puts, reads and writes, is compared with. The CPU seconds each
      emulator process and this process use in that phase come back as ``cpu_<process>_s``."""
    from shoplake import config, resources, streams

    kinesis, dynamodb = config.client("kinesis"), config.client("dynamodb")
    suffix = uuid.uuid4().hex[:6]
    names = [config.resource_name(f"bench-raw-{suffix}-{i}") for i in (1, 2)]
    keys = resources.table_keys(resources.find("dynamodb_table", "order_history").props)
    for name in names:
        kinesis.create_stream(StreamName=name, ShardCount=2)
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **keys)
    for name in names:
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})

    def put(stream: str) -> float:
        began = time.perf_counter()
        for start in range(0, len(rows), 500):
            kinesis.put_records(
                StreamName=stream,
                Records=[
                    {"Data": streams.encode(r), "PartitionKey": streams.order_partition_key(r)}
                    for r in rows[start : start + 500]
                ],
            )
        return time.perf_counter() - began

    def write(table: str, part: list[dict] = items) -> float:
        began = time.perf_counter()
        for start in range(0, len(part), 25):
            dynamodb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": i}} for i in part[start : start + 25]]}
            )
        return time.perf_counter() - began

    try:
        put_s, write_s = put(names[0]), write(names[0])
        took: dict[str, float] = {}
        threads = [threading.Thread(target=lambda: took.__setitem__("put", put(names[1])))]
        for w in range(writers):
            part = [i for n, i in enumerate(items) if n // 25 % writers == w]  # every writers-th chunk of 25
            threads.append(
                threading.Thread(target=lambda w=w, part=part: took.__setitem__(f"write{w}", write(names[1], part)))
            )
        cpu_before, client_before = _emulator_cpu(), time.process_time()
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        together_s = time.perf_counter() - began
        together_cpu = {name: t - cpu_before.get(name, 0.0) for name, t in _emulator_cpu().items()}
        together_cpu["client"] = time.process_time() - client_before
        if len(took) != 1 + writers:
            raise RuntimeError("a ceiling thread failed (see its traceback above)")
    finally:
        for name in names:
            kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
            dynamodb.delete_table(TableName=name)
    return {
        "put_s": put_s,
        "write_s": write_s,
        "sequential_rate": len(rows) / (put_s + write_s),
        "together_s": together_s,
        "rate": len(rows) / together_s,
        **{f"cpu_{name}_s": t for name, t in together_cpu.items()},
    }


def _bounds(events: int, cpu: dict[str, float], ceiling_rate: float, processes: list[str]) -> dict[str, Any]:
    """The most the pipeline could reach with the work it was measured doing, as ratios to the ceiling's rate.

    ``cpu``: CPU seconds each process used during the pipeline (``processes`` are the emulator's, each one thread
    serving one request at a time; the others are the kernel and the poller processes). An emulator process cannot
    serve more events per second than ``events / its CPU seconds`` (busy all the time, nothing else waiting on it),
    and all the processes together no more than ``events × cores / their CPU seconds``."""
    cores = os.cpu_count() or 1
    per_process = {name: events / cpu[name] / ceiling_rate for name in processes if cpu.get(name)}
    busiest = min(per_process, key=per_process.__getitem__) if per_process else None
    return {
        "bound_by_process": {name: round(r, 3) for name, r in per_process.items()},
        "bound_busiest_process": busiest,
        "bound_busiest_ratio": round(per_process[busiest], 3) if busiest else None,
        "bound_cores_ratio": round(events * cores / sum(cpu.values()) / ceiling_rate, 3),
    }


@contextlib.contextmanager
def _counting_requests() -> Iterator[tuple[Counter, dict[str, float]]]:
    """Count the AWS requests by ``service:Operation`` while the block runs (producer, mapping, handler), in this
    process and in the processes it spawns (the mapping's poller processes: ``_child_requests/sitecustomize.py``,
    on PYTHONPATH for the block); the second value gets ``children_cpu_s``, the CPU seconds those processes used.
    Requests per event is the emulator's load, and unlike a rate it does not depend on what else the machine runs."""
    import json

    import botocore.client

    from bench._spawned import hooked

    counts: Counter = Counter()
    children: dict[str, float] = {"children_cpu_s": 0.0, "children": 0}
    lock = threading.Lock()
    original = botocore.client.BaseClient._make_api_call

    def counted(client: Any, operation: str, params: Any) -> Any:
        with lock:
            counts[f"{client.meta.service_model.service_name}:{operation}"] += 1
        return original(client, operation, params)

    with hooked("SHOPLAKE_BENCH_REQUESTS_DIR") as folder:
        botocore.client.BaseClient._make_api_call = counted
        try:
            yield counts, children
        finally:
            botocore.client.BaseClient._make_api_call = original
            for name in os.listdir(folder):
                with open(os.path.join(folder, name)) as answer:
                    child = json.load(answer)
                counts.update(child["requests"])
                children["children_cpu_s"] += child["cpu_s"]
                children["children"] += 1


def _emulator_pids() -> dict[str, int | None]:
    """The local emulator processes' pids by name (``main``, ``dynamodb``...)."""
    from shoplake import local_services

    state = local_services.read_state()
    pids = {"main": (state.get("moto") or {}).get("pid")}
    pids.update({name: entry.get("pid") for name, entry in (state.get("emulators") or {}).items()})
    return pids


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, from Linux's /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _emulator_cpu() -> dict[str, float]:
    """CPU seconds used so far by each local emulator process, from /proc (empty where there is none). Beside the
    pipeline's wall time it shows which process is the ceiling."""
    out: dict[str, float] = {}
    for name, pid in _emulator_pids().items():
        try:
            out[name] = process_cpu_s(pid)
        except (OSError, TypeError):
            continue
    return out


def _emulator_rss_mib() -> dict[str, float]:
    """Resident memory of each local emulator process (MiB), from /proc."""
    out: dict[str, float] = {}
    for name, pid in _emulator_pids().items():
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    out[name] = round(int(line.split()[1]) / 1024, 1)
        except (OSError, TypeError):
            continue
    return out


@contextlib.contextmanager
def order_pipeline(stem: str) -> Iterator[None]:
    """The order pipeline's resources (:data:`NEEDED`) under a fresh resource prefix ``<stem>-<random>``, created for
    the block and destroyed after it; the caller's prefix is put back."""
    from shoplake import config, infra

    previous = os.environ.get("SHOPLAKE_PREFIX")
    os.environ["SHOPLAKE_PREFIX"] = f"{stem}-{uuid.uuid4().hex[:6]}"
    config.clear_caches()
    spec = [r for r in infra.load_spec() if r.key in NEEDED]
    try:
        infra.apply(spec)
        yield
    finally:
        infra.destroy(spec=spec)
        if previous is None:
            os.environ.pop("SHOPLAKE_PREFIX", None)
        else:
            os.environ["SHOPLAKE_PREFIX"] = previous
        config.clear_caches()


def main(scale: str = "small") -> dict[str, float]:
    from shoplake import config, datagen, orders, streams
    from shoplake.events import from_frame
    from shoplake.lambdas import order_history

    with order_pipeline("bench"):
        dataset = datagen.load(scale=scale, seed=42)
        rows = from_frame(dataset.order_lines)
        items = list(
            {
                (i["customer_id"]["S"], i["order_key"]["S"]): i
                for i in (order_history.to_item(order_history.parse_event(streams.encode(r))) for r in rows)
            }.values()
        )
        # the ceiling is measured before and after the pipeline and averaged: on a shared machine the load drifts
        writers = len(streams.shards("orders")) * order_history.CONCURRENCY
        first = _raw_ceiling(rows, items, writers)
        cpu_before, client_before = _emulator_cpu(), time.process_time()
        with _counting_requests() as (requests, children):
            report = orders.ingest(dataset.order_lines, progress=False)
            cpu = {name: round(t - cpu_before.get(name, 0.0), 1) for name, t in _emulator_cpu().items()}
            cpu["client"] = round(time.process_time() - client_before, 1)
        if not children["children"]:
            raise AssertionError("no poller process reported its requests: the counts would miss the handler's")
        cpu["pollers"] = round(children["children_cpu_s"], 1)
        second = _raw_ceiling(rows, items, writers)
        ceiling = {k: (first[k] + second[k]) / 2 for k in first if k.endswith("_s")}
        ceiling["sequential_rate"] = len(rows) / (ceiling["put_s"] + ceiling["write_s"])
        ceiling["rate"] = len(rows) / ceiling["together_s"]
        e2e_rate = len(rows) / report.seconds
        latency = report.mapping.latency_percentiles((0.5, 0.95))
        # nothing gets faster by doing less: every event accounted for, exactly once
        began = time.perf_counter()
        reconciliation = orders.reconcile(dataset.order_lines)
        reconcile_s = time.perf_counter() - began
        if not (reconciliation.balanced and reconciliation.exactly_once):
            raise AssertionError(f"order history does not add up: {reconciliation.as_dict()}")
        written = reconciliation.items
        # baseline: the previous way, every attribute of every item read back and compared
        began = time.perf_counter()
        full = orders.reconcile(dataset.order_lines, items=orders.table_items())
        full_scan_s = time.perf_counter() - began
        if full.as_dict() != reconciliation.as_dict():
            raise AssertionError(f"the full comparison disagrees: {full.as_dict()} != {reconciliation.as_dict()}")
        full_scan = full.items
        # latency at a sustainable rate: the first events replayed in their real rhythm, compressed to ~50 % of the
        # ceiling (as fast as possible, latency only measures the backlog)
        import pandas as pd

        paced = dataset.order_lines.head(min(len(rows), 600))
        span = (pd.to_datetime(paced["InvoiceDate"]).max() - pd.to_datetime(paced["InvoiceDate"]).min()).total_seconds()
        wall = len(paced) / (0.5 * ceiling["rate"])
        paced_report = orders.ingest(paced, speed=max(span / wall, 1.0), progress=False)
        paced_latency = paced_report.mapping.latency_percentiles((0.5, 0.95))
        processes = [name for name in _emulator_pids() if name in cpu]
        bounds = _bounds(len(rows), cpu, ceiling["rate"], processes)
        figures = {
            "events": len(rows),
            "items_written": written,
            "emulator_processes": len(config.emulator_urls()),
            "ceiling_writer_threads": writers,
            "ceiling_rate_per_s": round(ceiling["rate"], 1),
            "ceiling_together_s": round(ceiling["together_s"], 2),
            "ceiling_sequential_rate_per_s": round(ceiling["sequential_rate"], 1),
            "ratio_to_sequential_ceiling": round(e2e_rate / ceiling["sequential_rate"], 3),
            "ceiling_put_s": round(ceiling["put_s"], 2),
            "ceiling_write_s": round(ceiling["write_s"], 2),
            "ceiling_rate_before_per_s": round(first["rate"], 1),
            "ceiling_rate_after_per_s": round(second["rate"], 1),
            "e2e_rate_per_s": round(e2e_rate, 1),
            "e2e_s": round(report.seconds, 2),
            "ratio_to_ceiling": round(e2e_rate / ceiling["rate"], 3),
            "latency_p50_s": latency["p50"],
            "latency_p95_s": latency["p95"],
            "paced_rate_per_s": round(len(paced) / paced_report.seconds, 1),
            "paced_latency_p50_s": paced_latency["p50"],
            "paced_latency_p95_s": paced_latency["p95"],
            "reconcile_s": round(reconcile_s, 2),
            "full_scan_s": round(full_scan_s, 2),
            "full_scan_items": full_scan,
            "requests_per_event": round(sum(requests.values()) / len(rows), 4),
            "requests_per_event_by_operation": {
                op: round(n / len(rows), 4) for op, n in sorted(requests.items(), key=lambda kv: -kv[1])
            },
            "cpu_s_during_e2e": cpu,
            "cpu_s_during_ceiling": {
                k.removeprefix("cpu_").removesuffix("_s"): round(v, 1)
                for k, v in ceiling.items()
                if k.startswith("cpu_")
            },
            **bounds,
            "emulator_rss_mib": _emulator_rss_mib(),
            "checkpoints_written": report.mapping.checkpoints_written,
            "invocations": report.mapping.invocations,
        }
        from bench import _report

        _report.figure(
            "orders end to end (events/s)",
            e2e_rate,
            unit="events/s",
            baseline=ceiling["rate"],
            baseline_name=(
                "raw emulator ceiling: PutRecords and BatchWriteItem of the same events at the same time "
                "(every emulator process busy)"
            ),
            goal="ratio ≥ 0.8",
            goal_ratio=0.8,
            ceiling=min(bounds["bound_busiest_ratio"] or math.inf, bounds["bound_cores_ratio"]),
            ceiling_name=(
                "the most the measured work allows here: the lower of the busiest emulator process busy all the "
                "time and every process's CPU on all the cores (bound_busiest_ratio, bound_cores_ratio)"
            ),
            scale=scale,
            events=len(rows),
            exactly_once=reconciliation.exactly_once,
            balanced=reconciliation.balanced,
            emulator_processes=figures["emulator_processes"],
            sequential_ceiling_per_s=figures["ceiling_sequential_rate_per_s"],
            requests_per_event=figures["requests_per_event"],
            bound_busiest_process=bounds["bound_busiest_process"],
            bound_busiest_ratio=bounds["bound_busiest_ratio"],
            bound_cores_ratio=bounds["bound_cores_ratio"],
        )
        _report.figure(
            "orders reconciliation (keys + hashes), s",
            reconcile_s,
            unit="s",
            baseline=full_scan_s,
            baseline_name="full read-back of every attribute + comparison (the previous reconciliation)",
            goal="ratio < 1 (cheaper than reading everything)",
            higher_is_better=False,
            scale=scale,
        )
        _report.figure(
            "orders paced latency p95, s",
            paced_latency["p95"],
            unit="s",
            goal="< 2 s",
            higher_is_better=False,
            scale=scale,
            paced_rate_per_s=figures["paced_rate_per_s"],
        )
        print(f"order history at scale {scale}: {len(rows)} events, {written} items written")
        print(
            f"  raw emulator ceiling : {figures['ceiling_rate_per_s']:>9.1f} events/s (puts and batch writes at the "
            f"same time, {writers} writer threads: {ceiling['together_s']:.1f} s on {figures['emulator_processes']} "
            f"emulator processes; mean of "
            f"{first['rate']:.0f} before and {second['rate']:.0f} after the pipeline)"
        )
        print(
            f"  ... one at a time    : {figures['ceiling_sequential_rate_per_s']:>9.1f} events/s (put "
            f"{ceiling['put_s']:.1f} s + batch writes {ceiling['write_s']:.1f} s: the earlier definition)"
        )
        print(f"  end to end           : {figures['e2e_rate_per_s']:>9.1f} events/s ({report.seconds:.1f} s)")
        print(
            f"  ratio to ceiling     : {figures['ratio_to_ceiling']:.3f}   (goal ≥ 0.8; "
            f"{figures['ratio_to_sequential_ceiling']:.3f} of the one-at-a-time figure)"
        )
        print(
            f"  requests per event   : {figures['requests_per_event']:.4f} ("
            + ", ".join(f"{op} {n:.4f}" for op, n in figures["requests_per_event_by_operation"].items())
            + ")"
        )
        print(
            "  CPU during e2e       : "
            + ", ".join(f"{name} {t:.1f} s" for name, t in cpu.items())
            + f" of {report.seconds:.1f} s wall ({os.cpu_count()} cores: at most "
            + f"{(os.cpu_count() or 1) * report.seconds:.0f} CPU s); emulator RSS "
            + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in figures["emulator_rss_mib"].items())
        )
        ceiling_cpu = figures["cpu_s_during_ceiling"]
        print(
            "  most this work allows: "
            + ", ".join(f"{name} emulator busy all the time {r:.3f}" for name, r in bounds["bound_by_process"].items())
            + f"; every process, {os.cpu_count()} cores busy all the time {bounds['bound_cores_ratio']:.3f} of the "
            + "ceiling (ratios; the ceiling's own CPU in "
            + f"{ceiling['together_s']:.1f} s: "
            + ", ".join(f"{name} {t:.1f} s" for name, t in ceiling_cpu.items())
            + ")"
        )
        print(
            f"  reconciliation       : {reconcile_s:.1f} s (keys + content hashes; exactly once: "
            f"{reconciliation.exactly_once}) vs reading every attribute back {full_scan_s:.1f} s"
        )
        print(
            f"  latency put→readable : p50 {latency['p50']} s, p95 {latency['p95']} s when replayed as fast as "
            "possible (backlog)"
        )
        print(
            f"  paced at ~50 % of the ceiling ({figures['paced_rate_per_s']} events/s): latency p50 "
            f"{paced_latency['p50']} s, p95 {paced_latency['p95']} s   (goal p95 < 2 s)"
        )
        return figures


if __name__ == "__main__":
    main()
