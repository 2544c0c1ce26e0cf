"""The one place that builds AWS clients for the chosen target, and makes the target ready (``ensure_ready``).

The settings themselves (target, prefix, region, scale, every knob) are one table in ``shoplake._settings``,
re-exported here (``config.settings()``, ``config.by_target``, ``config.resource_name``...).

Target ``local`` (default) talks only to the embedded emulator on a loopback address with fake credentials;
target ``aws`` uses the standard credential chain (``AWS_PROFILE``, ``AWS_REGION``...). Every boto3 client,
boto3 resource and awswrangler call in shoplake gets its endpoint and session from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from shoplake._settings import (
    AWS_PREFIX,
    AWS_PREFIX_MAX,
    KNOBS,
    LOCAL_REGION,
    REPO_ROOT,
    SCALES,
    TARGETS,
    Settings,
    by_target,
    glue_database,
    knob_table,
    resource_name,
    settings,
)
from shoplake._settings import apply_parameters as _apply_parameters
from shoplake._settings import clear_cache as _clear_settings_cache
from shoplake.errors import ConfigError

__all__ = [
    "AWS_PREFIX",
    "AWS_PREFIX_MAX",
    "KNOBS",
    "LOCAL_ACCESS_KEY",
    "LOCAL_REGION",
    "LOCAL_SECRET_KEY",
    "REPO_ROOT",
    "SCALES",
    "TARGETS",
    "Settings",
    "apply_parameters",
    "assert_loopback",
    "by_target",
    "bypass_proxies_for_loopback",
    "clear_caches",
    "client",
    "configure_wrangler",
    "emulator_urls",
    "endpoint_url",
    "ensure_ready",
    "glue_database",
    "is_loopback_url",
    "knob_table",
    "resource",
    "resource_name",
    "session",
    "settings",
    "storage_options",
]

# Fake credentials for the emulator. They are not secrets and cannot sign a request AWS would accept.
LOCAL_ACCESS_KEY = "testing"
LOCAL_SECRET_KEY = "testing"


def ensure_ready() -> Settings:
    """Make the current target usable: local → the shared local services are up; aws → region, endpoints and credentials.

    Idempotent and cheap when already ready; every notebook (``workbook.start``) and CLI verb calls it first.
    """
    s = settings()
    if s.is_local:
        from shoplake import local_services  # local import: local_services imports config

        local_services.ensure()
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
    result = _apply_parameters(target, **overrides)
    clear_caches()
    return result


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


def endpoint_url(service: str | None = None) -> str | None:
    """The emulator URL that serves ``service`` on the local target (raises if the local services are down), None on
    aws. The local emulator is more than one process (``local_services.DEDICATED``: DynamoDB has its own), so a
    client's endpoint depends on its service; without one, the main emulator's URL."""
    if not settings().is_local:
        return None
    from shoplake import local_services  # local import: local_services imports config

    url = local_services.service_url(service)
    bypass_proxies_for_loopback()
    return assert_loopback(url, "emulator URL")


def emulator_urls() -> list[str]:
    """Every local emulator process's URL (empty on aws): what a long-running consumer watches."""
    if not settings().is_local:
        return []
    from shoplake import local_services

    return [assert_loopback(url, "emulator URL") for url in local_services.emulator_urls()]


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


_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z", re.ASCII)


def parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, with fast paths for epoch numbers (what the JSON protocols send: every Kinesis
    record's ApproximateArrivalTimestamp, DynamoDB's and Firehose's times) and for ISO 8601 times in UTC
    (``2026-12-06T22:18:33.000Z``: the LastModified of each object of an S3 listing): an aware datetime in UTC, the
    instant botocore's own parser gives (which runs dateutil's parser and builds a ``tzlocal`` per value: ~11 µs,
    40× the number's path, for each record a consumer reads and each object a listing names). Other strings (RFC
    822, other zones) and values out of range go to botocore's parser."""
    kind = type(value)
    if kind is int or kind is float:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif kind is str and _ISO_UTC.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:  # an impossible date: botocore's message
            pass
    from botocore.utils import parse_timestamp as botocore_parse_timestamp

    return botocore_parse_timestamp(value)


def _fast_timestamps(core: Any) -> Any:
    """``core`` (a botocore session) with :func:`parse_timestamp` as its clients' timestamp parser."""
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return core


@lru_cache(maxsize=4)
def _session(target: str, region: str, profile: str | None, url: str | None) -> Any:
    import boto3
    import botocore.session

    if target == "local":
        _check_no_real_endpoint_env()
        # the local target reads no AWS profile or config file at all: a user's AWS_PROFILE (even a broken one)
        # neither breaks it nor leaks into it
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})  # ignore AWS_PROFILE
        core.set_config_variable("config_file", os.devnull)
        core.set_config_variable("credentials_file", os.devnull)
        session = boto3.Session(
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            region_name=region,
            botocore_session=_fast_timestamps(core),
        )
        session.events.register("before-send", _refuse_non_loopback)
        return session
    if not region:
        raise ConfigError("target aws needs a region: set AWS_REGION (e.g. eu-west-1) or a region in your AWS profile")
    _check_aws_environment(settings())
    # botocore's default session, as boto3.Session makes it itself
    core = _fast_timestamps(botocore.session.get_session())
    return boto3.Session(profile_name=profile, region_name=region, botocore_session=core)


def session() -> Any:
    """The boto3 Session for the current target (local: fake credentials + a loopback-only guard)."""
    s = settings()
    url = endpoint_url()
    return _session(s.target, s.region, s.profile, url)


@lru_cache(maxsize=64)
def _client(service: str, target: str, region: str, url: str | None) -> Any:
    from botocore.config import Config

    s = settings()
    # Locally botocore's own check of every request against the service model is skipped: it was 40 % of the order
    # pipeline's client CPU (a BatchWriteItem of 25 items walks ~1,300 members), and the emulator parses every
    # request anyway. The shapes are what tests/aws proves: there the aws target validates each call (on by default).
    cfg = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        parameter_validation=target != "local",
    )
    return _session(target, region, s.profile, url).client(service, endpoint_url=url, config=cfg)


def client(service: str) -> Any:
    """A boto3 client for ``service`` on the current target (cached per target/endpoint; locally the endpoint of the
    emulator process that serves ``service``)."""
    s = settings()
    return _client(service, s.target, s.region, endpoint_url(service))


def resource(service: str) -> Any:
    """A boto3 resource for ``service`` on the current target."""
    return session().resource(service, endpoint_url=endpoint_url(service))


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

    for service in WRANGLER_ENDPOINTS:
        attr = f"{service}_endpoint_url"
        if hasattr(wr.config, attr):
            setattr(wr.config, attr, endpoint_url(service.replace("_", "-")))
    return session()


def storage_options() -> dict[str, Any]:
    """fsspec/s3fs options for the current target (DuckDB and pandas read the lake through these)."""
    url = endpoint_url("s3")
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
    """Forget cached sessions and clients (after the local services restart or settings change)."""
    _session.cache_clear()
    _client.cache_clear()
    _aws_identity.cache_clear()
    _clear_settings_cache()
