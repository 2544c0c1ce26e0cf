"""IAM for the aws contract tests: boto3 operation → IAM action + resource ARN, AWS's service-side needs, a checker.

Three pieces, used by ``test_iam_policies.py``:

- :func:`uses_of_call` — what one recorded boto3 call needs from IAM: ``(action, resource ARN)`` pairs. Most operations
  are authorised as ``<prefix>:<OperationName>`` (prefix = the model's signingName, which the recorder keeps);
  :data:`ACTION_EXCEPTIONS` lists those that are not (S3's ListObjectsV2 is ``s3:ListBucket``, SQS's batch calls are
  authorised as the single call, Lambda's Invoke is ``lambda:InvokeFunction``...; from the Service Authorization
  Reference, https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
- :func:`service_side_uses` — what AWS itself does with a role, derived from ``infra/resources.yaml`` (an event-source
  mapping polls Kinesis with the function's role, Firehose writes S3 and OpenSearch with its role...), each need
  with the AWS documentation page it comes from (:data:`SERVICE_SIDE`).
- :func:`check_role` — both directions against the role's policy document (``IamRole.policy_document``), evaluated
  by moto's IAM policy engine: every use must be allowed on its resource; every granted action and every granted
  resource of a statement must be used by something (unless in a justified allow-list).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlparse

# --------------------------------------------------------------------------- operation → IAM action


@dataclass(frozen=True)
class Use:
    """One thing a role must be allowed to do: ``action`` on ``resource``, and why (a call or a documented need)."""

    action: str
    resource: str
    why: str


# operations authorised by another action than "<prefix>:<Operation>" (or by several): service → operation → actions
ACTION_EXCEPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "s3": {
        "ListObjectsV2": ("s3:ListBucket",),
        "ListObjects": ("s3:ListBucket",),
        "HeadBucket": ("s3:ListBucket",),
        "HeadObject": ("s3:GetObject",),
        "CreateMultipartUpload": ("s3:PutObject",),
        "UploadPart": ("s3:PutObject",),
        "CompleteMultipartUpload": ("s3:PutObject",),
        "UploadPartCopy": ("s3:PutObject", "s3:GetObject"),
        "CopyObject": ("s3:PutObject", "s3:GetObject"),
        "DeleteObjects": ("s3:DeleteObject",),
        "ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
        "ListParts": ("s3:ListMultipartUploadParts",),
    },
    "sqs": {
        "SendMessageBatch": ("sqs:SendMessage",),
        "DeleteMessageBatch": ("sqs:DeleteMessage",),
        "ChangeMessageVisibilityBatch": ("sqs:ChangeMessageVisibility",),
    },
    "lambda": {"Invoke": ("lambda:InvokeFunction",)},
    "sts": {"GetCallerIdentity": ()},  # never needs a permission (STS documents it as always allowed)
}

# IAM actions that are no API operation of the service's botocore model (Service Authorization Reference)
IAM_ONLY_ACTIONS = frozenset(
    {
        "s3:ListBucket",
        "s3:ListBucketMultipartUploads",
        "s3:ListMultipartUploadParts",
        "lambda:InvokeFunction",
        "iam:PassRole",
        "es:ESHttpGet",
        "es:ESHttpHead",
        "es:ESHttpPost",
        "es:ESHttpPut",
        "es:ESHttpPatch",
        "es:ESHttpDelete",
    }
)

# botocore services whose operations are authorised under an IAM prefix that is not their own name
PREFIX_SERVICES = {"es": ("opensearch", "es"), "logs": ("logs",), "kinesis": ("kinesis",)}


@cache
def _operations(service: str) -> tuple[str, frozenset[str]]:
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    return model.signing_name or model.endpoint_prefix, frozenset(model.operation_names)


def known_action(action: str) -> bool:
    """True when ``action`` is an operation of a botocore model with that IAM prefix, or an IAM-only action."""
    if action in IAM_ONLY_ACTIONS:
        return True
    prefix, _, name = action.partition(":")
    for service in PREFIX_SERVICES.get(prefix, (prefix,)):
        try:
            signing, operations = _operations(service)
        except Exception:  # noqa: BLE001 - botocore.exceptions.UnknownServiceError
            continue
        if signing == prefix and name in operations:
            return True
    return False


def _sqs_queue_arn(url: str, region: str, account: str) -> str:
    parts = urlparse(url).path.strip("/").split("/")
    return f"arn:aws:sqs:{region}:{parts[-2] if len(parts) > 1 else account}:{parts[-1]}"


def resources_of_call(service: str, operation: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    """The ARNs an API call is authorised against (raises for a service this table does not know yet)."""
    if service == "dynamodb":
        tables = list(params.get("RequestItems", {})) or [params["TableName"]]
        return [f"arn:aws:dynamodb:{region}:{account}:table/{t}" for t in tables]
    if service == "sqs":
        return [_sqs_queue_arn(params["QueueUrl"], region, account)]
    if service == "sns":
        return [params.get("TopicArn") or params["TargetArn"]]
    if service == "kinesis":
        if "StreamARN" in params:
            return [params["StreamARN"]]
        return [f"arn:aws:kinesis:{region}:{account}:stream/{params['StreamName']}"]
    if service == "s3":
        bucket = params["Bucket"]
        return [f"arn:aws:s3:::{bucket}/{params['Key']}" if "Key" in params else f"arn:aws:s3:::{bucket}"]
    if service == "lambda":
        name = params["FunctionName"]
        return [name if name.startswith("arn:") else f"arn:aws:lambda:{region}:{account}:function:{name}"]
    if service == "sts":
        return ["*"]
    raise AssertionError(f"no resource rule for {service}:{operation}: add one to tests/aws/iam_actions.py")


def uses_of_call(call: Any, region: str, account: str, previous: dict[str, list[str]]) -> list[Use]:
    """The IAM uses of one recorded call (``conftest.Call``); ``previous`` carries a paginated call's resource."""
    actions = ACTION_EXCEPTIONS.get(call.service, {}).get(call.operation, (call.action,))
    if call.service == "kinesis" and "NextToken" in call.params and not {"StreamName", "StreamARN"} & set(call.params):
        resources = previous[call.service]  # a next page: the stream is inside the token
    else:
        resources = resources_of_call(call.service, call.operation, call.params, region, account)
    previous[call.service] = resources
    return [Use(a, r, f"code calls {call.service}.{call.operation}") for a in actions for r in resources]


# --------------------------------------------------------------------------- what AWS does with the role


LAMBDA_LOGS = (
    "https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html#monitoring-cloudwatchlogs-prereqs"
)
LAMBDA_KINESIS = "https://docs.aws.amazon.com/lambda/latest/dg/services-kinesis-create.html"
LAMBDA_ON_FAILURE = "https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html"
FIREHOSE_S3 = "https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-s3"
FIREHOSE_ES = "https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-es"
FIREHOSE_LAMBDA = "https://docs.aws.amazon.com/firehose/latest/dev/controlling-access.html#using-iam-s3"

# (what AWS does, actions, documentation). Decisions, with the reason:
# - Kinesis event-source mapping: the documented list minus kinesis:SubscribeToShard, which only an enhanced fan-out
#   consumer needs (the mappings here read the stream ARN with standard iterators), and without kinesis:ListStreams
#   (only in the AWSLambdaKinesisExecutionRole managed policy; an account-level action with no resource type, so
#   granting it on a stream ARN grants nothing, and the mapping is given the stream ARN and never lists streams).
# - Firehose: S3 as documented (DirectPut streams, no KMS key, no CloudWatch error logging configured, so neither
#   kms:* nor logs:PutLogEvents); OpenSearch as documented, es:ESHttpGet only on the documented paths.
SERVICE_SIDE: dict[str, tuple[tuple[str, ...], str]] = {
    "lambda-logs": (("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"), LAMBDA_LOGS),
    "lambda-kinesis-mapping": (
        (
            "kinesis:DescribeStream",
            "kinesis:DescribeStreamSummary",
            "kinesis:GetRecords",
            "kinesis:GetShardIterator",
            "kinesis:ListShards",
        ),
        LAMBDA_KINESIS,
    ),
    "lambda-on-failure-sqs": (("sqs:SendMessage",), LAMBDA_ON_FAILURE),
    "firehose-s3-bucket": (("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"), FIREHOSE_S3),
    "firehose-s3-objects": (("s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"), FIREHOSE_S3),
    "firehose-lambda-processor": (("lambda:InvokeFunction", "lambda:GetFunctionConfiguration"), FIREHOSE_LAMBDA),
    "firehose-opensearch-domain": (
        ("es:DescribeDomain", "es:DescribeDomains", "es:DescribeDomainConfig", "es:ESHttpPost", "es:ESHttpPut"),
        FIREHOSE_ES,
    ),
    "firehose-opensearch-get": (("es:ESHttpGet",), FIREHOSE_ES),
}

EMR_SERVICE = "https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role.html"
EMR_EC2 = (
    "https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-iam-role-for-ec2.html#emr-ec2-role-least-privilege"
)
SERVICE_SIDE |= {
    # the service role passes the instance role to the cluster's EC2 instances (RunJobFlow's JobFlowRole)
    "emr-pass-instance-role": (("iam:PassRole",), EMR_SERVICE),
    # the nodes (instance role) fetch the bootstrap script, the step's script and --py-files, upload the logs
    "emr-node-job-files": (("s3:GetObject",), EMR_EC2),
    "emr-node-logs": (("s3:PutObject",), EMR_EC2),
    # EMRFS on the nodes: Spark's s3:// reads (list + get) and overwriting writes (multipart, deletes, and
    # ``<folder>_$folder$`` marker objects next to each written folder)
    "emrfs-bucket": (("s3:ListBucket", "s3:GetBucketLocation"), EMR_EC2),
    "emrfs-read": (("s3:GetObject",), EMR_EC2),
    "emrfs-write": (
        ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"),
        EMR_EC2,
    ),
}

# the paths Firehose reads with GET on the domain (FIREHOSE_ES), with a concrete example path for each
OPENSEARCH_GET_PATHS = (
    "_all/_settings",
    "_cluster/stats",
    "{index}-2011-12-09/_mapping/_doc",
    "_nodes",
    "_nodes/stats",
    "_nodes/node-1/stats",
    "_stats",
    "{index}-2011-12-09/_stats",
    "",
)


def _need(kind: str, resource: str, what: str) -> list[Use]:
    actions, doc = SERVICE_SIDE[kind]
    return [Use(a, resource, f"service-side: {what} ({doc})") for a in actions]


def service_side_uses(role: str, spec: list[Any], arn: Any, physical_name: Any) -> list[Use]:
    """What AWS does with ``role`` for the resources of ``spec`` that name it (Lambda functions, Firehose streams)."""
    uses: list[Use] = []
    functions = {r.name: r for r in spec if r.type == "lambda_function"}
    for fn in functions.values():
        if fn.props.get("role") != role:
            continue
        group = arn("logs", f"log-group:/aws/lambda/{physical_name(fn)}:*")
        uses += _need("lambda-logs", group, f"Lambda writes {fn.name}'s logs")
        for mapping in spec:
            if mapping.type != "event_source_mapping" or mapping.props.get("function") != fn.name:
                continue
            stream = arn("stream", mapping.props["stream"])
            uses += _need("lambda-kinesis-mapping", stream, f"mapping {mapping.name} polls the stream")
            if mapping.props.get("on_failure"):
                kind, _, short = mapping.props["on_failure"].partition(":")
                uses += _need("lambda-on-failure-sqs", arn(kind, short), f"mapping {mapping.name} on-failure")
    for stream in spec:
        if stream.type != "firehose_delivery_stream" or stream.props.get("role") != role:
            continue
        s3 = stream.props["s3"]
        what = f"Firehose {stream.name} delivers"
        uses += _need("firehose-s3-bucket", arn("bucket", s3["bucket"]), what)
        search = stream.props.get("opensearch")
        # S3-only: delivered objects under prefix, failed ones under error_prefix; with OpenSearch, S3 gets only the
        # backup of failed documents, under error_prefix (infra's S3Configuration)
        for prefix in [s3["error_prefix"]] if search else [s3["prefix"], s3["error_prefix"]]:
            uses += _need("firehose-s3-objects", arn("bucket", f"{s3['bucket']}/{prefix}object"), what)
        if search:
            domain = search["domain"]
            uses += _need("firehose-opensearch-domain", arn("opensearch", domain), what)
            uses += _need("firehose-opensearch-domain", arn("opensearch", f"{domain}/_bulk"), what)
            for path in OPENSEARCH_GET_PATHS:
                uses += _need("firehose-opensearch-get", arn("opensearch", f"{domain}/{path}".format(**search)), what)
            if search.get("transform_function"):
                uses += _need("firehose-lambda-processor", arn("function", search["transform_function"]), what)
    return uses


# --------------------------------------------------------------------------- both directions


def _allowed(policy: dict[str, Any], use: Use) -> bool:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    return IAMPolicy(json.dumps(policy)).is_action_permitted(use.action, use.resource) == PermissionResult.PERMITTED


def _matches(pattern: str, value: str) -> bool:
    from moto.iam.access_control import IAMPolicyStatement

    return IAMPolicyStatement._match(pattern, value) is not None


def check_role(policy: dict[str, Any], uses: list[Use], allowed_unused: dict[str, str] | None = None) -> list[str]:
    """Problems of a role's policy against its uses: missing grants, grants nothing uses, unknown action names."""
    problems: list[str] = []
    for use in sorted(set(uses), key=lambda u: (u.action, u.resource)):
        if not _allowed(policy, use):
            problems.append(f"missing: {use.action} on {use.resource} ({use.why})")
    allowed_unused = allowed_unused or {}
    for statement in policy["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        for action in actions:
            if not known_action(action):
                problems.append(f"unknown action {action}: no botocore operation nor documented IAM-only action")
            used = any(_matches(action, u.action) and any(_matches(r, u.resource) for r in resources) for u in uses)
            if not used and action not in allowed_unused:
                problems.append(f"unused: {action} on {resources} (nothing the role's code or AWS does needs it)")
        for resource in resources:
            used = any(_matches(resource, u.resource) and any(_matches(a, u.action) for a in actions) for u in uses)
            if not used and resource not in allowed_unused:
                problems.append(f"unused: resource {resource} for {actions}")
    return problems


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def emr_uses(requests: list[dict[str, Any]], account: str, physical_role: str, job_argv: Any) -> list[Use]:
    """What EMR does with the role named ``physical_role`` for the recorded ``RunJobFlow`` requests.

    ``job_argv(step_args)`` returns the job's parsed configuration (``input``, ``output``, ``recommendations_output``)
    from a step's ``spark-submit`` arguments.
    """
    uses: list[Use] = []
    for request in requests:
        if request.get("ServiceRole") == physical_role:
            instance_role = f"arn:aws:iam::{account}:role/{request['JobFlowRole']}"
            uses += _need("emr-pass-instance-role", instance_role, "EMR starts the cluster's instances")
        if request.get("JobFlowRole") != physical_role:
            continue
        what = "the EMR cluster's nodes"
        bucket, key = _s3_parts(request["LogUri"])
        uses += _need("emr-node-logs", f"arn:aws:s3:::{bucket}/{key}node/i-0/applications.gz", what)
        files = [b["ScriptBootstrapAction"]["Path"] for b in request.get("BootstrapActions", [])]
        for step in request.get("Steps", []):
            args = step["HadoopJarStep"]["Args"]
            py_files = args[args.index("--py-files") + 1]
            script = args[args.index("--py-files") + 2]
            files += [py_files, script]
            cfg = job_argv(args[args.index(script) + 1 :])
            for uri, kind in [(cfg.input, "emrfs-read")] + [
                (uri, "emrfs-write") for uri in (cfg.output, cfg.recommendations_output) if uri
            ]:
                bucket, key = _s3_parts(uri)
                uses += _need("emrfs-bucket", f"arn:aws:s3:::{bucket}", f"EMRFS {kind[7:]}s {uri}")
                folder = key.rstrip("/")
                objects = [f"{folder}/part-00000.parquet"]
                if kind == "emrfs-write":
                    objects.append(f"{folder}_$folder$")
                for obj in objects:
                    uses += _need(kind, f"arn:aws:s3:::{bucket}/{obj}", f"EMRFS {kind[7:]}s {uri}")
        for uri in files:
            bucket, key = _s3_parts(uri)
            uses += _need("emr-node-job-files", f"arn:aws:s3:::{bucket}/{key}", what)
    return uses
