"""Plan, apply and destroy the resources declared in ``infra/resources.yaml``: the same verbs on both targets.

The backend is chosen once (``config.by_target``): on the local target a reconciler (below) creates, repairs and
adopts resources one API call at a time (drift repair and partial applies are what local workflows need); on aws
``resources.yaml`` is rendered into one CloudFormation template and CloudFormation does the work
(:mod:`shoplake.cloudformation`: change-set plans with replacement and cost, rollback, one-step delete, drift).

``apply`` is idempotent (a second apply changes nothing); ``destroy`` removes only what this tool created (local: a
state file under ``.shoplake/``; aws: the stack) and refuses on aws without an explicit confirmation. Resources the
emulator cannot run (Lambda execution) are created as definitions; the parts run their handlers locally.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shoplake import config
from shoplake.errors import InfraError

log = logging.getLogger(__name__)

# The resource list and everything derived from it (names, ARNs, references, Lambda packages) is shoplake.resources,
# shared with the CloudFormation renderer; re-exported here as infra's public face.
from shoplake.resources import (  # noqa: E402
    HOURS_PER_MONTH,
    LAMBDA_RUNTIME,
    ORDER,
    PACKAGE_DIR,
    SPEC_PATH,
    Change,
    Resource,
    _account,
    _code,
    arn,
    bucket_name,
    bundle_zip,
    create_private_bucket,
    find,
    lambda_package,
    lambda_zip,
    load_spec,
    opensearch_destination,
    physical_name,
    resolve,
    table_keys,
    topic_to_queue_policy,
)

__all__ = [
    "Change",
    "HANDLERS",
    "HOURS_PER_MONTH",
    "LAMBDA_RUNTIME",
    "ORDER",
    "PACKAGE_DIR",
    "Reconciler",
    "Resource",
    "SPEC_PATH",
    "apply",
    "arn",
    "backend",
    "bucket_name",
    "bundle_zip",
    "cli",
    "cost_summary",
    "describe_target",
    "destroy",
    "drift",
    "find",
    "lambda_package",
    "lambda_zip",
    "leftovers",
    "load_spec",
    "outputs",
    "physical_name",
    "plan",
    "resolve",
    "table",
]


def absent_if(read: Callable[[], Any], *missing: str) -> Any:
    """``read()``, or None when AWS answers with one of the ``missing`` error codes (the resource does not exist)."""
    try:
        return read()
    except Exception as exc:
        if _code(exc) in missing:
            return None
        raise


class Handler:
    """How one resource type is read, created, updated and deleted."""

    service = ""

    def client(self) -> Any:
        return config.client(self.service)

    def exists(self, r: Resource) -> dict[str, Any] | None:  # current state or None
        raise NotImplementedError

    def create(self, r: Resource) -> None:
        raise NotImplementedError

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        return []

    def update(self, r: Resource, current: dict[str, Any], drift: list[str]) -> None:
        raise InfraError(
            f"{r.key} differs from resources.yaml ({'; '.join(drift)}) and cannot be changed in place: "
            "run `shoplake infra destroy` then `apply`"
        )

    def delete(self, r: Resource) -> None:
        raise NotImplementedError


class S3Bucket(Handler):
    service = "s3"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        return (
            None
            if absent_if(lambda: self.client().head_bucket(Bucket=physical_name(r)), "404", "NoSuchBucket", "NotFound")
            is None
            else {}
        )

    def create(self, r: Resource) -> None:
        s3, name, region = self.client(), physical_name(r), config.settings().region
        create_private_bucket(s3, name, region)

    def delete(self, r: Resource) -> None:
        bucket = config.resource("s3").Bucket(physical_name(r))
        bucket.object_versions.delete()
        bucket.objects.all().delete()
        bucket.delete()


class KinesisStream(Handler):
    service = "kinesis"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        summary = absent_if(
            lambda: self.client().describe_stream_summary(StreamName=physical_name(r))["StreamDescriptionSummary"],
            "ResourceNotFoundException",
        )
        if summary is None:
            return None
        return {
            "shards": summary["OpenShardCount"],
            "retention_hours": summary["RetentionPeriodHours"],
            "status": summary["StreamStatus"],
        }

    def create(self, r: Resource) -> None:
        kinesis, name = self.client(), physical_name(r)
        kinesis.create_stream(StreamName=name, ShardCount=int(r.props.get("shards", 1)))
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
        retention = int(r.props.get("retention_hours", 24))
        if retention > 24:
            kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=retention)

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        want = int(r.props.get("shards", 1))
        return [f"shards {current['shards']} → {want}"] if current["shards"] != want else []

    def update(self, r: Resource, current: dict[str, Any], drift: list[str]) -> None:
        self.client().update_shard_count(
            StreamName=physical_name(r), TargetShardCount=int(r.props["shards"]), ScalingType="UNIFORM_SCALING"
        )

    def delete(self, r: Resource) -> None:
        self.client().delete_stream(StreamName=physical_name(r), EnforceConsumerDeletion=True)


class DynamoTable(Handler):
    service = "dynamodb"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        table = absent_if(
            lambda: self.client().describe_table(TableName=physical_name(r))["Table"], "ResourceNotFoundException"
        )
        if table is None:
            return None
        return {"keys": {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}}

    def create(self, r: Resource) -> None:
        ddb, name = self.client(), physical_name(r)
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **table_keys(r.props))
        ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        want = {"HASH": r.props["hash_key"]["name"]}
        if r.props.get("range_key"):
            want["RANGE"] = r.props["range_key"]["name"]
        return [f"key schema {current['keys']} → {want}"] if current["keys"] != want else []

    def delete(self, r: Resource) -> None:
        self.client().delete_table(TableName=physical_name(r))


class SqsQueue(Handler):
    service = "sqs"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        return absent_if(
            lambda: {"url": self.client().get_queue_url(QueueName=physical_name(r))["QueueUrl"]},
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        )

    def create(self, r: Resource) -> None:
        self.client().create_queue(
            QueueName=physical_name(r),
            Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600), "SqsManagedSseEnabled": "true"},
        )

    def delete(self, r: Resource) -> None:
        self.client().delete_queue(QueueUrl=self.client().get_queue_url(QueueName=physical_name(r))["QueueUrl"])


class SnsTopic(Handler):
    service = "sns"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        topic = arn("topic", r.name)
        try:
            self.client().get_topic_attributes(TopicArn=topic)
        except Exception as exc:
            if _code(exc) in ("NotFound", "NotFoundException"):
                return None
            raise
        subs = self.client().list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        return {
            "sms": sorted(s["Endpoint"] for s in subs if s["Protocol"] == "sms"),
            "endpoints": sorted(s["Endpoint"] for s in subs),
        }

    def create(self, r: Resource) -> None:
        self.client().create_topic(Name=physical_name(r))
        self._subscribe(r, [])

    def _subscribe(self, r: Resource, have: list[str]) -> None:
        phone = r.props.get("sms_subscription")
        if phone and phone not in have:
            if not re.fullmatch(r"\+[1-9]\d{6,14}", phone):
                raise InfraError(f"SHOPLAKE_ALARM_PHONE {phone!r} is not an E.164 phone number like +15555550100")
            self.client().subscribe(TopicArn=arn("topic", r.name), Protocol="sms", Endpoint=phone)
        email = r.props.get("email_subscription")
        if email and email not in have:
            self.client().subscribe(TopicArn=arn("topic", r.name), Protocol="email", Endpoint=email)
        for queue in r.props.get("queue_subscriptions") or []:  # aws: the queue must let the topic send
            queue_arn = arn("queue", queue)
            if queue_arn in have:
                continue
            self.client().subscribe(
                TopicArn=arn("topic", r.name),
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "false"},
            )
            policy = topic_to_queue_policy(queue_arn, arn("topic", r.name))
            config.client("sqs").set_queue_attributes(
                QueueUrl=resolve(f"queue_url:{queue}"), Attributes={"Policy": json.dumps(policy)}
            )

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        phone, email = r.props.get("sms_subscription"), r.props.get("email_subscription")
        out = [f"SMS subscription {phone} missing"] if phone and phone not in current["sms"] else []
        out += [f"e-mail subscription {email} missing"] if email and email not in current["endpoints"] else []
        out += [
            f"queue subscription {q} missing"
            for q in r.props.get("queue_subscriptions") or []
            if arn("queue", q) not in current["endpoints"]
        ]
        return out

    def update(self, r: Resource, current: dict[str, Any], drift: list[str]) -> None:
        self._subscribe(r, current["endpoints"])

    def delete(self, r: Resource) -> None:
        self.client().delete_topic(TopicArn=arn("topic", r.name))


class GlueDatabase(Handler):
    service = "glue"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        return (
            None
            if absent_if(lambda: self.client().get_database(Name=physical_name(r)), "EntityNotFoundException") is None
            else {}
        )

    def create(self, r: Resource) -> None:
        self.client().create_database(
            DatabaseInput={
                "Name": physical_name(r),
                "Description": "shoplake data lake (curated Parquet)",
                "LocationUri": f"s3://{bucket_name('lake')}/curated/",
            }
        )

    def delete(self, r: Resource) -> None:
        self.client().delete_database(Name=physical_name(r))


class IamRole(Handler):
    service = "iam"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        try:
            self.client().get_role(RoleName=physical_name(r))
        except Exception as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        try:
            doc = self.client().get_role_policy(RoleName=physical_name(r), PolicyName="shoplake")["PolicyDocument"]
        except Exception as exc:
            if _code(exc) != "NoSuchEntity":
                raise
            doc = None
        if isinstance(doc, str):
            doc = json.loads(doc)
        return {"policy": doc}

    def policy_document(self, r: Resource) -> dict[str, Any]:
        statements = []
        for statement in r.props.get("policy", []):
            resources = []
            for ref in statement["resources"]:
                kind, _, short = ref.partition(":")
                resources.append(arn(kind, short))
            statements.append(
                {"Effect": "Allow", "Action": sorted(statement["actions"]), "Resource": sorted(resources)}
            )
        return {"Version": "2012-10-17", "Statement": statements}

    def create(self, r: Resource) -> None:
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": r.props["service"]}}
            ],
        }
        iam, name = self.client(), physical_name(r)
        iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"shoplake {r.name} (least privilege, from infra/resources.yaml)",
        )
        self._put_policy(r)
        for policy_arn in r.props.get("managed_policies") or []:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
        if r.props.get("instance_profile"):  # EC2 (EMR nodes) take a role through a profile of the same name
            iam.create_instance_profile(InstanceProfileName=name)
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    def _put_policy(self, r: Resource) -> None:
        self.client().put_role_policy(
            RoleName=physical_name(r), PolicyName="shoplake", PolicyDocument=json.dumps(self.policy_document(r))
        )

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        return ["inline policy differs"] if current["policy"] != self.policy_document(r) else []

    def update(self, r: Resource, current: dict[str, Any], drift: list[str]) -> None:
        self._put_policy(r)

    def delete(self, r: Resource) -> None:
        iam, name = self.client(), physical_name(r)
        for profile in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
            iam.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"], RoleName=name)
            if profile["InstanceProfileName"] == name:  # ours; a profile someone else made is only detached
                iam.delete_instance_profile(InstanceProfileName=name)
        for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        iam.delete_role(RoleName=name)


_LAYER_ARN = re.compile(r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]+:\d+")


class LambdaFunction(Handler):
    service = "lambda"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        cfg = absent_if(
            lambda: self.client().get_function_configuration(FunctionName=physical_name(r)), "ResourceNotFoundException"
        )
        if cfg is None:
            return None
        return {
            "sha": cfg.get("CodeSha256"),
            "handler": cfg.get("Handler"),
            "env": (cfg.get("Environment") or {}).get("Variables", {}),
            "timeout": cfg.get("Timeout"),
            "memory": cfg.get("MemorySize"),
            "layers": [layer["Arn"] for layer in cfg.get("Layers") or []],
        }

    def _layers(self, r: Resource) -> list[str]:
        """Layer version ARNs of the entry (``layers:``, e.g. numpy + krcf for ``rate-detector``), checked."""
        layers = [str(v) for v in r.props.get("layers") or []]
        for layer in layers:
            if not _LAYER_ARN.fullmatch(layer):
                raise InfraError(
                    f"{r.key}: layer {layer!r} is not a layer version ARN "
                    "(arn:aws:lambda:<region>:<account>:layer:<name>:<version>); set the environment "
                    "variable infra/resources.yaml names for it (build the layer as the README says)"
                )
        return layers

    def _environment(self, r: Resource) -> dict[str, str]:
        return {k: resolve(str(v)) for k, v in (r.props.get("environment") or {}).items()}

    def _sha(self, r: Resource) -> str:
        return base64.b64encode(hashlib.sha256(lambda_package(r)).digest()).decode()

    def create(self, r: Resource) -> None:
        kwargs = dict(
            FunctionName=physical_name(r),
            Runtime=LAMBDA_RUNTIME,
            Role=arn("role", r.props["role"]),
            Handler=r.props["handler"],
            Code={"ZipFile": lambda_package(r)},
            Timeout=int(r.props.get("timeout", 60)),
            MemorySize=int(r.props.get("memory", 256)),
            Environment={"Variables": self._environment(r)},
            Publish=False,
            Tags={"shoplake:prefix": config.settings().prefix},
        )
        if self._layers(r):
            kwargs["Layers"] = self._layers(r)
        for attempt in range(8):  # a new IAM role takes a few seconds to become assumable on AWS
            try:
                self.client().create_function(**kwargs)
                return
            except Exception as exc:
                if _code(exc) == "InvalidParameterValueException" and "role" in str(exc).lower() and attempt < 7:
                    time.sleep(2 + 2 * attempt)
                    continue
                raise

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        out = []
        if current["sha"] != self._sha(r):
            out.append("code changed")
        want = {
            "handler": r.props["handler"],
            "env": self._environment(r),
            "timeout": int(r.props.get("timeout", 60)),
            "memory": int(r.props.get("memory", 256)),
            "layers": self._layers(r),
        }
        out += [f"{k} changed" for k, v in want.items() if current[k] != v]
        return out

    def update(self, r: Resource, current: dict[str, Any], drift: list[str]) -> None:
        name = physical_name(r)
        if "code changed" in drift:
            self.client().update_function_code(FunctionName=name, ZipFile=lambda_package(r))
            # AWS refuses a configuration update while the code update is in progress (ResourceConflictException)
            self.client().get_waiter("function_updated_v2").wait(
                FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 90}
            )
        if any(d != "code changed" for d in drift):
            self.client().update_function_configuration(
                FunctionName=name,
                Handler=r.props["handler"],
                Environment={"Variables": self._environment(r)},
                Timeout=int(r.props.get("timeout", 60)),
                MemorySize=int(r.props.get("memory", 256)),
                Layers=self._layers(r),
            )

    def delete(self, r: Resource) -> None:
        self.client().delete_function(FunctionName=physical_name(r))


class FirehoseDeliveryStream(Handler):
    service = "firehose"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        try:
            desc = self.client().describe_delivery_stream(DeliveryStreamName=physical_name(r))[
                "DeliveryStreamDescription"
            ]
        except Exception as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise
        dest = desc["Destinations"][0] if desc.get("Destinations") else {}
        s3 = dest.get("ExtendedS3DestinationDescription") or dest.get("S3DestinationDescription") or {}
        return {
            "prefix": s3.get("Prefix"),
            "bucket_arn": s3.get("BucketARN"),
            "opensearch": any(k.startswith("AmazonopensearchserviceDestination") for k in dest),
        }

    def _s3(self, r: Resource) -> dict[str, Any]:
        s3 = r.props["s3"]
        return {
            "RoleARN": arn("role", r.props["role"]),
            "BucketARN": arn("bucket", s3["bucket"]),
            "Prefix": s3["prefix"],
            "ErrorOutputPrefix": s3["error_prefix"],
            "BufferingHints": {
                "SizeInMBs": int(s3.get("buffer_mb", 5)),
                "IntervalInSeconds": int(s3.get("buffer_seconds", 300)),
            },
            "CompressionFormat": "UNCOMPRESSED",
        }

    def create(self, r: Resource) -> None:
        kwargs: dict[str, Any] = {"DeliveryStreamName": physical_name(r), "DeliveryStreamType": "DirectPut"}
        search = r.props.get("opensearch")
        if search:
            s3 = self._s3(r)
            backup = {
                k: s3[k] for k in ("RoleARN", "BucketARN", "ErrorOutputPrefix", "BufferingHints", "CompressionFormat")
            }
            transform = search.get("transform_function")
            dest = opensearch_destination(
                search,
                role=s3["RoleARN"],
                domain=arn("opensearch", search["domain"]),
                backup=backup | {"Prefix": r.props["s3"]["error_prefix"]},
                transform=arn("function", transform) if transform else None,
            )
            kwargs["AmazonopensearchserviceDestinationConfiguration"] = dest
        else:
            kwargs["ExtendedS3DestinationConfiguration"] = self._s3(r)
        self.client().create_delivery_stream(**kwargs)

    def drift(self, r: Resource, current: dict[str, Any]) -> list[str]:
        if r.props.get("opensearch") or current["opensearch"]:
            return []
        return (
            [f"prefix {current['prefix']} → {r.props['s3']['prefix']}"]
            if current["prefix"] != r.props["s3"]["prefix"]
            else []
        )

    def delete(self, r: Resource) -> None:
        self.client().delete_delivery_stream(DeliveryStreamName=physical_name(r), AllowForceDelete=True)


class OpenSearchDomain(Handler):
    service = "opensearch"

    def exists(self, r: Resource) -> dict[str, Any] | None:
        status = absent_if(
            lambda: self.client().describe_domain(DomainName=physical_name(r))["DomainStatus"],
            "ResourceNotFoundException",
        )
        if status is None:
            return None
        return {"endpoint": status.get("Endpoint")}

    def create(self, r: Resource) -> None:
        self.client().create_domain(
            DomainName=physical_name(r),
            EngineVersion=r.props.get("engine_version", "OpenSearch_2.19"),
            ClusterConfig={
                "InstanceType": r.props.get("instance_type", "t3.small.search"),
                "InstanceCount": int(r.props.get("instance_count", 1)),
            },
            EBSOptions={"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": int(r.props.get("volume_gb", 10))},
            EncryptionAtRestOptions={"Enabled": True},
            NodeToNodeEncryptionOptions={"Enabled": True},
            DomainEndpointOptions={"EnforceHTTPS": True, "TLSSecurityPolicy": "Policy-Min-TLS-1-2-2019-07"},
            # IAM decides: principals of this account whose own policies grant es:ESHttp* (the Firehose role, you)
            AccessPolicies=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{_account()}:root"},
                            "Action": "es:ESHttp*",
                            "Resource": arn("opensearch", f"{r.name}/*"),
                        }
                    ],
                }
            ),
        )

    def delete(self, r: Resource) -> None:
        self.client().delete_domain(DomainName=physical_name(r))


class EventSourceMapping(Handler):
    service = "lambda"

    def _find(self, r: Resource) -> dict[str, Any] | None:
        mappings = self.client().list_event_source_mappings(
            FunctionName=config.resource_name(r.props["function"]), EventSourceArn=arn("stream", r.props["stream"])
        )["EventSourceMappings"]
        return mappings[0] if mappings else None

    def exists(self, r: Resource) -> dict[str, Any] | None:
        return absent_if(lambda: self._find(r), "ResourceNotFoundException")

    def create(self, r: Resource) -> None:
        p = r.props
        kwargs: dict[str, Any] = dict(
            EventSourceArn=arn("stream", p["stream"]),
            FunctionName=config.resource_name(p["function"]),
            BatchSize=int(p.get("batch_size", 100)),
            MaximumBatchingWindowInSeconds=int(p.get("batching_window_seconds", 0)),
            StartingPosition=p.get("starting_position", "TRIM_HORIZON"),
            BisectBatchOnFunctionError=bool(p.get("bisect_on_error", False)),
            MaximumRetryAttempts=int(p.get("max_retry_attempts", -1)),
            FunctionResponseTypes=list(p.get("function_response_types", [])),
        )
        if p.get("tumbling_window_seconds"):
            kwargs["TumblingWindowInSeconds"] = int(p["tumbling_window_seconds"])
        if p.get("on_failure"):
            kind, _, short = p["on_failure"].partition(":")
            kwargs["DestinationConfig"] = {"OnFailure": {"Destination": arn(kind, short)}}
        self.client().create_event_source_mapping(**kwargs)

    def delete(self, r: Resource) -> None:
        found = self._find(r)
        if found:
            self.client().delete_event_source_mapping(UUID=found["UUID"])


HANDLERS: dict[str, Handler] = {
    "s3_bucket": S3Bucket(),
    "kinesis_stream": KinesisStream(),
    "dynamodb_table": DynamoTable(),
    "sqs_queue": SqsQueue(),
    "sns_topic": SnsTopic(),
    "glue_database": GlueDatabase(),
    "iam_role": IamRole(),
    "lambda_function": LambdaFunction(),
    "firehose_delivery_stream": FirehoseDeliveryStream(),
    "opensearch_domain": OpenSearchDomain(),
    "event_source_mapping": EventSourceMapping(),
}


# --------------------------------------------------------------------------- state: what this tool created


def _state_path() -> Path:
    s = config.settings()
    path = s.home / "infra" / f"{s.target}-{s.prefix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _read_state() -> dict[str, Any]:
    path = _state_path()
    state = json.loads(path.read_text()) if path.exists() else {}
    generation = config.by_target(local=_moto_generation, aws=lambda: None)()
    if generation is not None and state.get("moto_generation") != generation:  # a new emulator starts empty
        state = {"moto_generation": generation, "created": []}
    state.setdefault("created", [])
    return state


def _moto_generation() -> Any:
    from shoplake import local_services

    return local_services.moto_generation()


def _write_state(state: dict[str, Any]) -> None:
    _state_path().write_text(json.dumps(state, indent=2, sort_keys=True))


# --------------------------------------------------------------------------- the local backend: a reconciler


class Reconciler:
    """The local target's backend: one API call per resource, drift repair, partial applies, adoption."""

    def plan(self, spec: list[Resource] | None = None) -> list[Change]:
        """What ``apply`` would do, resource by resource (nothing is changed)."""
        changes = []
        for r in spec or load_spec():
            current = HANDLERS[r.type].exists(r)
            if current is None:
                changes.append(Change("create", r))
                continue
            drift = HANDLERS[r.type].drift(r, current)
            changes.append(Change("update", r, "; ".join(drift)) if drift else Change("unchanged", r))
        return changes

    def apply(self, spec: list[Resource] | None = None, progress: bool = False) -> list[Change]:
        """Create what is missing and fix what drifted; a second apply reports everything unchanged."""
        from tqdm.auto import tqdm

        state = _read_state()
        changes = self.plan(spec)
        for change in tqdm(changes, desc="apply", unit="resource", disable=not progress):
            r, handler = change.resource, HANDLERS[change.resource.type]
            if change.action == "create":
                log.info("creating %s %s", r.type, physical_name(r))
                handler.create(r)
                if r.key not in state["created"]:
                    state["created"].append(r.key)
                    _write_state(state)
            elif change.action == "update":
                log.info("updating %s %s: %s", r.type, physical_name(r), change.detail)
                handler.update(r, handler.exists(r) or {}, change.detail.split("; "))
        return changes

    def destroy(self, confirm: str | None = None, spec: list[Resource] | None = None) -> list[Change]:
        """Delete what ``apply`` created (and nothing else), in reverse order."""
        s = config.settings()
        if config.by_target(local=False, aws=True) and confirm != s.prefix:
            raise InfraError(
                f"refusing to destroy real AWS resources of prefix {s.prefix!r} without confirmation: "
                f"run `shoplake infra destroy --confirm {s.prefix}`"
            )
        state = _read_state()
        created = set(state["created"])
        changes = []
        for r in reversed(spec or load_spec()):
            if r.key not in created:
                continue
            handler = HANDLERS[r.type]
            if handler.exists(r) is None:
                changes.append(Change("absent", r))
            else:
                log.info("deleting %s %s", r.type, physical_name(r))
                handler.delete(r)
                changes.append(Change("delete", r))
            state["created"].remove(r.key)
            _write_state(state)
        return changes

    def outputs(self, spec: list[Resource] | None = None) -> dict[str, str]:
        """Real names, ARNs and URLs of the stack's resources by reference (``table:order_history`` ...)."""
        out: dict[str, str] = {}
        for r in spec or load_spec():
            name = physical_name(r)
            if r.type == "s3_bucket":
                out[f"bucket:{r.name}"] = name
            elif r.type == "kinesis_stream":
                out[f"stream:{r.name}"] = name
                out[f"stream_arn:{r.name}"] = arn("stream", r.name)
            elif r.type == "dynamodb_table":
                out[f"table:{r.name}"] = name
            elif r.type == "sqs_queue":
                out[f"queue:{r.name}"] = name
                out[f"queue_arn:{r.name}"] = arn("queue", r.name)
                out[f"queue_url:{r.name}"] = resolve(f"queue_url:{r.name}")
            elif r.type == "sns_topic":
                out[f"topic_arn:{r.name}"] = arn("topic", r.name)
            elif r.type == "glue_database":
                out["glue_database"] = name
            elif r.type == "firehose_delivery_stream":
                out[f"firehose:{r.name}"] = name
            elif r.type == "lambda_function":
                out[f"function:{r.name}"] = name
                out[f"function_arn:{r.name}"] = arn("function", r.name)
            elif r.type == "iam_role":
                out[f"role_arn:{r.name}"] = arn("role", r.name)
                out[f"role_name:{r.name}"] = name
                if r.props.get("instance_profile"):
                    out[f"instance_profile:{r.name}"] = name
            elif r.type == "opensearch_domain":
                out[f"opensearch:{r.name}"] = name
        return out

    def leftovers(self) -> list[str]:
        """Resources of resources.yaml that still exist (what a destroy left, or what another run created)."""
        return [f"{r.type}:{physical_name(r)}" for r in load_spec() if HANDLERS[r.type].exists(r) is not None]

    def drift(self) -> list[dict[str, str]]:
        """Differences between resources.yaml and the emulator, one row per resource."""
        return [
            {"logical_id": c.resource.key, "type": c.resource.type, "status": c.action, "detail": c.detail}
            for c in self.plan()
        ]

    def describe_target(self) -> list[str]:
        from shoplake import local_services

        return local_services.status().lines()


def backend(spec: list[Resource] | None = None) -> Any:
    """The provisioning backend: the reconciler (local) or CloudFormation (aws), chosen once by the target.

    An explicit resource list (tests, repairs: ``apply([table])``) is reconciled resource by resource on either
    target; the whole stack (no list: notebooks, the CLI) goes through CloudFormation on aws.
    """
    from shoplake import cloudformation

    if spec is not None:
        return Reconciler()
    return config.by_target(local=Reconciler, aws=cloudformation.CloudFormationStack)()


# --------------------------------------------------------------------------- verbs (the same on both targets)


def plan(spec: list[Resource] | None = None) -> list[Change]:
    """What ``apply`` would do (local: per resource; aws: a CloudFormation change set with replacement and cost)."""
    return backend(spec).plan(spec)


def apply(spec: list[Resource] | None = None, progress: bool = False) -> list[Change]:
    """Create or update every resource; a second apply reports everything unchanged."""
    return backend(spec).apply(spec, progress=progress)


def destroy(confirm: str | None = None, spec: list[Resource] | None = None) -> list[Change]:
    """Delete what ``apply`` created (aws: ``confirm`` must equal the prefix; the stack is deleted and waited for)."""
    return backend(spec).destroy(confirm=confirm, spec=spec)


def outputs(spec: list[Resource] | None = None) -> dict[str, str]:
    """Real names, ARNs and URLs by reference (``table:order_history``, ``queue_url:alarm-inbox``, ...).

    aws: the stack's Outputs (the stack must exist); with a resource list: computed from resources.yaml.
    """
    return backend(spec).outputs(spec)


def leftovers() -> list[str]:
    """Resources of this prefix that still exist (notebook 99 expects none after destroy)."""
    return backend().leftovers()


def drift() -> list[dict[str, str]]:
    """Drift between resources.yaml and what exists (aws: CloudFormation drift detection)."""
    return backend().drift()


def describe_target() -> list[str]:
    """Lines describing where provisioning goes (local: the stack's processes; aws: account, region, stack)."""
    return backend().describe_target()


def cost_summary(changes: list[Change]) -> list[str]:
    """Estimated hourly/monthly cost lines of a plan (aws list prices, infra/prices.yaml); empty locally."""
    if not any(c.hourly_usd is not None for c in changes):
        return []
    from shoplake import cloudformation

    return cloudformation.cost_summary(changes)


def table(changes: list[Change]) -> Any:
    """A pandas DataFrame of a plan/apply/destroy result (what notebook 00 shows)."""
    import pandas as pd

    columns = ["action", "type", "name", "real_name", "detail", "replacement", "hourly_usd", "monthly_usd"]
    return pd.DataFrame([c.as_row() for c in changes], columns=columns)


# --------------------------------------------------------------------------- CLI


@click.group("infra")
def cli() -> None:
    """Plan, apply or destroy the resources of infra/resources.yaml on the current target."""


def _print(changes: list[Change]) -> None:
    for c in changes:
        row = c.as_row()
        extra = [c.detail] if c.detail else []
        if c.replacement and c.action == "update":
            extra.append(f"replacement: {c.replacement}")
        if c.hourly_usd:
            extra.append(f"${c.hourly_usd:.3f}/h")
        click.echo(
            f"{c.action:<10} {c.resource.type:<26} {row['real_name']}" + (f"  ({'; '.join(extra)})" if extra else "")
        )
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do")
    for line in cost_summary(changes):
        click.echo(line)


@cli.command("plan")
def plan_cmd() -> None:
    """Show what apply would change (aws: a change set, with replacements and the estimated cost)."""
    config.ensure_ready()
    _print(plan())


@cli.command("apply")
def apply_cmd() -> None:
    """Create or fix every resource (idempotent)."""
    config.ensure_ready()
    _print(apply(progress=True))


@cli.command("destroy")
@click.option("--confirm", default=None, help="on aws: the resource prefix, to confirm deleting real resources")
def destroy_cmd(confirm: str | None) -> None:
    """Delete every resource this tool created."""
    config.ensure_ready()
    _print(destroy(confirm=confirm))
    left = leftovers()
    click.echo(f"still present: {len(left)}" + (f" ({', '.join(left[:10])})" if left else ""))


@cli.command("outputs")
def outputs_cmd() -> None:
    """Print names, ARNs and URLs as JSON."""
    from shoplake.cli import echo_json

    config.ensure_ready()
    echo_json(outputs())


@cli.command("drift")
def drift_cmd() -> None:
    """Compare what exists with resources.yaml (aws: CloudFormation drift detection)."""
    config.ensure_ready()
    rows = drift()
    for row in rows:
        click.echo(f"{row['status']:<12} {row['type']:<40} {row['logical_id']}  {row['detail']}".rstrip())
    changed = [r for r in rows if r["status"] not in ("IN_SYNC", "unchanged", "NOT_CHECKED")]
    click.echo(f"{len(changed)} of {len(rows)} resources drifted")


@cli.command("template")
@click.option("--out", type=click.Path(dir_okay=False), default="build/shoplake.cfn.yaml", show_default=True)
def template_cmd(out: str) -> None:
    """Render the aws resources of resources.yaml into one CloudFormation template (+ the Lambda zips beside it)."""
    from shoplake import cloudformation

    rendered = cloudformation.write_template(Path(out))
    click.echo(
        f"wrote {out}: {len(rendered.template['Resources'])} resources, {len(rendered.template['Outputs'])} outputs"
    )
    click.echo(f"Lambda zips in {Path(out).parent / 'lambda'} (upload them under s3://<CodeBucket>/shoplake/lambda/)")


@cli.command("build-layer")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="build/layers", show_default=True)
@click.option("--publish", is_flag=True, help="publish the zip as a layer version and print its ARN")
def build_layer_cmd(out_dir: str, publish: bool) -> None:
    """Build the rate detector's numpy + krcf layer (python3.12, manylinux x86_64) from pinned wheels."""
    from shoplake import layers  # lazily: building a layer is rare and slow

    path = layers.build_rate_detector_layer(Path(out_dir))
    click.echo(f"built {path}")
    if publish:
        config.ensure_ready()
        layer_arn = layers.publish_layer(path)
        click.echo(f"published {layer_arn}")
        click.echo(f"export SHOPLAKE_RATE_DETECTOR_LAYER={layer_arn}")
