"""Settings (target, prefix, region, scale) and the one place that builds AWS clients for the chosen target.

Target ``local`` (default) talks only to the embedded emulator on a loopback address with fake credentials;
target ``aws`` uses the standard credential chain (``AWS_PROFILE``, ``AWS_REGION``...). Every boto3 client,
boto3 resource and awswrangler call in shoplake gets its endpoint and session from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from shoplake.errors import ConfigError

TARGETS = ("local", "aws")
SCALES = ("tiny", "small", "full")
LOCAL_REGION = "us-east-1"
# Fake credentials for the emulator. They are not secrets and cannot sign a request AWS would accept.
LOCAL_ACCESS_KEY = "testing"
LOCAL_SECRET_KEY = "testing"

REPO_ROOT = Path(__file__).resolve().parents[2]
# on aws the prefix is part of bucket names (shoplake-<prefix>-lake-<account>-<region>, at most 63 characters) and
# of the OpenSearch domain name: the same rule as the CloudFormation template's Prefix parameter
AWS_PREFIX = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
AWS_PREFIX_MAX = 14


@dataclass(frozen=True)
class Settings:
    """Everything that selects where shoplake runs and how big the data is."""

    target: str = "local"
    prefix: str = "dev"
    region: str = LOCAL_REGION
    scale: str = "small"
    seed: int = 42
    home: Path = field(default_factory=lambda: REPO_ROOT / ".shoplake")
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / "data" / "generated")
    profile: str | None = None

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


def resource_name(short: str, prefix: str | None = None) -> str:
    """``shoplake-<prefix>-<short>``: the one place resource names are built."""
    prefix = prefix if prefix is not None else settings().prefix
    return f"shoplake-{prefix}-{short}"


def settings(**overrides: Any) -> Settings:
    """Settings from the environment (``SHOPLAKE_TARGET``, ``SHOPLAKE_PREFIX``, ``AWS_REGION``, ...), then overrides."""
    env = os.environ
    target = env.get("SHOPLAKE_TARGET", "local").strip().lower() or "local"
    if target == "aws":
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or _profile_region(env.get("AWS_PROFILE"))
    else:
        region = LOCAL_REGION
    base = Settings(
        target=target,
        prefix=env.get("SHOPLAKE_PREFIX", "dev"),
        region=region,  # aws: "" until AWS_REGION or the profile names one (ensure_ready says so)
        scale=env.get("SHOPLAKE_SCALE", "small"),
        seed=_int_setting(env, "SHOPLAKE_SEED", 42),
        home=Path(env["SHOPLAKE_HOME"]) if env.get("SHOPLAKE_HOME") else REPO_ROOT / ".shoplake",
        data_dir=Path(env["SHOPLAKE_DATA_DIR"]) if env.get("SHOPLAKE_DATA_DIR") else REPO_ROOT / "data" / "generated",
        profile=env.get("AWS_PROFILE") if target == "aws" else None,
    )
    return base.with_(**overrides)


def _int_setting(env: Any, key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or not raw.strip():
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


def ensure_ready() -> Settings:
    """Make the current target usable: local → the shared stack is up; aws → region, endpoints and credentials.

    Idempotent and cheap when already ready; every notebook (``workbook.start``) and CLI verb calls it first.
    """
    s = settings()
    if s.is_local:
        from shoplake import stack  # local import: stack imports config

        stack.ensure()
        clear_caches()
        return s
    _check_aws_environment(s)
    _aws_identity(s.region, s.profile)
    return s


def _check_aws_environment(s: Settings) -> None:
    if not s.region:
        raise ConfigError("target aws needs a region: set AWS_REGION (e.g. eu-west-1) or a region in your AWS profile")
    for key, value in os.environ.items():
        if key.startswith("AWS_ENDPOINT_URL") and value:
            raise ConfigError(
                f"{key}={value} is set while SHOPLAKE_TARGET=aws: a leftover endpoint would send real credentials "
                "elsewhere. Unset it (it is only for emulators), or use SHOPLAKE_TARGET=local."
            )


@lru_cache(maxsize=4)
def _aws_identity(region: str, profile: str | None) -> str:
    """The account id behind the credentials (checked once per region/profile); a clear error without them."""
    try:
        return client("sts").get_caller_identity()["Account"]
    except Exception as exc:
        name = type(exc).__name__
        raise ConfigError(
            f"target aws: no usable AWS credentials ({name}: {str(exc)[:160]}). Run `aws configure` or "
            "`aws sso login`, or set AWS_PROFILE to a profile that works."
        ) from exc


def apply_parameters(target: str | None = None, **overrides: Any) -> Settings:
    """Make notebook parameters the process-wide settings (exported to the environment) and return them."""
    if target is not None:
        os.environ["SHOPLAKE_TARGET"] = target
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"SHOPLAKE_{key.upper()}"] = str(value)
    clear_caches()
    return settings()


# --------------------------------------------------------------------------- local-target safety


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def assert_loopback(url: str, what: str = "endpoint") -> str:
    if not is_loopback_url(url):
        raise ConfigError(
            f"the local target may only talk to loopback addresses, but the {what} is {url!r}. "
            "Unset AWS_ENDPOINT_URL*, or set SHOPLAKE_TARGET=aws to use a real account on purpose."
        )
    return url


def _check_no_real_endpoint_env() -> None:
    for key, value in os.environ.items():
        if key.startswith("AWS_ENDPOINT_URL") and value and not is_loopback_url(value):
            raise ConfigError(
                f"{key}={value} points at a non-loopback endpoint while SHOPLAKE_TARGET=local. "
                "Unset it, or set SHOPLAKE_TARGET=aws."
            )


def _refuse_non_loopback(request: Any, **_: Any) -> None:
    """botocore ``before-send`` hook: the last line of defence of the local target."""
    assert_loopback(request.url, "request URL")


# --------------------------------------------------------------------------- sessions and clients


def endpoint_url() -> str | None:
    """The emulator URL on the local target (raises if the stack is down), None on aws."""
    if not settings().is_local:
        return None
    from shoplake import stack  # local import: stack imports config

    url = stack.moto_url()
    bypass_proxies_for_loopback()
    return assert_loopback(url, "emulator URL")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def bypass_proxies_for_loopback() -> None:
    """Keep loopback traffic off HTTP(S)_PROXY: botocore, urllib, requests and aiohttp all honour NO_PROXY.

    Set process-wide (and so for notebook kernels started from here), because awswrangler and s3fs build clients of
    their own from the session; a proxy in the environment would otherwise receive the local target's requests.
    """
    for key in ("NO_PROXY", "no_proxy"):
        have = [h.strip() for h in os.environ.get(key, "").split(",") if h.strip()]
        missing = [h for h in LOOPBACK_HOSTS if h not in have]
        if missing:
            os.environ[key] = ",".join(have + missing)


@lru_cache(maxsize=4)
def _session(target: str, region: str, profile: str | None, url: str | None) -> Any:
    import boto3

    if target == "local":
        _check_no_real_endpoint_env()
        import botocore.session

        # the local target reads no AWS profile or config file at all: a user's AWS_PROFILE (even a broken one)
        # neither breaks it nor leaks into it
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})  # ignore AWS_PROFILE
        core.set_config_variable("config_file", os.devnull)
        core.set_config_variable("credentials_file", os.devnull)
        session = boto3.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            region_name=region,
            botocore_session=core,
        )
        session.events.register("before-send", _refuse_non_loopback)
        return session
    if not region:
        raise ConfigError("target aws needs a region: set AWS_REGION (e.g. eu-west-1) or a region in your AWS profile")
    _check_aws_environment(settings())
    return boto3.Session(profile_name=profile, region_name=region)


def session() -> Any:
    """The boto3 Session for the current target (local: fake credentials + a loopback-only guard)."""
    s = settings()
    url = endpoint_url()
    return _session(s.target, s.region, s.profile, url)


@lru_cache(maxsize=64)
def _client(service: str, target: str, region: str, url: str | None) -> Any:
    from botocore.config import Config

    s = settings()
    cfg = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
    return _session(target, region, s.profile, url).client(service, endpoint_url=url, config=cfg)


def client(service: str) -> Any:
    """A boto3 client for ``service`` on the current target (cached per target/endpoint)."""
    s = settings()
    return _client(service, s.target, s.region, endpoint_url())


def resource(service: str) -> Any:
    """A boto3 resource for ``service`` on the current target."""
    return session().resource(service, endpoint_url=endpoint_url())


WRANGLER_ENDPOINTS = (
    "s3",
    "glue",
    "dynamodb",
    "athena",
    "sts",
    "kms",
    "emr",
    "lakeformation",
    "secretsmanager",
    "redshift",
    "redshift_data",
    "timestream_query",
    "timestream_write",
    "cloudwatch_logs",
)


def configure_wrangler() -> Any:
    """Point awswrangler at the current target and return the boto3 session to pass as ``boto3_session``."""
    import awswrangler as wr

    url = endpoint_url()
    for service in WRANGLER_ENDPOINTS:
        attr = f"{service}_endpoint_url"
        if hasattr(wr.config, attr):
            setattr(wr.config, attr, url)
    return session()


def storage_options() -> dict[str, Any]:
    """fsspec/s3fs options for the current target (DuckDB and pandas read the lake through these)."""
    url = endpoint_url()
    if url is None:
        opts: dict[str, Any] = {}
        if settings().profile:
            opts["profile"] = settings().profile
        return opts
    return {
        "key": LOCAL_ACCESS_KEY,
        "secret": LOCAL_SECRET_KEY,
        "client_kwargs": {"endpoint_url": url, "region_name": LOCAL_REGION},
    }


def clear_caches() -> None:
    """Forget cached sessions and clients (after the stack restarts or settings change)."""
    _session.cache_clear()
    _client.cache_clear()
    _aws_identity.cache_clear()
    _profile_region.cache_clear()


def glue_database(prefix: str | None = None) -> str:
    """The Glue database name (Glue and Athena want underscores): ``shoplake_<prefix>``."""
    prefix = prefix if prefix is not None else settings().prefix
    return f"shoplake_{prefix}".replace("-", "_").lower()
