"""Benchmark of the rate detector: events/s it sustains (decode + window + score) vs the plain stream read rate,
and the end-to-end delay from incident onset to the SNS publish (event time and wall clock)."""

from __future__ import annotations

import time

from shoplake import config, infra, streams
from shoplake.alarm import day_slice, detector_config, messages, simulate_day
from shoplake.alarm import detector as det
from shoplake.alarm._windows import parse_ts


def main(scale: str = "tiny") -> None:
    infra.apply()
    sim = day_slice(simulate_day(seed=42, orders_per_day=8_000 if scale == "tiny" else 20_000), 10, 14)
    consumer = f"bench-alarm-{int(time.time())}"
    reader = f"{consumer}-read"
    for name in (consumer, reader):
        det.start_at_stream_end(name)
    messages.purge_inbox()
    began = time.perf_counter()
    streams.replay(sim.events, "orders", progress=False)
    put_s = time.perf_counter() - began
    # baseline: the plain read of the same records (every shard, from the same starting point)
    from shoplake import lambda_local

    checkpoints = lambda_local.Checkpoints(reader)
    began = time.perf_counter()
    read = 0
    for shard_id in streams.shards("orders"):
        read += sum(
            len(r) for r, _ in streams.read_batches("orders", shard_id, after_sequence=checkpoints.get(shard_id))
        )
    read_s = time.perf_counter() - began
    wall_before = time.time()
    result = det.consume(consumer, detector_config(600), warmup=sim.warmup)
    detect_rate = result.counts["records_in"] / result.elapsed_s
    read_rate = read / read_s
    print(f"records                 : {len(sim.events):,} (put {len(sim.events) / put_s:,.0f}/s)")
    print(f"plain stream read       : {read_rate:,.0f} records/s")
    print(
        f"detector (decode+window+score, incl. state saves + checkpoints): {detect_rate:,.0f} records/s "
        f"= {detect_rate / read_rate:.2f} × plain read"
    )
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


if __name__ == "__main__":
    main()
