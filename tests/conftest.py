"""Shared fixtures: one local stack for the whole session, a resource prefix of this session's own."""

from __future__ import annotations

import os
import uuid

import pytest

# Each pytest session gets its own resource prefix, so parallel sessions on the one shared stack never collide.
# A developer can pin it (SHOPLAKE_PREFIX=p1 pytest ...) to look at the resources afterwards.
os.environ.setdefault("SHOPLAKE_PREFIX", "t" + uuid.uuid4().hex[:6])
os.environ["SHOPLAKE_TARGET"] = "local"
os.environ.pop("SHOPLAKE_RETAIL_FILE", None)  # tests run on the seeded synthetic shop, never a user's real file
for _key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
    del os.environ[_key]


@pytest.fixture(scope="session")
def local_stack():
    """The shared local stack; started if down, and stopped again at the end only if this session started it."""
    from shoplake import config, stack

    was_up = stack.status().up
    status = stack.ensure()
    config.clear_caches()
    yield status
    if not was_up:
        stack.down()


@pytest.fixture(scope="session")
def provisioned(local_stack):
    """Every resource of infra/stack.yaml applied under this session's prefix; yields infra outputs."""
    from shoplake import infra

    infra.apply()
    yield infra.outputs()
    infra.destroy()  # the emulator caps some resources per account (e.g. 50 Firehose streams): leave none behind


@pytest.fixture(scope="session")
def tiny_dataset():
    """The seeded synthetic shop at scale tiny (generated once, cached in data/generated/)."""
    from shoplake import datagen

    return datagen.load(scale="tiny", seed=42)
