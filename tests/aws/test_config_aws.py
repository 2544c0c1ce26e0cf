"""The aws target's settings: region from the environment or the profile, refusal of leftover emulator endpoints."""

from __future__ import annotations

import pytest

from shoplake import config
from shoplake.errors import ConfigError

pytestmark = pytest.mark.aws


def test_ensure_ready_on_aws_reads_the_account(aws_target):
    settings = config.ensure_ready()
    assert settings.target == "aws" and settings.region == "eu-west-1"
    assert "sts:GetCallerIdentity" in aws_target.operations()


def test_aws_refuses_a_leftover_endpoint(aws_target, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:5000")
    config.clear_caches()
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_S3"):
        config.ensure_ready()


def test_aws_region_comes_from_the_profile(monkeypatch, tmp_path):
    (tmp_path / "config").write_text("[profile shop]\nregion = ap-southeast-2\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "shop")
    monkeypatch.setenv("SHOPLAKE_TARGET", "aws")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config.clear_caches()
    try:
        assert config.settings().region == "ap-southeast-2"
    finally:
        config.clear_caches()


def test_aws_without_any_region_says_how_to_set_one(monkeypatch, tmp_path):
    (tmp_path / "config").write_text("[profile bare]\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "bare")
    monkeypatch.setenv("SHOPLAKE_TARGET", "aws")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config.clear_caches()
    try:
        with pytest.raises(ConfigError, match="AWS_REGION"):
            config.ensure_ready()
    finally:
        config.clear_caches()


@pytest.mark.parametrize("prefix", ["MyTeam", "a" * 15, "1team", "team--a"])
def test_aws_prefix_is_lower_case_and_short(aws_target, monkeypatch, prefix):
    monkeypatch.setenv("SHOPLAKE_PREFIX", prefix)
    with pytest.raises(ConfigError, match="1-14 lower-case"):
        config.settings()
