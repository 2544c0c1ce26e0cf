"""Tailing and checkpoints of the shipping agent: partial lines, rotation (both styles), inode reuse, restarts."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest

from shoplake.agent._checkpoint import CheckpointStore, FlowState
from shoplake.agent._servers import RotatingLog, simulate_servers
from shoplake.agent._tail import Tailer


def _drain(tailer: Tailer, max_lines: int = 1000) -> list[str]:
    """Scan, then read and advance until nothing is left (what the agent does per pass)."""
    tailer.scan()
    out: list[str] = []
    while lines := tailer.read(max_lines, 1 << 20):
        out.extend(line.data.decode() for line in lines)
        tailer.advance(lines)
    return out


def _append(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)


def test_partial_line_waits_for_its_newline(tmp_path):
    log = tmp_path / "app.log"
    _append(log, "one\ntw")
    tailer = Tailer([str(tmp_path / "app.log*")], FlowState())
    assert _drain(tailer) == ["one"]
    assert _drain(tailer) == []
    _append(log, "o\r\nthree\n")
    assert _drain(tailer) == ["two", "three"]


def test_read_respects_the_line_budget_and_resumes_exactly(tmp_path):
    log = tmp_path / "app.log"
    _append(log, "".join(f"line {i}\n" for i in range(10)))
    tailer = Tailer([str(log)], FlowState())
    tailer.scan()
    first = tailer.read(3, 1 << 20)
    assert [line.data for line in first] == [b"line 0", b"line 1", b"line 2"]
    assert first[-1].end == len(b"line 0\nline 1\nline 2\n")
    tailer.advance(first)
    assert _drain(tailer) == [f"line {i}" for i in range(3, 10)]


def test_rename_rotation_mid_file_loses_and_repeats_nothing(tmp_path):
    log = tmp_path / "orders.csv"
    _append(log, "a1\na2\na3\n")
    tailer = Tailer([str(tmp_path / "orders.csv*")], FlowState())
    tailer.scan()
    batch = tailer.read(2, 1 << 20)
    tailer.advance(batch)
    os.rename(log, tmp_path / "orders.csv.1")
    _append(tmp_path / "orders.csv.1", "a4\n")  # the server wrote one more line before it reopened
    _append(log, "b1\nb2\n")
    assert _drain(tailer) == ["a3", "a4", "b1", "b2"]


def test_copytruncate_ships_the_tail_from_the_copy_and_the_new_lines_once(tmp_path):
    log = tmp_path / "orders.csv"
    _append(log, "a1\na2\na3\n")
    tailer = Tailer([str(tmp_path / "orders.csv*")], FlowState())
    tailer.scan()
    tailer.advance(tailer.read(2, 1 << 20))
    shutil.copyfile(log, tmp_path / "orders.csv.1")
    os.truncate(log, 0)
    _append(log, "b1\nb2\n")
    assert _drain(tailer) == ["a3", "b1", "b2"]


def test_a_copy_seen_before_the_truncation_waits_for_it(tmp_path):
    log = tmp_path / "orders.csv"
    _append(log, "a1\na2\n")
    tailer = Tailer([str(tmp_path / "orders.csv*")], FlowState())
    assert _drain(tailer) == ["a1", "a2"]
    shutil.copyfile(log, tmp_path / "orders.csv.1")  # logrotate copied ...
    assert _drain(tailer) == []  # ... the copy is not shipped again
    os.truncate(log, 0)  # ... and truncated
    _append(log, "b1\n")
    assert _drain(tailer) == ["b1"]


def test_a_copy_still_being_written_waits_until_it_is_complete(tmp_path):
    """A scan may list the copy while logrotate still writes it: shorter than what was shipped, it is not new."""
    log = tmp_path / "access.log"
    _append(log, "a1\na2\na3\na4\n")
    tailer = Tailer([str(tmp_path / "access.log*")], FlowState())
    assert _drain(tailer) == ["a1", "a2", "a3", "a4"]
    copy = tmp_path / "access.log.1"
    _append(copy, "a1\na2\n")  # the copy so far ...
    os.truncate(log, 0)  # (the listing raced the truncation)
    _append(log, "b1\n")
    assert _drain(tailer) == ["b1"]  # ... is not shipped from its start
    _append(copy, "a3\na4\na5\n")  # complete, with a line written just before the truncation
    assert _drain(tailer) == ["a5"]


def test_a_file_replaced_with_other_content_is_read_from_the_start(tmp_path):
    log = tmp_path / "app.log"
    _append(log, "old line 1\nold line 2\n")
    tailer = Tailer([str(log)], FlowState())
    assert len(_drain(tailer)) == 2
    with open(log, "r+") as handle:  # same inode, truncated and rewritten past the old offset
        handle.truncate(0)
        handle.write("NEW line 1\nNEW line 2\nNEW line 3\n")
    assert _drain(tailer) == ["NEW line 1", "NEW line 2", "NEW line 3"]


def test_checkpoint_survives_a_restart_and_is_written_atomically(tmp_path):
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    _append(log, "l1\nl2\nl3\n")
    store = CheckpointStore(tmp_path / "state" / "checkpoints.json")
    tailer = Tailer([str(log)], store.flow("f"))
    tailer.scan()
    tailer.advance(tailer.read(2, 1 << 20))
    store.save()
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["checkpoints.json"]  # no temp file left
    _append(log, "l4\n")
    restarted = CheckpointStore(tmp_path / "state" / "checkpoints.json")
    state = restarted.flow("f")
    assert [fs.offset for fs in state.files.values()] == [len(b"l1\nl2\n")]
    assert _drain(Tailer([str(log)], state)) == ["l3", "l4"]


def test_too_long_lines_are_flagged_not_split(tmp_path):
    log = tmp_path / "app.log"
    _append(log, "short\n" + "x" * 5000 + "\nafter\n")
    tailer = Tailer([str(log)], FlowState(), max_line_bytes=1000)
    tailer.scan()
    lines = tailer.read(10, 1 << 20)
    assert [(len(line.data) > 1000, line.too_long) for line in lines] == [(False, False), (True, True), (False, False)]
    assert lines[2].data == b"after"


def test_rotating_log_both_styles_keeps_every_line_once(tmp_path):
    writer = RotatingLog(tmp_path / "access.log", rotation="both", rotate_lines=7)
    for i in range(50):
        writer.write(f"request {i}")
    writer.close()
    assert set(writer.rotations) == {"rename", "copytruncate"}
    found = Counter()
    for path in tmp_path.iterdir():
        found.update(path.read_text().splitlines())
    assert found == Counter(f"request {i}" for i in range(50))


def test_tailing_while_servers_write_and_rotate_reads_each_line_once(tmp_path):
    """The servers write (and rotate both ways, often) while a tailer follows: every line read exactly once."""
    lines = [
        f'10.0.{i % 7}.{i % 5} - - [01/Dec/2010:08:{i // 60 % 60:02d}:{i % 60:02d} +0000] "GET /p/{i} HTTP/1.1" '
        f'200 {i} "-" "test"'
        for i in range(4000)
    ]
    done = threading.Event()
    outcome = {}

    def write():
        outcome["run"] = simulate_servers(None, lines, tmp_path, servers=2, rotation="both", rotate_lines=150)
        done.set()

    tailer = Tailer([str(tmp_path / "server-*" / "access.log*")], FlowState())
    thread = threading.Thread(target=write)
    thread.start()
    read: list[str] = []
    while True:
        finished = done.is_set()
        got = _drain(tailer, max_lines=97)
        read.extend(got)
        if finished and not got:
            break
    thread.join()
    rotations = outcome["run"].rotations
    assert rotations["rename"] > 3 and rotations["copytruncate"] > 3
    assert Counter(read) == Counter(lines)


def test_a_rotation_with_a_copy_warns_of_nothing_and_a_truncation_without_one_reports_the_bytes_lost(tmp_path, caplog):
    import logging
    import time

    from shoplake.agent._checkpoint import FileState

    caplog.set_level(logging.INFO, logger="shoplake.agent")
    log = tmp_path / "orders.csv"
    _append(log, "a1\na2\na3\n")
    tailer = Tailer([str(tmp_path / "orders.csv*")], FlowState())
    tailer.scan()
    tailer.advance(tailer.read(2, 1 << 20))
    shutil.copyfile(log, tmp_path / "orders.csv.1")  # copytruncate: "a3\n" is not shipped yet, the copy has it
    os.truncate(log, 0)
    assert _drain(tailer) == ["a3"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert tailer.unshipped_orphans() == []

    _append(log, "b1\nb2\n")
    tailer.scan()
    tailer.advance(tailer.read(1, 1 << 20))  # "b2\n" (3 bytes) not shipped ...
    os.truncate(log, 0)  # ... and the file truncated without a copy
    _append(log, "c1\n")
    assert _drain(tailer) == ["c1"]
    assert [o.unshipped for o in tailer.unshipped_orphans()] == [3]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a copy may still come
    state = tailer.state
    restored = FileState.from_json(state.orphans[-1].to_json())
    assert restored.unshipped == 3
    legacy = {k: v for k, v in state.orphans[-1].to_json().items() if k != "unshipped"}
    assert FileState.from_json(legacy).unshipped == 0  # a checkpoint written before the field loads

    forgotten = state.prune_orphans(now=time.time() + 30 * 24 * 3600)  # a month later: forgotten ...
    assert [o.unshipped for o in forgotten] == [3] and state.orphans == []
    for orphan in forgotten:  # ... and the tailer's scan reports those it forgets as lost
        state.orphans.append(orphan)
        orphan.updated = time.time() - 30 * 24 * 3600
    tailer.scan()
    lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lost) == 1 and "last 3 bytes were never shipped (lost)" in lost[0]


@pytest.mark.parametrize(
    "stamp",
    [
        "10/Oct/2000:13:55:36 -0700",
        "01/Dec/2010:08:26:00 +0000",
        "31/Dec/2010:23:59:59 +0530",
        "29/Feb/2012:12:00:07 -1200",
        "01/Jan/2011:00:00:60 +0000",  # a leap second: strptime's pattern reads it, then refuses it
        "01/Jan/2011:00:00:61 +0000",
        "01/Jan/2011:00:00:62 +0000",
        "30/Feb/2011:10:00:00 +0000",  # no such day
        "01/Foo/2011:10:00:00 +0000",
        "1/Jan/2011:10:00:00 +0000",  # one-digit day: strptime takes it, the fast path does not
        "01/Jan/2011:10:00:0x +0000",
        "01/Jan/2011:10:00:٣٣ +0000",  # Arabic-Indic digits: str.isdigit, not ASCII
        "01/Jan/2011:10:00:00 +2500",
        "01/Jan/2011:24:00:00 +0000",
        "01/Jan/2011:23:60:00 +0000",
        "01/Jan/2011:-1:00:00 +0000",
        "01/Jan/2011 10:00:00 +0000",
        "",
    ],
)
def test_a_log_lines_time_is_strptimes(stamp):
    """issue 13: the simulated servers order millions of access-log lines by time with each day and zone parsed
    once: the same epoch seconds as strptime (or None where strptime refuses), for every shape of time."""
    from datetime import datetime

    from shoplake.agent._servers import _access_time

    try:
        expected = datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except ValueError:
        expected = None
    line = f'203.0.113.9 - - [{stamp}] "GET / HTTP/1.1" 200 5'
    assert _access_time(line) == expected
    assert _access_time(line) == expected  # the day remembered
    if expected is not None and len(stamp) == 26:  # another time of the same day, its day now remembered
        other = line.replace(stamp[12:20], "00:00:01") if stamp[12:20] != "00:00:01" else line
        assert _access_time(other) == datetime.strptime(other[17:43], "%d/%b/%Y:%H:%M:%S %z").timestamp()
