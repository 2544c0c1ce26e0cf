"""Real headless Chromium (Debian's package, driven by playwright) for the browser tests; skipped with a reason if absent."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# as root, without sandbox; no background networking (this machine's closed network refuses it)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium():
    """``launch`` keyword arguments for playwright's chromium: Debian's executable and the flags above."""
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.skip("Debian chromium is not installed: run `make browser` (apt-get install chromium)")
    return {"executable_path": path, "args": CHROMIUM_ARGS, "headless": True}
