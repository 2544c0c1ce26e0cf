"""aws-target contract tests: the aws code paths, run against moto in-process, with every boto3 call recorded.

No account is needed and none can be reached: ``moto.mock_aws`` answers every botocore request inside this process,
the credentials are fake, and ``SHOPLAKE_TARGET=aws`` selects the same code a real account would run. botocore
validates every request against its service model before moto sees it (``parameter_validation``, on by default), so a
wrongly shaped call fails the test; the recorder keeps (service, IAM prefix, operation, params, role) of each call for
the IAM sufficiency checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.aws

AWS_TEST_REGION = "eu-west-1"  # not us-east-1, so a hard-coded default region shows up as a failure


@dataclass(frozen=True)
class Call:
    service: str  # botocore service name: "dynamodb", "firehose", "opensearch", ...
    iam_prefix: str  # the IAM action prefix (the model's signingName or endpointPrefix): "dynamodb", "es", ...
    operation: str  # "BatchWriteItem"
    params: dict[str, Any]
    role: str | None  # the role whose code made the call (CallRecorder.as_role), None for the user's own session

    @property
    def action(self) -> str:
        return f"{self.iam_prefix}:{self.operation}"


@dataclass
class CallRecorder:
    """Every boto3 call made while the fixture is active, attributed to the role set by :meth:`as_role`."""

    calls: list[Call] = field(default_factory=list)
    _role: str | None = None

    @contextlib.contextmanager
    def as_role(self, role: str) -> Iterator[None]:
        previous, self._role = self._role, role
        try:
            yield
        finally:
            self._role = previous

    def record(self, client: Any, operation: str, params: dict[str, Any]) -> None:
        model = client.meta.service_model
        prefix = model.signing_name or model.endpoint_prefix
        self.calls.append(Call(model.service_name, prefix, operation, dict(params), self._role))

    def operations(self, role: str | None = None) -> set[str]:
        """``{"dynamodb:BatchWriteItem", ...}`` made by ``role`` (all roles when None)."""
        return {c.action for c in self.calls if role is None or c.role == role}

    def clear(self) -> None:
        self.calls.clear()


def _keep_record(test: str, recorder: CallRecorder) -> None:
    """With ``SHOPLAKE_AWS_CALLS=<file>``, append the test's operations (for the per-notebook list of exercised calls)."""
    import json
    import os

    path = os.environ.get("SHOPLAKE_AWS_CALLS")
    if path:
        with open(path, "a") as out:
            out.write(
                json.dumps({"test": test, "operations": sorted({f"{c.service}.{c.operation}" for c in recorder.calls})})
                + "\n"
            )


@pytest.fixture
def aws_target(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, request: pytest.FixtureRequest
) -> Iterator[CallRecorder]:
    """``SHOPLAKE_TARGET=aws`` against moto in-process; yields the recorder of every boto3 call."""
    import botocore.client
    from moto import mock_aws

    from shoplake import config

    for key in list(__import__("os").environ):
        if key.startswith("AWS_ENDPOINT_URL") or key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SHOPLAKE_TARGET", "aws")
    monkeypatch.setenv("AWS_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_TEST_REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SHOPLAKE_HOME", str(tmp_path / "home"))
    recorder = CallRecorder()
    original = botocore.client.BaseClient._make_api_call

    def recording(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        recorder.record(client, operation_name, api_params)
        return original(client, operation_name, api_params)

    config.clear_caches()
    with mock_aws():
        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
        try:
            yield recorder
        finally:
            monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", original)
            config.clear_caches()
            _keep_record(request.node.nodeid, recorder)
