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


def test_dynamodb_has_an_emulator_process_of_its_own(local_stack):
    """issue 13: DynamoDB is served by a second emulator process (both cores work); every other service by the main
    one. A table created through config exists there and only there."""
    import uuid

    from shoplake import local_services

    ddb_url = local_services.service_url("dynamodb")
    assert ddb_url != local_stack.moto_url and config.is_loopback_url(ddb_url)
    assert config.client("dynamodb").meta.endpoint_url == ddb_url
    assert config.client("dynamodbstreams").meta.endpoint_url == ddb_url
    assert config.resource("dynamodb").meta.client.meta.endpoint_url == ddb_url
    for service in ("kinesis", "s3", "sqs", "firehose", "sns"):
        assert config.client(service).meta.endpoint_url == local_stack.moto_url, service
    assert set(config.emulator_urls()) == {local_stack.moto_url, ddb_url}
    name = config.resource_name(f"where-{uuid.uuid4().hex[:6]}")
    config.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
    )
    try:
        main = config.session().client("dynamodb", endpoint_url=local_stack.moto_url)
        assert name not in main.list_tables()["TableNames"]
        assert name in config.client("dynamodb").list_tables()["TableNames"]
    finally:
        config.client("dynamodb").delete_table(TableName=name)


def test_wrangler_reaches_dynamodb_through_its_own_emulator(local_stack):
    import awswrangler as wr

    from shoplake import local_services

    config.configure_wrangler()
    assert wr.config.dynamodb_endpoint_url == local_services.service_url("dynamodb")
    assert wr.config.s3_endpoint_url == local_stack.moto_url


def test_local_clients_leave_request_checks_to_the_emulator(local_stack):
    """Locally botocore does not validate each request against the model (40 % of the order pipeline's client CPU):
    the emulator parses every request, and tests/aws validates the aws target's calls."""
    from botocore.exceptions import ParamValidationError

    # Limit has a minimum of 1 in DynamoDB's model: botocore refuses 0 before sending when it validates
    with pytest.raises(ParamValidationError):
        config.session().client("dynamodb", endpoint_url=config.endpoint_url("dynamodb")).list_tables(Limit=0)
    assert "TableNames" in config.client("dynamodb").list_tables(Limit=0)  # sent: the emulator answers


def test_clients_parse_record_arrival_times_with_the_fast_parser(local_stack):
    """issue 13: every Kinesis record's ApproximateArrivalTimestamp (an epoch number on the wire) is parsed by
    config.parse_timestamp — an aware UTC datetime — not by botocore's dateutil parser (a tzlocal datetime)."""
    import time
    import uuid
    from datetime import UTC

    kinesis = config.client("kinesis")
    name = config.resource_name(f"ts-{uuid.uuid4().hex[:6]}")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    try:
        before = time.time()
        kinesis.put_record(StreamName=name, Data=b"x", PartitionKey="p")
        shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        (record,) = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
        arrived = record["ApproximateArrivalTimestamp"]
        assert arrived.tzinfo is UTC and before - 5 <= arrived.timestamp() <= time.time() + 5
    finally:
        kinesis.delete_stream(StreamName=name)
