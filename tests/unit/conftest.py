"""Unit tests run without the local services (no emulator, no PostgreSQL, no Spark): seconds, anywhere.

A unit test that reaches for the stack fails at once and says where it belongs (tests/integration/).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_local_services(monkeypatch):
    from shoplake import local_services

    def refuse(*_args, **_kwargs):
        raise AssertionError("a unit test needs the local services: move it to tests/integration/")

    for name in ("ensure", "moto_url", "status"):
        monkeypatch.setattr(local_services, name, refuse)
