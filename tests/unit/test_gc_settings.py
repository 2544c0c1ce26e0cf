"""shoplake._gc: the collector's settings for long steps are put back exactly, nested and across threads."""

from __future__ import annotations

import gc
import threading

from shoplake import _gc


def test_relaxed_raises_thresholds_freezes_and_puts_both_back():
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    kept = [object() for _ in range(1000)]
    with _gc.relaxed():
        assert gc.get_threshold() == _gc.THRESHOLDS
        # what existed at entry is out of the collector's sight (frozen objects that die leave the count, so ≥)
        assert gc.get_freeze_count() >= len(kept)
        with _gc.relaxed():  # nested: nothing changes, nothing is put back early
            assert gc.get_threshold() == _gc.THRESHOLDS and gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold() == _gc.THRESHOLDS and gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_relaxed_is_put_back_after_an_error_and_by_the_last_thread():
    before = gc.get_threshold()
    try:
        with _gc.relaxed():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    inside, leave = threading.Event(), threading.Event()

    def other():
        with _gc.relaxed():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    with _gc.relaxed():
        pass
    assert gc.get_threshold() == _gc.THRESHOLDS  # the other thread's block still runs
    leave.set()
    thread.join(10)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_relaxed_keeps_a_freeze_the_process_made_itself():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with _gc.relaxed():
            assert gc.get_threshold() == _gc.THRESHOLDS
        assert gc.get_freeze_count() > frozen // 2 > 0  # not unfrozen by the block (some frozen objects may die)
    finally:
        gc.unfreeze()


def test_cycles_are_still_collected_automatically_inside_a_relaxed_block():
    import weakref

    class Node:
        pass

    gone = []
    with _gc.relaxed():
        for n in range(20 * _gc.THRESHOLDS[0]):  # cycles only the collector can free, far more than one threshold
            a, b = Node(), Node()
            a.other, b.other = b, a
            if n % 1000 == 0:
                weakref.finalize(a, gone.append, n)
        del a, b
        freed_inside = len(gone)
    assert freed_inside >= 10  # freed by the block's own (rarer) collections, without gc.collect()


TUNED = """
import gc, json, weakref
from shoplake import _gc
_gc.tune_process()
after_start = gc.get_freeze_count()
stored = [[i] for i in range(50_000)]  # what a server keeps (a table's items; lists are always tracked)
gc.collect()  # a full collection: its survivors are frozen
frozen = gc.get_freeze_count() - after_start

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after that
gone = weakref.ref(a)
del a, b
gc.collect(1)  # young collections still find it
print(json.dumps({"thresholds": gc.get_threshold(), "frozen": frozen, "cycle_collected": gone() is None}))
"""


def test_a_tuned_process_freezes_what_survives_a_full_collection_and_still_collects_young_cycles():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TUNED], capture_output=True, text=True, check=True).stdout
    answer = json.loads(out)
    assert answer["thresholds"] == list(_gc.THRESHOLDS)
    assert answer["frozen"] >= 50_000 and answer["cycle_collected"]
