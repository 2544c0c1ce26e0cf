"""The emulator fixes in shoplake._moto_patches keep AWS semantics (they only change how moto finds records)."""

import json
import uuid

import pytest

from shoplake import config, streams


@pytest.fixture()
def table(local_stack):
    ddb = config.client("dynamodb")
    name = config.resource_name(f"patch-{uuid.uuid4().hex[:6]}")
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "g", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-g",
                "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for pk in ("a", "b", "c"):
        for i in range(5):
            ddb.put_item(TableName=name, Item={"pk": {"S": pk}, "sk": {"S": f"{i:02d}"}, "g": {"S": f"g{i % 2}"}})
    yield name
    ddb.delete_table(TableName=name)


def test_dynamodb_query_reads_one_partition_in_key_order(table):
    ddb = config.client("dynamodb")
    newest_first = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :p",
        ScanIndexForward=False,
        ExpressionAttributeValues={":p": {"S": "b"}},
    )["Items"]
    assert [(i["pk"]["S"], i["sk"]["S"]) for i in newest_first] == [("b", f"{i:02d}") for i in (4, 3, 2, 1, 0)]
    ranged = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :p AND sk >= :s",
        Limit=2,
        ExpressionAttributeValues={":p": {"S": "c"}, ":s": {"S": "02"}},
    )
    assert [i["sk"]["S"] for i in ranged["Items"]] == ["02", "03"] and "LastEvaluatedKey" in ranged
    assert (
        ddb.query(TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "zz"}})[
            "Items"
        ]
        == []
    )
    by_index = ddb.query(
        TableName=table,
        IndexName="by-g",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "g0"}},
    )["Items"]
    assert len(by_index) == 9  # 3 partitions × sk 00, 02, 04: index queries still span the table


def test_kinesis_reads_every_record_once_in_order(local_stack):
    kinesis = config.client("kinesis")
    name = config.resource_name(f"patch-{uuid.uuid4().hex[:6]}")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    try:
        streams.put_records(name, [{"n": n} for n in range(1200)], partition_key=lambda _r: "k")
        shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        seen = []
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=500)
            seen += [json.loads(r["Data"])["n"] for r in page["Records"]]
            if not page["Records"]:
                break
            iterator = page["NextShardIterator"]
        assert seen == list(range(1200))
        middle = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(600)
        )["ShardIterator"]
        assert len(kinesis.get_records(ShardIterator=middle, Limit=10000)["Records"]) == 600
        latest = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
        assert kinesis.get_records(ShardIterator=latest)["Records"] == []
    finally:
        kinesis.delete_stream(StreamName=name)


def test_dynamodb_scan_pages_see_every_item_once_and_new_writes(table):
    ddb = config.client("dynamodb")
    seen, kwargs, pages = [], {"TableName": table, "Limit": 4}, 0
    while True:
        page = ddb.scan(**kwargs)
        seen += [(i["pk"]["S"], i["sk"]["S"]) for i in page["Items"]]
        pages += 1
        if pages == 2:  # a write between pages invalidates the kept order
            ddb.put_item(TableName=table, Item={"pk": {"S": "zz"}, "sk": {"S": "00"}, "g": {"S": "g0"}})
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert len(seen) == len(set(seen))
    assert {(pk, f"{i:02d}") for pk in "abc" for i in range(5)} <= set(seen)
    assert ("zz", "00") in seen  # sorted after every earlier key, so a later page holds it
    ddb.update_item(
        TableName=table,
        Key={"pk": {"S": "a"}, "sk": {"S": "00"}},
        UpdateExpression="SET g = :g",
        ExpressionAttributeValues={":g": {"S": "changed"}},
    )
    items = {(i["pk"]["S"], i["sk"]["S"]): i["g"]["S"] for i in ddb.scan(TableName=table)["Items"]}
    assert items[("a", "00")] == "changed" and len(items) == 16
