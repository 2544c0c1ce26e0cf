"""The local event-source mapping's pollers read a shard one GetRecords ahead of the batch being delivered
(``lambda_local._ReadAhead``): the next read is in flight meanwhile, the reads come out in order with an instant
taken before each one began, a reader's error is raised where its read would have come, and closing ends the
thread."""

from __future__ import annotations

import threading
import time

import pytest

from shoplake.lambda_local import _ReadAhead

WAIT_S = 5.0


class _Reader:
    """A stand-in for ``streams.read_batches``: ``reads`` answers ``(records, behind)``, each after ``delay_s``;
    records when each read began and sets ``started[k]`` then."""

    def __init__(self, reads: list, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.reads, self.delay_s, self.fail_at = reads, delay_s, fail_at
        self.began: list[float] = []
        self.started = [threading.Event() for _ in range(len(reads) + 1)]

    def __iter__(self):
        for k, read in enumerate(self.reads):
            self.began.append(time.monotonic())
            self.started[k].set()
            time.sleep(self.delay_s)
            if k == self.fail_at:
                raise RuntimeError(f"read {k} failed")
            yield read


def test_the_next_read_is_in_flight_while_a_batch_is_delivered():
    reader = _Reader([([1], 5), ([2], 0), ([], 0)], delay_s=0.01)
    ahead = _ReadAhead(iter(reader), name="test-read-ahead")
    try:
        records, behind, _ = next(ahead)
        assert (records, behind) == ([1], 5)
        # "delivering" read 0: read 1 starts without another next()
        assert reader.started[1].wait(WAIT_S), "the second read did not start while the first batch was delivered"
        assert [r for r, _, _ in ahead] == [[2], []]
    finally:
        ahead.close()


def test_reads_come_in_order_each_with_an_instant_before_it_began():
    reads = [([k], k) for k in range(20)]
    reader = _Reader(reads)
    ahead = _ReadAhead(iter(reader), name="test-read-ahead")
    got = list(ahead)
    assert [(r, b) for r, b, _ in got] == reads
    assert all(taken <= began for (_, _, taken), began in zip(got, reader.began, strict=True))
    with pytest.raises(StopIteration):
        next(ahead)


def test_a_reader_error_is_raised_where_its_read_would_have_come():
    reader = _Reader([([1], 0), ([2], 0), ([3], 0)], fail_at=1)
    ahead = _ReadAhead(iter(reader), name="test-read-ahead")
    assert next(ahead)[0] == [1]
    with pytest.raises(RuntimeError, match="read 1 failed"):
        next(ahead)
    with pytest.raises(StopIteration):  # and nothing after it (a later call does not wait for a read)
        next(ahead)


def test_close_ends_the_thread_when_nobody_takes_the_reads_any_more():
    reader = _Reader([([k], 0) for k in range(100)])
    ahead = _ReadAhead(iter(reader), name="test-read-ahead")
    next(ahead)
    assert reader.started[2].wait(WAIT_S)  # read 1 waits to be taken, read 2 is held: the thread waits to hand it
    time.sleep(0.2)
    assert len(reader.began) == 3  # never more than two reads ahead of the consumer
    ahead.close()
    ahead._thread.join(WAIT_S)
    assert not ahead._thread.is_alive()
    assert len(reader.began) == 3
    with pytest.raises(StopIteration):  # closed: at most the read already waiting comes out, then the end
        while True:
            next(ahead)
