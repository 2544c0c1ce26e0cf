"""Benchmark of the rate detector: events/s it sustains (decode + window + score, state saves and checkpoints included)
vs the plain stream read rate, where the time goes (the forest's ms per window, the one-time warm-up), the emulator
requests per batch, and the end-to-end delay from incident onset to the SNS publish (event time and wall clock).

Two detector figures, both against the plain read of the same records (measured before and after the detector and
averaged: the machine is shared and the emulator's GetRecords slows as the stream grows):

- ``detector_records_per_s``: the records over the whole :func:`~shoplake.alarm.detector.consume` call — loading the
  detector, teaching a fresh one the warm-up days (the profile, then a day of points fed to the 100 krcf trees),
  consuming, closing the last windows;
- ``detector_stream_records_per_s``: the records over the mapping's run alone (reads, decode, windows, forest
  scoring, state saves, checkpoints) — the rate a running detector keeps up with; the one-time warm-up is not in it.

The default scale is ``small`` (8,538 records), as for the other benchmarks: at ``tiny`` (3,354 records, 8 batches,
a few hundred milliseconds) the figures are mostly the mapping's start (shard listing, iterators, the state's first
read) and moved between 0.37 and 0.57 × from run to run on the same code; at ``small`` two runs gave 0.67 and 0.67.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench import _report
from shoplake import config, infra, lambda_local, streams
from shoplake.alarm import day_slice, detector_config, messages, simulate_day
from shoplake.alarm import detector as det
from shoplake.alarm._rcf import RateForest
from shoplake.alarm._windows import parse_ts

ORDERS_PER_DAY = {"tiny": 8_000, "small": 20_000, "full": 60_000}


@contextlib.contextmanager
def _measuring() -> Iterator[dict[str, Any]]:
    """Count this process's AWS requests by ``service:Operation`` and time the forest (warm-up apart from scoring)
    while the block runs; the wrapped methods are put back afterwards."""
    import botocore.client

    seen: dict[str, Any] = {"requests": Counter(), "warmup_s": 0.0, "score_s": 0.0, "windows": 0}
    lock = threading.Lock()
    make_api_call, update, warm_up = (
        botocore.client.BaseClient._make_api_call,
        RateForest.update,
        det.RateDetector.warm_up,
    )
    warming = threading.local()

    def counted(client: Any, operation: str, params: Any) -> Any:
        with lock:
            seen["requests"][f"{client.meta.service_model.service_name}:{operation}"] += 1
        return make_api_call(client, operation, params)

    def timed_update(forest: RateForest, count: int, window_start: float) -> Any:
        began = time.perf_counter()
        try:
            return update(forest, count, window_start)
        finally:
            if not getattr(warming, "on", False):
                seen["score_s"] += time.perf_counter() - began
                seen["windows"] += 1

    def timed_warm_up(detector: det.RateDetector, windows: list[Any]) -> None:
        began, warming.on = time.perf_counter(), True
        try:
            warm_up(detector, windows)
        finally:
            warming.on = False
            seen["warmup_s"] += time.perf_counter() - began

    botocore.client.BaseClient._make_api_call = counted
    RateForest.update = timed_update  # type: ignore[method-assign]
    det.RateDetector.warm_up = timed_warm_up  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        botocore.client.BaseClient._make_api_call = make_api_call
        RateForest.update = update  # type: ignore[method-assign]
        det.RateDetector.warm_up = warm_up  # type: ignore[method-assign]


def _plain_read(reader: str) -> tuple[int, float]:
    """Records and seconds of reading every shard from ``reader``'s checkpoints to the end (one GetRecords loop)."""
    checkpoints = lambda_local.Checkpoints(reader)
    began = time.perf_counter()
    read = 0
    for shard_id in streams.shards("orders"):
        read += sum(
            len(r) for r, _ in streams.read_batches("orders", shard_id, after_sequence=checkpoints.get(shard_id))
        )
    return read, time.perf_counter() - began


def main(scale: str = "small") -> dict[str, Any]:
    if scale not in ORDERS_PER_DAY:
        raise ValueError(f"scale must be one of {sorted(ORDERS_PER_DAY)}, got {scale!r}")
    infra.apply()
    sim = day_slice(simulate_day(seed=42, orders_per_day=ORDERS_PER_DAY[scale]), 10, 14)
    consumer = f"bench-alarm-{int(time.time())}"
    reader = f"{consumer}-read"
    for name in (consumer, reader):
        det.start_at_stream_end(name)
    messages.purge_inbox()
    began = time.perf_counter()
    streams.replay(sim.events, "orders", progress=False)
    put_s = time.perf_counter() - began
    read, read_before_s = _plain_read(reader)
    wall_before = time.time()
    with _measuring() as seen:
        result = det.consume(consumer, detector_config(600), warmup=sim.warmup)
    _, read_after_s = _plain_read(reader)
    read_rate = read / ((read_before_s + read_after_s) / 2)
    records = result.counts["records_in"]
    if records != len(sim.events) or result.counts["accepted"] != len(sim.events):
        raise AssertionError(f"the detector did not count every record once: {result.counts} vs {len(sim.events)}")
    stream_s = result.mapping["elapsed_s"]
    detect_rate = records / result.elapsed_s
    stream_rate = records / stream_s
    batches = result.mapping["invocations"]
    per_batch = {k: round(v / batches, 2) for k, v in sorted(seen["requests"].items())}
    score_ms = 1000 * seen["score_s"] / max(seen["windows"], 1)
    print(f"records                 : {len(sim.events):,} (put {len(sim.events) / put_s:,.0f}/s)")
    print(
        f"plain stream read       : {read_rate:,.0f} records/s "
        f"(before {read / read_before_s:,.0f}/s, after {read / read_after_s:,.0f}/s)"
    )
    print(
        f"detector, whole consume : {detect_rate:,.0f} records/s = {detect_rate / read_rate:.2f} × plain read "
        f"({result.elapsed_s:.2f} s: warm-up {seen['warmup_s']:.2f} s, stream {stream_s:.2f} s)"
    )
    print(
        f"detector, stream only   : {stream_rate:,.0f} records/s = {stream_rate / read_rate:.2f} × plain read "
        f"({batches} batches, {result.counts['state_saves']} state saves, "
        f"{result.mapping['checkpoints_written']} checkpoints)"
    )
    print(
        f"forest                  : {seen['windows']} windows scored, {score_ms:.2f} ms a window, "
        f"{seen['score_s']:.2f} s = {seen['score_s'] / result.elapsed_s:.0%} of the consume "
        f"(warm-up {seen['warmup_s'] / result.elapsed_s:.0%})"
    )
    print(f"requests per batch      : {per_batch}")
    for alarm in result.alarms:
        onset = min(
            (parse_ts(i["start"]) for i in sim.incidents if parse_ts(i["start"]) <= parse_ts(alarm["window_end"])),
            default=None,
        )
        if onset is None:
            continue
        print(
            f"alarm {alarm['incident_id']}: event-time delay onset→decision "
            f"{parse_ts(alarm['raised_at']) - onset:,.0f} s ({(parse_ts(alarm['raised_at']) - onset) / 600:.2f} windows); "
            f"wall-clock consume start→SNS publish {alarm['published_wall'] - wall_before:.2f} s; status {alarm['status']}"
        )
    print(f"SNS messages read back  : {sum(consumer in m['text'] for m in messages.sent_messages())}")
    print(f"state item              : {result.state_bytes:,} bytes; target {config.settings().target}")
    extra = {
        "records": records,
        "forest_ms_per_window": score_ms,
        "forest_share": seen["score_s"] / result.elapsed_s,
        "warmup_s": seen["warmup_s"],
        "requests_per_batch": per_batch,
    }
    _report.figure(
        "detector_records_per_s",
        detect_rate,
        unit="records/s",
        baseline=read_rate,
        baseline_name="plain stream read",
        goal="≥ 0.5 × baseline",
        goal_ratio=0.5,
        **extra,
    )
    _report.figure(
        "detector_stream_records_per_s",
        stream_rate,
        unit="records/s",
        baseline=read_rate,
        baseline_name="plain stream read",
        goal="≥ 0.5 × baseline",
        goal_ratio=0.5,
        state_saves=result.counts["state_saves"],
        batches=batches,
    )
    return {"read_rate": read_rate, "detector_rate": detect_rate, "stream_rate": stream_rate, **extra}


if __name__ == "__main__":
    main()
