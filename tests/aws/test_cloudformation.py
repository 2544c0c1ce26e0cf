"""The CloudFormation template rendered from infra/resources.yaml: cfn-lint clean, same resources as the reconciler."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from shoplake import cloudformation as cf
from shoplake import infra
from shoplake.errors import InfraError

pytestmark = pytest.mark.aws

LAYER = "arn:aws:lambda:eu-west-1:123456789012:layer:shoplake-rate-detector-deps:3"


@pytest.fixture(scope="module")
def rendered() -> cf.Rendered:
    return cf.render()


def test_rendered_template_passes_cfn_lint(rendered):
    findings = cf.lint(rendered.template)
    assert [f"{m.rule.id} {m.message}" for m in findings] == []


def test_cfn_lint_catches_a_seeded_mistake(rendered):
    """The lint test can fail: a wrong type and a retired runtime are reported."""
    broken = copy.deepcopy(rendered.template)
    broken["Resources"]["StreamOrders"]["Properties"]["ShardCount"] = "two"
    broken["Resources"]["FunctionOrderHistory"]["Properties"]["Runtime"] = "python2.7"
    assert {m.rule.id for m in cf.lint(broken)} >= {"E3012", "E2533"}


def test_template_text_has_no_anchors_or_short_form_tags(rendered):
    body = rendered.body()
    assert not re.search(r"[&*]id\d+", body)
    assert not re.search(r"(^|\s)!\w", body)  # long-form intrinsic functions only
    assert yaml.safe_load(body) == rendered.template


def test_parameters_and_their_constraints(rendered):
    params = rendered.template["Parameters"]
    assert set(params) == {"Prefix", "CodeBucket", "AlarmPhone", "AlarmEmail", "RateDetectorLayerArn"}
    prefix = re.compile(params["Prefix"]["AllowedPattern"])
    assert prefix.match("dev") and prefix.match("team-a1")
    assert not prefix.match("Dev") and not prefix.match("a_b") and not prefix.match("-a") and not prefix.match("a-")
    layer = re.compile(params["RateDetectorLayerArn"]["AllowedPattern"])
    assert layer.match(LAYER) and not layer.match("") and not layer.match("${SHOPLAKE_RATE_DETECTOR_LAYER}")
    assert re.match(params["AlarmPhone"]["AllowedPattern"], "") and re.match(
        params["AlarmPhone"]["AllowedPattern"], "+447700900123"
    )
    assert not re.match(params["AlarmPhone"]["AllowedPattern"], "0044 7700")
    rule = rendered.template["Rules"]["AlarmEndpoint"]["Assertions"][0]["Assert"]
    assert "Fn::Or" in rule  # a stack with neither phone nor e-mail is refused before anything is created


def test_every_aws_resource_of_stack_yaml_is_rendered(rendered):
    spec = infra.load_spec(target="aws", expand=False)
    origins = set(rendered.resources.values())
    for r in spec:
        assert (r.type, r.name) in origins, r.key
        body = rendered.template["Resources"][cf.logical_id(r.type, r.name)]
        assert body["Type"] == cf.CFN_TYPES[r.type]
    # every Lambda package the template refers to is in the rendered set, under a content-hash key
    keys = {
        body["Properties"]["Code"]["S3Key"]
        for body in rendered.template["Resources"].values()
        if body["Type"] == "AWS::Lambda::Function"
    }
    assert keys == set(rendered.packages) and len(keys) == sum(r.type == "lambda_function" for r in spec)


def test_firehose_to_opensearch_waits_for_the_domain_and_buffers_briefly(rendered):
    dest = rendered.template["Resources"]["FirehoseWeblogs"]["Properties"][
        "AmazonopensearchserviceDestinationConfiguration"
    ]
    assert dest["DomainARN"] == {"Fn::GetAtt": ["DomainLogs", "Arn"]}  # the stream is created after the domain
    assert dest["BufferingHints"]["IntervalInSeconds"] <= 60 and dest["BufferingHints"]["SizeInMBs"] <= 5
    processor = dest["ProcessingConfiguration"]["Processors"][0]["Parameters"][0]
    assert processor["ParameterValue"] == {"Fn::GetAtt": ["FunctionWeblogsTransform", "Arn"]}


def test_unknown_environment_variable_cannot_become_part_of_the_template(tmp_path):
    path = tmp_path / "resources.yaml"
    path.write_text("resources:\n  - type: sns_topic\n    name: t\n    sms_subscription: ${SOMETHING_ELSE}\n")
    with pytest.raises(InfraError, match="no template parameter"):
        cf.render(infra.load_spec(path, target="aws", expand=False))


# ---------------------------------------------------------------------------- parity with the reconciler (issue 12 §7)

ACCOUNT, REGION = "123456789012", "eu-west-1"


class Evaluator:
    """Resolves the template's intrinsic functions the way CloudFormation does (documented Ref/GetAtt values)."""

    def __init__(self, template: dict, params: dict[str, str]) -> None:
        self.resources = template["Resources"]
        self.values = {**params, "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws"}

    def __call__(self, expr):
        if isinstance(expr, list):
            return [self(e) for e in expr]
        if not isinstance(expr, dict):
            return expr
        if set(expr) == {"Fn::Sub"}:
            return re.sub(r"\$\{([^}]+)\}", lambda m: self._ref(m.group(1)), expr["Fn::Sub"])
        if set(expr) == {"Ref"}:
            return self._ref(expr["Ref"])
        if set(expr) == {"Fn::GetAtt"}:
            return self._getatt(*expr["Fn::GetAtt"])
        if set(expr) == {"Fn::Join"}:
            sep, items = expr["Fn::Join"]
            return sep.join(self(items))
        if set(expr) == {"Fn::Split"}:
            sep, text = expr["Fn::Split"]
            return self(text).split(sep)
        return {k: self(v) for k, v in expr.items()}

    def _props(self, logical: str) -> dict:
        return self(self.resources[logical]["Properties"])

    def _ref(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        kind, p = self.resources[name]["Type"], self._props(name)
        return {
            "AWS::S3::Bucket": lambda: p["BucketName"],
            "AWS::Kinesis::Stream": lambda: p["Name"],
            "AWS::DynamoDB::Table": lambda: p["TableName"],
            "AWS::SQS::Queue": lambda: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{p['QueueName']}",
            "AWS::SNS::Topic": lambda: f"arn:aws:sns:{REGION}:{ACCOUNT}:{p['TopicName']}",
            "AWS::Glue::Database": lambda: p["DatabaseInput"]["Name"],
            "AWS::IAM::Role": lambda: p["RoleName"],
            "AWS::IAM::InstanceProfile": lambda: p["InstanceProfileName"],
            "AWS::Lambda::Function": lambda: p["FunctionName"],
            "AWS::OpenSearchService::Domain": lambda: p["DomainName"],
            "AWS::KinesisFirehose::DeliveryStream": lambda: p["DeliveryStreamName"],
        }[kind]()

    def _getatt(self, logical: str, attribute: str) -> str:
        kind, p = self.resources[logical]["Type"], self._props(logical)
        if attribute == "QueueName":
            return p["QueueName"]
        assert attribute == "Arn", attribute
        return {
            "AWS::S3::Bucket": lambda: f"arn:aws:s3:::{p['BucketName']}",
            "AWS::Kinesis::Stream": lambda: f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{p['Name']}",
            "AWS::SQS::Queue": lambda: f"arn:aws:sqs:{REGION}:{ACCOUNT}:{p['QueueName']}",
            "AWS::IAM::Role": lambda: f"arn:aws:iam::{ACCOUNT}:role/{p['RoleName']}",
            "AWS::Lambda::Function": lambda: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{p['FunctionName']}",
            "AWS::OpenSearchService::Domain": lambda: f"arn:aws:es:{REGION}:{ACCOUNT}:domain/{p['DomainName']}",
        }[kind]()


def aws_target_layer() -> str:
    """A layer version that exists (moto checks a function's layers): the same name the layer build publishes."""
    from shoplake import config

    return config.client("lambda").publish_layer_version(
        LayerName="shoplake-par-rate-detector", Content={"ZipFile": b"PK\x05\x06" + b"\x00" * 18}
    )["LayerVersionArn"]


def _sorted_statements(doc: dict) -> list:
    return sorted(
        (
            tuple(sorted(st["Action"])),
            tuple(sorted(st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])),
        )
        for st in doc["Statement"]
    )


def test_template_and_reconciler_describe_the_same_resources(aws_target, monkeypatch):
    """Every aws resource of resources.yaml: the reconciler's create requests (recorded, validated by botocore) and the
    template's properties (intrinsics resolved) carry the same physical names, policy actions and settings."""
    monkeypatch.setenv("SHOPLAKE_PREFIX", "par")
    layer = aws_target_layer()
    monkeypatch.setenv("SHOPLAKE_RATE_DETECTOR_LAYER", layer)
    monkeypatch.setenv("SHOPLAKE_ALARM_PHONE", "+447700900123")
    monkeypatch.setenv("SHOPLAKE_ALARM_EMAIL", "alarms@example.com")
    from moto.awslambda.models import LambdaBackend

    monkeypatch.setattr(LambdaBackend, "send_kinesis_message", lambda self, *a, **k: None)
    spec = infra.load_spec(target="aws")
    params = {
        "Prefix": "par",
        "CodeBucket": "b",
        "AlarmPhone": "+447700900123",
        "AlarmEmail": "alarms@example.com",
        "RateDetectorLayerArn": layer,
    }
    moto_refused = []
    for r in spec:  # apply order: roles, buckets, ... mappings
        try:
            infra.HANDLERS[r.type].create(r)
        except Exception as exc:  # the request was recorded (and validated by botocore) before moto answered
            moto_refused.append((r.key, str(exc)[:200]))
    # moto does not emulate an OpenSearch destination, nor know every AWS managed policy (AmazonEMRServicePolicy_v2)
    assert {k for k, _ in moto_refused} <= {"firehose_delivery_stream:weblogs", "iam_role:emr-service"}, moto_refused
    rendered = cf.render(infra.load_spec(target="aws", expand=False))  # right after: the same source files
    ev = Evaluator(rendered.template, params)

    def requests(operation: str) -> list[dict]:
        return [c.params for c in aws_target.calls if c.operation == operation]

    def one(operation: str, key: str, value: str) -> dict:
        found = [p for p in requests(operation) if p.get(key) == value]
        assert len(found) == 1, (operation, value, [p.get(key) for p in requests(operation)])
        return found[0]

    checked = set()
    for r in spec:
        lid = cf.logical_id(r.type, r.name)
        t = ev(rendered.template["Resources"][lid]["Properties"])
        name = infra.physical_name(r)
        if r.type == "s3_bucket":
            assert t["BucketName"] == name == one("CreateBucket", "Bucket", name)["Bucket"]
            api = one("PutBucketEncryption", "Bucket", name)["ServerSideEncryptionConfiguration"]["Rules"]
            cfn = t["BucketEncryption"]["ServerSideEncryptionConfiguration"]  # CloudFormation drops "Apply"
            assert [x["ApplyServerSideEncryptionByDefault"] for x in api] == [
                x["ServerSideEncryptionByDefault"] for x in cfn
            ]
            pab = one("PutPublicAccessBlock", "Bucket", name)["PublicAccessBlockConfiguration"]
            assert pab == t["PublicAccessBlockConfiguration"]
        elif r.type == "kinesis_stream":
            req = one("CreateStream", "StreamName", name)
            assert (t["Name"], t["ShardCount"]) == (name, req["ShardCount"])
            assert t["RetentionPeriodHours"] == int(r.props.get("retention_hours", 24))
        elif r.type == "dynamodb_table":
            req = one("CreateTable", "TableName", name)
            for key in ("TableName", "BillingMode", "KeySchema", "AttributeDefinitions"):
                assert t[key] == req[key], key
        elif r.type == "sqs_queue":
            req = one("CreateQueue", "QueueName", name)
            assert t["QueueName"] == name
            assert str(t["MessageRetentionPeriod"]) == req["Attributes"]["MessageRetentionPeriod"]
            assert str(t["SqsManagedSseEnabled"]).lower() == req["Attributes"]["SqsManagedSseEnabled"]
        elif r.type == "sns_topic":
            assert t["TopicName"] == name == one("CreateTopic", "Name", name)["Name"]
            subs = {(p["Protocol"], p["Endpoint"]) for p in requests("Subscribe")}
            rendered_subs = {
                (ev(b["Properties"]["Protocol"]), ev(b["Properties"]["Endpoint"]))
                for b in rendered.template["Resources"].values()
                if b["Type"] == "AWS::SNS::Subscription"
            }
            assert subs == rendered_subs and {p for p, _ in subs} == {"sms", "email", "sqs"}
            [policy] = [
                ev(b["Properties"]["PolicyDocument"])
                for b in rendered.template["Resources"].values()
                if b["Type"] == "AWS::SQS::QueuePolicy"
            ]
            assert json.loads(requests("SetQueueAttributes")[0]["Attributes"]["Policy"]) == policy
        elif r.type == "glue_database":
            assert one("CreateDatabase", "DatabaseInput", t["DatabaseInput"])["DatabaseInput"]["Name"] == name
        elif r.type == "iam_role":
            req = one("CreateRole", "RoleName", name)
            assert t["RoleName"] == name
            assert json.loads(req["AssumeRolePolicyDocument"]) == t["AssumeRolePolicyDocument"]
            put = one("PutRolePolicy", "RoleName", name)
            assert _sorted_statements(json.loads(put["PolicyDocument"])) == _sorted_statements(
                t["Policies"][0]["PolicyDocument"]
            )
            attached = sorted(p["PolicyArn"] for p in requests("AttachRolePolicy") if p["RoleName"] == name)
            assert attached == sorted(t.get("ManagedPolicyArns", []))
            profiles = [p for p in requests("CreateInstanceProfile") if p["InstanceProfileName"] == name]
            assert bool(profiles) == bool(r.props.get("instance_profile"))
            if profiles:
                [profile] = [
                    ev(b["Properties"])
                    for b in rendered.template["Resources"].values()
                    if b["Type"] == "AWS::IAM::InstanceProfile" and b["Properties"]["Roles"] == [{"Ref": lid}]
                ]
                assert profile["InstanceProfileName"] == name
        elif r.type == "lambda_function":
            req = one("CreateFunction", "FunctionName", name)
            for key in ("FunctionName", "Runtime", "Role", "Handler", "Timeout", "MemorySize"):
                assert t[key] == req[key], key
            assert t.get("Environment", {}).get("Variables", {}) == req["Environment"]["Variables"]
            assert t.get("Layers", []) == req.get("Layers", [])
            assert rendered.packages[t["Code"]["S3Key"]] == req["Code"]["ZipFile"]
        elif r.type == "firehose_delivery_stream":
            req = one("CreateDeliveryStream", "DeliveryStreamName", name)
            assert t["DeliveryStreamName"] == name and t["DeliveryStreamType"] == req["DeliveryStreamType"]
            for key in ("ExtendedS3DestinationConfiguration", "AmazonopensearchserviceDestinationConfiguration"):
                assert t.get(key) == req.get(key), key
        elif r.type == "opensearch_domain":
            req = one("CreateDomain", "DomainName", name)
            for key in ("DomainName", "EngineVersion", "ClusterConfig", "EBSOptions", "DomainEndpointOptions"):
                assert t[key] == req[key], key
            assert t["AccessPolicies"] == json.loads(req["AccessPolicies"])
        elif r.type == "event_source_mapping":
            function = infra.physical_name(infra.find("lambda_function", r.props["function"], target="aws"))
            [req] = [p for p in requests("CreateEventSourceMapping") if p["FunctionName"] == function]
            for key in req:
                assert t[key] == req[key], key
        checked.add(r.type)
    assert checked == set(infra.HANDLERS)  # every resource type of resources.yaml was compared
