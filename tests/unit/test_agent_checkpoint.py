"""The agent's write-ahead journal in the checkpoint: a pending batch's window and the Kinesis positions survive a
save/load, and a checkpoint written by an older agent (no window, no positions) still loads."""

from __future__ import annotations

import json

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
    store.save()
    again = CheckpointStore(tmp_path / "checkpoints.json", fsync=False).flow("orders")
    assert again.positions == flow.positions
    assert again.pending == flow.pending


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
