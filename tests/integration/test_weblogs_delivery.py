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


def test_follower_lists_only_recent_objects_and_misses_none(weblogs_stack):
    lines = list(iter_lines(SAMPLE))
    index = LocalIndex()
    follower = LakeFollower(index, only_new=True)
    assert follower.cursor.start_after is not None or not follower.ignore  # starts near the newest object there
    shipped = 0
    for k in range(5):  # objects arriving between passes, and two in one pass
        shipped += ship_lines(lines).sent
        if k % 2:
            shipped += ship_lines(lines[:7]).sent
        follower.run_once()
    assert follower.cursor.start_after is not None  # listings start near the newest object, not at the prefix
    assert follower.counts.lines == shipped == follower.counts.indexed + follower.counts.rejected
    assert index.count() + index.rejected_count() == shipped
    assert follower.run_once().lines == 0  # nothing twice


def test_a_late_write_waits_for_the_sweep_and_a_backlog_is_listed_a_pass_at_a_time(weblogs_stack, monkeypatch):
    """issue 13: most listings start a second before the newest object, a sweep every SWEEP_EVERY_S from ten
    seconds before it (a write that lands late is delivered then, not lost); a pass lists what it takes, not the
    whole backlog behind it."""
    from datetime import datetime, timedelta

    from shoplake.weblogs import _delivery
    from shoplake.weblogs._delivery import _KEY_TIME_RE, SWEEP_EVERY_S, LakeCursor, existing_objects, lake_bucket
    from shoplake.weblogs._lake_io import RAW_PREFIX

    lines = list(iter_lines(SAMPLE))
    index, bucket, now = LocalIndex(), lake_bucket(), [0.0]
    cursor = LakeCursor(bucket, seen=existing_objects(bucket), clock=lambda: now[0])
    cursor.mark(())  # start near the newest object already there, as a follower started with only_new
    ship_lines(lines)
    assert deliver_new(index, cursor=cursor, max_objects=64).lines == 31
    newest = max(k for k in cursor.seen if k.startswith(RAW_PREFIX))
    m = _KEY_TIME_RE.match(newest[len(RAW_PREFIX) :])
    assert m is not None
    late = datetime.strptime(m["time"], "%Y-%m-%d-%H-%M-%S") - timedelta(seconds=5)
    late_key = f"{RAW_PREFIX}{late:%Y/%m/%d/%H}/{m['name']}-{late:%Y-%m-%d-%H-%M-%S}-late"
    config.client("s3").put_object(Bucket=bucket, Key=late_key, Body="\n".join(lines).encode() + b"\n")
    now[0] += 0.5
    assert deliver_new(index, cursor=cursor, max_objects=64).lines == 0  # before the recent start: not listed
    now[0] += SWEEP_EVERY_S
    assert deliver_new(index, cursor=cursor, max_objects=64).lines == 31  # the sweep brings it
    assert deliver_new(index, cursor=cursor, max_objects=64).lines == 0  # once
    # a backlog of 6 objects taken 2 a pass: each listing stops at the pass's 2 new keys
    listed: list[tuple[int, int]] = []  # (keys seen when the listing began, keys it listed)
    iter_keys = _delivery._iter_keys

    def counting(*args, **kwargs):
        seen, n = len(cursor.seen), 0
        try:
            for key in iter_keys(*args, **kwargs):
                n += 1
                yield key
        finally:  # also when the cursor stops listing early
            listed.append((seen, n))

    monkeypatch.setattr(_delivery, "_iter_keys", counting)
    for _ in range(6):
        ship_lines(lines[:5])
    taken = [deliver_new(index, cursor=cursor, max_objects=2).objects for _ in range(4)]
    assert taken == [2, 2, 2, 0]
    assert len(listed) == 4 and all(n <= seen + 2 for seen, n in listed), listed  # the window's and the pass's
    assert index.count() + index.rejected_count() == 31 * 2 + 6 * 5


def test_measure_freshness_reports_the_paced_phase_and_the_backlog_apart(weblogs_stack, tmp_path):
    from dataclasses import dataclass
    from pathlib import Path

    from shoplake.weblogs import measure_freshness

    @dataclass
    class LogOnly:
        access_log_path: Path

    log = tmp_path / "access.log"
    log.write_bytes(SAMPLE.read_bytes() * 10)  # 310 lines, 100 of them rejected
    index = LocalIndex()
    report = measure_freshness(
        LogOnly(log), index, lines_per_s=100.0, paced_seconds=1.0, source="generator", catch_up_seconds=1.0
    )
    out = report.as_dict()
    assert out["paced_lines"] == 100 and out["paced_lines_per_s"] == 100.0
    assert out["backlog"]["lines"] == 210 and out["backlog"]["source"] == "generator"
    assert report.shipped == 310 == report.indexed + report.rejected and report.rejected == 100
    assert index.count() == 210 and index.rejected_count() == 100
    assert len(report.freshness_s) == 100 and 0 <= out["freshness_p50_s"] <= out["freshness_p95_s"]
    assert out["backlog"]["drain_s"] >= 0 and out["backlog"]["lag_p95_s"] is not None


def test_the_agents_process_hands_its_failure_back_to_the_notebook(tmp_path):
    from shoplake._process import Worker
    from shoplake.errors import ConfigError
    from shoplake.weblogs._analysis import _AccessLogOnly, _ship_access_log

    with Worker(_ship_access_log, _AccessLogOnly(tmp_path / "none.log"), 1.0) as agent:
        with pytest.raises(ConfigError, match="access log"):
            agent.result()
