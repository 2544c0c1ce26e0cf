"""The agent's write-ahead journal in the checkpoint: a pending batch's window and the Kinesis positions survive a
save/load, and a checkpoint written by an older agent (no window, no positions) still loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from shoplake.agent._checkpoint import CheckpointStore, Pending


def test_pending_window_and_positions_round_trip(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints.json", fsync=False)
    flow = store.flow("orders")
    flow.positions = {"shardId-000000000000": "49650000000000000000000000000000000000000000000000000002"}
    flow.pending = Pending(
        created=1.5,
        ranges=[{"key": "1:2", "path": "/x", "start": 0, "end": 10, "lines": 2}],
        hashes=["a", "a"],
        window={"after": dict(flow.positions)},
    )
    assert flow.pending.to_json() == dataclasses.asdict(flow.pending)  # every field, none added since forgotten
    store.save()
    reloaded = CheckpointStore(tmp_path / "checkpoints.json", fsync=False)
    again = reloaded.flow("orders")
    assert again.positions == flow.positions
    assert again.pending == flow.pending
    # an agent that died with a batch in flight may have been sending until now; one that committed, until it saved
    assert reloaded.last_send_before() > reloaded.saved
    again.pending = None
    assert reloaded.last_send_before() == reloaded.saved > 0
    assert CheckpointStore(tmp_path / "none.json", fsync=False).last_send_before() == 0.0


def test_a_checkpoint_of_an_older_agent_loads_without_window_or_positions(tmp_path):
    path = tmp_path / "checkpoints.json"
    old = {
        "version": 1,
        "flows": {
            "orders": {
                "files": {},
                "orphans": [],
                "pending": {"created": 2.0, "ranges": [], "hashes": ["b"]},
                "totals": {"lines_read": 3},
            }
        },
    }
    path.write_text(json.dumps(old))
    flow = CheckpointStore(path, fsync=False).flow("orders")
    assert flow.pending is not None and flow.pending.window is None
    assert flow.positions == {} and flow.totals["lines_read"] == 3


def test_the_agent_lists_the_lake_before_a_send_only_when_the_window_may_hold_the_batchs_records():
    """Locally the agent skips listing the lake before a Firehose send unless records of the batch were sent within
    the window moments before (or the agent has just started: an agent before it may have sent them)."""
    import time

    from shoplake.agent._agent import _RECENT_SENDS, FlowRunner, _Lake
    from shoplake.agent._checkpoint import FlowState
    from shoplake.agent._flows import Flow

    flow = Flow(name="lake", patterns=["/nonexistent/*.log"], kind="firehose", destination="unit-window-test")
    runner = FlowRunner(flow, FlowState(), CheckpointStore(Path("/nonexistent/c.json"), fsync=False), Path("/tmp"))
    lake = runner._lake = _Lake(bucket="b", prefix="raw/", stream="unit-window-test", version="1", settle_s=0.0)
    _RECENT_SENDS.pop("unit-window-test", None)
    now = time.time()
    assert runner._may_share_window(lake, now - 2, ["a"])  # just started
    runner.started = now - 60
    assert not runner._may_share_window(lake, now - 2, ["a"])
    runner._sent_now(["a", "b"])
    assert runner._may_share_window(lake, now - 2, ["a"]) and runner._may_share_window(lake, now - 2, ["c", "b"])
    assert not runner._may_share_window(lake, now - 2, ["c"])
    assert not runner._may_share_window(lake, now + 5, ["a"])  # sent before the window opens
