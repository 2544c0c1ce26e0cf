"""CloudFormation for the aws target: render ``infra/stack.yaml`` into one template, and plan/apply/destroy it.

The local target keeps the reconciler in :mod:`shoplake.infra`; on aws the same ``stack.yaml`` becomes one stack
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
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shoplake.errors import InfraError

if TYPE_CHECKING:
    from shoplake.infra import Resource

log = logging.getLogger(__name__)

# cfn-lint rule id -> why it does not apply to this template (listed next to the renderer, as issue 12 asks).
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

# environment variables of stack.yaml that become template parameters (never baked into the template)
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
KIND_TYPE = {  # reference kind in stack.yaml -> resource type
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
        bucket, _, rest = short.partition("/")
        return _sub(f"{head}:s3:::{_name_text('s3_bucket', bucket)}" + (f"/{rest}" if rest else ""))
    if kind == "logs":
        return _sub(f"{head}:logs:{where}:{short}")
    if kind == "opensearch":
        domain, _, rest = short.partition("/")
        return _sub(
            f"{head}:es:{where}:domain/{_name_text('opensearch_domain', domain)}" + (f"/{rest}" if rest else "")
        )
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
        raise InfraError(f"unknown reference kind {kind!r} (in {kind}:{short}) in infra/stack.yaml")
    return _sub(templates[kind])


def ref_expr(ref: str) -> Any:
    """A value reference of stack.yaml (``table:x``, ``queue_url:x``, ``topic_arn:x`` ...) as a template expression.

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
    """The template parameter an unexpanded ``${VAR}`` value of stack.yaml stands for (None for a literal)."""
    if not isinstance(value, str):
        return None
    match = _ENV.match(value.strip())
    if not match:
        if "${" in value:
            raise InfraError(f"infra/stack.yaml value {value!r}: on aws only a whole ${{VAR}} can be a parameter")
        return None
    var = match.group(1)
    if var not in ENV_PARAMETERS:
        raise InfraError(
            f"infra/stack.yaml uses ${{{var}}}, which has no template parameter (known: {sorted(ENV_PARAMETERS)})"
        )
    return ENV_PARAMETERS[var]


# ---------------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    """A rendered template with the Lambda packages it refers to (S3 key → zip bytes)."""

    template: dict[str, Any]
    packages: dict[str, bytes] = field(default_factory=dict)
    resources: dict[str, tuple[str, str]] = field(default_factory=dict)  # logical id -> (stack.yaml type, name)
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
    """Render every aws resource of ``stack.yaml`` (unexpanded: ``${VAR}`` become parameters) into one template."""
    from shoplake import infra

    spec = spec if spec is not None else infra.load_spec(target="aws", expand=False)
    by_key = {r.key: r for r in spec}
    out = Rendered(template={})
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    conditions: dict[str, Any] = {}

    def output(ref: str, value: Any) -> None:
        key = output_key(ref)
        if key in outputs:
            raise InfraError(f"two stack.yaml references render to the same Output {key}: rename one")
        outputs[key] = {"Description": ref, "Value": value}
        out.outputs[ref] = key

    def add(logical: str, body: dict[str, Any], origin: tuple[str, str]) -> None:
        if logical in resources:
            raise InfraError(f"two stack.yaml resources render to the same logical id {logical}: rename one")
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
            keys = [("HASH", p["hash_key"])] + ([("RANGE", p["range_key"])] if p.get("range_key") else [])
            add(
                lid,
                {
                    "Type": "AWS::DynamoDB::Table",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "TableName": name_expr(r.type, r.name),
                        "BillingMode": "PAY_PER_REQUEST",
                        "KeySchema": [{"AttributeName": k["name"], "KeyType": kind} for kind, k in keys],
                        "AttributeDefinitions": [
                            {"AttributeName": k["name"], "AttributeType": k.get("type", "S")} for _, k in keys
                        ],
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
            from shoplake import infra

            package = infra.lambda_package(r)
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
        raise InfraError(f"infra/stack.yaml refers to resources it does not declare for aws: {sorted(set(missing))}")

    out.template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "shoplake: every aws resource of infra/stack.yaml (rendered by `shoplake infra template`)",
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
            "Description": "layer version ARN with numpy + rrcf for python3.12 x86_64 (`shoplake infra build-layer "
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
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "sns.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": _getatt(qid, "Arn"),
                                "Condition": {"ArnEquals": {"aws:SourceArn": _ref(topic)}},
                            }
                        ],
                    },
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
        "Description": f"shoplake {r.name} (least privilege, from infra/stack.yaml)",
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
    dest: dict[str, Any] = {
        # GetAtt on the domain: CloudFormation creates the stream only once the domain is active (not processing)
        "DomainARN": _getatt(logical_id("opensearch_domain", search["domain"]), "Arn"),
        "IndexName": search["index"],
        "IndexRotationPeriod": search.get("index_rotation", "OneDay"),
        "RoleARN": role,
        "S3BackupMode": search.get("s3_backup_mode", "FailedDocumentsOnly"),
        "S3Configuration": backup,
        "BufferingHints": {
            "IntervalInSeconds": int(search.get("buffer_seconds", 60)),
            "SizeInMBs": int(search.get("buffer_mb", 1)),
        },
        "RetryOptions": {"DurationInSeconds": int(search.get("retry_seconds", 300))},
    }
    if search.get("transform_function"):
        dest["ProcessingConfiguration"] = {
            "Enabled": True,
            "Processors": [
                {
                    "Type": "Lambda",
                    "Parameters": [
                        {
                            "ParameterName": "LambdaArn",
                            "ParameterValue": _getatt(
                                logical_id("lambda_function", search["transform_function"]), "Arn"
                            ),
                        }
                    ],
                }
            ],
        }
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
