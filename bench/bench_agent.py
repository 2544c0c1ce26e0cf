"""Agent benchmark: lines/s shipped by the agent (tail → CSV→JSON → checkpointed batches) vs the plain producer.

Run with ``python -m bench --only agent [--scale small]``. Both sides send the same order events (Kinesis: each to a fresh
stream of the same shape, as the emulator slows down while a stream fills up; Firehose: one delivery stream, agent
first) in the same run; the figure is the ratio agent / producer. The agent's extra work: reading the
file, parsing CSV back to typed events, two atomic checkpoint writes per batch (with fsync).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import uuid
from pathlib import Path

from shoplake import config, datagen, infra, streams
from shoplake.agent import Agent, load_config
from shoplake.agent._flows import ORDER_FIELDS, AgentConfig
from shoplake.agent._servers import order_line_csv
from shoplake.events import from_frame

MAX_LINES = 20_000
BASE = {("s3_bucket", "lake"), ("iam_role", "firehose-delivery")}


def _destinations(uid: str) -> list[infra.Resource]:
    """A fresh Kinesis stream per side; one Firehose for both (the emulator allows only 50 delivery streams)."""
    out = [
        infra.Resource("kinesis_stream", f"bench-{uid}-{side}", {"shards": 2, "retention_hours": 24})
        for side in ("producer", "agent")
    ]
    out.append(
        infra.Resource(
            "firehose_delivery_stream",
            f"bench-{uid}-lake",
            {
                "role": "firehose-delivery",
                "s3": {"bucket": "lake", "prefix": f"bench/{uid}/", "error_prefix": f"bench/{uid}/e/"},
            },
        )
    )
    return out


def _remove(resources: list[infra.Resource]) -> None:
    for r in resources:
        with contextlib.suppress(Exception):
            if r.type == "kinesis_stream":
                config.client("kinesis").delete_stream(StreamName=config.resource_name(r.name))
            else:
                config.client("firehose").delete_delivery_stream(DeliveryStreamName=config.resource_name(r.name))


def main(scale: str = "small") -> None:
    """Ship up to 20,000 order lines of ``scale`` both ways, to Kinesis and to Firehose (S3)."""
    uid = uuid.uuid4().hex[:6]
    infra.apply([r for r in infra.load_spec() if (r.type, r.name) in BASE])
    resources = _destinations(uid)
    infra.apply(resources)
    dataset = datagen.load(scale=scale, seed=42)
    events = from_frame(dataset.order_lines[list(ORDER_FIELDS)].head(MAX_LINES))
    flows = {f.name: f for f in load_config().flows}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
            root = Path(tmp)
            server = root / "servers" / "server-0"
            server.mkdir(parents=True)
            (server / "orders.csv").write_text("".join(order_line_csv(e) + "\n" for e in events))
            pattern = str(root / "servers" / "*" / "orders.csv*")
            cases = (
                (
                    "orders",
                    "Kinesis ",
                    f"bench-{uid}-agent",
                    lambda: streams.put_records(f"bench-{uid}-producer", events),
                ),
                (
                    "orders-to-lake",
                    "Firehose",
                    f"bench-{uid}-lake",
                    lambda: streams.put_firehose(f"bench-{uid}-lake", events),
                ),
            )
            for flow_name, what, agent_dest, put in cases:
                flow = dataclasses.replace(flows[flow_name], patterns=[pattern], destination=agent_dest)
                agent = Agent(AgentConfig(flows=[flow]), state_dir=root / f"state-{flow_name}", fsync=True)
                began = time.perf_counter()
                counts = agent.run()[flow_name]
                agent_s = time.perf_counter() - began
                began = time.perf_counter()
                result = put()
                producer_s = time.perf_counter() - began
                if counts["records_sent"] != len(events) or result.sent != len(events):
                    raise RuntimeError(
                        f"{what}: agent sent {counts['records_sent']}, producer {result.sent} of {len(events)}"
                    )
                agent_rate, producer_rate = len(events) / agent_s, len(events) / producer_s
                print(
                    f"{what} {len(events):,} order lines: agent {agent_rate:8,.0f} lines/s ({agent_s:.2f} s)  "
                    f"plain producer {producer_rate:8,.0f} rec/s ({producer_s:.2f} s)  → agent/producer = "
                    f"{agent_rate / producer_rate:.2f}x",
                    flush=True,
                )
    finally:
        _remove(resources)


if __name__ == "__main__":
    main()
