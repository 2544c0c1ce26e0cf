"""Python's cyclic garbage collector, set for processes that hold many objects and make many more.

CPython runs a young-generation collection every 700 net allocations and walks every object that survived into the
older generations again and again. The emulator processes and a consumer in the kernel allocate thousands of objects
per request (parsed JSON, moto's attribute values, items that stay in the table), almost none of them in reference
cycles: profiled on the order pipeline's own DynamoDB requests (``bench/profile_dynamodb.py`` replay, small scale),
collection took 5.1 of the emulator's 26.2 CPU seconds, in 7,782 collections; with :data:`THRESHOLDS` it took 1.4 s in
168. Cycles are still collected, in larger, rarer steps.

- :func:`tune_process`: for a process that serves (the emulator): raised thresholds, and what it has built at start-up
  (moto's modules, its service models) moved out of the collector's sight (:func:`gc.freeze`), and after that what
  survives each full collection (the stored items).
- :func:`relaxed`: for a long step in someone else's process (the notebook kernel): raised thresholds and the objects
  that exist at entry (a million-line dataset) frozen while the block runs; both put back at exit.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

# generation 0 every 20,000 net allocations (CPython: 700); generations 1 and 2 every 10 collections of the one below
THRESHOLDS = (20_000, 10, 10)

_lock = threading.Lock()
_depth = 0
_saved: tuple[tuple[int, ...], bool] | None = None  # (thresholds, froze) to put back when the outermost block ends


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` hook: after a full collection, freeze what survived it."""
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()


def tune_process() -> None:
    """Set :data:`THRESHOLDS` for the rest of this process, freeze what exists now (call once, after start-up), and
    from now on freeze what survives each full collection.

    A server's survivors are what it stores (a million-item table holds tens of millions of objects), and every full
    collection walked all of them again: at the workbook's full scale the DynamoDB emulator spent a sixth of its CPU
    collecting (py-spy --native, ``gc_collect_main``); freezing the survivors cut its CPU for the full ingest from
    244.7 to 223.5 s. Frozen objects are still freed by reference counting when they are dropped; only garbage in
    reference cycles among them stays until the process ends."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


@contextlib.contextmanager
def relaxed() -> Iterator[None]:
    """Collect less often while the block runs; the objects that exist at entry are not walked by its collections.

    Re-entrant and thread-safe: only the outermost block (across threads) changes and restores the settings. A
    process that froze objects itself (``gc.get_freeze_count() > 0``) keeps its own freeze: nothing is frozen or
    unfrozen then, only the thresholds change."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            froze = gc.get_freeze_count() == 0
            _saved = (gc.get_threshold(), froze)
            if froze:
                gc.freeze()
            gc.set_threshold(*THRESHOLDS)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                thresholds, froze = _saved
                _saved = None
                gc.set_threshold(*thresholds)
                if froze:
                    gc.unfreeze()
