"""config against the running emulator: clients, sessions and storage options point at it, and only at it."""

import pytest

from shoplake import config
from shoplake.errors import ConfigError


def test_local_target_refuses_a_real_endpoint_in_the_environment(monkeypatch, local_stack):
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", "https://kinesis.eu-west-1.amazonaws.com")
    config.clear_caches()
    try:
        with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_KINESIS"):
            config.client("kinesis")
    finally:
        monkeypatch.delenv("AWS_ENDPOINT_URL_KINESIS")
        config.clear_caches()


def test_local_session_guard_blocks_non_loopback_requests(local_stack):
    """Even a client built by hand from the local session cannot send a request to AWS."""
    sess = config.session()
    s3 = sess.client("s3", endpoint_url="https://s3.amazonaws.com")
    with pytest.raises(ConfigError, match="loopback"):
        s3.list_buckets()


def test_local_clients_use_fake_credentials_and_the_emulator(local_stack):
    client = config.client("sts")
    assert client.meta.endpoint_url == local_stack.moto_url
    assert config.session().get_credentials().access_key == config.LOCAL_ACCESS_KEY
    assert client.get_caller_identity()["Account"] == "123456789012"  # the emulator's account


def test_storage_options_point_at_the_emulator(local_stack):
    opts = config.storage_options()
    assert opts["client_kwargs"]["endpoint_url"] == local_stack.moto_url
