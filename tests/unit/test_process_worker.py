"""shoplake._process.Worker: a function in a spawned process, its result or its exception handed back."""

from __future__ import annotations

import os
import time

import pytest

from shoplake._process import ThreadWorker, Worker, WorkerError
from shoplake.errors import DataError


def _pid_and_sum(values: list[int]) -> tuple[int, int]:
    return os.getpid(), sum(values)


def _refuse(what: str) -> None:
    raise DataError(f"bad input: {what}")


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("held a lock")
        self.lock = __import__("threading").Lock()


def _raise_unpicklable() -> None:
    raise _Unpicklable()


def _die() -> None:
    os._exit(3)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_result_comes_from_another_process():
    with Worker(_pid_and_sum, list(range(10))) as worker:
        pid, total = worker.result()
    assert total == 45 and pid != os.getpid()


def test_a_worker_that_answered_exits_on_its_own_when_the_block_ends():
    with Worker(_pid_and_sum, [1]) as worker:
        worker.result()
    assert worker._process.exitcode == 0  # not terminated (-15): its exit handlers ran


def test_the_workers_exception_is_raised_in_the_caller():
    with Worker(_refuse, "x") as worker, pytest.raises(DataError, match="bad input: x"):
        worker.result()


def test_an_exception_that_cannot_be_pickled_still_reaches_the_caller_by_name():
    with Worker(_raise_unpicklable) as worker, pytest.raises(WorkerError, match="_Unpicklable: held a lock"):
        worker.result()


def test_a_worker_that_dies_without_answering_is_an_error_not_a_hang():
    with Worker(_die) as worker, pytest.raises(WorkerError, match="exit code 3"):
        worker.result()


def test_leaving_the_block_stops_a_worker_still_running():
    began = time.perf_counter()
    with Worker(_sleep, 60.0) as worker:
        assert not worker.done(0.2)
        process = worker._process
    assert not process.is_alive() and time.perf_counter() - began < 30


def test_the_thread_worker_has_the_same_verbs():
    with ThreadWorker(_pid_and_sum, [1, 2]) as worker:
        assert worker.result() == (os.getpid(), 3)
    with ThreadWorker(_refuse, "y") as worker, pytest.raises(DataError, match="bad input: y"):
        worker.result()
    with ThreadWorker(_sleep, 0.3) as worker:
        assert not worker.done(0.0) and worker.done(5.0)
