"""Firehose ``weblogs`` → lake → transformation → index on the emulator: counts, rejected lines, replay, freshness."""

from __future__ import annotations

import pandas as pd
import pytest

from shoplake import config
from shoplake.weblogs import LakeFollower, LocalIndex, deliver_new, find_spikes, iter_lines, ship_lines, stream_log

SAMPLE = config.REPO_ROOT / "data" / "samples" / "access_tricky.log"
WEBLOGS_RESOURCES = ("lake", "weblogs", "firehose-delivery", "weblogs-transform", "weblogs-transform-fn")


@pytest.fixture(scope="module")
def weblogs_stack(local_stack):
    """Only the resources the log pipeline needs, under this session's prefix."""
    from shoplake import infra

    spec = [r for r in infra.load_spec() if r.name in WEBLOGS_RESOURCES]
    infra.apply(spec)
    return infra.outputs(spec)


def test_shipped_equals_indexed_plus_rejected_and_replay_does_not_duplicate(weblogs_stack):
    lines = list(iter_lines(SAMPLE))
    index = LocalIndex()
    before = deliver_new(index)  # whatever earlier tests of this session delivered
    shipped = ship_lines(lines).sent
    counts = deliver_new(index)
    assert shipped == len(lines) == 31
    assert counts.lines == shipped == counts.indexed + counts.rejected
    assert (counts.indexed, counts.rejected) == (21, 10)
    assert index.count() == before.indexed + 21 and index.count("status:5*") >= 2
    rejected = index.rejected(1000)
    failed = rejected[rejected["line"] == "this is not a log line"]
    assert failed["reason"].tolist()[:1] == ["not an Apache common or combined log line"]
    # replay: the same index skips what it has, a new index rebuilt from the lake gets each line once
    assert deliver_new(index).objects == 0
    rebuilt = LocalIndex()
    deliver_new(rebuilt)
    assert rebuilt.count() == index.count() and rebuilt.rejected_count() == index.rejected_count()
    assert deliver_new(rebuilt).lines == 0 and rebuilt.count() == index.count()


def test_stream_measures_freshness(weblogs_stack):
    lines = list(iter_lines(SAMPLE)) * 4
    index = LocalIndex()
    assert isinstance(index.follower(), LakeFollower)  # the local index brings its own delivery leg
    report = stream_log(lines, index, lines_per_batch=10, lines_per_second=100, poll_s=0.1, progress=False)
    assert report.shipped == 124 == report.indexed + report.rejected
    assert (report.indexed, report.rejected) == (84, 40)
    assert len(report.freshness_s) == 124 and min(report.freshness_s) >= 0
    assert report.percentile(95) < 5.0  # generous: the benchmark reports the figure


def test_find_spikes_merges_adjacent_hot_buckets():
    t0 = pd.Timestamp("2024-01-01T00:00:00Z")
    counts = [1, 0, 0, 9, 12, 0, 1, 0, 0, 0, 7, 0] + [0] * 48
    errors = pd.DataFrame({"time": [t0 + pd.Timedelta(minutes=i) for i in range(60)], "count": counts})
    spikes = find_spikes(errors[errors["count"] > 0], "1m", start=t0, end=t0 + pd.Timedelta(hours=1))
    assert spikes[["count", "peak"]].values.tolist() == [[21, 12], [7, 7]]
    assert spikes["start"].tolist() == [t0 + pd.Timedelta(minutes=3), t0 + pd.Timedelta(minutes=10)]
    assert spikes["end"].tolist()[0] == t0 + pd.Timedelta(minutes=5)
