"""Every knob of shoplake in one table (``KNOBS``): the setting, its environment variable, its default, what it does.

``settings()`` resolves them once per distinct environment (cached on the values of the variables in the table), so a
hot path may call it freely. Notebook parameters override the environment through ``apply_parameters``. This module
imports nothing of shoplake but its errors: ``config`` (clients) and ``local_services`` (the emulator and PostgreSQL processes) both build on it.
The README's settings table is this table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from shoplake.errors import ConfigError

TARGETS = ("local", "aws")
SCALES = ("tiny", "small", "full")
LOCAL_REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parents[2]
# on aws the prefix is part of bucket names (shoplake-<prefix>-lake-<account>-<region>, at most 63 characters) and
# of the OpenSearch domain name: the same rule as the CloudFormation template's Prefix parameter
AWS_PREFIX = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
AWS_PREFIX_MAX = 14


@dataclass(frozen=True)
class Knob:
    """One setting: the ``Settings`` field, its environment variable, and a line for the README table."""

    name: str
    env: str
    doc: str


KNOBS: tuple[Knob, ...] = (
    Knob("target", "SHOPLAKE_TARGET", "`local` (default: emulator, Spark local, DuckDB, PostgreSQL) or `aws`"),
    Knob(
        "prefix",
        "SHOPLAKE_PREFIX",
        "part of every resource name `shoplake-<prefix>-…` (default `dev`; aws: 1-14 lower-case)",
    ),
    Knob("scale", "SHOPLAKE_SCALE", "data size: `tiny` ≈ 2k order lines, `small` ≈ 100k (default), `full` ≈ 1.07M"),
    Knob("seed", "SHOPLAKE_SEED", "random seed of the synthetic shop (default 42)"),
    Knob("home", "SHOPLAKE_HOME", "state folder of the local services, agent and index (default `.shoplake/`)"),
    Knob("data_dir", "SHOPLAKE_DATA_DIR", "where datasets are generated (default `data/generated/`)"),
    Knob("retail_file", "SHOPLAKE_RETAIL_FILE", "the real Online Retail file to use instead of the synthetic shop"),
    Knob("profile", "AWS_PROFILE", "aws: the credentials profile (the local target reads no profile at all)"),
    Knob("region", "AWS_REGION", "aws: the region (else `AWS_DEFAULT_REGION`, else the profile's region)"),
    Knob("alarm_phone", "SHOPLAKE_ALARM_PHONE", "aws: E.164 number texted by the rate alarm (SMS sandbox: verified)"),
    Knob("alarm_email", "SHOPLAKE_ALARM_EMAIL", "aws: e-mail subscribed to the rate alarm (instead of or beside SMS)"),
    Knob(
        "rate_detector_layer",
        "SHOPLAKE_RATE_DETECTOR_LAYER",
        "aws: the numpy + krcf layer ARN (`shoplake infra build-layer --publish`)",
    ),
    Knob("athena_workgroup", "SHOPLAKE_ATHENA_WORKGROUP", "aws: the Athena workgroup (default `primary`)"),
    Knob(
        "redshift_secret_id",
        "SHOPLAKE_REDSHIFT_SECRET_ID",
        "aws: Secrets Manager secret of your Redshift (host, port, username, password, dbname)",
    ),
    Knob(
        "redshift_iam_role",
        "SHOPLAKE_REDSHIFT_IAM_ROLE",
        "aws: role Redshift's COPY uses (default: the cluster's default role)",
    ),
)
_ENV = tuple(k.env for k in KNOBS) + ("AWS_DEFAULT_REGION",)


@dataclass(frozen=True)
class Settings:
    """Everything that selects where shoplake runs, how big the data is, and the aws-only knobs (``KNOBS``)."""

    target: str = "local"
    prefix: str = "dev"
    region: str = LOCAL_REGION
    scale: str = "small"
    seed: int = 42
    home: Path = field(default_factory=lambda: REPO_ROOT / ".shoplake")
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / "data" / "generated")
    profile: str | None = None
    retail_file: str | None = None
    alarm_phone: str | None = None
    alarm_email: str | None = None
    rate_detector_layer: str | None = None
    athena_workgroup: str = "primary"
    redshift_secret_id: str | None = None
    redshift_iam_role: str | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r}: set SHOPLAKE_TARGET=local or aws")
        if self.scale not in SCALES:
            raise ConfigError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if not self.prefix or not all(c.isalnum() or c == "-" for c in self.prefix) or len(self.prefix) > 20:
            raise ConfigError(
                f"prefix {self.prefix!r} must be 1-20 letters, digits or '-' (it becomes part of every resource name)"
            )
        if self.target == "aws" and not (AWS_PREFIX.fullmatch(self.prefix) and len(self.prefix) <= AWS_PREFIX_MAX):
            raise ConfigError(
                f"prefix {self.prefix!r}: on aws it must be 1-14 lower-case letters, digits and single '-', starting "
                "with a letter (bucket names carry it with the account and region): set SHOPLAKE_PREFIX, e.g. myteam"
            )

    @property
    def is_local(self) -> bool:
        return self.target == "local"

    def name(self, short: str) -> str:
        """The full resource name of ``short`` (e.g. ``orders`` → ``shoplake-dev-orders``)."""
        return resource_name(short, self.prefix)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (notebook parameters override the environment this way)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes)


assert {k.name for k in KNOBS} <= {f.name for f in fields(Settings)}, "every knob is a Settings field"


def resource_name(short: str, prefix: str | None = None) -> str:
    """``shoplake-<prefix>-<short>``: the one place resource names are built."""
    prefix = prefix if prefix is not None else settings().prefix
    return f"shoplake-{prefix}-{short}"


def glue_database(prefix: str | None = None) -> str:
    """The Glue database name (Glue and Athena want underscores): ``shoplake_<prefix>``."""
    prefix = prefix if prefix is not None else settings().prefix
    return f"shoplake_{prefix}".replace("-", "_").lower()


def settings(**overrides: Any) -> Settings:
    """Settings from the environment (the variables of ``KNOBS``), then ``overrides``."""
    base = _from_environment(tuple(os.environ.get(key) for key in _ENV))
    return base.with_(**overrides) if overrides else base


@lru_cache(maxsize=16)
def _from_environment(values: tuple[str | None, ...]) -> Settings:
    env = {key: value for key, value in zip(_ENV, values, strict=True) if value is not None}

    def text(key: str) -> str | None:
        value = (env.get(key) or "").strip()
        return value or None

    target = (text("SHOPLAKE_TARGET") or "local").lower()
    if target == "aws":
        region = text("AWS_REGION") or text("AWS_DEFAULT_REGION") or _profile_region(text("AWS_PROFILE"))
    else:
        region = LOCAL_REGION
    return Settings(
        target=target,
        prefix=env.get("SHOPLAKE_PREFIX", "dev"),
        region=region,  # aws: "" until AWS_REGION or the profile names one (ensure_ready says so)
        scale=text("SHOPLAKE_SCALE") or "small",
        seed=_whole_number("SHOPLAKE_SEED", text("SHOPLAKE_SEED"), 42),
        home=Path(text("SHOPLAKE_HOME") or REPO_ROOT / ".shoplake"),
        data_dir=Path(text("SHOPLAKE_DATA_DIR") or REPO_ROOT / "data" / "generated"),
        profile=text("AWS_PROFILE") if target == "aws" else None,
        retail_file=text("SHOPLAKE_RETAIL_FILE"),
        alarm_phone=text("SHOPLAKE_ALARM_PHONE"),
        alarm_email=text("SHOPLAKE_ALARM_EMAIL"),
        rate_detector_layer=text("SHOPLAKE_RATE_DETECTOR_LAYER"),
        athena_workgroup=text("SHOPLAKE_ATHENA_WORKGROUP") or "primary",
        redshift_secret_id=text("SHOPLAKE_REDSHIFT_SECRET_ID"),
        redshift_iam_role=text("SHOPLAKE_REDSHIFT_IAM_ROLE"),
    )


def _whole_number(key: str, raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a whole number: set it to e.g. {default}, or unset it") from None
    if value < 0:
        raise ConfigError(f"{key}={raw!r} must be 0 or more")
    return value


@lru_cache(maxsize=8)
def _profile_region(profile: str | None) -> str:
    """The region of the AWS profile (``~/.aws/config``), as the AWS CLI would pick it; "" when it has none."""
    try:
        import botocore.session

        return botocore.session.Session(profile=profile).get_config_variable("region") or ""
    except Exception:  # an unknown profile is reported by the session that uses it, with its own message
        return ""


def by_target(*, local: Any, aws: Any) -> Any:
    """The one place a part chooses between its local and its aws backend (``open_index``, ``trainer``, ...).

    Parts call this inside their ``open_*`` verb; notebooks and CLIs never look at the target themselves.
    """
    return local if settings().is_local else aws


def apply_parameters(target: str | None = None, **overrides: Any) -> Settings:
    """Make notebook parameters the process-wide settings (exported to the environment) and return them."""
    if target is not None:
        os.environ["SHOPLAKE_TARGET"] = target
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"SHOPLAKE_{key.upper()}"] = str(value)
    return settings()


def clear_cache() -> None:
    """Forget resolved settings (the profile's region is read from ~/.aws/config once per profile)."""
    _from_environment.cache_clear()
    _profile_region.cache_clear()


def knob_table() -> str:
    """The Markdown table of every knob (the README's settings table is generated from this)."""
    rows = ["| variable | what it does |", "|---|---|"]
    rows += [f"| `{k.env}` | {k.doc} |" for k in KNOBS]
    return "\n".join(rows)
