"""The rate-detector Lambda in the runtime's own Python: its zip + the built numpy/krcf layer in a clean python3.12.

Lambda's python3.12 runtime puts the function (``/var/task``) first on ``sys.path``, then the layers (``/opt/python``),
then its own packages (boto3, botocore, ... and no setuptools). krcf is a compiled extension (AWS's Rust random cut
forest, an ``abi3`` manylinux_2_28 ``.so``): the layer built for the runtime's platform must load it and score. This test lays out the same three folders — the zip
``infra.lambda_package`` deploys, the layer ``shoplake.layers`` builds (cached under ``build/layers/`` by a hash of
the pins), and symlinks to this venv's pure-Python boto3 stack — and runs ``python3.12 -I -S`` on them (no
site-packages, no user site, no PYTHONPATH). The handler then works through a tumbling-window event sequence against a
moto server on loopback (the subprocess cannot share an in-process ``mock_aws``), and its verdicts are compared with
the local detector's. vermin checks that every module the functions deploy needs no Python newer than the runtime's.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from shoplake import infra, layers
from shoplake.alarm import RateDetector, day_slice, detector_config, simulate_day
from shoplake.alarm import function as rd
from shoplake.alarm._windows import parse_ts

pytestmark = pytest.mark.aws

REPO = Path(__file__).resolve().parents[2]
LAYER_CACHE = REPO / "build" / "layers"
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
SHARD = "shardId-000000000000"
CONFIG = detector_config(600, num_trees=20, tree_size=64)

BOOT = r"""
import json, sys, time
task, layer, runtime, mode = sys.argv[1:5]
sys.path[:0] = [task, layer]  # Lambda: /var/task, then /opt/python, then the runtime's own packages
sys.path.append(runtime)
began = time.perf_counter()
import shoplake.alarm.function  # numpy, krcf (its .so), boto3: what a cold start imports
took = round(time.perf_counter() - began, 3)
import numpy, krcf, krcf.krcf, boto3, importlib.util
import shoplake.alarm.function as fn
report = {
    "python": list(sys.version_info[:2]),
    "files": {m.__name__: m.__file__ for m in (numpy, krcf, krcf.krcf, boto3, fn)},
    "krcf_version": krcf.__version__,
    "numpy_version": numpy.__version__,
    "setuptools": [importlib.util.find_spec(m) is not None for m in ("setuptools", "pkg_resources")],
    "pkg_resources_imported": "pkg_resources" in sys.modules,
    "heavy": sorted(m for m in ("pandas", "shoplake.config") if m in sys.modules)
    + (["shoplake/alarm/__init__.py"] if getattr(sys.modules.get("shoplake.alarm"), "__file__", None) else []),
    "import_seconds": took,
}
if mode == "score":  # the layer's forest itself: learns a calm shingle, finds a surge unusual
    from shoplake.alarm._rcf import RateForest, RcfConfig
    forest = RateForest(RcfConfig(num_trees=20, tree_size=64, warmup_windows=24, window_seconds=3600, seed=3))
    verdicts = [forest.update(100 + (i % 24) * 5, 1_320_796_800 + 3600 * i) for i in range(24 * 3)]
    surge = forest.update(1000, 1_320_796_800 + 3600 * 24 * 3)
    report["calm_scores"] = [v.score for v in verdicts if v.score is not None]
    report["surge"] = [surge.score, surge.threshold, surge.anomalous]
if mode == "handle":
    events = json.load(open(sys.argv[5]))
    report["responses"] = [fn.handler(event, None) for event in events]
print(json.dumps(report))
"""


def _python312() -> str | None:
    """A working python3.12 (PATH first, then pyenv's versions); None if the machine has none."""
    candidates = [shutil.which("python3.12")] + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))
    )
    for candidate in filter(None, candidates):
        try:
            out = subprocess.run(
                [candidate, "-I", "-S", "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "True":
            return candidate
    return None


@pytest.fixture(scope="module")
def python312() -> str:
    found = _python312()
    if not found:
        pytest.skip("no python3.12 on this machine (Lambda's runtime Python): install it, e.g. `pyenv install 3.12`")
    return found


@pytest.fixture(scope="module")
def layer_dir() -> Path:
    """The built layer, unzipped once per layer hash under build/layers/ (what Lambda puts in /opt)."""
    try:
        built = layers.build_rate_detector_layer(LAYER_CACHE)
    except layers.LayerError as exc:
        pytest.skip(f"the rate-detector layer cannot be built here: {exc}")
    digest = layers.read_manifest(built)["zip_sha256"][:12]
    opt = LAYER_CACHE / f"opt-{digest}"
    if not (opt / ".complete").exists():
        shutil.rmtree(opt, ignore_errors=True)
        zipfile.ZipFile(built).extractall(opt)
        for path in (opt / "python").rglob("*.so*"):
            path.chmod(0o755)
        (opt / ".complete").write_text(built.name)
    return opt / "python"


@pytest.fixture(scope="module")
def runtime_dirs(tmp_path_factory, layer_dir) -> tuple[Path, Path]:
    """(task, runtime): the function's zip unzipped, and the runtime's packages as symlinks to this venv's copies."""
    root = tmp_path_factory.mktemp("lambda")
    task, runtime = root / "task", root / "runtime"
    package = infra.lambda_package(infra.find("lambda_function", "rate-detector", target="aws"))
    zipfile.ZipFile(BytesIO(package)).extractall(task)
    runtime.mkdir()
    site = Path(__import__("botocore").__file__).resolve().parents[1]
    for name in RUNTIME_PACKAGES:
        source = site / name
        assert not list(source.rglob("*.so")) if source.is_dir() else source.suffix == ".py", f"{name} is not pure"
        (runtime / name).symlink_to(source)
    return task, runtime


def _run(python: str, task: Path, layer: Path, runtime: Path, mode: str, *args: str, flags: tuple = ()):
    return subprocess.run(
        [python, "-I", "-S", *flags, "-c", BOOT, str(task), str(layer), str(runtime), mode, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )


def test_layer_recipe_is_pinned_deterministic_and_complete(layer_dir):
    built = LAYER_CACHE / layers.layer_zip_name(layers.layer_pins())
    manifest = layers.read_manifest(built)
    assert manifest["packages"] == {"numpy": "2.4.6", "krcf": "0.4.0"}
    assert manifest["name"] == "numpy-krcf" and built.name.startswith("numpy-krcf-py312-x86_64-")
    assert manifest["runtime"] == "python3.12" and manifest["architecture"] == "x86_64"
    assert "cp312-cp312-manylinux_2_28_x86_64" in manifest["wheel_tags"]["numpy"]
    assert manifest["wheel_tags"]["krcf"] == ["cp310-abi3-manylinux_2_28_x86_64"]
    names = zipfile.ZipFile(built).namelist()
    assert names == sorted(names) and all(n.startswith("python/") or n == layers.MANIFEST for n in names)
    assert "python/krcf/__init__.py" in names and "python/krcf/krcf.abi3.so" in names
    assert not any(n.startswith(("python/pkg_resources/", "python/setuptools/")) for n in names)  # rrcf needed them
    assert not any("__pycache__" in n or n.startswith("python/bin/") or "direct_url" in n for n in names)
    assert manifest["zip_bytes"] < layers.MAX_DIRECT_UPLOAD_BYTES
    # the cache answers without pip when the manifest matches the zip
    assert layers.build_rate_detector_layer(LAYER_CACHE) == built


def test_layer_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(layers.LayerError, match="architecture must be one of"):
        layers.build_rate_detector_layer(LAYER_CACHE, architecture="sparc")
    with pytest.raises(layers.LayerError, match="python_version must look like"):
        layers.build_rate_detector_layer(LAYER_CACHE, python_version="twelve")
    with pytest.raises(layers.LayerError, match="does not exist: build it first"):
        layers.publish_layer(LAYER_CACHE / "nothing.zip")
    # no index answers (a closed loopback port stands for "no network"): one line saying so, no zip left behind
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(
        layers.LayerError, match=r"^pip could not install krcf==0\.4\.0 numpy==2\.4\.6 for cp312 .* connect and retry$"
    ):
        layers.build_rate_detector_layer(tmp_path, force=True)
    assert list(tmp_path.iterdir()) == []


def test_zip_and_layer_import_in_a_clean_python312_without_setuptools(python312, layer_dir, runtime_dirs):
    task, runtime = runtime_dirs
    out = _run(python312, task, layer_dir, runtime, "import", flags=("-X", "importtime"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["python"] == [3, 12]
    assert report["files"]["shoplake.alarm.function"].startswith(str(task))
    for name in ("numpy", "krcf"):
        assert report["files"][name].startswith(str(layer_dir)), report["files"][name]
    assert report["files"]["krcf.krcf"] == str(layer_dir / "krcf" / "krcf.abi3.so")  # the compiled forest, loaded
    assert report["files"]["boto3"].startswith(str(runtime))
    assert report["setuptools"] == [False, False] and not report["pkg_resources_imported"]  # needed by none
    assert report["krcf_version"] == "0.4.0" and report["numpy_version"] == "2.4.6"
    assert report["heavy"] == []  # no pandas, no shoplake.config: the bundle stays small
    cumulative = {}  # -X importtime: "import time: self [us] | cumulative | name"
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2] in ("numpy", "krcf", "boto3"):
            cumulative[parts[2]] = int(parts[1]) / 1e6
    assert set(cumulative) == {"numpy", "krcf", "boto3"}
    print(f"python3.12 cold import: handler module {report['import_seconds']} s; cumulative {cumulative}")


def test_the_layers_forest_scores_in_python312_as_it_does_here(python312, layer_dir, runtime_dirs):
    """The layer's krcf .so runs in the runtime's Python: the detector's forest learns and finds a surge, with the
    very scores this venv's krcf gives (same seed, same points)."""
    from shoplake.alarm._rcf import RateForest, RcfConfig

    task, runtime = runtime_dirs
    out = _run(python312, task, layer_dir, runtime, "score")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    score, threshold, anomalous = report["surge"]
    assert anomalous and score >= threshold > 0 and len(report["calm_scores"]) > 20
    forest = RateForest(RcfConfig(num_trees=20, tree_size=64, warmup_windows=24, window_seconds=3600, seed=3))
    here = [forest.update(100 + (i % 24) * 5, 1_320_796_800 + 3600 * i) for i in range(24 * 3)]
    assert [v.score for v in here if v.score is not None] == report["calm_scores"]
    assert forest.update(1000, 1_320_796_800 + 3600 * 24 * 3).score == score


@pytest.fixture
def moto_server(monkeypatch):
    """A moto server on a free loopback port, this process's clients pointed at it (the subprocess uses it too)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL") or key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(key, raising=False)
    env = {
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield {**env, "AWS_ENDPOINT_URL": url}
    finally:
        server.stop()


def _clients(url: str):
    import boto3

    return {
        s: boto3.client(s, endpoint_url=url, region_name="eu-west-1") for s in ("dynamodb", "sns", "sqs", "kinesis")
    }


def _record(payload, seq: int, stream_arn: str) -> dict:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {
        "kinesis": {"data": base64.b64encode(data).decode(), "sequenceNumber": str(seq), "partitionKey": "k"},
        "eventID": f"{SHARD}:{seq}",
        "eventSourceARN": stream_arn,
    }


def test_handler_runs_a_tumbling_window_sequence_in_python312(python312, layer_dir, runtime_dirs, moto_server):
    task, runtime = runtime_dirs
    c = _clients(moto_server["AWS_ENDPOINT_URL"])
    c["dynamodb"].create_table(
        TableName="alarm_state",
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    topic = c["sns"].create_topic(Name="alarms")["TopicArn"]
    dlq = c["sqs"].create_queue(QueueName="rate-alarm-dlq")["QueueUrl"]
    c["kinesis"].create_stream(StreamName="orders", ShardCount=1)
    stream_arn = c["kinesis"].describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["StreamARN"]
    settings = rd.Settings("alarm_state", topic, dlq, "runtime-test", CONFIG)
    # a warmed-up detector (two days of windows) as the function's state: the final invokes rebuild and use its forest
    sim = day_slice(simulate_day(seed=3, orders_per_day=4_000, window_seconds=600), 10, 12)
    warm = RateDetector(CONFIG, name="runtime-test", shards=[SHARD])
    warm.warm_up(sim.warmup)
    rd.seed_state(warm, settings, c["dynamodb"], shards=[SHARD])
    local = RateDetector.from_state(json.loads(json.dumps(warm.to_state())))

    # arrival = order time; 5-minute tumbling windows, two invocations each, then the final invoke (state carried)
    records, seq, events, batches = sim.records(), 10**20, [], []
    first = parse_ts(records[0]["InvoiceDate"])
    by_slot: dict[int, list] = {}
    for record in records:
        by_slot.setdefault(int((parse_ts(record["InvoiceDate"]) - first) // 300), []).append(record)
    for slot in sorted(by_slot):
        batch = by_slot[slot]
        batches.append(batch)
        half = len(batch) // 2
        for part in (batch[:half] + ([b"{not json"] if slot == 0 else []), batch[half:]):
            items = []
            for payload in part:
                seq += 1
                items.append(_record(payload, seq, stream_arn))
            events.append({"Records": items, "shardId": SHARD, "eventSourceARN": stream_arn, "state": None})
        events.append({"Records": [], "shardId": SHARD, "eventSourceARN": stream_arn, "isFinalInvokeForWindow": True})
    path = task.parent / "events.json"
    path.write_text(json.dumps(events))
    env = {
        **moto_server,
        "STATE_TABLE": "alarm_state",
        "TOPIC_ARN": topic,
        "DEAD_LETTER_QUEUE_URL": dlq,
        "DETECTOR_NAME": "runtime-test",
        "DETECTOR_CONFIG": json.dumps(CONFIG.as_dict()),
    }
    # the subprocess carries the state between invocations the way Lambda does: the driver below threads it
    driver = BOOT.replace(
        'report["responses"] = [fn.handler(event, None) for event in events]',
        'state, report["responses"] = {}, []\n'
        "    for event in events:\n"
        '        event["state"] = state\n'
        "        response = fn.handler(event, None)\n"
        '        state = response["state"]\n'
        '        report["responses"].append(response)',
    )
    out = subprocess.run(
        [python312, "-I", "-S", "-c", driver, str(task), str(layer_dir), str(runtime), "handle", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["python"] == [3, 12] and len(report["responses"]) == len(events)
    assert all(r["batchItemFailures"] == [] for r in report["responses"])
    finals = [r for e, r in zip(events, report["responses"], strict=True) if e.get("isFinalInvokeForWindow")]
    assert finals and all(r["state"] == {} for r in finals)  # Lambda drops the state after the final invoke

    saved = rd.load_detector(settings, c["dynamodb"])
    for batch in batches:
        local.process(batch, SHARD)
    assert saved.counts["records_in"] == len(records) + 1 and saved.counts["malformed"] == 1
    assert saved.counts["accepted"] == local.counts["accepted"]
    ours = [(h["window_start"], h["orders"], h["anomalous"], h["score"]) for h in saved.history]
    theirs = [(h["window_start"], h["orders"], h["anomalous"], h["score"]) for h in local.history]
    assert len(ours) >= 10 and ours == theirs  # same windows, counts and forest scores as the local detector
    assert all(h["score"] is not None for h in saved.history)
    dead = c["sqs"].receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["reason"].split(":")[0] for m in dead] == ["malformed"]


def test_deployed_modules_need_no_python_newer_than_the_runtime():
    """vermin: the minimum Python of every module the Lambda functions deploy is at most 3.12."""
    files = sorted({str(p) for p in (REPO / "lib" / "shoplake" / "lambdas").glob("*.py")})
    bundle = infra.find("lambda_function", "rate-detector", target="aws").props["bundle"]
    files += [str(REPO / "lib" / "shoplake" / entry) for entry in bundle if entry.endswith(".py")]
    vermin = Path(sys.executable).with_name("vermin")
    out = subprocess.run(
        [str(vermin), "--no-tips", "--violations", "-t=3.12-", "--eval-annotations", *sorted(set(files))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-1000:]


def test_publish_layer_gives_the_arn_infra_expects(layer_dir, aws_target):
    built = LAYER_CACHE / layers.layer_zip_name(layers.layer_pins())
    with aws_target.as_role("operator"):
        arn = layers.publish_layer(built)
    assert infra._LAYER_ARN.fullmatch(arn) and ":layer:" in arn and arn.split(":")[3] == "eu-west-1"
    [call] = [c for c in aws_target.calls if c.role == "operator"]
    assert call.action == "lambda:PublishLayerVersion"
    assert call.params["CompatibleRuntimes"] == [infra.LAMBDA_RUNTIME]
    assert call.params["CompatibleArchitectures"] == ["x86_64"]
    assert call.params["Content"]["ZipFile"] == built.read_bytes()
