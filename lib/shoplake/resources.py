"""The resources of ``infra/resources.yaml`` and what derives from them: names, ARNs, references, Lambda packages.

One description for both targets: the local reconciler (:mod:`shoplake.infra`) and the CloudFormation renderer
(:mod:`shoplake.cloudformation`) both read it here, so neither imports the other's internals.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from shoplake import config
from shoplake.errors import InfraError

log = logging.getLogger(__name__)

SPEC_PATH = config.REPO_ROOT / "infra" / "resources.yaml"
PACKAGE_DIR = Path(__file__).resolve().parent
LAMBDA_RUNTIME = "python3.12"
HOURS_PER_MONTH = 730

# apply order; destroy runs it backwards
ORDER = (
    "iam_role",
    "s3_bucket",
    "kinesis_stream",
    "dynamodb_table",
    "sqs_queue",
    "sns_topic",
    "glue_database",
    "opensearch_domain",
    "lambda_function",
    "firehose_delivery_stream",
    "event_source_mapping",
)


@dataclass(frozen=True)
class Resource:
    """One entry of resources.yaml, with the current target's overrides merged in."""

    type: str
    name: str
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.type}:{self.name}"


@dataclass
class Change:
    """One line of a plan: what happens (or happened) to one resource."""

    action: str  # create | update | unchanged | delete | absent
    resource: Resource
    detail: str = ""
    replacement: str = ""  # aws: CloudFormation's Replacement (True | False | Conditional | new)
    hourly_usd: float | None = None  # aws plan: list price per hour while the resource exists
    logical_id: str = ""  # aws: the template's logical id
    real_name: str | None = None  # None: the physical name from resources.yaml

    def as_row(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "type": self.resource.type,
            "name": self.resource.name,
            "real_name": physical_name(self.resource) if self.real_name is None else self.real_name,
            "detail": self.detail,
            "replacement": self.replacement,
            "hourly_usd": self.hourly_usd,
            "monthly_usd": None if self.hourly_usd is None else round(self.hourly_usd * HOURS_PER_MONTH, 2),
        }


# --------------------------------------------------------------------------- spec


_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return _VAR.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    """The parsed file, cached while it is unchanged (``lake.bucket()`` and dashboards ask on every call)."""
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        raise InfraError(f"{path} not found: the stack description must exist (infra/resources.yaml)") from exc
    return copy.deepcopy(_parsed(str(path), info.st_mtime_ns, info.st_size))


@lru_cache(maxsize=8)
def _parsed(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise InfraError(f"{path} is not valid YAML: {exc}") from exc


def load_spec(path: Path = SPEC_PATH, target: str | None = None, expand: bool = True) -> list[Resource]:
    """The resources of ``path`` for ``target`` (default: the current one), in apply order.

    ``expand=False`` keeps ``${VAR}`` values as written (the CloudFormation renderer makes them parameters).
    """
    target = target or config.settings().target
    doc = _read_yaml(Path(path))
    resources: list[Resource] = []
    seen: set[str] = set()
    for index, entry in enumerate(doc.get("resources") or []):
        if not isinstance(entry, dict) or "type" not in entry or "name" not in entry:
            raise InfraError(f"{path}: resource #{index + 1} needs a 'type' and a 'name'")
        rtype, name = entry["type"], str(entry["name"])
        if rtype not in ORDER:
            raise InfraError(f"{path}: resource {name!r} has unknown type {rtype!r}; known: {sorted(ORDER)}")
        if target not in entry.get("targets", ["local", "aws"]):
            continue
        props = {k: v for k, v in entry.items() if k not in ("type", "name", "targets", "local", "aws")}
        props.update(entry.get(target) or {})
        resource = Resource(rtype, name, _expand(props) if expand else props)
        if resource.key in seen:
            raise InfraError(f"{path}: {resource.key} is declared twice")
        seen.add(resource.key)
        resources.append(resource)
    return sorted(resources, key=lambda r: ORDER.index(r.type))


def find(resource_type: str, name: str, target: str | None = None) -> Resource:
    """One resource of the spec (e.g. the event-source mapping the local runner imitates)."""
    for resource in load_spec(target=target):
        if resource.type == resource_type and resource.name == name:
            return resource
    raise InfraError(f"infra/resources.yaml declares no {resource_type} named {name!r}")


def physical_name(resource: Resource) -> str:
    """The real name of a stack resource; on aws bucket names carry the account and region (globally unique)."""
    if resource.type == "glue_database":
        return config.glue_database()
    if resource.type == "opensearch_domain":  # 3-28 lowercase characters
        return config.resource_name(resource.name).lower()[:28]
    if resource.type == "s3_bucket":
        return bucket_name(resource.name)
    return config.resource_name(resource.name)


def bucket_name(short: str) -> str:
    """``shoplake-<prefix>-<short>`` locally; ``shoplake-<prefix>-<short>-<account>-<region>`` on aws (≤ 63)."""
    return config.by_target(local=config.resource_name, aws=_global_bucket_name)(short)


def _global_bucket_name(short: str) -> str:
    """Bucket names are global across all accounts: the account id and region make ours unique."""
    s = config.settings()  # on aws the prefix is already checked (lower-case, ≤ 14 characters)
    name = f"{config.resource_name(short)}-{_account()}-{s.region}"
    if len(name) > 63:
        raise InfraError(f"bucket name {name} is longer than 63 characters: use a shorter SHOPLAKE_PREFIX")
    return name


# --------------------------------------------------------------------------- references and ARNs


def _account() -> str:
    return _account_for(config.settings().target, config.endpoint_url())


_ACCOUNTS: dict[tuple[str, str | None], str] = {}


def _account_for(target: str, url: str | None) -> str:
    key = (target, url)
    if key not in _ACCOUNTS:
        _ACCOUNTS[key] = config.client("sts").get_caller_identity()["Account"]
    return _ACCOUNTS[key]


def arn(kind: str, short: str) -> str:
    """The ARN of a resource of the stack by short name (``stream``, ``table``, ``queue``, ``topic``, ...)."""
    s = config.settings()
    region, account = s.region, _account()
    full = config.resource_name(short)
    if kind == "bucket":
        bucket, slash, rest = short.partition("/")
        return f"arn:aws:s3:::{bucket_name(bucket)}{slash}{rest}"
    templates = {
        "stream": f"arn:aws:kinesis:{region}:{account}:stream/{full}",
        "table": f"arn:aws:dynamodb:{region}:{account}:table/{full}",
        "queue": f"arn:aws:sqs:{region}:{account}:{full}",
        "topic": f"arn:aws:sns:{region}:{account}:{full}",
        "function": f"arn:aws:lambda:{region}:{account}:function:{full}",
        "role": f"arn:aws:iam::{account}:role/{full}",
        "firehose": f"arn:aws:firehose:{region}:{account}:deliverystream/{full}",
        "opensearch": f"arn:aws:es:{region}:{account}:domain/{full.lower()[:28]}",
    }
    if kind == "opensearch" and "/" in short:
        domain, _, rest = short.partition("/")
        return arn("opensearch", domain) + "/" + rest
    if kind == "logs":
        return f"arn:aws:logs:{region}:{account}:{short}"
    if kind not in templates:
        raise InfraError(f"unknown reference kind {kind!r} (in {kind}:{short})")
    return templates[kind]


def resolve(ref: str) -> str:
    """Turn a reference from resources.yaml (``table:order_history``, ``queue_url:x``, ``topic_arn:alarms``) into a value."""
    kind, _, short = ref.partition(":")
    if kind in ("table", "stream", "function", "role_name"):
        return config.resource_name(short)
    if kind == "bucket_name":
        return bucket_name(short)
    if kind == "queue_url":
        try:
            return config.client("sqs").get_queue_url(QueueName=config.resource_name(short))["QueueUrl"]
        except Exception as exc:
            if _code(exc) in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise InfraError(
                    f"queue {config.resource_name(short)} does not exist yet: run `shoplake infra apply` "
                    "(or notebook 00_provision) first"
                ) from exc
            raise
    if kind.endswith("_arn"):
        return arn(kind[: -len("_arn")], short)
    if kind == "glue_database":
        return config.glue_database()
    return ref


# --------------------------------------------------------------------------- handlers


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def deterministic_zip(files: dict[str, bytes]) -> bytes:
    """A zip of ``{name: content}`` that depends on the contents only: sorted names, fixed timestamps and modes
    (so its hash can name an upload, and an unchanged package is never uploaded again)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def lambda_zip(source: str) -> bytes:
    """The deployment package of a handler file: the file alone at the zip root, with fixed timestamps."""
    path = PACKAGE_DIR / source
    if not path.exists():
        raise InfraError(f"Lambda source {path} does not exist (resources.yaml 'source' is relative to lib/shoplake/)")
    return deterministic_zip({path.name: path.read_bytes()})


def bundle_zip(paths: list[str]) -> bytes:
    """A deployment package of several files/folders of lib/shoplake/, zipped under ``shoplake/`` (package layout kept).

    Deterministic: sorted entries, fixed timestamps and modes, no ``__pycache__``. A folder brings its whole tree
    (with its ``__init__.py``); list single files instead to leave a package's ``__init__`` out (it then imports
    as a namespace package — how ``rate-detector`` avoids ``shoplake.alarm``'s pandas-based re-exports).
    """
    files: dict[str, Path] = {}
    for entry in paths:
        path = PACKAGE_DIR / entry
        if path.is_dir():
            found = [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"]
        elif path.is_file():
            found = [path]
        else:
            raise InfraError(
                f"Lambda bundle entry {path} does not exist (resources.yaml 'bundle' paths are relative to lib/shoplake/)"
            )
        for f in found:
            files["shoplake/" + f.relative_to(PACKAGE_DIR).as_posix()] = f
    return deterministic_zip({name: path.read_bytes() for name, path in files.items()})


def lambda_package(r: Resource) -> bytes:
    """The zip of a ``lambda_function`` entry: its ``bundle`` (package layout) or its single ``source`` file."""
    if r.props.get("bundle"):
        return bundle_zip(list(r.props["bundle"]))
    return lambda_zip(r.props["source"])


def opensearch_destination(
    search: dict[str, Any], role: Any, domain: Any, backup: dict[str, Any], transform: Any
) -> dict[str, Any]:
    """Firehose's OpenSearch destination for a ``firehose_delivery_stream``'s ``opensearch:`` block.

    One definition of its settings (index, rotation, backup mode, buffering, retries, the transform processor) for the
    reconciler and the CloudFormation renderer; they pass the ARNs as they write them (strings for the API, GetAtt
    for the template), ``backup`` their S3 backup configuration and ``transform`` the processor's ARN (or None).
    """
    dest: dict[str, Any] = {
        "RoleARN": role,
        "DomainARN": domain,
        "IndexName": search["index"],
        "IndexRotationPeriod": search.get("index_rotation", "OneDay"),
        "S3BackupMode": search.get("s3_backup_mode", "FailedDocumentsOnly"),
        "S3Configuration": backup,
        "BufferingHints": {
            "IntervalInSeconds": int(search.get("buffer_seconds", 60)),
            "SizeInMBs": int(search.get("buffer_mb", 1)),
        },
        "RetryOptions": {"DurationInSeconds": int(search.get("retry_seconds", 300))},
    }
    if transform is not None:
        dest["ProcessingConfiguration"] = {
            "Enabled": True,
            "Processors": [
                {"Type": "Lambda", "Parameters": [{"ParameterName": "LambdaArn", "ParameterValue": transform}]}
            ],
        }
    return dest


def create_private_bucket(s3: Any, name: str, region: str) -> None:
    """Create bucket ``name`` as every shoplake bucket is: public access blocked, encrypted at rest (SSE-S3)."""
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )


def topic_to_queue_policy(queue_arn: Any, topic_arn: Any) -> dict[str, Any]:
    """The queue policy letting one SNS topic send to one queue (ARNs as strings, or CloudFormation Ref/GetAtt)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


def table_keys(props: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """``KeySchema`` and ``AttributeDefinitions`` of a ``dynamodb_table`` entry (its ``hash_key``, ``range_key``),
    as CreateTable and CloudFormation take them: one definition of a table's keys."""
    keys = [("HASH", props["hash_key"])] + ([("RANGE", props["range_key"])] if props.get("range_key") else [])
    return {
        "KeySchema": [{"AttributeName": k["name"], "KeyType": kind} for kind, k in keys],
        "AttributeDefinitions": [{"AttributeName": k["name"], "AttributeType": k.get("type", "S")} for _, k in keys],
    }
