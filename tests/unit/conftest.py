"""Unit tests run without the local stack (no emulator, no PostgreSQL, no Spark): seconds, anywhere.

A unit test that reaches for the stack fails at once and says where it belongs (tests/integration/).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_local_stack(monkeypatch):
    from shoplake import stack

    def refuse(*_args, **_kwargs):
        raise AssertionError("a unit test needs the local stack: move it to tests/integration/")

    for name in ("ensure", "moto_url", "status"):
        monkeypatch.setattr(stack, name, refuse)
