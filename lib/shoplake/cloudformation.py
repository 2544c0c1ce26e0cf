"""CloudFormation for the aws target: render ``infra/resources.yaml`` into one template, and plan/apply/destroy it.

The local target keeps the reconciler in :mod:`shoplake.infra`; on aws the same ``resources.yaml`` becomes one stack
(``shoplake-<prefix>``) that CloudFormation creates, updates (change sets: a plan says what will be replaced), rolls
back and deletes. Lambda code is packaged to a bootstrap bucket per account and region (created on first use) under
content-hash keys, so a changed handler is a changed S3 key and CloudFormation updates the function.

The OpenSearch index template (``infra/opensearch/weblogs-template.json``) is installed by :func:`apply` as a
post-deploy step (opensearch-py, SigV4-signed with the caller's credentials), not by a custom resource: a custom
resource would need its own Lambda with opensearch-py and a signer, and a failing install would roll back the whole
stack. Users who deploy the template without shoplake install it with any SigV4 client (README).

cfn-lint (errors, warnings and informational findings) must report nothing; rules ignored are listed in
:data:`IGNORED_RULES` with their reason (none today). Findings on the first render (cfn-lint 1.58.0): no errors, no
warnings, one informational I3011 (the Kinesis stream had no explicit DeletionPolicy/UpdateReplacePolicy; now Delete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shoplake import config
from shoplake import resources as stack_spec
from shoplake.errors import InfraError

if TYPE_CHECKING:
    from shoplake.resources import Change, Resource

log = logging.getLogger(__name__)

# cfn-lint rule id -> why it does not apply to this template (listed next to the renderer).
IGNORED_RULES: dict[str, str] = {}

LAMBDA_RUNTIME = "python3.12"
CODE_KEY_PREFIX = "shoplake/lambda"
# Prefix: lower-case (bucket and OpenSearch domain names); at most 14 characters so that
# shoplake-<prefix>-logs fits OpenSearch's 28 and shoplake-<prefix>-artifacts-<account>-<region> fits S3's 63.
PREFIX_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
PREFIX_MAX = 14
LAYER_PATTERN = r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:layer:[A-Za-z0-9_-]+:[0-9]+$"
PHONE_PATTERN = r"^(\+[1-9][0-9]{6,14})?$"
EMAIL_PATTERN = r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$"
FICTIONAL_PHONE = "+15555550100"  # the local target's stand-in; never subscribed on a real account

# environment variables of resources.yaml that become template parameters (never baked into the template)
ENV_PARAMETERS = {
    "SHOPLAKE_RATE_DETECTOR_LAYER": "RateDetectorLayerArn",
    "SHOPLAKE_ALARM_PHONE": "AlarmPhone",
    "SHOPLAKE_ALARM_EMAIL": "AlarmEmail",
}

CFN_TYPES = {
    "s3_bucket": "AWS::S3::Bucket",
    "kinesis_stream": "AWS::Kinesis::Stream",
    "dynamodb_table": "AWS::DynamoDB::Table",
    "sqs_queue": "AWS::SQS::Queue",
    "sns_topic": "AWS::SNS::Topic",
    "glue_database": "AWS::Glue::Database",
    "iam_role": "AWS::IAM::Role",
    "lambda_function": "AWS::Lambda::Function",
    "firehose_delivery_stream": "AWS::KinesisFirehose::DeliveryStream",
    "opensearch_domain": "AWS::OpenSearchService::Domain",
    "event_source_mapping": "AWS::Lambda::EventSourceMapping",
}
LOGICAL_PREFIX = {
    "s3_bucket": "Bucket",
    "kinesis_stream": "Stream",
    "dynamodb_table": "Table",
    "sqs_queue": "Queue",
    "sns_topic": "Topic",
    "glue_database": "GlueDatabase",
    "iam_role": "Role",
    "lambda_function": "Function",
    "firehose_delivery_stream": "Firehose",
    "opensearch_domain": "Domain",
    "event_source_mapping": "Mapping",
}
KIND_TYPE = {  # reference kind in resources.yaml -> resource type
    "bucket": "s3_bucket",
    "stream": "kinesis_stream",
    "table": "dynamodb_table",
    "queue": "sqs_queue",
    "topic": "sns_topic",
    "function": "lambda_function",
    "role": "iam_role",
    "opensearch": "opensearch_domain",
    "firehose": "firehose_delivery_stream",
}


def camel(name: str) -> str:
    """``order-history-dlq`` → ``OrderHistoryDlq`` (logical ids and output keys are alphanumeric)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def logical_id(resource_type: str, name: str) -> str:
    return LOGICAL_PREFIX[resource_type] + camel(name)


def output_key(ref: str) -> str:
    """The Output key of a reference the code reads (``queue_url:alarm-inbox`` → ``QueueUrlAlarmInbox``)."""
    kind, _, short = ref.partition(":")
    return camel(kind) + camel(short)


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _getatt(logical: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical, attribute]}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


# ---------------------------------------------------------------------------- names and ARNs as template expressions


def name_expr(resource_type: str, short: str) -> Any:
    """The physical name of a stack resource as a template expression (same rule as ``infra.physical_name``)."""
    if resource_type == "s3_bucket":
        return _sub(f"shoplake-${{Prefix}}-{short}-${{AWS::AccountId}}-${{AWS::Region}}")
    if resource_type == "glue_database":  # shoplake_<prefix> with '-' → '_' (Glue and Athena want underscores)
        return {"Fn::Join": ["_", {"Fn::Split": ["-", _sub("shoplake_${Prefix}")]}]}
    return _sub(f"shoplake-${{Prefix}}-{short}")


def _name_text(resource_type: str, short: str) -> str:
    """The ``Fn::Sub`` text of a physical name (for ARNs built from it)."""
    if resource_type == "s3_bucket":
        return f"shoplake-${{Prefix}}-{short}-${{AWS::AccountId}}-${{AWS::Region}}"
    return f"shoplake-${{Prefix}}-{short}"


def arn_expr(kind: str, short: str) -> dict[str, str]:
    """An ARN of the stack (``stream:orders``, ``bucket:lake/*``, ``logs:*``) as ``Fn::Sub`` (no dependency)."""
    head = "arn:${AWS::Partition}"
    where = "${AWS::Region}:${AWS::AccountId}"
    if kind == "bucket":
        bucket, slash, rest = short.partition("/")
        return _sub(f"{head}:s3:::{_name_text('s3_bucket', bucket)}{slash}{rest}")
    if kind == "logs":
        return _sub(f"{head}:logs:{where}:{short}")
    if kind == "opensearch":
        domain, slash, rest = short.partition("/")
        return _sub(f"{head}:es:{where}:domain/{_name_text('opensearch_domain', domain)}{slash}{rest}")
    name = _name_text(KIND_TYPE.get(kind, ""), short)
    templates = {
        "stream": f"{head}:kinesis:{where}:stream/{name}",
        "table": f"{head}:dynamodb:{where}:table/{name}",
        "queue": f"{head}:sqs:{where}:{name}",
        "topic": f"{head}:sns:{where}:{name}",
        "function": f"{head}:lambda:{where}:function:{name}",
        "role": f"{head}:iam::${{AWS::AccountId}}:role/{name}",
        "firehose": f"{head}:firehose:{where}:deliverystream/{name}",
    }
    if kind not in templates:
        raise InfraError(f"unknown reference kind {kind!r} (in {kind}:{short}) in infra/resources.yaml")
    return _sub(templates[kind])


def ref_expr(ref: str) -> Any:
    """A value reference of resources.yaml (``table:x``, ``queue_url:x``, ``topic_arn:x`` ...) as a template expression.

    Refs to resources of the stack create the dependency (the function waits for its table and queue).
    """
    kind, _, short = ref.partition(":")
    if kind in ("table", "stream", "function"):  # Ref of these is the name
        return _ref(logical_id(KIND_TYPE[kind], short))
    if kind == "queue":  # Ref of a queue is its URL
        return _getatt(logical_id("sqs_queue", short), "QueueName")
    if kind == "queue_url":
        return _ref(logical_id("sqs_queue", short))
    if kind == "topic_arn":
        return _ref(logical_id("sns_topic", short))
    if kind == "glue_database":
        return _ref(logical_id("glue_database", short or "lake"))
    if kind.endswith("_arn"):
        base = kind[: -len("_arn")]
        if base in KIND_TYPE:
            return _getatt(logical_id(KIND_TYPE[base], short), "Arn")
    if kind in ("role_name", "bucket_name"):
        return _ref(logical_id(KIND_TYPE[kind.split("_")[0]], short))
    return ref


_ENV = re.compile(r"^\$\{([A-Z0-9_]+)(?::-[^}]*)?\}$")


def _param_of(value: Any) -> str | None:
    """The template parameter an unexpanded ``${VAR}`` value of resources.yaml stands for (None for a literal)."""
    if not isinstance(value, str):
        return None
    match = _ENV.match(value.strip())
    if not match:
        if "${" in value:
            raise InfraError(f"infra/resources.yaml value {value!r}: on aws only a whole ${{VAR}} can be a parameter")
        return None
    var = match.group(1)
    if var not in ENV_PARAMETERS:
        raise InfraError(
            f"infra/resources.yaml uses ${{{var}}}, which has no template parameter (known: {sorted(ENV_PARAMETERS)})"
        )
    return ENV_PARAMETERS[var]


# ---------------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """A rendered template with the Lambda packages it refers to (S3 key → zip bytes)."""

    template: dict[str, Any]
    packages: dict[str, bytes] = field(default_factory=dict)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)  # logical id -> (resources.yaml type, name)
    outputs: dict[str, str] = field(default_factory=dict)  # reference the code reads -> output key

    def body(self) -> str:
        return to_yaml(self.template)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no YAML anchors: every value written out in full
        return True


def to_yaml(template: dict[str, Any]) -> str:
    return yaml.dump(template, Dumper=_NoAliases, sort_keys=False, width=120, default_flow_style=False)


def code_key(r: Resource, package: bytes) -> str:
    return f"{CODE_KEY_PREFIX}/{r.name}-{hashlib.sha256(package).hexdigest()[:24]}.zip"


def _tags() -> list[dict[str, Any]]:
    return [{"Key": "shoplake:prefix", "Value": _ref("Prefix")}]


def render(spec: list[Resource] | None = None) -> Rendered:
    """Render every aws resource of ``resources.yaml`` (unexpanded: ``${VAR}`` become parameters) into one template."""
    spec = spec if spec is not None else stack_spec.load_spec(target="aws", expand=False)
    by_key = {r.key: r for r in spec}
    out = Rendered(template={})
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    conditions: dict[str, Any] = {}

    def output(ref: str, value: Any) -> None:
        key = output_key(ref)
        if key in outputs:
            raise InfraError(f"two resources.yaml references render to the same Output {key}: rename one")
        outputs[key] = {"Description": ref, "Value": value}
        out.outputs[ref] = key

    def add(logical: str, body: dict[str, Any], origin: tuple[str, str]) -> None:
        if logical in resources:
            raise InfraError(f"two resources.yaml resources render to the same logical id {logical}: rename one")
        resources[logical] = body
        out.resources[logical] = origin

    for r in spec:
        p = r.props
        lid = logical_id(r.type, r.name)
        origin = (r.type, r.name)
        if r.type == "s3_bucket":
            add(
                lid,
                {
                    "Type": "AWS::S3::Bucket",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "BucketName": name_expr(r.type, r.name),
                        "PublicAccessBlockConfiguration": {
                            "BlockPublicAcls": True,
                            "IgnorePublicAcls": True,
                            "BlockPublicPolicy": True,
                            "RestrictPublicBuckets": True,
                        },
                        "BucketEncryption": {
                            "ServerSideEncryptionConfiguration": [
                                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                            ]
                        },
                        "Tags": _tags(),
                    },
                },
                origin,
            )
            output(f"bucket:{r.name}", _ref(lid))
        elif r.type == "kinesis_stream":
            add(
                lid,
                {
                    "Type": "AWS::Kinesis::Stream",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "Name": name_expr(r.type, r.name),
                        "ShardCount": int(p.get("shards", 1)),
                        "RetentionPeriodHours": int(p.get("retention_hours", 24)),
                        "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                        "Tags": _tags(),
                    },
                },
                origin,
            )
            output(f"stream:{r.name}", _ref(lid))
            output(f"stream_arn:{r.name}", _getatt(lid, "Arn"))
        elif r.type == "dynamodb_table":
            add(
                lid,
                {
                    "Type": "AWS::DynamoDB::Table",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "TableName": name_expr(r.type, r.name),
                        "BillingMode": "PAY_PER_REQUEST",
                        **stack_spec.table_keys(p),
                        "Tags": _tags(),
                    },
                },
                origin,
            )
            output(f"table:{r.name}", _ref(lid))
        elif r.type == "sqs_queue":
            add(
                lid,
                {
                    "Type": "AWS::SQS::Queue",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "QueueName": name_expr(r.type, r.name),
                        "MessageRetentionPeriod": 14 * 24 * 3600,
                        "SqsManagedSseEnabled": True,
                        "Tags": _tags(),
                    },
                },
                origin,
            )
            output(f"queue:{r.name}", _getatt(lid, "QueueName"))
            output(f"queue_arn:{r.name}", _getatt(lid, "Arn"))
            output(f"queue_url:{r.name}", _ref(lid))
        elif r.type == "sns_topic":
            add(
                lid,
                {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": name_expr(r.type, r.name), "Tags": _tags()}},
                origin,
            )
            output(f"topic_arn:{r.name}", _ref(lid))
            _render_subscriptions(r, lid, add, conditions)
        elif r.type == "glue_database":
            add(
                lid,
                {
                    "Type": "AWS::Glue::Database",
                    "Properties": {
                        "CatalogId": _ref("AWS::AccountId"),
                        "DatabaseInput": {
                            "Name": name_expr(r.type, r.name),
                            "Description": "shoplake data lake (curated Parquet)",
                            "LocationUri": _sub(f"s3://{_name_text('s3_bucket', 'lake')}/curated/"),
                        },
                    },
                },
                origin,
            )
            output("glue_database", _ref(lid))
        elif r.type == "iam_role":
            _render_role(r, lid, add, output)
        elif r.type == "lambda_function":
            package = stack_spec.lambda_package(r)
            key = code_key(r, package)
            out.packages[key] = package
            props: dict[str, Any] = {
                "FunctionName": name_expr(r.type, r.name),
                "Runtime": LAMBDA_RUNTIME,
                "Architectures": ["x86_64"],
                "Role": _getatt(logical_id("iam_role", p["role"]), "Arn"),
                "Handler": p["handler"],
                "Code": {"S3Bucket": _ref("CodeBucket"), "S3Key": key},
                "Timeout": int(p.get("timeout", 60)),
                "MemorySize": int(p.get("memory", 256)),
                "Tags": _tags(),
            }
            env = {k: ref_expr(str(v)) for k, v in (p.get("environment") or {}).items()}
            if env:
                props["Environment"] = {"Variables": env}
            layers = []
            for layer in p.get("layers") or []:
                param = _param_of(layer)
                layers.append(_ref(param) if param else str(layer))
            if layers:
                props["Layers"] = layers
            add(lid, {"Type": "AWS::Lambda::Function", "Properties": props}, origin)
            output(f"function:{r.name}", _ref(lid))
            output(f"function_arn:{r.name}", _getatt(lid, "Arn"))
        elif r.type == "firehose_delivery_stream":
            add(lid, _render_firehose(r), origin)
            output(f"firehose:{r.name}", _ref(lid))
        elif r.type == "opensearch_domain":
            add(lid, _render_domain(r), origin)
            output(f"opensearch:{r.name}", _ref(lid))
            output(f"opensearch_endpoint:{r.name}", _getatt(lid, "DomainEndpoint"))
        elif r.type == "event_source_mapping":
            add(lid, _render_mapping(r), origin)
        else:  # load_spec refuses unknown types; a new type must be rendered here before it can reach aws
            raise InfraError(f"{r.key}: the CloudFormation renderer has no rule for type {r.type!r}")

    missing = [ref for r in spec for ref in _refs_of(r) if ref not in by_key]
    if missing:
        raise InfraError(
            f"infra/resources.yaml refers to resources it does not declare for aws: {sorted(set(missing))}"
        )

    out.template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "shoplake: every aws resource of infra/resources.yaml (rendered by `shoplake infra template`)",
        "Parameters": _parameters(),
        "Rules": {
            "AlarmEndpoint": {
                "Assertions": [
                    {
                        "Assert": {
                            "Fn::Or": [
                                {"Fn::Not": [{"Fn::Equals": [_ref("AlarmPhone"), ""]}]},
                                {"Fn::Not": [{"Fn::Equals": [_ref("AlarmEmail"), ""]}]},
                            ]
                        },
                        "AssertDescription": "set AlarmPhone (a number verified in the SNS SMS sandbox) or "
                        "AlarmEmail: the alarms topic needs a real endpoint",
                    }
                ]
            }
        },
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": outputs,
    }
    if not conditions:
        del out.template["Conditions"]
    return out


def _parameters() -> dict[str, Any]:
    return {
        "Prefix": {
            "Type": "String",
            "Description": "resource name prefix (shoplake-<prefix>-...): lower-case letters, digits, '-'",
            "AllowedPattern": PREFIX_PATTERN,
            "MinLength": 1,
            "MaxLength": PREFIX_MAX,
            "ConstraintDescription": f"1-{PREFIX_MAX} lower-case letters, digits or single '-', starting with a letter",
        },
        "CodeBucket": {
            "Type": "String",
            "Description": "bucket holding the Lambda zips under shoplake/lambda/ (shoplake's bootstrap bucket)",
            "MinLength": 3,
            "MaxLength": 63,
        },
        "AlarmPhone": {
            "Type": "String",
            "Default": "",
            "Description": "E.164 phone number for alarm SMS (verified in the SNS SMS sandbox), or empty",
            "AllowedPattern": PHONE_PATTERN,
        },
        "AlarmEmail": {
            "Type": "String",
            "Default": "",
            "Description": "e-mail address for alarm notifications (confirm the subscription mail), or empty",
            "AllowedPattern": EMAIL_PATTERN,
        },
        "RateDetectorLayerArn": {
            "Type": "String",
            "Description": "layer version ARN with numpy + krcf for python3.12 x86_64 (`shoplake infra build-layer "
            "--publish`)",
            "AllowedPattern": LAYER_PATTERN,
            "ConstraintDescription": "a Lambda layer version ARN: run `shoplake infra build-layer --publish`",
        },
    }


def _refs_of(r: Resource) -> list[str]:
    """Keys (``type:name``) of the stack resources ``r`` points at, to refuse a dangling reference at render."""
    p, refs = r.props, []
    if r.type in ("lambda_function", "firehose_delivery_stream") and p.get("role"):
        refs.append(f"iam_role:{p['role']}")
    if r.type == "event_source_mapping":
        refs += [f"lambda_function:{p['function']}", f"kinesis_stream:{p['stream']}"]
    if r.type == "firehose_delivery_stream":
        refs.append(f"s3_bucket:{p['s3']['bucket']}")
        if p.get("opensearch"):
            refs.append(f"opensearch_domain:{p['opensearch']['domain']}")
            if p["opensearch"].get("transform_function"):
                refs.append(f"lambda_function:{p['opensearch']['transform_function']}")
    if r.type == "sns_topic":
        refs += [f"sqs_queue:{q}" for q in p.get("queue_subscriptions") or []]
    return refs


def _render_subscriptions(r: Resource, topic: str, add: Any, conditions: dict[str, Any]) -> None:
    p = r.props
    for prop, protocol, param, cond in (
        ("sms_subscription", "sms", "AlarmPhone", "HasAlarmPhone"),
        ("email_subscription", "email", "AlarmEmail", "HasAlarmEmail"),
    ):
        if prop not in p:
            continue
        value = p[prop]
        param_name = _param_of(value)
        if param_name is None:
            endpoint: Any = str(value)
        else:
            if param_name != param:
                raise InfraError(f"{r.key}: {prop} must come from ${{{_env_of(param)}}} on aws")
            endpoint = _ref(param)
            conditions[cond] = {"Fn::Not": [{"Fn::Equals": [_ref(param), ""]}]}
        body: dict[str, Any] = {
            "Type": "AWS::SNS::Subscription",
            "Properties": {"TopicArn": _ref(topic), "Protocol": protocol, "Endpoint": endpoint},
        }
        if param_name:
            body["Condition"] = cond
        add(f"{topic}{camel(protocol)}Subscription", body, (r.type, f"{r.name}/{protocol}"))
    for queue in p.get("queue_subscriptions") or []:
        qid = logical_id("sqs_queue", queue)
        add(
            f"{topic}To{qid}",
            {
                "Type": "AWS::SNS::Subscription",
                "Properties": {
                    "TopicArn": _ref(topic),
                    "Protocol": "sqs",
                    "Endpoint": _getatt(qid, "Arn"),
                    "RawMessageDelivery": False,
                },
            },
            (r.type, f"{r.name}/sqs:{queue}"),
        )
        add(
            f"{qid}Policy",
            {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [_ref(qid)],
                    "PolicyDocument": stack_spec.topic_to_queue_policy(_getatt(qid, "Arn"), _ref(topic)),
                },
            },
            ("sqs_queue", f"{queue}/policy"),
        )


def _env_of(param: str) -> str:
    return next(k for k, v in ENV_PARAMETERS.items() if v == param)


def policy_statements(r: Resource) -> list[dict[str, Any]]:
    """The inline policy of an ``iam_role`` entry as template statements (same actions/resources as the reconciler)."""
    statements = []
    for statement in r.props.get("policy", []):
        resources = []
        for ref in statement["resources"]:
            kind, _, short = ref.partition(":")
            resources.append(arn_expr(kind, short))
        statements.append({"Effect": "Allow", "Action": sorted(statement["actions"]), "Resource": resources})
    return statements


def _render_role(r: Resource, lid: str, add: Any, output: Any) -> None:
    p = r.props
    services = p["service"] if isinstance(p["service"], list) else [p["service"]]
    props: dict[str, Any] = {
        "RoleName": name_expr(r.type, r.name),
        "Description": f"shoplake {r.name} (least privilege, from infra/resources.yaml)",
        "AssumeRolePolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Principal": {"Service": services[0] if len(services) == 1 else services},
                }
            ],
        },
        "Tags": _tags(),
    }
    statements = policy_statements(r)
    if statements:
        props["Policies"] = [
            {"PolicyName": "shoplake", "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}
        ]
    if p.get("managed_policies"):
        props["ManagedPolicyArns"] = [
            _sub(str(a).replace("arn:aws:", "arn:${AWS::Partition}:")) for a in p["managed_policies"]
        ]
    add(lid, {"Type": "AWS::IAM::Role", "Properties": props}, (r.type, r.name))
    output(f"role_arn:{r.name}", _getatt(lid, "Arn"))
    output(f"role_name:{r.name}", _ref(lid))
    if p.get("instance_profile"):
        pid = f"{lid}InstanceProfile"
        add(
            pid,
            {
                "Type": "AWS::IAM::InstanceProfile",
                "Properties": {"InstanceProfileName": name_expr(r.type, r.name), "Roles": [_ref(lid)]},
            },
            (r.type, f"{r.name}/instance-profile"),
        )
        output(f"instance_profile:{r.name}", _ref(pid))
        output(f"instance_profile_arn:{r.name}", _getatt(pid, "Arn"))


def _s3_destination(r: Resource, role: Any) -> dict[str, Any]:
    s3 = r.props["s3"]
    return {
        "BucketARN": _getatt(logical_id("s3_bucket", s3["bucket"]), "Arn"),
        "RoleARN": role,
        "Prefix": s3["prefix"],
        "ErrorOutputPrefix": s3["error_prefix"],
        "BufferingHints": {
            "SizeInMBs": int(s3.get("buffer_mb", 5)),
            "IntervalInSeconds": int(s3.get("buffer_seconds", 300)),
        },
        "CompressionFormat": "UNCOMPRESSED",
    }


def _render_firehose(r: Resource) -> dict[str, Any]:
    p = r.props
    role = _getatt(logical_id("iam_role", p["role"]), "Arn")
    props: dict[str, Any] = {"DeliveryStreamName": name_expr(r.type, r.name), "DeliveryStreamType": "DirectPut"}
    search = p.get("opensearch")
    if not search:
        props["ExtendedS3DestinationConfiguration"] = _s3_destination(r, role)
        return {"Type": "AWS::KinesisFirehose::DeliveryStream", "Properties": props}
    backup = _s3_destination(r, role)
    backup["Prefix"] = p["s3"]["error_prefix"]
    transform = search.get("transform_function")
    dest = stack_spec.opensearch_destination(
        search,
        role=role,
        # GetAtt on the domain: CloudFormation creates the stream only once the domain is active (not processing)
        domain=_getatt(logical_id("opensearch_domain", search["domain"]), "Arn"),
        backup=backup,
        transform=_getatt(logical_id("lambda_function", transform), "Arn") if transform else None,
    )
    props["AmazonopensearchserviceDestinationConfiguration"] = dest
    return {"Type": "AWS::KinesisFirehose::DeliveryStream", "Properties": props}


def _render_domain(r: Resource) -> dict[str, Any]:
    p = r.props
    return {
        "Type": "AWS::OpenSearchService::Domain",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "DomainName": name_expr(r.type, r.name),
            "EngineVersion": p.get("engine_version", "OpenSearch_2.19"),
            "ClusterConfig": {
                "InstanceType": p.get("instance_type", "t3.small.search"),
                "InstanceCount": int(p.get("instance_count", 1)),
            },
            "EBSOptions": {"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": int(p.get("volume_gb", 10))},
            "EncryptionAtRestOptions": {"Enabled": True},
            "NodeToNodeEncryptionOptions": {"Enabled": True},
            "DomainEndpointOptions": {"EnforceHTTPS": True, "TLSSecurityPolicy": "Policy-Min-TLS-1-2-2019-07"},
            # IAM decides: principals of this account whose own policies grant es:ESHttp* (the Firehose role, you)
            "AccessPolicies": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
                        "Action": "es:ESHttp*",
                        "Resource": arn_expr("opensearch", f"{r.name}/*"),
                    }
                ],
            },
            "Tags": _tags(),
        },
    }


def _render_mapping(r: Resource) -> dict[str, Any]:
    p = r.props
    props: dict[str, Any] = {
        "EventSourceArn": _getatt(logical_id("kinesis_stream", p["stream"]), "Arn"),
        "FunctionName": _ref(logical_id("lambda_function", p["function"])),
        "BatchSize": int(p.get("batch_size", 100)),
        "MaximumBatchingWindowInSeconds": int(p.get("batching_window_seconds", 0)),
        "StartingPosition": p.get("starting_position", "TRIM_HORIZON"),
        "BisectBatchOnFunctionError": bool(p.get("bisect_on_error", False)),
        "MaximumRetryAttempts": int(p.get("max_retry_attempts", -1)),
    }
    if p.get("function_response_types"):
        props["FunctionResponseTypes"] = list(p["function_response_types"])
    if p.get("tumbling_window_seconds"):
        props["TumblingWindowInSeconds"] = int(p["tumbling_window_seconds"])
    if p.get("on_failure"):
        kind, _, short = p["on_failure"].partition(":")
        props["DestinationConfig"] = {"OnFailure": {"Destination": _getatt(logical_id(KIND_TYPE[kind], short), "Arn")}}
    return {"Type": "AWS::Lambda::EventSourceMapping", "Properties": props}


# ---------------------------------------------------------------------------- lint


def lint(template: dict[str, Any] | str, regions: list[str] | None = None) -> list[Any]:
    """cfn-lint findings (errors, warnings and informational) of a template, minus :data:`IGNORED_RULES`."""
    from cfnlint.api import ManualArgs
    from cfnlint.api import lint as cfn_lint

    body = template if isinstance(template, str) else to_yaml(template)
    args = ManualArgs(
        regions=regions or ["eu-west-1", "us-east-1"], ignore_checks=sorted(IGNORED_RULES), include_checks=["I"]
    )
    return list(cfn_lint(body, config=args))


def write_template(out: Path, spec: list[Resource] | None = None) -> Rendered:
    """Write the template to ``out`` and the Lambda zips next to it (``<out dir>/lambda/<name>-<hash>.zip``)."""
    rendered = render(spec)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.body())
    for key, package in rendered.packages.items():
        path = out.parent / "lambda" / Path(key).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(package)
    return rendered


# ---------------------------------------------------------------------------- the aws backend: one stack per prefix

# Resource types moto 5.2.5's CloudFormation accepts but silently does not create (the stack still completes).
MOTO_SKIPPED_TYPES = (
    "AWS::KinesisFirehose::DeliveryStream",
    "AWS::Glue::Database",
    "AWS::SNS::Subscription",
    "AWS::SQS::QueuePolicy",
    "AWS::OpenSearchService::Domain",
)
TERMINAL_OK = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
TERMINAL_FAILED = {
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_FAILED",
    "DELETE_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
    "IMPORT_ROLLBACK_FAILED",
}
ACTIONS = {"Add": "create", "Modify": "update", "Remove": "delete", "Import": "import", "Dynamic": "update"}
QUEUE_RECREATE_SECONDS = 61  # SQS refuses a queue name for 60 s after it was deleted (QueueDeletedRecently)
MAX_TEMPLATE_BODY = 51_200  # larger templates go through S3 (TemplateURL)
POLL_SECONDS = 5.0  # between describe calls while a change set or the stack settles


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def stack_name(prefix: str | None = None) -> str:
    return f"shoplake-{prefix or config.settings().prefix}"


def bootstrap_bucket() -> str:
    """The bucket holding Lambda zips (and large templates) for this account and region; shared by prefixes."""
    return f"shoplake-bootstrap-{stack_spec._account()}-{config.settings().region}"


def check_prefix(prefix: str) -> None:
    if not re.fullmatch(PREFIX_PATTERN, prefix) or len(prefix) > PREFIX_MAX:
        raise InfraError(
            f"prefix {prefix!r} cannot name resources on aws: use 1-{PREFIX_MAX} lower-case letters, digits or single "
            "'-', starting with a letter (bucket and OpenSearch domain names are lower-case and short); "
            "set SHOPLAKE_PREFIX"
        )


def _now() -> float:
    return time.time()


class CloudFormationStack:
    """The aws backend of :mod:`shoplake.infra`: the same verbs as the local reconciler, done by CloudFormation."""

    def __init__(self, spec: list[Resource] | None = None, poll_seconds: float | None = None) -> None:
        self._spec = spec
        self.poll_seconds = POLL_SECONDS if poll_seconds is None else poll_seconds

    # ------------------------------------------------------------------ inputs
    def spec(self) -> list[Resource]:
        return self._spec if self._spec is not None else stack_spec.load_spec(target="aws", expand=False)

    @property
    def name(self) -> str:
        return stack_name()

    def cfn(self) -> Any:
        return config.client("cloudformation")

    def parameters(self) -> dict[str, str]:

        knobs = config.settings()
        values = {
            "Prefix": knobs.prefix,
            "CodeBucket": bootstrap_bucket(),
            "AlarmPhone": knobs.alarm_phone or "",
            "AlarmEmail": knobs.alarm_email or "",
            "RateDetectorLayerArn": knobs.rate_detector_layer or "",
        }
        return values

    def preflight(self, rendered: Rendered) -> dict[str, str]:
        """Every reason the stack cannot be deployed, in one message, before anything is created."""
        values = self.parameters()
        problems = []
        try:
            check_prefix(values["Prefix"])
        except InfraError as exc:
            problems.append(str(exc))
        uses = json.dumps(rendered.template["Resources"])
        if '"RateDetectorLayerArn"' in uses and not re.fullmatch(LAYER_PATTERN, values["RateDetectorLayerArn"]):
            problems.append(
                "the rate-detector function needs numpy + krcf as a Lambda layer, and SHOPLAKE_RATE_DETECTOR_LAYER "
                f"is {values['RateDetectorLayerArn'] or 'not set'}: run `shoplake infra build-layer --publish` and "
                "export the layer version ARN it prints"
            )
        if '"AlarmPhone"' in uses or '"AlarmEmail"' in uses:
            phone, email = values["AlarmPhone"], values["AlarmEmail"]
            if phone == FICTIONAL_PHONE:
                problems.append(
                    f"SHOPLAKE_ALARM_PHONE={FICTIONAL_PHONE} is the local target's fictional number: on aws use a "
                    "real number verified in the SNS SMS sandbox, or SHOPLAKE_ALARM_EMAIL"
                )
            elif phone and not re.fullmatch(PHONE_PATTERN, phone):
                problems.append(f"SHOPLAKE_ALARM_PHONE {phone!r} is not an E.164 number like +447700900123")
            if email and not re.fullmatch(EMAIL_PATTERN, email):
                problems.append(f"SHOPLAKE_ALARM_EMAIL {email!r} is not an e-mail address")
            if not phone and not email:
                problems.append(
                    "the alarms topic needs a real endpoint on aws: set SHOPLAKE_ALARM_PHONE (a number verified in the "
                    "SNS SMS sandbox: aws sns create-sms-sandbox-phone-number) or SHOPLAKE_ALARM_EMAIL"
                )
        if problems:
            raise InfraError("cannot deploy the aws stack: " + "; ".join(problems))
        return values

    # ------------------------------------------------------------------ stack state
    def status(self) -> str | None:
        try:
            stacks = self.cfn().describe_stacks(StackName=self.name)["Stacks"]
        except Exception as exc:
            if _code(exc) == "ValidationError" and "does not exist" in str(exc):
                return None
            raise
        return stacks[0]["StackStatus"] if stacks else None

    def _stack_resources(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.cfn().get_paginator("list_stack_resources").paginate(StackName=self.name):
            out += page["StackResourceSummaries"]
        return out

    def _wait_deleted(self) -> str | None:
        while True:
            status = self.status()
            if status is None or status == "DELETE_COMPLETE":
                return None
            if status == "DELETE_FAILED":
                return status
            time.sleep(self.poll_seconds)

    # ------------------------------------------------------------------ change sets
    def _template_args(self, rendered: Rendered, upload: bool) -> dict[str, Any]:
        body = json.dumps(rendered.template, separators=(",", ":"), sort_keys=True)
        if len(body) <= MAX_TEMPLATE_BODY:
            return {"TemplateBody": body}
        if not upload:
            raise InfraError(f"the template is {len(body)} bytes, over CloudFormation's inline limit: run apply")
        key = f"shoplake/templates/{hashlib.sha256(body.encode()).hexdigest()[:24]}.json"
        bucket = self.ensure_bootstrap_bucket()
        config.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode())
        return {"TemplateURL": f"https://{bucket}.s3.{config.settings().region}.amazonaws.com/{key}"}

    def _create_change_set(self, rendered: Rendered, values: dict[str, str], upload: bool) -> tuple[str, str, bool]:
        """Create a change set and wait for it; returns (name, change set type, has changes)."""
        status = self.status()
        kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
        name = "shoplake-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(_now()))
        try:
            self._create_change_set_call(name, kind, rendered, values, upload)
        except Exception as exc:  # some endpoints refuse an empty change set at once instead of marking it FAILED
            if _code(exc) == "ValidationError" and "No updates are to be performed" in str(exc):
                return "", kind, False  # nothing was created, nothing to drop
            raise
        while True:
            cs = self.cfn().describe_change_set(StackName=self.name, ChangeSetName=name)
            if cs["Status"] == "CREATE_COMPLETE":
                return name, kind, True
            if cs["Status"] == "FAILED":
                reason = cs.get("StatusReason") or ""
                if "didn't contain changes" in reason or "No updates are to be performed" in reason:
                    return name, kind, False
                raise InfraError(f"CloudFormation refused the change set of {self.name}: {reason}")
            time.sleep(self.poll_seconds)

    def _create_change_set_call(
        self, name: str, kind: str, rendered: Rendered, values: dict[str, str], upload: bool
    ) -> None:
        self.cfn().create_change_set(
            StackName=self.name,
            ChangeSetName=name,
            ChangeSetType=kind,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
            Tags=[{"Key": "shoplake:prefix", "Value": values["Prefix"]}],
            Description="shoplake infra (rendered from infra/resources.yaml)",
            **self._template_args(rendered, upload),
        )

    def _changes(self, name: str, rendered: Rendered) -> list[Change]:
        from shoplake.resources import Change

        rows: list[Change] = []
        token = None
        while True:
            kwargs = {"StackName": self.name, "ChangeSetName": name} | ({"NextToken": token} if token else {})
            page = self.cfn().describe_change_set(**kwargs)
            for change in page.get("Changes", []):
                rc = change.get("ResourceChange") or {}
                logical = rc.get("LogicalResourceId", "")
                detail = ", ".join(
                    sorted({d.get("Target", {}).get("Name") or "" for d in rc.get("Details") or []} - {""})
                )
                rows.append(
                    Change(
                        ACTIONS.get(rc.get("Action", ""), rc.get("Action", "").lower()),
                        self._resource_of(logical, rc.get("ResourceType", ""), rendered),
                        detail=(f"changes {detail}" if detail else ""),
                        replacement=str(rc.get("Replacement") or ("new" if rc.get("Action") == "Add" else "n/a")),
                        logical_id=logical,
                        real_name=rc.get("PhysicalResourceId") or "",
                    )
                )
            token = page.get("NextToken")
            if not token:
                return rows

    def _resource_of(self, logical: str, cfn_type: str, rendered: Rendered) -> Resource:
        from shoplake.resources import Resource

        spec = {(r.type, r.name): r for r in self.spec()}
        origin = rendered.resources.get(logical)
        if origin and origin in spec:
            return spec[origin]
        if origin:
            return Resource(origin[0], origin[1], {})
        return Resource(cfn_type or "unknown", logical, {})

    def _drop_change_set(self, name: str, kind: str) -> None:
        if not name:
            return
        try:
            self.cfn().delete_change_set(StackName=self.name, ChangeSetName=name)
        except Exception as exc:  # a failed change set may already be gone
            if _code(exc) not in ("ChangeSetNotFound", "ChangeSetNotFoundException"):
                raise
        if kind == "CREATE" and self.status() == "REVIEW_IN_PROGRESS":  # the empty stack a CREATE change set made
            self.cfn().delete_stack(StackName=self.name)
            self._wait_deleted()

    # ------------------------------------------------------------------ verbs
    def plan(self, spec: list[Resource] | None = None) -> list[Change]:
        """A change set of the rendered template: what CloudFormation would do, with replacement and cost."""
        self._whole(spec)
        rendered = render(self.spec())
        values = self.preflight(rendered)
        status = self.status()
        if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
            rows = self._all(rendered, "create", f"stack {self.name} is {status}: apply deletes and re-creates it")
            return _with_costs(rows)
        if status and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
            raise InfraError(f"stack {self.name} is busy ({status}): wait until it settles, then plan again")
        name, kind, changed = self._create_change_set(rendered, values, upload=False)
        try:
            rows = self._changes(name, rendered) if changed else self._all(rendered, "unchanged")
        finally:
            self._drop_change_set(name, kind)
        return _with_costs(rows)

    def _all(self, rendered: Rendered, action: str, detail: str = "") -> list[Change]:
        from shoplake.resources import Change

        return [
            Change(action, self._resource_of(lid, body["Type"], rendered), detail=detail, logical_id=lid, real_name="")
            for lid, body in rendered.template["Resources"].items()
        ]

    def _whole(self, spec: list[Resource] | None) -> None:
        if spec is not None and [r.key for r in spec] != [r.key for r in self.spec()]:
            raise InfraError(
                "on aws the stack is planned, applied and destroyed whole (one CloudFormation stack): "
                "call infra.plan()/apply()/destroy() without a resource list"
            )

    def ensure_bootstrap_bucket(self) -> str:
        """Create the bootstrap bucket on first use (private, encrypted); returns its name."""
        s3, bucket, region = config.client("s3"), bootstrap_bucket(), config.settings().region
        try:
            s3.head_bucket(Bucket=bucket)
            return bucket
        except Exception as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise InfraError(f"bootstrap bucket {bucket} exists but is not usable ({exc})") from exc
        log.info("creating the bootstrap bucket %s", bucket)
        stack_spec.create_private_bucket(s3, bucket, region)
        return bucket

    def package(self, rendered: Rendered) -> int:
        """Upload the Lambda zips the template refers to (content-hash keys: an existing key is skipped)."""
        s3, bucket, uploaded = config.client("s3"), self.ensure_bootstrap_bucket(), 0
        for key, data in rendered.packages.items():
            try:
                s3.head_object(Bucket=bucket, Key=key)
                continue
            except Exception as exc:
                if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            s3.put_object(Bucket=bucket, Key=key, Body=data)
            uploaded += 1
        return uploaded

    def apply(self, spec: list[Resource] | None = None, progress: bool = False) -> list[Change]:
        """Package the code, create and execute a change set, follow the stack's events, install the index template."""
        self._whole(spec)
        rendered = render(self.spec())
        values = self.preflight(rendered)
        status = self.status()
        if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "REVIEW_IN_PROGRESS"):
            log.warning("stack %s is %s (a failed create): deleting it before creating it again", self.name, status)
            self.cfn().delete_stack(StackName=self.name)
            self._wait_deleted()
        elif status and status.endswith("_IN_PROGRESS"):
            raise InfraError(f"stack {self.name} is busy ({status}): wait until it settles, then apply again")
        self._wait_for_queue_names()
        self.package(rendered)
        name, kind, changed = self._create_change_set(rendered, values, upload=True)
        if not changed:
            self._drop_change_set(name, kind)
            self.post_deploy()
            return self._all(rendered, "unchanged")
        rows = self._changes(name, rendered)
        started = _now()
        self.cfn().execute_change_set(StackName=self.name, ChangeSetName=name)
        final = self._follow(started, total=len(rows), progress=progress, desc=f"{kind.lower()} {self.name}")
        if final not in TERMINAL_OK:
            raise InfraError(self._failure(final, started))
        self.post_deploy()
        return rows

    def _follow(self, since: float, total: int, progress: bool, desc: str, deleting: bool = False) -> str:
        """Stream the stack's events as tqdm progress until the stack settles; returns the final status."""
        from tqdm.auto import tqdm

        seen: set[str] = set()
        done = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "DELETE_SKIPPED", "IMPORT_COMPLETE"}
        with tqdm(total=total, desc=desc, unit="resource", disable=not progress) as bar:
            while True:
                for event in reversed(self._events(since)):
                    if event["EventId"] in seen:
                        continue
                    seen.add(event["EventId"])
                    if event.get("ResourceType") == "AWS::CloudFormation::Stack":
                        continue
                    status = event.get("ResourceStatus", "")
                    bar.set_postfix_str(f"{event.get('LogicalResourceId')} {status}"[:60], refresh=False)
                    if status in done and bar.n < total:
                        bar.update(1)
                status = self.status()
                if status is None:
                    return "DELETE_COMPLETE" if deleting else "GONE"
                if status in TERMINAL_OK | TERMINAL_FAILED | {"DELETE_COMPLETE"}:
                    return status
                time.sleep(self.poll_seconds)

    def _events(self, since: float) -> list[dict[str, Any]]:
        """The stack's events newer than ``since`` (newest first, as CloudFormation lists them)."""
        out: list[dict[str, Any]] = []
        try:
            for page in self.cfn().get_paginator("describe_stack_events").paginate(StackName=self.name):
                for event in page["StackEvents"]:
                    if event["Timestamp"].timestamp() < since - 1:
                        return out
                    out.append(event)
        except Exception as exc:
            if _code(exc) == "ValidationError":  # the stack is gone
                return out
            raise
        return out

    def _failure(self, final: str, since: float) -> str:
        """The message of a failed deploy: the first failing resource and its reason."""
        failed = [
            e
            for e in reversed(self._events(since))
            if e.get("ResourceStatus", "").endswith("_FAILED")
            and e.get("ResourceType") != "AWS::CloudFormation::Stack"
            and "cancelled" not in (e.get("ResourceStatusReason") or "").lower()
        ]
        if failed:
            first = failed[0]
            where = f"{first['LogicalResourceId']} ({first.get('ResourceType')})"
            reason = first.get("ResourceStatusReason") or "no reason given"
            return f"stack {self.name} failed at {where}: {reason}. CloudFormation has rolled back (status {final})"
        return f"stack {self.name} ended in {final}: see the stack's events in the CloudFormation console"

    def _state_path(self) -> Path:
        s = config.settings()
        path = s.home / "infra" / f"aws-{s.prefix}-{s.region}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _wait_for_queue_names(self) -> None:
        """SQS refuses a queue name for 60 s after its deletion: wait out a destroy that just happened."""
        path = self._state_path()
        if not path.exists():
            return
        deleted_at = float(json.loads(path.read_text()).get("deleted_at") or 0)
        wait = deleted_at + QUEUE_RECREATE_SECONDS - _now()
        if wait > 0:
            log.warning(
                "the stack was destroyed %.0f s ago: waiting %.0f s so SQS accepts the queue names", 61 - wait, wait
            )
            time.sleep(wait)

    # ------------------------------------------------------------------ after deploy
    def post_deploy(self) -> None:
        """Install the OpenSearch index template (SigV4-signed) once the domain of the stack is active."""
        for r in self.spec():
            if r.type != "firehose_delivery_stream" or not (r.props.get("opensearch") or {}).get("index_template"):
                continue
            search = r.props["opensearch"]
            domain = logical_id("opensearch_domain", search["domain"])
            deployed = {s["LogicalResourceId"]: s for s in self._stack_resources()}
            if deployed.get(domain, {}).get("ResourceType") != "AWS::OpenSearchService::Domain":
                # only an emulator that skips the domain gets here (moto): say so, never pretend
                log.warning("the stack has no OpenSearch domain %s: index template not installed", domain)
                continue
            endpoint = self.outputs().get(f"opensearch_endpoint:{search['domain']}")
            if not endpoint:
                raise InfraError(
                    "the stack's OpenSearch domain has no endpoint output: run `shoplake infra apply` again"
                )
            install_index_template(endpoint, config.REPO_ROOT / "infra" / search["index_template"], search["index"])

    def outputs(self, spec: list[Resource] | None = None) -> dict[str, str]:
        """The stack's Outputs by reference (``table:order_history``, ``queue_url:alarm-inbox``, ...)."""
        try:
            stacks = self.cfn().describe_stacks(StackName=self.name)["Stacks"]
        except Exception as exc:
            if _code(exc) == "ValidationError":
                raise InfraError(
                    f"stack {self.name} does not exist in {config.settings().region}: run `shoplake infra apply` "
                    "(or notebook 00_provision) first"
                ) from exc
            raise
        by_key = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs") or []}
        refs = render_outputs(spec or self.spec())
        return {ref: by_key[key] for ref, key in refs.items() if key in by_key}

    # ------------------------------------------------------------------ destroy
    def destroy(self, confirm: str | None = None, spec: list[Resource] | None = None) -> list[Change]:
        """Empty the stack's buckets, delete the stack and wait until it is gone; also the prefix's layer versions."""
        from shoplake.resources import Change

        s = config.settings()
        if confirm != s.prefix:
            raise InfraError(
                f"refusing to destroy real AWS resources of prefix {s.prefix!r} without confirmation: "
                f"run `shoplake infra destroy --confirm {s.prefix}`"
            )
        self._whole(spec)
        if self.status() is None:
            self._delete_layers()
            return []
        summaries = self._stack_resources()
        rendered = render(self.spec())
        rows = [
            Change(
                "delete",
                self._resource_of(s_["LogicalResourceId"], s_["ResourceType"], rendered),
                logical_id=s_["LogicalResourceId"],
                real_name=s_.get("PhysicalResourceId") or "",
            )
            for s_ in summaries
        ]
        buckets = [s_["PhysicalResourceId"] for s_ in summaries if s_["ResourceType"] == "AWS::S3::Bucket"]
        for attempt in range(3):  # Firehose may flush into a bucket after it was emptied: empty again and retry
            for bucket in buckets:
                empty_bucket(bucket)
            started = _now()
            self.cfn().delete_stack(StackName=self.name)
            final = self._follow(started, total=len(rows), progress=False, desc=f"delete {self.name}", deleting=True)
            if final == "DELETE_COMPLETE":
                break
            if attempt == 2:
                raise InfraError(self._failure(final, started).replace("has rolled back", "stopped deleting"))
            log.warning("deleting %s ended in %s: emptying its buckets again and retrying", self.name, final)
        self._sweep_buckets(buckets)
        self._state_path().write_text(json.dumps({"deleted_at": _now()}))
        self._delete_layers()
        return rows

    def _sweep_buckets(self, buckets: list[str]) -> None:
        """A bucket of the stack that outlived it (an object flushed in after the last emptying, on an endpoint
        that does not fail the delete) is emptied and deleted here: destroy leaves nothing billable."""
        s3 = config.client("s3")
        for bucket in buckets:
            try:
                s3.head_bucket(Bucket=bucket)
            except Exception as exc:
                if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                    continue
                raise
            log.warning("bucket %s outlived stack %s: emptying and deleting it", bucket, self.name)
            empty_bucket(bucket)
            s3.delete_bucket(Bucket=bucket)

    def _delete_layers(self) -> None:
        """Layer versions named for the prefix (``shoplake infra build-layer --publish``) go with the stack."""
        lam = config.client("lambda")
        head = f"shoplake-{config.settings().prefix}-"
        for page in lam.get_paginator("list_layers").paginate():
            for layer in page["Layers"]:
                if not layer["LayerName"].startswith(head):
                    continue
                for versions in lam.get_paginator("list_layer_versions").paginate(LayerName=layer["LayerName"]):
                    for v in versions["LayerVersions"]:
                        lam.delete_layer_version(LayerName=layer["LayerName"], VersionNumber=v["Version"])

    # ------------------------------------------------------------------ drift, leftovers, description
    def drift(self) -> list[dict[str, str]]:
        """Run CloudFormation drift detection and return one row per resource (``IN_SYNC``, ``MODIFIED``, ...)."""
        cfn = self.cfn()
        try:
            detection = cfn.detect_stack_drift(StackName=self.name)["StackDriftDetectionId"]
        except NotImplementedError as exc:  # moto
            raise InfraError("drift detection is not available on this endpoint (an emulator)") from exc
        while True:
            state = cfn.describe_stack_drift_detection_status(StackDriftDetectionId=detection)
            if state["DetectionStatus"] != "DETECTION_IN_PROGRESS":
                break
            time.sleep(self.poll_seconds)
        if state["DetectionStatus"] == "DETECTION_FAILED":
            log.warning("drift detection incomplete: %s", state.get("DetectionStatusReason"))
        rows = []
        for page in cfn.get_paginator("describe_stack_resource_drifts").paginate(StackName=self.name):
            for d in page["StackResourceDrifts"]:
                diffs = ", ".join(p["PropertyPath"] for p in d.get("PropertyDifferences") or [])
                rows.append(
                    {
                        "logical_id": d["LogicalResourceId"],
                        "type": d["ResourceType"],
                        "status": d["StackResourceDriftStatus"],
                        "detail": diffs,
                    }
                )
        return rows

    def leftovers(self) -> list[str]:
        """Resources of this prefix that still exist, found by each service's list call (notebook 99, tests)."""
        return list_prefix_resources(config.settings().prefix)

    def describe_target(self) -> list[str]:
        s = config.settings()
        return [
            f"account {stack_spec._account()}  region {s.region}  profile {s.profile or '(default chain)'}",
            f"stack {self.name}: {self.status() or 'not deployed'}",
            f"bootstrap bucket {bootstrap_bucket()} (Lambda code, shared by prefixes)",
        ]


def render_outputs(spec: list[Resource]) -> dict[str, str]:
    """Reference → Output key of a spec, without packaging anything."""
    out: dict[str, str] = {}
    for r in spec:
        refs = {
            "s3_bucket": [f"bucket:{r.name}"],
            "kinesis_stream": [f"stream:{r.name}", f"stream_arn:{r.name}"],
            "dynamodb_table": [f"table:{r.name}"],
            "sqs_queue": [f"queue:{r.name}", f"queue_arn:{r.name}", f"queue_url:{r.name}"],
            "sns_topic": [f"topic_arn:{r.name}"],
            "glue_database": ["glue_database"],
            "iam_role": [f"role_arn:{r.name}", f"role_name:{r.name}"]
            + (
                [f"instance_profile:{r.name}", f"instance_profile_arn:{r.name}"]
                if r.props.get("instance_profile")
                else []
            ),
            "lambda_function": [f"function:{r.name}", f"function_arn:{r.name}"],
            "firehose_delivery_stream": [f"firehose:{r.name}"],
            "opensearch_domain": [f"opensearch:{r.name}", f"opensearch_endpoint:{r.name}"],
        }.get(r.type, [])
        out.update({ref: output_key(ref) for ref in refs})
    return out


def empty_bucket(bucket: str) -> int:
    """Delete every object version and delete marker of ``bucket``; returns how many were deleted."""
    s3, deleted = config.client("s3"), 0
    try:
        pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket))
    except Exception as exc:
        if _code(exc) == "NoSuchBucket":
            return 0
        raise
    for page in pages:
        keys = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])
        ]
        for start in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
            deleted += len(keys[start : start + 1000])
    return deleted


def list_prefix_resources(prefix: str) -> list[str]:
    """``service:name`` of every resource of ``prefix`` (``shoplake-<prefix>-...``, ``shoplake_<prefix>``), by list calls.

    One list call per service the stack uses: S3, Kinesis, Firehose, DynamoDB, SQS, SNS, Glue, IAM roles and
    instance profiles, Lambda functions, event-source mappings and layers, OpenSearch, CloudFormation.
    """
    head, glue = f"shoplake-{prefix}-", config.glue_database(prefix)
    found: list[str] = []

    def pages(client: Any, op: str, key: str, **kwargs: Any) -> list[Any]:
        items: list[Any] = []
        if client.can_paginate(op):
            for page in client.get_paginator(op).paginate(**kwargs):
                items += page.get(key) or []
        else:
            items += client.__getattribute__(op)(**kwargs).get(key) or []
        return items

    c = config.client
    found += [f"s3:{b['Name']}" for b in c("s3").list_buckets()["Buckets"] if b["Name"].startswith(head)]
    found += [f"kinesis:{n}" for n in pages(c("kinesis"), "list_streams", "StreamNames") if n.startswith(head)]
    found += [
        f"firehose:{n}"
        for n in c("firehose").list_delivery_streams(Limit=1000)["DeliveryStreamNames"]
        if n.startswith(head)
    ]
    found += [f"dynamodb:{n}" for n in pages(c("dynamodb"), "list_tables", "TableNames") if n.startswith(head)]
    found += [f"sqs:{u}" for u in pages(c("sqs"), "list_queues", "QueueUrls", QueueNamePrefix=head)]
    found += [
        f"sns:{t['TopicArn']}"
        for t in pages(c("sns"), "list_topics", "Topics")
        if t["TopicArn"].rsplit(":", 1)[-1].startswith(head)
    ]
    found += [f"glue:{d['Name']}" for d in pages(c("glue"), "get_databases", "DatabaseList") if d["Name"] == glue]
    found += [
        f"iam:role/{r['RoleName']}" for r in pages(c("iam"), "list_roles", "Roles") if r["RoleName"].startswith(head)
    ]
    found += [
        f"iam:instance-profile/{p['InstanceProfileName']}"
        for p in pages(c("iam"), "list_instance_profiles", "InstanceProfiles")
        if p["InstanceProfileName"].startswith(head)
    ]
    functions = [f["FunctionName"] for f in pages(c("lambda"), "list_functions", "Functions")]
    found += [f"lambda:{n}" for n in functions if n.startswith(head)]
    found += [
        f"lambda:mapping/{m['UUID']}"
        for m in pages(c("lambda"), "list_event_source_mappings", "EventSourceMappings")
        if m["FunctionArn"].rsplit(":", 1)[-1].startswith(head) or head in m.get("EventSourceArn", "")
    ]
    found += [
        f"lambda:layer/{x['LayerName']}"
        for x in pages(c("lambda"), "list_layers", "Layers")
        if x["LayerName"].startswith(head)
    ]
    found += [
        f"opensearch:{d['DomainName']}"
        for d in c("opensearch").list_domain_names()["DomainNames"]
        if d["DomainName"].startswith(head[:28])
    ]
    found += [
        f"cloudformation:{s['StackName']}"
        for s in pages(c("cloudformation"), "list_stacks", "StackSummaries")
        if s["StackName"] == stack_name(prefix) and s["StackStatus"] != "DELETE_COMPLETE"
    ]
    return found


def install_index_template(endpoint: str, path: Path, name: str, port: int = 443, use_ssl: bool = True) -> None:
    """PUT ``path`` as the index template ``name`` on the OpenSearch ``endpoint``, SigV4-signed (service ``es``)."""
    from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

    body = json.loads(Path(path).read_text())
    auth = AWSV4SignerAuth(config.session().get_credentials(), config.settings().region, "es")
    client = OpenSearch(
        hosts=[{"host": endpoint, "port": port}],
        http_auth=auth,
        use_ssl=use_ssl,
        verify_certs=use_ssl,
        connection_class=RequestsHttpConnection,
        timeout=30,
    )
    try:
        client.indices.put_index_template(name=name, body=body)
    except Exception as exc:
        raise InfraError(
            f"could not install the index template {name} on {endpoint}: {str(exc)[:300]} "
            "(your identity needs es:ESHttpPut on the domain; rerun `shoplake infra apply`)"
        ) from exc
    log.info("installed the OpenSearch index template %s on %s", name, endpoint)


# ---------------------------------------------------------------------------- cost estimate

PRICES_PATH = config.REPO_ROOT / "infra" / "prices.yaml"


def prices(path: Path = PRICES_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def hourly_cost(r: Resource, table: dict[str, Any] | None = None) -> float:
    """List price per hour of a stack resource that bills by the hour (0.0 for pay-per-request ones)."""
    table = table or prices()
    p, rates = r.props, table["stack"]
    if r.type == "opensearch_domain":
        instance = rates["opensearch_domain"]["instance_hour"].get(p.get("instance_type", "t3.small.search"))
        if instance is None:
            raise InfraError(f"infra/prices.yaml has no price for OpenSearch {p.get('instance_type')}: add it")
        storage = rates["opensearch_domain"]["gp3_gb_month"] * int(p.get("volume_gb", 10)) / table["hours_per_month"]
        return round(instance * int(p.get("instance_count", 1)) + storage, 4)
    if r.type == "kinesis_stream":
        return round(rates["kinesis_stream"]["shard_hour"] * int(p.get("shards", 1)), 4)
    return 0.0


def _with_costs(rows: list[Change]) -> list[Change]:
    table = prices()
    for row in rows:
        if row.action in ("create", "update", "unchanged", "import"):
            row.hourly_usd = hourly_cost(row.resource, table)
    return rows


def cost_summary(rows: list[Change]) -> list[str]:
    """Lines for the plan: the stack's estimated hourly/monthly cost, and the on-demand engines the notebooks start."""
    table = prices()
    hours = table["hours_per_month"]
    hourly = sum(r.hourly_usd or 0.0 for r in rows if r.action != "delete")
    lines = [
        f"estimated cost of the stack: ${hourly:.3f}/hour, ${hourly * hours:.0f}/month while it exists "
        f"(list prices {table['region']}, checked {table['checked']}; usage-based charges not included)"
    ]
    emr = table["on_demand"]["emr_cluster"]
    per_node = emr["ec2_hour"] + emr["emr_hour"]
    lines.append(
        f"plus while notebook 03 trains on EMR: {emr['nodes']} x {emr['instance_type']} = "
        f"${per_node * emr['nodes']:.2f}/hour "
        "(transient cluster, terminates after the step)"
    )
    rs = table["on_demand"]["redshift_serverless"]
    lines.append(
        f"plus Redshift Serverless while notebook 06 queries it: {rs['base_rpu']} RPU x ${rs['rpu_hour']}/RPU-hour = "
        f"${rs['base_rpu'] * rs['rpu_hour']:.2f}/hour of activity (your workgroup; not created by the stack)"
    )
    return lines
