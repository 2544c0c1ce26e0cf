"""Each Lambda zip infra builds imports and handles a sample event in the Lambda runtime's Python.

The runtime of resources.yaml's functions is python3.12 with the standard library plus boto3/botocore (no setuptools, no
pkg_resources, nothing else). So each zip (``infra.lambda_package``, exactly what ``infra apply`` uploads) is unpacked
into a temp dir and its handler run by a clean ``python3.12 -I -S`` interpreter, whose only other path entry is a temp
dir of symlinks to this venv's pure-Python boto3, botocore, jmespath, s3transfer, dateutil, urllib3 and six. The
handlers reach their boto3 calls against a moto server on loopback in this process (the endpoint given the way the
emulator gives it, ``AWS_ENDPOINT_URL``, which the handlers accept only for loopback). The rate detector's zip and its
numpy/krcf layer are tested in ``test_rate_detector_runtime.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from shoplake import infra, resources

pytestmark = pytest.mark.aws

RUNTIME = "python3.12"
RUNTIME_LIBS = ("boto3", "botocore", "jmespath", "s3transfer", "dateutil", "urllib3", "six")
REGION = "eu-west-1"

RUNNER = r"""
import importlib, importlib.util, json, sys
code_dir, deps_dir, handler_path, event_json = sys.argv[1:5]
sys.path[:0] = [code_dir, deps_dir]
assert importlib.util.find_spec("pkg_resources") is None and importlib.util.find_spec("setuptools") is None
assert sys.version_info[:2] == (3, 12), sys.version
module_name, _, function = handler_path.rpartition(".")
module = importlib.import_module(module_name)
result = getattr(module, function)(json.loads(event_json), None)
allowed = (code_dir, deps_dir, sys.base_prefix, sys.prefix)
for name, mod in list(sys.modules.items()):  # nothing may come from outside the zip, the deps and the stdlib
    where = getattr(mod, "__file__", None)
    if name not in ("__main__", "__mp_main__") and where and not where.startswith(allowed):
        raise SystemExit(f"{name} imported from {where}, outside the Lambda runtime")
print("RESULT " + json.dumps(result, default=str))
"""


def _candidates() -> list[str]:
    """python3.12 on PATH, then pyenv's installs (a pyenv shim fails when 3.12 is installed but not selected)."""
    import glob
    import os

    found = [shutil.which(RUNTIME)] if shutil.which(RUNTIME) else []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", "3.12*", "bin", RUNTIME)), reverse=True)
    return found


@pytest.fixture(scope="module")
def runtime_python() -> str:
    tried = []
    for path in _candidates():
        check = subprocess.run([path, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if check.returncode == 0 and b"(3, 12)" in check.stdout:
            return path
        tried.append(f"{path}: {check.stderr.decode().strip()[:80]}")
    pytest.skip(
        f"no working {RUNTIME} (the Lambda runtime's Python) here; tried {tried or 'PATH and pyenv'}: "
        "install it (e.g. `pyenv install 3.12`) to run this test"
    )


@pytest.fixture(scope="module")
def deps_dir(tmp_path_factory) -> Path:
    """boto3 and its pure-Python dependencies, as symlinks to this venv's copies (what the runtime provides)."""
    out = tmp_path_factory.mktemp("runtime-libs")
    for name in RUNTIME_LIBS:
        spec = importlib.util.find_spec(name)
        assert spec and spec.origin, f"{name} is not installed in the venv"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (out / source.name).symlink_to(source)
    return out


@pytest.fixture(scope="module")
def moto_url() -> Any:
    """A moto server on a free loopback port, in this process (threaded)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def clients(moto_url, monkeypatch):
    import boto3

    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    kwargs = dict(
        endpoint_url=moto_url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return {name: boto3.client(name, **kwargs) for name in ("dynamodb", "sqs", "sns")}


def run_zip(
    runtime_python: str, deps_dir: Path, tmp_path: Path, name: str, event: Any, env: dict[str, str]
) -> dict[str, Any]:
    """Unpack the zip infra builds for function ``name`` and call its handler with ``event`` under the runtime."""
    resource = infra.find("lambda_function", name)
    code = tmp_path / f"{name}-code"
    with zipfile.ZipFile(__import__("io").BytesIO(infra.lambda_package(resource))) as archive:
        archive.extractall(code)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    environment = {
        "PATH": "/usr/bin:/bin",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "NO_PROXY": "127.0.0.1,localhost",
        **env,
    }
    done = subprocess.run(
        [
            runtime_python,
            "-I",
            "-S",
            str(runner),
            str(code),
            str(deps_dir),
            resource.props["handler"],
            json.dumps(event),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, f"{name} failed under {RUNTIME}:\n{done.stderr[-3000:]}"
    line = [out for out in done.stdout.splitlines() if out.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def kinesis_event(payloads: list[bytes]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "kinesis": {
                    "data": base64.b64encode(p).decode(),
                    "sequenceNumber": str(100 + i),
                    "partitionKey": "k",
                    "approximateArrivalTimestamp": 1.7e9,
                },
                "eventID": f"shardId-000000000000:{100 + i}",
                "eventSourceARN": f"arn:aws:kinesis:{REGION}:123456789012:stream/shoplake-rt-orders",
            }
            for i, p in enumerate(payloads)
        ]
    }


def test_order_history_zip_writes_and_dead_letters_under_the_runtime(runtime_python, deps_dir, tmp_path, clients):
    dynamodb, sqs = clients["dynamodb"], clients["sqs"]
    table = "shoplake-rt-order_history"
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        **resources.table_keys(resources.find("dynamodb_table", "order_history").props),
    )
    queue = sqs.create_queue(QueueName="shoplake-rt-order-history-dlq")["QueueUrl"]
    line = {
        "InvoiceNo": "536365",
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART",
        "Quantity": 6,
        "InvoiceDate": "2010-12-01T08:26:00Z",
        "UnitPrice": 2.55,
        "CustomerID": "17850",
        "Country": "United Kingdom",
        "LineNo": 0,
    }
    cancel = {**line, "InvoiceNo": "C536379", "Quantity": -6, "InvoiceDate": "2010-12-01T09:41:00Z"}
    event = kinesis_event([json.dumps(line).encode(), b"{not json", json.dumps(cancel).encode()])
    env = {"TABLE_NAME": table, "DEAD_LETTER_QUEUE_URL": queue, "AWS_ENDPOINT_URL": clients["sqs"].meta.endpoint_url}
    result = run_zip(runtime_python, deps_dir, tmp_path, "order-history", event, env)
    assert result["batchItemFailures"] == []
    counts = result["counts"]
    assert (counts["written"], counts["dead_lettered"], counts["cancellations_matched"]) == (2, 1, 1)
    items = dynamodb.scan(TableName=table)["Items"]
    assert {i["event_id"]["S"] for i in items} == {"536365-0", "C536379-0"}
    assert [i["cancelled_by"]["S"] for i in items if "cancelled_by" in i] == ["C536379-0"]
    dead = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(dead) == 1 and json.loads(dead[0]["Body"])["reason"].startswith("not JSON")


def test_rate_alarm_zip_publishes_once_per_incident_under_the_runtime(runtime_python, deps_dir, tmp_path, clients):
    dynamodb, sns = clients["dynamodb"], clients["sns"]
    table = "shoplake-rt-alarm_state"
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
    )
    topic = sns.create_topic(Name="shoplake-rt-alarms")["TopicArn"]
    alarm = {
        "incident_id": "2026-12-06T10:00:00Z",
        "detector": "rate-detector-fn",
        "kind": "drop",
        "window_start": "2026-12-06T10:00:00Z",
        "window_end": "2026-12-06T10:10:00Z",
        "observed": 3,
        "expected": 41.5,
        "score": 37.2,
        "threshold": 12.0,
        "raised_at": "2026-12-06T10:10:00Z",
    }
    env = {"TOPIC_ARN": topic, "STATE_TABLE": table, "AWS_ENDPOINT_URL": sns.meta.endpoint_url}
    result = run_zip(runtime_python, deps_dir, tmp_path, "rate-alarm", {"alarms": [alarm, alarm]}, env)
    assert [r["status"] for r in result["results"]] == ["published", "duplicate"]
    item = dynamodb.get_item(TableName=table, Key={"key": {"S": "incident#rate-detector-fn#2026-12-06T10:00:00Z"}})
    assert item["Item"]["status"]["S"] == "sent"


def test_weblogs_transform_zip_converts_lines_under_the_runtime(runtime_python, deps_dir, tmp_path):
    good = b'203.0.113.9 - - [06/Dec/2026:10:00:01 +0100] "GET /product/85123A HTTP/1.1" 200 5120 "-" "Mozilla/5.0"\n'
    bad = b"garbage that is no access log line\n"
    event = {
        "invocationId": "inv-1",
        "deliveryStreamArn": f"arn:aws:firehose:{REGION}:123456789012:deliverystream/shoplake-rt-weblogs",
        "region": REGION,
        "records": [
            {"recordId": "r1", "approximateArrivalTimestamp": 1765000000000, "data": base64.b64encode(good).decode()},
            {"recordId": "r2", "approximateArrivalTimestamp": 1765000000000, "data": base64.b64encode(bad).decode()},
        ],
    }
    result = run_zip(runtime_python, deps_dir, tmp_path, "weblogs-transform", event, {})
    records = {r["recordId"]: r for r in result["records"]}
    assert set(records) == {"r1", "r2"} and all(r["result"] == "Ok" for r in records.values())
    doc = json.loads(base64.b64decode(records["r1"]["data"]))
    assert doc.get("status", doc.get("response")) in (200, "200") and "rejected" not in doc
    rejected = json.loads(base64.b64decode(records["r2"]["data"]))
    assert rejected["rejected"] is True and rejected["reason"]
