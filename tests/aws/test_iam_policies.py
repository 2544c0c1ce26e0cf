"""Least privilege both ways: each role in infra/resources.yaml grants exactly what its code and AWS on its behalf use.

For every ``iam_role`` of the stack (aws target), a scenario runs the role's code against moto in-process under
``rec.as_role(<role>)`` (the recorder of every boto3 call, ``tests/aws/conftest.py``), each call is mapped to its IAM
action and resource ARN, AWS's documented service-side needs are added from the stack (event-source mappings,
Firehose destinations, Lambda logs; ``iam_actions.SERVICE_SIDE``), and the role's policy document as ``infra`` would
put it (``IamRole.policy_document``) is checked with moto's IAM policy engine: every use allowed on its resource,
every granted action and resource used by something, every action name known to botocore or IAM.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from iam_actions import check_role, emr_uses, known_action, service_side_uses, uses_of_call
from moto.iam.policy_validation import IAMPolicyDocumentValidator

from shoplake import config, infra

pytestmark = pytest.mark.aws

SHARDS = ["shardId-000000000000", "shardId-000000000001"]
ACCOUNT = "123456789012"  # moto's account

# grants no scenario can use but the role needs all the same: action or resource → why (keep this empty if possible)
ALLOWED_UNUSED: dict[str, dict[str, str]] = {}


def _kinesis_event(stream_arn: str, payloads: list[Any], shard: str = SHARDS[0], first: int = 1) -> dict[str, Any]:
    records = []
    for n, payload in enumerate(payloads, start=first):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sequence = str(49_000_000_000_000_000_000 + n)
        records.append(
            {
                "kinesis": {
                    "data": base64.b64encode(data).decode(),
                    "sequenceNumber": sequence,
                    "partitionKey": "k",
                    "kinesisSchemaVersion": "1.0",
                },
                "eventSource": "aws:kinesis",
                "eventID": f"{shard}:{sequence}",
                "eventSourceARN": stream_arn,
                "awsRegion": "eu-west-1",
            }
        )
    return {"Records": records}


def _order(invoice: str, at: str, quantity: int = 6, customer: str | None = "17850", line: int = 0) -> dict[str, Any]:
    return {
        "InvoiceNo": invoice,
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
        "Quantity": quantity,
        "InvoiceDate": at,
        "UnitPrice": 2.55,
        "CustomerID": customer,
        "Country": "United Kingdom",
        "LineNo": line,
    }


# --------------------------------------------------------------------------- scenarios: each role's code on aws


def order_history_fn(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The order-history handler: sales, a malformed record (→ DLQ), a cancellation (→ Query + conditional update)."""
    from shoplake.lambdas import order_history as fn

    patch.setattr(fn, "_CLIENTS", {})
    patch.setenv("TABLE_NAME", out["table:order_history"])
    patch.setenv("DEAD_LETTER_QUEUE_URL", out["queue_url:order-history-dlq"])
    stream = out["stream_arn:orders"]
    with rec.as_role("order-history-fn"):
        first = fn.handler(
            _kinesis_event(stream, [_order("536365", "2011-12-01T08:26:00Z"), b"{not json", _order("536366", "x")])
        )
        second = fn.handler(_kinesis_event(stream, [_order("C536379", "2011-12-01T09:41:00Z", -6)], first=10))
    assert first["counts"]["written"] == 1 and first["counts"]["dead_lettered"] == 2, first
    assert second["counts"]["cancellations_matched"] == 1, second


def rate_detector_fn(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The rate detector: a fresh detector (asks the stream for its shards, dead-letters a malformed record), then a
    warmed-up one (seeded by the user, not the role) fed a surge until it publishes an alarm."""
    from shoplake.alarm import RateDetector, detector_config, simulate_day
    from shoplake.alarm import function as rd
    from shoplake.alarm._windows import parse_ts
    from shoplake.lambdas import rate_alarm

    cfg = detector_config(600, num_trees=5, tree_size=32, warmup_windows=20)
    patch.setenv("STATE_TABLE", out["table:alarm_state"])
    patch.setenv("TOPIC_ARN", out["topic_arn:alarms"])
    patch.setenv("DEAD_LETTER_QUEUE_URL", out["queue_url:rate-alarm-dlq"])
    patch.setenv("DETECTOR_CONFIG", json.dumps(cfg.as_dict()))
    stream = out["stream_arn:orders"]
    sequence = {s: 1 for s in SHARDS}  # per shard, increasing like Kinesis's (a merged window is recognised by it)

    def invoke(name: str, payloads: list[Any], shard: str, state: dict[str, Any] | None, final: bool) -> dict:
        patch.setattr(rate_alarm, "_CLIENTS", {})
        event = _kinesis_event(stream, payloads, shard, sequence[shard]) | {
            "shardId": shard,
            "eventSourceARN": stream,
            "state": state or {},
            "window": {"start": "2011-11-09T10:00:00Z", "end": "2011-11-09T10:01:00Z"},
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": False,
        }
        sequence[shard] += len(payloads)
        with rec.as_role("rate-detector-fn"):
            return rd.handler(event)

    # 1. a fresh detector: the final invoke asks the stream for its shards; a malformed record is dead-lettered
    patch.setenv("DETECTOR_NAME", "iam-fresh")
    patch.setattr(rd, "_DETECTOR", None)
    state = invoke("iam-fresh", [_order("1", "2011-11-09T10:00:05Z"), b"{broken"], SHARDS[0], None, False)["state"]
    invoke("iam-fresh", [], SHARDS[0], state, True)
    assert rd._DETECTOR.dead_lettered == 1 and rd._DETECTOR.merges[-1].status == "merged"

    # 2. a warmed-up detector (installed by the user's session, outside the role) fed an hour with a surge
    patch.setenv("DETECTOR_NAME", "iam-warm")
    patch.setattr(rd, "_DETECTOR", None)
    surge = {"incident_id": "s", "kind": "surge", "start": "2011-11-09T10:30:00Z", "end": "2011-11-09T11:00:00Z"}
    sim = simulate_day(seed=7, orders_per_day=8_000, incidents=[surge | {"multiplier": 10.0}])
    warm = RateDetector(cfg, name="iam-warm", shards=SHARDS)
    warm.warm_up(sim.warmup)
    rd.seed_state(warm, rd.Settings.from_env(), config.client("dynamodb"), shards=SHARDS)  # role None: the user
    lo, hi = parse_ts("2011-11-09T09:00:00Z"), parse_ts("2011-11-09T12:00:00Z")
    records = [r for r in sim.records() if lo <= parse_ts(r["InvoiceDate"]) < hi]
    published = []
    for start in range(0, len(records), 400):  # tumbling windows of ~400 orders, alternating shards
        shard = SHARDS[(start // 400) % 2]
        state = invoke("iam-warm", records[start : start + 400], shard, None, False)["state"]
        invoke("iam-warm", [], shard, state, True)
        published += [a for a in rd._DETECTOR.merges[-1].alarms if a["status"] == "published"]
        if published:
            break
    assert published, "the surge raised no alarm: the scenario did not reach rate_alarm (SNS + cool-down)"


def rate_alarm_fn(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The rate-alarm handler on one alarm and its repeat (de-dup). Nothing on aws invokes this function (the detector
    calls the same code in-process), so its role must grant no Kinesis read and no on-failure queue."""
    from shoplake.lambdas import rate_alarm

    patch.setattr(rate_alarm, "_CLIENTS", {})
    patch.setenv("TOPIC_ARN", out["topic_arn:alarms"])
    patch.setenv("STATE_TABLE", out["table:alarm_state"])
    alarm = {
        "incident_id": "iam-1",
        "detector": "iam",
        "kind": "surge",
        "window_start": "2011-11-09T10:30:00Z",
        "window_end": "2011-11-09T10:40:00Z",
        "observed": 400,
        "expected": 90,
        "score": 60,
        "threshold": 30,
        "raised_at": "2011-11-09T10:41:00Z",
    }
    with rec.as_role("rate-alarm-fn"):
        answer = rate_alarm.handler({"alarms": [alarm, alarm]})
    assert answer["counts"] == {"received": 2, "published": 1, "duplicate": 1, "cooled_down": 0}, answer


def weblogs_transform_fn(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The Firehose record transformation: parses lines, calls no AWS API (its role needs only logs)."""
    from shoplake.lambdas import weblogs_transform as fn

    line = '1.2.3.4 - - [09/Dec/2011:10:00:00 +0000] "GET /product/85123A HTTP/1.1" 200 512 "-" "Mozilla/5.0"'
    event = {
        "invocationId": "i",
        "deliveryStreamArn": "arn:aws:firehose:eu-west-1:123456789012:deliverystream/x",
        "region": "eu-west-1",
        "records": [
            {"recordId": "1", "approximateArrivalTimestamp": 0, "data": base64.b64encode(line.encode()).decode()},
            {"recordId": "2", "approximateArrivalTimestamp": 0, "data": base64.b64encode(b"garbage").decode()},
        ],
    }
    with rec.as_role("weblogs-transform-fn"):
        answer = fn.handler(event)
    assert [r["recordId"] for r in answer["records"]] == ["1", "2"], answer


def firehose_delivery(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """Firehose's role: no code of ours runs with it; its needs are all service-side (iam_actions.SERVICE_SIDE)."""


def _submit_als_job() -> dict[str, Any]:
    """The user's session (no role) submits the ALS job on a transient cluster: the recorder keeps its RunJobFlow."""
    from shoplake.recommend import emr

    return emr.submit(emr.job_config(run_id="iam-check"))


def emr_service(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """EMR's service role: no code of ours runs with it; the RunJobFlow request says what EMR does with it."""
    _submit_als_job()


def emr_ec2(rec: Any, out: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """The cluster's instance role: the job's own boto3 writes (report.json, the DynamoDB serving items) with the
    configuration of the submitted step; Spark's s3:// reads and writes (EMRFS) are service-side (iam_actions)."""
    from shoplake.recommend import als_job

    _submit_als_job()
    [request] = [c.params for c in rec.calls if c.operation == "RunJobFlow"]
    args = request["Steps"][0]["HadoopJarStep"]["Args"]
    cfg = als_job.parse_args(args[args.index("--py-files") + 3 :])
    with rec.as_role("emr-ec2"):
        als_job.write_text(f"{cfg.output.rstrip('/')}/report.json", "{}", cfg.region)
        written = als_job.write_dynamodb([{"customer_id": "17850", "items": []}], cfg.dynamodb_table, region=cfg.region)
    assert written == 1


SCENARIOS: dict[str, Callable[[Any, dict[str, str], pytest.MonkeyPatch], None]] = {
    "order-history-fn": order_history_fn,
    "rate-detector-fn": rate_detector_fn,
    "rate-alarm-fn": rate_alarm_fn,
    "weblogs-transform-fn": weblogs_transform_fn,
    "firehose-delivery": firehose_delivery,
    "emr-service": emr_service,
    "emr-ec2": emr_ec2,
}

# resources a scenario needs (the rest of the stack, e.g. the OpenSearch domain, is not created)
NEEDED = ("s3_bucket", "kinesis_stream", "dynamodb_table", "sqs_queue", "sns_topic")


def _roles() -> list[str]:
    return [r.name for r in infra.load_spec(target="aws") if r.type == "iam_role"]


@pytest.mark.parametrize("role", _roles())
def test_role_grants_exactly_what_is_used(aws_target, monkeypatch, role):
    assert role in SCENARIOS, (
        f"iam_role {role!r} has no recorded scenario in tests/aws/test_iam_policies.py SCENARIOS: run the code that "
        "uses it under rec.as_role(...) so its policy can be checked both ways"
    )
    spec = infra.load_spec()
    infra.apply([r for r in spec if r.type in NEEDED])
    out = infra.outputs([r for r in spec if r.type in NEEDED])
    aws_target.clear()
    SCENARIOS[role](aws_target, out, monkeypatch)

    region = "eu-west-1"
    previous: dict[str, list[str]] = {}
    calls = [c for c in aws_target.calls if c.role == role]
    uses = [u for c in calls for u in uses_of_call(c, region, ACCOUNT, previous)]
    uses += service_side_uses(role, spec, infra.arn, infra.physical_name)
    requests = [c.params for c in aws_target.calls if c.service == "emr" and c.operation == "RunJobFlow"]
    if requests:
        from shoplake.recommend.als_job import parse_args

        uses += emr_uses(requests, ACCOUNT, infra.physical_name(infra.find("iam_role", role)), parse_args)
    policy = infra.HANDLERS["iam_role"].policy_document(infra.find("iam_role", role))
    IAMPolicyDocumentValidator(json.dumps(policy)).validate()  # the syntax IAM's PutRolePolicy checks (moto's copy)
    problems = check_role(policy, uses, ALLOWED_UNUSED.get(role))
    assert not problems, f"{role}:\n  " + "\n  ".join(problems)


def test_every_granted_action_name_exists():
    for resource in infra.load_spec(target="aws"):
        for statement in resource.props.get("policy", []) if resource.type == "iam_role" else []:
            unknown = [a for a in statement["actions"] if not known_action(a)]
            assert not unknown, f"{resource.name}: {unknown} are no botocore operation nor documented IAM-only action"


def test_the_checker_catches_a_missing_grant_an_unused_grant_and_a_typo():
    from iam_actions import Use

    table = "arn:aws:dynamodb:eu-west-1:123456789012:table/t"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["dynamodb:PutItem", "dynamodb:Qurey"], "Resource": [table]}],
    }
    problems = check_role(policy, [Use("dynamodb:Query", table, "code"), Use("dynamodb:PutItem", table + "2", "c")])
    assert any(p.startswith("missing: dynamodb:Query") for p in problems)
    assert any(p.startswith("missing: dynamodb:PutItem on " + table + "2") for p in problems)  # wrong resource
    assert any(p.startswith("unknown action dynamodb:Qurey") for p in problems)
    assert any(p.startswith("unused: dynamodb:PutItem") for p in problems)
