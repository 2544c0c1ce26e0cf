"""What the processes a benchmark spawns (the mapping's poller processes) load at start-up: the folder
``_child_requests`` on their PYTHONPATH (its ``sitecustomize.py``) and the environment that switches it on."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child_requests")


@contextlib.contextmanager
def hooked(folder_variable: str, **variables: str) -> Iterator[str]:
    """While the block runs, processes started from this one load ``_child_requests/sitecustomize.py`` with
    ``variables`` set and ``folder_variable`` naming a temporary folder (yielded) for what they write at exit; the
    environment is put back afterwards and the folder removed."""
    names = ("PYTHONPATH", folder_variable, *variables)
    saved = {k: os.environ.get(k) for k in names}
    with tempfile.TemporaryDirectory() as folder:
        os.environ.update(variables)
        os.environ[folder_variable] = folder
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HOOK, saved["PYTHONPATH"]) if p)
        try:
            yield folder
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
