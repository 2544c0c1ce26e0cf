"""The rate detector as a Lambda with Kinesis tumbling windows: window state, merge, alarms, packaging, infra."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

import numpy
import pytest
from alarm_day import INCIDENTS, four_hours_with_incidents

from shoplake import config, infra
from shoplake.alarm import RateDetector, detector_config, messages
from shoplake.alarm import function as rd
from shoplake.alarm._windows import parse_ts

SHARDS = ["shardId-000000000000", "shardId-000000000001"]
TINY = detector_config(600, num_trees=5, tree_size=32, warmup_windows=20)


@pytest.fixture(scope="module")
def stack(local_stack):
    """The whole infra/resources.yaml applied under a prefix of this module alone (destroyed afterwards)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOPLAKE_PREFIX", "p7" + uuid.uuid4().hex[:5])
        config.clear_caches()
        infra.apply()
        try:
            yield infra.outputs()
        finally:
            infra.destroy()
            config.clear_caches()
    config.clear_caches()


def _detector(outputs: dict, name: str, cfg=TINY, cache: bool = True, **kwargs) -> rd.TumblingDetector:
    settings = rd.Settings(
        outputs["table:alarm_state"],
        outputs["topic_arn:alarms"],
        outputs["queue_url:rate-alarm-dlq"],
        name,
        cfg,
        **kwargs,
    )
    return rd.TumblingDetector(
        settings,
        config.client("dynamodb"),
        config.client("sns"),
        config.client("sqs"),
        config.client("kinesis"),
        cache=cache,
    )


class Shard:
    """Builds tumbling-window events of one shard (sequence numbers increase like Kinesis's)."""

    def __init__(self, shard_id: str, stream_arn: str) -> None:
        self.shard_id, self.stream_arn, self.seq = shard_id, stream_arn, 10**20

    def event(self, payloads: list, state: dict | None, final: bool = False, early: bool = False) -> dict:
        records = []
        for payload in payloads:
            self.seq += 1
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            records.append(
                {
                    "kinesis": {
                        "data": base64.b64encode(data).decode(),
                        "sequenceNumber": str(self.seq),
                        "partitionKey": "k",
                    },
                    "eventID": f"{self.shard_id}:{self.seq}",
                    "eventSourceARN": self.stream_arn,
                }
            )
        return {
            "Records": records,
            "shardId": self.shard_id,
            "eventSourceARN": self.stream_arn,
            "state": state or {},
            "window": {"start": "2011-11-09T10:00:00Z", "end": "2011-11-09T10:01:00Z"},
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": early,
        }


def _order(invoice: str, at: str, line: int = 0) -> dict:
    return {
        "InvoiceNo": invoice,
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
        "Quantity": -1 if invoice.startswith("C") else 1,  # a cancellation takes back
        "InvoiceDate": at,
        "UnitPrice": 2.55,
        "CustomerID": "17850",
        "Country": "United Kingdom",
        "LineNo": line,
    }


def _roundtrip(response: dict) -> dict:
    """What Lambda does with the returned state between invocations: JSON out, JSON in."""
    state = json.loads(json.dumps(response["state"]))
    assert all(isinstance(v, str) for v in state.values())  # a flat map of strings, as every runtime accepts
    return state


def _dead_letters(outputs: dict, consumer: str) -> list[str]:
    sqs, reasons = config.client("sqs"), []
    for _ in range(5):
        batch = sqs.receive_message(
            QueueUrl=outputs["queue_url:rate-alarm-dlq"], MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", [])
        if not batch:
            break
        reasons += [json.loads(m["Body"])["reason"] for m in batch if json.loads(m["Body"])["consumer"] == consumer]
    return reasons


def test_window_state_across_invocations_final_merge_late_and_early_end(stack):
    name = f"unit-{uuid.uuid4().hex[:6]}"
    fn = _detector(stack, name, cache=False)  # every final invoke reloads the detector from alarm_state
    other = _detector(stack, name)  # shard b's container: its cached detector goes stale when shard a saves
    a, b = Shard(SHARDS[0], stack["stream_arn:orders"]), Shard(SHARDS[1], stack["stream_arn:orders"])
    # three invocations of one tumbling window on shard a: good orders, a malformed record, a re-delivered line
    first = fn.handle(
        a.event([_order("100", "2011-11-09T10:00:05Z"), b"{broken", _order("101", "2011-11-09T10:00:09Z")], None)
    )
    assert first["batchItemFailures"] == []
    second = fn.handle(
        a.event(
            [
                _order("101", "2011-11-09T10:00:09Z"),
                _order("101", "2011-11-09T10:00:09Z", 1),
                _order("C102", "2011-11-09T10:00:20Z"),
            ],
            _roundtrip(first),
        )
    )
    window = rd.WindowState.from_state(_roundtrip(second), TINY)
    assert window.counts == {"records_in": 6, "accepted": 4, "malformed": 1, "late": 0, "duplicate": 1}
    assert window.invocations == 2 and sorted(window.times) == ["100#0", "101#0", "101#1", "C102#0"]
    assert rd.load_detector(fn.settings, fn.dynamodb) is None  # nothing is merged before the window's end
    final = fn.handle(a.event([], _roundtrip(second), final=True))
    assert final == {"state": {}, "batchItemFailures": []}
    saved = rd.load_detector(fn.settings, fn.dynamodb)
    assert saved.counts["records_in"] == 6 and saved.counts["malformed"] == 1 and saved.counts["duplicate"] == 1
    assert set(saved.shard_max) == set(SHARDS)  # a fresh detector asked the stream for its shards
    assert saved.counts["windows"] == 0  # shard b has not spoken: the watermark waits for it
    # a retried final invoke (same records) is not merged twice
    fn.handle(a.event([], _roundtrip(second), final=True))
    assert fn.merges[-1].status == "already_merged"
    # shard b, 25 minutes later, in a window that Lambda terminates early (state continues fresh, same window)
    early = other.handle(b.event([_order("200", "2011-11-09T10:25:00Z")], None, final=False, early=True))
    assert early["state"] == {} and other.merges[-1].status == "merged"
    rest = other.handle(b.event([_order("201", "2011-11-09T10:26:00Z")], None))
    fn.handle(a.event([_order("103", "2011-11-09T10:27:00Z")], None, final=True))
    other.handle(b.event([], _roundtrip(rest), final=True))
    saved = rd.load_detector(fn.settings, fn.dynamodb)
    assert saved.counts["windows"] == 2 and [h["orders"] for h in saved.history] == [2, 0]  # C102 is no order
    # an order of the closed first window arrives now: late, counted, dead-lettered (with a malformed one before)
    late = fn.handle(a.event([_order("104", "2011-11-09T10:03:00Z")], None, final=True))
    assert late["batchItemFailures"] == []
    saved = rd.load_detector(fn.settings, fn.dynamodb)
    assert saved.counts["late"] == 1 and saved.counts["records_in"] == 10 and saved.counts["accepted"] == 7
    reasons = sorted(r.split(":")[0] for r in _dead_letters(stack, fn.settings.key))
    assert reasons == ["late", "malformed"]


def test_state_spills_before_the_one_megabyte_limit(stack):
    fn = _detector(stack, f"unit-{uuid.uuid4().hex[:6]}", spill_bytes=2_000)
    a = Shard(SHARDS[0], stack["stream_arn:orders"])
    orders = [_order(str(500 + i), f"2011-11-09T10:{i // 60:02d}:{i % 60:02d}Z") for i in range(60)]
    response = fn.handle(a.event(orders, None))
    assert fn.merges and fn.merges[-1].lines == 60  # merged into alarm_state although the window goes on
    assert rd.WindowState.from_state(response["state"], TINY).empty


@pytest.fixture(scope="module")
def replay(stack):
    """A 4-hour slice with two incidents as tumbling windows (5 min, two shards) through the function, and the same
    records through an in-process RateDetector (the local detector) starting from the same warmed-up state."""
    sim = four_hours_with_incidents()
    cfg = detector_config(600)
    name = f"sim-{uuid.uuid4().hex[:6]}"
    warm = RateDetector(cfg, name=name, shards=SHARDS)
    warm.warm_up(sim.warmup)
    fn = _detector(stack, name, cfg)
    rd.seed_state(warm, fn.settings, fn.dynamodb, shards=SHARDS)
    local = RateDetector.from_state(json.loads(json.dumps(warm.to_state())))  # what the function loads
    messages.purge_inbox(quiet_seconds=0)
    records = sim.records()
    shards = {s: Shard(s, stack["stream_arn:orders"]) for s in SHARDS}
    tumbling = 300
    first = parse_ts(records[0]["InvoiceDate"])
    by_window: dict[int, dict[str, list]] = {}
    for record in records:  # arrival time = order time: each tumbling window holds the orders of its 5 minutes
        shard = SHARDS[zlib.crc32(record["InvoiceNo"].encode()) % 2]
        slot = int((parse_ts(record["InvoiceDate"]) - first) // tumbling)
        by_window.setdefault(slot, {s: [] for s in SHARDS})[shard].append(record)
    local_alarms = []
    for slot in sorted(by_window):
        for shard_id, batch in by_window[slot].items():
            state = None
            for start in range(0, len(batch), 100):  # several invocations per window
                state = _roundtrip(fn.handle(shards[shard_id].event(batch[start : start + 100], state)))
            fn.handle(shards[shard_id].event([], state, final=True))
            alarms, _dead = local.process(batch, shard_id)
            local_alarms += alarms
    return sim, fn, local, local_alarms


def test_one_alarm_per_incident_and_the_same_verdicts_as_the_local_detector(replay):
    sim, fn, local, local_alarms = replay
    saved = rd.load_detector(fn.settings, fn.dynamodb)
    assert saved.counts["records_in"] == len(sim.events) and saved.counts["late"] == 0
    published = [a for m in fn.merges for a in m.alarms if a["status"] == "published"]
    assert len(published) == 2 and sorted(a["kind"] for a in published) == ["drop", "surge"]
    for incident in INCIDENTS:  # each alarm's window overlaps its incident
        start, end = parse_ts(incident["start"]), parse_ts(incident["end"]) + 600
        assert sum(parse_ts(a["window_start"]) < end and parse_ts(a["window_end"]) > start for a in published) == 1
    texts = [m["text"] for m in messages.sent_messages(quiet_seconds=0) if fn.settings.name in m["text"]]
    assert len(texts) == 2
    # same windows, same counts, same forest scores and verdicts as the local detector on the same records
    ours = [(h["window_start"], h["orders"], h["anomalous"], h["score"]) for h in saved.history]
    theirs = [(h["window_start"], h["orders"], h["anomalous"], h["score"]) for h in local.history]
    assert len(ours) >= 22 and ours == theirs[: len(ours)]
    assert [a.incident_id for a in saved.alarms] == [a.incident_id for a in local_alarms][: len(saved.alarms)]


def test_bundle_is_deterministic_and_imports_with_numpy_and_krcf_only(tmp_path):
    entry = infra.find("lambda_function", "rate-detector", target="aws")
    package = infra.lambda_package(entry)
    assert package == infra.lambda_package(entry)
    names = zipfile.ZipFile(BytesIO(package)).namelist()
    assert names == sorted(names) and "shoplake/alarm/detector.py" in names and "shoplake/alarm/_rcf.py" in names
    assert "shoplake/alarm/function.py" in names and "shoplake/lambdas/rate_alarm.py" in names
    assert "shoplake/alarm/__init__.py" not in names and not any("__pycache__" in n for n in names)
    zipfile.ZipFile(BytesIO(package)).extractall(tmp_path)
    site = str(Path(numpy.__file__).resolve().parents[1])  # numpy, krcf, boto3 — the layer's and runtime's packages
    probe = (
        f"import sys; sys.path[:] = [{str(tmp_path)!r}, {site!r}] + [p for p in sys.path if 'python3' in p "
        "and 'site-packages' not in p]\n"
        "import shoplake.alarm.function as fn\n"
        f"assert fn.__file__.startswith({str(tmp_path)!r}), fn.__file__\n"
        "assert 'pandas' not in sys.modules and 'shoplake.config' not in sys.modules, 'heavy import'\n"
        "print(fn.handler.__name__)"
    )
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "handler", out.stderr
    with pytest.raises(infra.InfraError, match="does not exist"):
        infra.bundle_zip(["alarm/nothing.py"])


def test_layers_are_required_on_aws_and_checked(monkeypatch):
    monkeypatch.delenv("SHOPLAKE_RATE_DETECTOR_LAYER", raising=False)
    handler = infra.HANDLERS["lambda_function"]
    assert "layers" not in infra.find("lambda_function", "rate-detector", target="local").props
    with pytest.raises(infra.InfraError, match="layer version ARN"):
        handler._layers(infra.find("lambda_function", "rate-detector", target="aws"))
    layer = "arn:aws:lambda:eu-west-1:123456789012:layer:shoplake-numpy-krcf:3"
    monkeypatch.setenv("SHOPLAKE_RATE_DETECTOR_LAYER", layer)
    assert handler._layers(infra.find("lambda_function", "rate-detector", target="aws")) == [layer]


def test_infra_entries_exist_on_the_emulator(stack):
    lam = config.client("lambda")
    fn = lam.get_function_configuration(FunctionName=config.resource_name("rate-detector"))
    assert fn["Handler"] == "shoplake.alarm.function.handler" and fn["MemorySize"] == 1024
    assert fn["Environment"]["Variables"]["STATE_TABLE"] == config.resource_name("alarm_state")
    [mapping] = lam.list_event_source_mappings(FunctionName=config.resource_name("rate-detector"))[
        "EventSourceMappings"
    ]
    assert mapping["TumblingWindowInSeconds"] == 60 and mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["EventSourceArn"] == stack["stream_arn:orders"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(config.resource_name("rate-alarm-dlq"))
    role = infra.find("iam_role", "rate-detector-fn")
    doc = infra.HANDLERS["iam_role"].policy_document(role)
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    assert {"sns:Publish", "sqs:SendMessage", "dynamodb:GetItem", "dynamodb:PutItem", "kinesis:GetRecords"} <= actions
    assert not any(a.endswith(":*") for a in actions) and "dynamodb:DeleteItem" not in actions
    assert [c.action for c in infra.plan([infra.find("lambda_function", "rate-detector")])] == ["unchanged"]
