"""A producer in a process of its own: ``Worker(fn, *args)`` runs ``fn(*args)`` in a spawned Python process.

The notebooks' pipelines put events and consume them on one machine. With both in the notebook's process they share
one interpreter lock, so one core does the work of both; the producer here (simulated web servers and the shipping
agent, the stream replay) runs beside the consumer as it would on real servers. The process is spawned, not forked:
the notebook's process has threads (botocore pools, followers, tqdm) that a fork would copy mid-flight. It inherits
the environment, so it talks to the same target (``SHOPLAKE_*`` settings are exported by ``apply_parameters``).

``fn`` and its arguments must be picklable (a module-level function). Its result, or the exception it raised, comes
back through a pipe; leaving the ``with`` block stops the process if it still runs (a stall or an error here).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from shoplake.errors import ShoplakeError

__all__ = ["ThreadWorker", "Worker", "WorkerError"]

EXIT_GRACE_S = 5.0  # a worker that has answered exits on its own within this (it only returns from fn)


class WorkerError(ShoplakeError):
    """The worker's process ended without an answer, or its exception could not be sent back as it was."""


def _run(answer: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        answer.send(("ok", fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - handed to the process that started this one, which raises it
        try:
            answer.send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its type and message then
            answer.send(("error", WorkerError(f"{fn.__name__} failed: {type(exc).__name__}: {exc}")))
    finally:
        answer.close()


class _Answering:
    """What both workers share: ``_outcome`` is ``("ok", value)`` or ``("error", exception)`` once :meth:`done`."""

    _outcome: tuple[str, Any] | None = None
    name = "shoplake-worker"

    def done(self, timeout: float = 0.0) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        """Wait for the worker's return value; its exception is raised here."""
        while not self.done(1.0):
            pass
        assert self._outcome is not None
        status, value = self._outcome
        if status == "error":
            raise value
        return value

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()


class Worker(_Answering):
    """``fn(*args)`` in a spawned process; :meth:`done` polls, :meth:`result` waits and returns (or raises)."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "shoplake-worker") -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self._answers, answer = context.Pipe(duplex=False)
        self._fn_name = getattr(fn, "__name__", repr(fn))
        self._process = context.Process(target=_run, args=(answer, fn, args), name=name, daemon=True)
        self._process.start()
        answer.close()  # this process only reads: the pipe reports end-of-file if the worker dies

    def done(self, timeout: float = 0.0) -> bool:
        """True once the worker has answered, or has died without answering (waits up to ``timeout`` s); then
        :meth:`result` returns the answer or raises (a :class:`WorkerError` for a process that died)."""
        if self._outcome is not None:
            return True
        if self._answers.poll(timeout):
            try:
                self._outcome = self._answers.recv()
            except EOFError:
                self._process.join()
                self._outcome = (
                    "error",
                    WorkerError(
                        f"the process running {self._fn_name} ended (exit code {self._process.exitcode}) without a "
                        "result"
                    ),
                )
            return True
        return False

    def stop(self) -> None:
        """Reap the worker: one that has answered gets a few seconds to exit on its own (its exit handlers run); one
        that has not is terminated."""
        if self._outcome is not None:
            self._process.join(EXIT_GRACE_S)
        if self._process.is_alive():
            self._process.terminate()
        self._process.join()
        self._answers.close()


class ThreadWorker(_Answering):
    """:class:`Worker`'s verbs for ``fn(*args)`` in a daemon thread of this process, for when the caller's process has
    CPU to spare. A thread cannot be stopped: leaving the block while it runs leaves it to finish on its own."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "shoplake-worker") -> None:
        self._finished = threading.Event()
        self.name = name

        def run() -> None:
            try:
                self._outcome = ("ok", fn(*args))
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread by result()
                self._outcome = ("error", exc)
            finally:
                self._finished.set()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def done(self, timeout: float = 0.0) -> bool:
        return self._finished.wait(timeout)

    def stop(self) -> None:
        """Nothing to do: the thread is a daemon (see the class docstring)."""
