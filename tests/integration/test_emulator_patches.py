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


EVERY_TYPE = {
    "pk": {"S": "p"},
    "sk": {"S": "s"},
    "s": {"S": "text ünïcode"},
    "n": {"N": "-12.50"},
    "b": {"B": b"\x00\xffbytes"},
    "t": {"BOOL": True},
    "f": {"BOOL": False},
    "null": {"NULL": True},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"x", b"\x01"]},
    "m": {"M": {"inner": {"S": "x"}, "deep": {"M": {"n": {"N": "3"}}}, "bin": {"B": b"\x02"}}},
    "l": {"L": [{"S": "x"}, {"N": "1"}, {"L": [{"BOOL": False}]}, {"M": {"k": {"NULL": True}}}]},
}


def _round_trip() -> tuple[dict, list, dict]:
    import boto3

    ddb = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    ddb.create_table(
        TableName="types",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    ddb.put_item(TableName="types", Item=EVERY_TYPE)
    got = ddb.get_item(TableName="types", Key={"pk": {"S": "p"}, "sk": {"S": "s"}})["Item"]
    scanned = ddb.scan(TableName="types")["Items"]
    projected = ddb.scan(TableName="types", ProjectionExpression="s, m.deep, l[2]")["Items"][0]
    return got, scanned, projected


def test_dynamodb_serializer_fast_path_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: the serializer patch copies wire-form attribute values as they are; every type (binaries inside
    maps and lists included) comes back exactly as with moto's own member-by-member walk."""
    from moto import mock_aws
    from moto.core.serialize import BaseJSONSerializer

    from shoplake import _moto_patches

    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", BaseJSONSerializer._serialize_type_structure)
    with mock_aws():
        unpatched = _round_trip()
    _moto_patches._patch_dynamodb_serializer()
    with mock_aws():
        patched = _round_trip()
    assert patched == unpatched
    got, scanned, projected = patched
    assert got == EVERY_TYPE and scanned == [EVERY_TYPE]
    assert projected == {
        "s": EVERY_TYPE["s"],
        "m": {"M": {"deep": {"M": {"n": {"N": "3"}}}}},
        "l": {"L": [{"L": [{"BOOL": False}]}]},
    }
    assert not _moto_patches._plain_attribute_value({"M": {"bin": {"B": "AAE="}}})
    assert _moto_patches._plain_attribute_value({"L": [{"S": "x"}, {"M": {"n": {"N": "1"}}}]})


def _queries(range_type: str) -> list:
    import boto3

    ddb = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    name = f"q{range_type}"
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": range_type},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    values = [str(v) for v in (10, 9, 100, -2.5, 3, 0, 33, 1e3)] if range_type == "N" else list("qazwsxedcrfv")
    for pk in ("a", "b"):
        for v in values:
            ddb.put_item(TableName=name, Item={"pk": {"S": pk}, "sk": {range_type: v}, "x": {"S": f"{pk}{v}"}})
    pivot = {range_type: values[3]}
    out = []
    for forward in (True, False):
        out.append(
            ddb.query(
                TableName=name,
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": "a"}},
                ScanIndexForward=forward,
            )["Items"]
        )
        out.append(
            ddb.query(
                TableName=name,
                KeyConditionExpression="pk = :p AND sk < :k",
                ExpressionAttributeValues={":p": {"S": "b"}, ":k": pivot},
                ScanIndexForward=forward,
                Limit=3,
            )
        )
    return out


@pytest.mark.parametrize("range_type", ["S", "N"])
def test_partition_query_patch_answers_exactly_what_moto_answers(monkeypatch, range_type):
    """issue 13: the partition read sorts by the range key cast once; strings and numbers (where text order and
    number order differ) come back in the same order, pages and limits as with moto's own query."""
    from moto import mock_aws
    from moto.dynamodb.models.table import Table

    from shoplake import _moto_patches

    for attr in ("query", "scan", "all_items", "put_item", "delete_item"):
        monkeypatch.setattr(Table, attr, getattr(Table, attr))
    with mock_aws():
        unpatched = _queries(range_type)
    _moto_patches._patch_dynamodb_query()
    with mock_aws():
        patched = _queries(range_type)
    for response in patched + unpatched:
        if isinstance(response, dict):
            response.pop("ResponseMetadata", None)
    assert patched == unpatched
    assert [i["sk"][range_type] for i in patched[0]] == sorted(
        [i["sk"][range_type] for i in patched[0]], key=float if range_type == "N" else str
    )


def _scans(range_type: str | None) -> list:
    """Every page of Scans (plain, Limit, filter, projection, segments) of a table with ``range_type`` range keys (None:
    hash key only), with a write between two pages."""
    import boto3

    ddb = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    name = f"s{range_type}"
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attributes = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_type:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attributes.append({"AttributeName": "sk", "AttributeType": range_type})
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=attributes, KeySchema=keys)
    values = [str(v) for v in (10, 9, 100, -2.5, 3, 0, 33, 1e3)] if range_type == "N" else list("qazwsxed")
    for pk in ("b", "a", "c", "ab"):
        for v in values:
            item = {"pk": {"S": pk if range_type else f"{pk}{v}"}, "x": {"S": f"{pk}{v}"}, "pad": {"S": "p" * 300}}
            if range_type:
                item["sk"] = {range_type: v}
            ddb.put_item(TableName=name, Item=item)
    out = []
    for extra in (
        {"Limit": 3},
        {"Limit": 5, "FilterExpression": "begins_with(x, :a)", "ExpressionAttributeValues": {":a": {"S": "a"}}},
        {"Limit": 4, "ProjectionExpression": "pk, x"},
        {"Limit": 2, "Segment": 1, "TotalSegments": 3},
        {},
    ):
        kwargs, pages = {"TableName": name, **extra}, 0
        while True:
            page = ddb.scan(**kwargs)
            page.pop("ResponseMetadata", None)
            out.append(page)
            pages += 1
            if pages == 2:  # a write between pages: the next page sees it where the key order puts it
                item = {"pk": {"S": f"a{len(out)}"}, "x": {"S": "new"}}
                if range_type:
                    item["sk"] = {range_type: values[0]}
                ddb.put_item(TableName=name, Item=item)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return out


@pytest.mark.parametrize("range_type", ["S", "N", None])
def test_scan_resume_patch_answers_exactly_what_moto_answers(monkeypatch, range_type):
    """issue 13: a Scan page starts by bisection after its ExclusiveStartKey instead of walking the table from its
    first item (quadratic: a million-line table took half an hour to read); every page is the one moto answers."""
    from moto import mock_aws
    from moto.dynamodb.models.table import Table

    from shoplake import _moto_patches

    for attr in ("query", "scan", "all_items", "put_item", "delete_item"):
        monkeypatch.setattr(Table, attr, getattr(Table, attr))
    with mock_aws():
        unpatched = _scans(range_type)
    _moto_patches._patch_dynamodb_query()
    assert Table.scan is not unpatched  # the patch is in place
    with mock_aws():
        patched = _scans(range_type)
    assert len(patched) > 10 and patched == unpatched


def test_segment_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: an item's segment (MD5 of its hash key) is taken once per key object, not once per item per segment
    of every parallel Scan: every page of three-segment Scans of string-keyed and number-keyed tables is moto's, and
    the segments together hold every item once."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item

    from shoplake import _moto_patches

    def segmented(hash_type: str) -> list:
        ddb, name = _ddb(), f"seg{hash_type}"
        ddb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": hash_type}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        for n in range(60):
            ddb.put_item(TableName=name, Item={"pk": {hash_type: str(n) if hash_type == "N" else f"k{n}"}})
        pages = []
        for _ in range(2):  # twice: the second pass reads what the first kept
            for segment in range(3):
                kwargs = {"TableName": name, "Segment": segment, "TotalSegments": 3, "Limit": 7}
                while True:
                    page = ddb.scan(**kwargs)
                    page.pop("ResponseMetadata", None)
                    pages.append((segment, page))
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return pages

    moto_own = Item.is_within_segment
    monkeypatch.setattr(Item, "is_within_segment", moto_own)
    with mock_aws():
        unpatched = [segmented(t) for t in ("S", "N")]
    _moto_patches._patch_dynamodb_segments()
    assert Item.is_within_segment is not moto_own  # the patch is in place
    with mock_aws():
        patched = [segmented(t) for t in ("S", "N")]
    assert patched == unpatched
    for pages in patched:
        keys = [tuple(i["pk"].items()) for _, page in pages[: len(pages) // 2] for i in page["Items"]]
        assert len(keys) == len(set(keys)) == 60
        assert len({segment for segment, page in pages if page["Items"]}) == 3


def _puts() -> list:
    """Items put and read back, and the error of each item too large, around the 400 KB limit."""
    import boto3
    from botocore.exceptions import ClientError

    ddb = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    ddb.create_table(
        TableName="sizes",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    out = []
    for n, pad in enumerate((100, 200_000, 404_900, 404_990, 405_100, 500_000)):
        # the size limit is on the whole item: two attributes share the padding
        item = {"pk": {"S": f"k{n}"}, "a": {"S": "x" * (pad // 2)}, "b": {"S": "y" * (pad - pad // 2)}}
        item.update(EVERY_TYPE if n == 0 else {})
        try:
            ddb.put_item(TableName="sizes", Item=item)
            out.append(ddb.get_item(TableName="sizes", Key={"pk": item["pk"]}).get("Item"))
        except ClientError as exc:
            out.append(exc.response["Error"])
        try:
            ddb.batch_write_item(RequestItems={"sizes": [{"PutRequest": {"Item": {**item, "pk": {"S": f"b{n}"}}}}]})
            out.append(ddb.get_item(TableName="sizes", Key={"pk": {"S": f"b{n}"}}).get("Item"))
        except ClientError as exc:
            out.append(exc.response["Error"])
    # a later update past the limit is still refused by moto's own check
    try:
        ddb.update_item(
            TableName="sizes",
            Key={"pk": {"S": "k0"}},
            UpdateExpression="SET c = :c",
            ExpressionAttributeValues={":c": {"S": "z" * 406_000}},
        )
        out.append("update accepted")
    except ClientError as exc:
        out.append(exc.response["Error"])
    return out


def test_item_size_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: an item is sized once, whole, instead of after each attribute (quadratic): the same items stored,
    the same ItemSizeTooLarge errors on both sides of the limit, on put, batch write and update."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item

    from shoplake import _moto_patches

    monkeypatch.setattr(Item, "__init__", Item.__init__)
    with mock_aws():
        unpatched = _puts()
    _moto_patches._patch_dynamodb_item_size()
    assert Item.__init__ is not unpatched
    with mock_aws():
        patched = _puts()
    assert patched == unpatched
    errors = [o for o in patched if isinstance(o, dict) and "Code" in o]
    assert 0 < len(errors) < len(patched) - 1  # some items fit, some do not


def test_items_and_records_are_not_kept_after_they_are_gone(monkeypatch):
    """issue 13: moto kept every model object it ever made (for /moto-api/data.json): each item a read returned, each
    item a put replaced, deleted tables and streams — the emulator's memory only grew. With the patch a replaced or
    copied DynamoDB item and a deleted stream's records are freed; other models are still listed."""
    import gc
    import weakref

    import boto3
    from moto import mock_aws
    from moto.core.common_models import BaseModel
    from moto.dynamodb.models.dynamo_type import Item
    from moto.kinesis.models import Record, Shard

    from shoplake import _moto_patches

    monkeypatch.setattr(BaseModel, "__new__", BaseModel.__dict__["__new__"])
    _moto_patches._patch_untracked_models()
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        ddb.create_table(
            TableName="gone",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        ddb.put_item(TableName="gone", Item={"pk": {"S": "a"}, "v": {"S": "first"}})
        from moto.dynamodb.models import dynamodb_backends

        table = dynamodb_backends["123456789012"]["eu-west-1"].tables["gone"]
        first = weakref.ref(next(iter(table.items.values())))
        del table
        ddb.put_item(TableName="gone", Item={"pk": {"S": "a"}, "v": {"S": "second"}})  # replaces it
        for _ in range(3):
            ddb.scan(TableName="gone")
            ddb.get_item(TableName="gone", Key={"pk": {"S": "a"}})
        kinesis = boto3.client("kinesis", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        kinesis.create_stream(StreamName="gone", ShardCount=1)
        kinesis.put_records(StreamName="gone", Records=[{"Data": b"x", "PartitionKey": "k"} for _ in range(10)])
        from moto.kinesis.models import kinesis_backends

        shard = next(iter(kinesis_backends["123456789012"]["eu-west-1"].streams["gone"].shards.values()))
        record = weakref.ref(next(iter(shard.records.values())))
        del shard
        kinesis.delete_stream(StreamName="gone")
        gc.collect()
        assert first() is None and record() is None
        assert not list(Item.instances_tracked) and not list(Record.instances_tracked)
        assert not list(Shard.instances_tracked)
        assert ddb.get_item(TableName="gone", Key={"pk": {"S": "a"}})["Item"]["v"] == {"S": "second"}
        from moto.sqs.models import Queue

        boto3.client("sqs", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x").create_queue(
            QueueName="kept"
        )
        assert any(q.name == "kept" for q in Queue.instances_tracked)  # other models: still listed


# --------------------------------------------------------------------------- request parsing, projections, copies


def _ddb():
    import boto3

    return boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def _call(fn, **kwargs):
    """A response without its metadata, the error DynamoDB answered (code, message, status), or what moto raised
    (in-process, an exception inside moto reaches the caller; the server answers it with HTTP 500)."""
    from botocore.exceptions import ClientError

    try:
        response = fn(**kwargs)
    except ClientError as exc:
        return ("error", exc.response["Error"], exc.response["ResponseMetadata"]["HTTPStatusCode"])
    except Exception as exc:  # noqa: BLE001 - moto's own failure, compared like an answer
        return ("raised", type(exc).__name__, str(exc))
    response.pop("ResponseMetadata", None)
    return response


def _order_table(ddb, name: str, index: bool = False) -> None:
    kwargs = {}
    attributes = [{"AttributeName": k, "AttributeType": "S"} for k in ("customer_id", "order_key")]
    if index:
        attributes.append({"AttributeName": "stock_code", "AttributeType": "S"})
        kwargs["GlobalSecondaryIndexes"] = [
            {
                "IndexName": "by-stock",
                "KeySchema": [{"AttributeName": "stock_code", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["quantity"]},
            }
        ]
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=attributes,
        KeySchema=[
            {"AttributeName": "customer_id", "KeyType": "HASH"},
            {"AttributeName": "order_key", "KeyType": "RANGE"},
        ],
        **kwargs,
    )


def _line(customer: str, n: int, **extra) -> dict:
    """An order-history item as the handler writes it (strings, numbers, booleans), plus ``extra`` attributes."""
    return {
        "customer_id": {"S": customer},
        "order_key": {"S": f"2026-01-{n % 28 + 1:02d}#{n:05d}"},
        "stock_code": {"S": f"P{n % 3}"},
        "description": {"S": f"line {n} ünïcode"},
        "quantity": {"N": str(n - 5)},
        "unit_price": {"N": ["1.50", "0.10", "12", "-2.5", "007", "100.000"][n % 6]},
        "is_guest": {"BOOL": n % 2 == 0},
        "status": {"S": "ordered"},
        **extra,
    }


ODD_VALUES = {  # values moto keeps as they are but a projection's round trip changes, or cannot convert
    "exp": {"N": "1e3"},
    "long": {"N": "1.2345678901234567890123456789012345678901"},
    "nul": {"NULL": True},
    "ss": {"SS": ["b", "a", "c"]},
    "ns": {"NS": ["3", "1.50"]},
    "bin": {"B": b"\x00\x01"},
    "m": {"M": {"deep": {"N": "2.50"}, "s": {"S": "x"}, "l": {"L": [{"N": "1"}, {"S": "y"}]}}},
    "l": {"L": [{"S": "a"}, {"N": "0.50"}, {"M": {"k": {"BOOL": True}}}]},
}


def _writes_and_errors() -> list:
    """Writes of every kind the handler makes (BatchWriteItem of 25, PutItem), of every attribute type, and the
    errors DynamoDB answers: key-schema mismatches, an item too large, duplicate keys, a failed
    ConditionExpression, ill-typed values; then everything read back."""
    ddb = _ddb()
    _order_table(ddb, "w")
    out = []
    batch = [{"PutRequest": {"Item": _line(f"c{n % 4}", n)}} for n in range(25)]
    out.append(_call(ddb.batch_write_item, RequestItems={"w": batch}, ReturnConsumedCapacity="TOTAL"))
    odd = [{"PutRequest": {"Item": _line("odd", n, **{k: v})}} for n, (k, v) in enumerate(ODD_VALUES.items())]
    out.append(_call(ddb.batch_write_item, RequestItems={"w": odd}))
    line = _line("c9", 1)
    bad_items = [
        {k: v for k, v in line.items() if k != "order_key"},  # range key missing
        {**line, "order_key": {"N": "1"}},  # range key of the wrong type
        {**line, "customer_id": {"S": ""}},  # empty key
        {**line, "pad": {"S": "x" * 410_000}},  # too large
        {**line, "quantity": {"N": "twelve"}},  # not a number
        {**line, "nul": {"NULL": False}},
        {**line, "m": {"M": {"inner": {"S": "x"}}}, "bin": {"B": b"\xff"}},  # fine: binaries take moto's path
    ]
    for item in bad_items:
        out.append(_call(ddb.batch_write_item, RequestItems={"w": [{"PutRequest": {"Item": item}}]}))
        out.append(_call(ddb.put_item, TableName="w", Item=item))
    out.append(_call(ddb.batch_write_item, RequestItems={"w": [{"PutRequest": {"Item": line}}] * 2}))  # duplicates
    out.append(_call(ddb.batch_write_item, RequestItems={"nope": [{"PutRequest": {"Item": line}}]}))  # no table
    for condition in ("attribute_not_exists(customer_id)", "quantity > :q"):
        out.append(
            _call(
                ddb.put_item,
                TableName="w",
                Item=_line("c1", 1),
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": {":q": {"N": "100"}}} if ":q" in condition else {}),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        )
    out.append(_call(ddb.scan, TableName="w"))
    _order_table(ddb, "empty-name")  # an attribute named "": moto stores it, and then fails to answer a read of it
    out.append(_call(ddb.put_item, TableName="empty-name", Item={**line, "": {"S": "x"}}))
    out.append(_call(ddb.get_item, TableName="empty-name", Key={k: line[k] for k in ("customer_id", "order_key")}))
    out.append(_call(ddb.scan, TableName="empty-name"))
    return out


def test_request_parser_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 14: attribute values without binaries are taken as json.loads made them instead of being rebuilt member
    by member through the service model: the same items stored, the same answers and errors (key schema, sizes,
    duplicates, conditions, bad values), binaries (which moto decodes) unchanged."""
    from moto import mock_aws
    from moto.core.parse import JSONParser

    from shoplake import _moto_patches

    monkeypatch.setattr(JSONParser, "_parse_structure", JSONParser._parse_structure)
    monkeypatch.setattr(JSONParser, "_parse_map", JSONParser._parse_map)
    with mock_aws():
        unpatched = _writes_and_errors()
    _moto_patches._patch_dynamodb_request_parser()
    assert "_patch_dynamodb_request_parser" in JSONParser._parse_structure.__qualname__  # the patch is in place
    with mock_aws():
        patched = _writes_and_errors()
    assert patched == unpatched
    errors = [o for o in patched if isinstance(o, tuple)]
    assert len(errors) >= 10 and {e[1]["Code"] for e in errors if e[0] == "error"} >= {
        "ValidationException",
        "ConditionalCheckFailedException",
        "ResourceNotFoundException",
    }
    stored = {(i["customer_id"]["S"], i["order_key"]["S"]): i for i in patched[-4]["Items"]}
    assert stored[("odd", "2026-01-04#00003")]["ss"] == {"SS": ["b", "a", "c"]}
    assert stored[("odd", "2026-01-06#00005")]["bin"] == {"B": b"\x00\x01"}


def _projection(*paths: str) -> dict:
    """A ProjectionExpression of ``paths`` ("a", "m.b", "l[1]") with every name a placeholder (many are reserved),
    but list elements (moto does not resolve "#n[1]")."""
    names: dict[str, str] = {}

    def placeholder(name: str) -> str:
        if "[" in name:
            return name
        names.setdefault(f"#n{len(names)}", name)
        return next(k for k, v in names.items() if v == name)

    expression = ", ".join(".".join(placeholder(part) for part in path.split(".")) for path in paths)
    return {"ProjectionExpression": expression, "ExpressionAttributeNames": names}


def _reads() -> list:
    """Projected and whole reads as the handler and the reconciliation make them (Scan pages, Query, BatchGetItem,
    GetItem), on items of plain and odd attributes, with every kind of projection path; errors too."""
    ddb = _ddb()
    _order_table(ddb, "r", index=True)
    for n in range(60):
        ddb.put_item(TableName="r", Item=_line(f"c{n % 5}", n))
    for n, (k, v) in enumerate(ODD_VALUES.items()):
        if k != "long":  # moto cannot project any attribute of an item holding it: tried on a table of its own below
            ddb.put_item(TableName="r", Item=_line("c2", 100 + n, **{k: v}))
    ddb.put_item(TableName="r", Item=_line("c3", 200, cancelled_by={"S": "C1-1"}, cancelled_quantity={"N": "2.50"}))
    names = {"#a0": "customer_id", "#a1": "order_key", "#a2": "status", "#a3": "cancelled_by"}
    projections = [
        {"ProjectionExpression": "#a0, #a1, #a2, #a3", "ExpressionAttributeNames": names},
        _projection("customer_id", "order_key", "cancelled_by", "cancelled_quantity"),
        _projection("unit_price", "quantity", "is_guest", "nul", "exp", "missing"),
        _projection("ss", "ns", "bin", "m.deep", "l[1]", "order_key"),
        {"ProjectionExpression": "#x, #k", "ExpressionAttributeNames": {"#x": "l[1]", "#k": "order_key"}},
        {"ProjectionExpression": "#a1, #b", "ExpressionAttributeNames": {"#a1": "order_key", "#b": "order_key"}},
        {"ProjectionExpression": "order_key, order_key"},  # duplicate: an error
        {"ProjectionExpression": "#a0", "ExpressionAttributeNames": {"#a0": "customer_id", "#unused": "x"}},
        {"ProjectionExpression": "status"},  # a reserved word: an error
        {},
    ]
    out = []
    for projection in projections:
        for extra in ({"Limit": 7}, {"Limit": 20, "FilterExpression": "is_guest = :t"}, {"IndexName": "by-stock"}):
            kwargs = {"TableName": "r", **projection, **extra}
            if "FilterExpression" in extra:
                kwargs["ExpressionAttributeValues"] = {":t": {"BOOL": True}}
            pages = 0
            while pages < 40:
                page = _call(ddb.scan, **kwargs)
                out.append(page)
                pages += 1
                if isinstance(page, tuple) or "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for customer in ("c2", "c3"):
            out.append(
                _call(
                    ddb.query,
                    TableName="r",
                    KeyConditionExpression="customer_id = :c AND order_key < :k",
                    FilterExpression="is_guest = :f OR attribute_exists(m)",
                    ExpressionAttributeValues={":c": {"S": customer}, ":k": {"S": "9"}, ":f": {"BOOL": False}},
                    ConsistentRead=True,
                    **projection,
                )
            )
        keys = [{"customer_id": {"S": f"c{n % 5}"}, "order_key": _line("", n)["order_key"]} for n in range(0, 60, 3)]
        keys += [{"customer_id": {"S": "c2"}, "order_key": _line("", 100 + n)["order_key"]} for n in range(8)]
        keys += [{"customer_id": {"S": "c3"}, "order_key": {"S": "absent"}}]
        out.append(_call(ddb.batch_get_item, RequestItems={"r": {"Keys": keys, "ConsistentRead": True, **projection}}))
        out.append(_call(ddb.get_item, TableName="r", Key=keys[-2], **projection))
    out.append(_call(ddb.scan, TableName="r"))  # the stored items, after every projection
    _order_table(ddb, "long")
    for n, extra in enumerate(
        ({}, {"long": ODD_VALUES["long"]}, {"long": {"N": "-1234567890.1234567890123456789012"}})
    ):
        ddb.put_item(TableName="long", Item=_line("c0", n, **extra))
    for projection in (_projection("order_key"), _projection("order_key", "long"), _projection("m.x")):
        out.append(_call(ddb.scan, TableName="long", **projection))
        for n in range(3):
            key = {"customer_id": {"S": "c0"}, "order_key": _line("", n)["order_key"]}
            out.append(_call(ddb.get_item, TableName="long", Key=key, **projection))
    return out


PROJECTION_PATCHES = ("_patch_dynamodb_projection", "_patch_dynamodb_item_copy")


@pytest.mark.parametrize("patches", [PROJECTION_PATCHES[:1], PROJECTION_PATCHES[1:], PROJECTION_PATCHES])
def test_projection_and_copy_patches_answer_exactly_what_moto_answers(monkeypatch, patches):
    """issue 14: a projection of top-level names converts only the projected attributes (through the same
    deserializer and serializer: numbers normalised as moto does), items are copied without copy.deepcopy's dispatch
    per attribute, and a projecting Scan reads the stored items without copying them: every Scan page, Query,
    BatchGetItem and GetItem answer (and error) is moto's, for plain and odd items (sets, maps, lists, binaries,
    exponents, 42-digit numbers), nested and list paths, placeholders, an index and a filter — and the stored items
    are unchanged."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    from shoplake import _moto_patches

    monkeypatch.setattr(Item, "project", Item.project)
    monkeypatch.setattr(Item, "__deepcopy__", Item.__deepcopy__)
    monkeypatch.setattr(Table, "scan", Table.scan)
    with mock_aws():
        unpatched = _reads()
    for patch in patches:
        getattr(_moto_patches, patch)()
    with mock_aws():
        patched = _reads()
    assert len(patched) == len(unpatched) > 100
    for got, want in zip(patched, unpatched, strict=True):
        assert got == want
    errors = [o for o in patched if isinstance(o, tuple)]
    assert {e[1]["Code"] for e in errors if e[0] == "error"} == {"ValidationException"}
    assert {e[1] for e in errors if e[0] == "raised"} == {"Inexact"}  # the 42-digit number, projected: moto fails
    items = [i for page in patched if isinstance(page, dict) for i in page.get("Items", page.get("Responses", {}))]
    numbers = [i["unit_price"]["N"] for i in items if isinstance(i, dict) and "unit_price" in i]
    assert "0.10" in numbers and "100.000" in numbers  # moto's round trip keeps these as they are...
    exps = [i["exp"]["N"] for i in items if isinstance(i, dict) and "exp" in i]
    assert "1E+3" in exps and "1e3" in exps  # ... and normalises an exponent in a projection (not in a whole read)
    if "_patch_dynamodb_projection" in patches:  # the short way is taken for plain items and top-level names
        whole_item_conversions = []
        to_regular_json = Item.to_regular_json
        monkeypatch.setattr(Item, "to_regular_json", lambda i: whole_item_conversions.append(i) or to_regular_json(i))
        with mock_aws():
            ddb = _ddb()
            _order_table(ddb, "spy")
            ddb.put_item(TableName="spy", Item=_line("c", 1))
            assert len(ddb.scan(TableName="spy", **_projection("order_key", "quantity"))["Items"][0]) == 2
            assert not whole_item_conversions
            ddb.scan(TableName="spy", **_projection("m.x"))
            assert whole_item_conversions  # a nested path: moto's code
    if "_patch_dynamodb_item_copy" in patches:  # a projecting Scan reads the stored items, other reads copy them
        copies = []
        deepcopy = Item.__deepcopy__

        def spy(item, memo):
            copy = deepcopy(item, memo)
            copies.append(copy is item)
            return copy

        monkeypatch.setattr(Item, "__deepcopy__", spy)
        with mock_aws():
            ddb = _ddb()
            _order_table(ddb, "spy")
            ddb.put_item(TableName="spy", Item=_line("c", 1))
            ddb.scan(TableName="spy", **_projection("order_key", "quantity"))
            assert copies == [True]
            ddb.scan(TableName="spy")
            ddb.scan(
                TableName="spy",
                FilterExpression="quantity < :q",
                ExpressionAttributeValues={":q": {"N": "1"}},
                **_projection("order_key"),
            )
            assert copies == [True, False, False]


def _filtered_queries() -> list:
    """Queries with a filter expression as the order handler makes them (a customer's earlier lines of some stock
    codes, not cancellations), with pages (Limit, ExclusiveStartKey), both directions, projections, an index (moto's
    code), a filter nothing passes and a bad one; then the stored items."""
    ddb = _ddb()
    _order_table(ddb, "f", index=True)
    for n in range(90):
        ddb.put_item(TableName="f", Item=_line(f"c{n % 3}", n, is_cancellation={"BOOL": n % 7 == 0}))
    ddb.put_item(TableName="f", Item=_line("c1", 500, cancelled_by={"S": "C9-1"}, m={"M": {"x": {"S": "y"}}}))
    values = {":c": {"S": "c1"}, ":k": {"S": "2026-01-20"}, ":f": {"BOOL": False}, ":s0": {"S": "P1"}}
    base = {
        "TableName": "f",
        "KeyConditionExpression": "customer_id = :c AND order_key < :k",
        "ExpressionAttributeValues": values,
        "ConsistentRead": True,
    }
    filters = [
        "is_cancellation = :f AND stock_code IN (:s0)",
        "is_cancellation = :f",
        "attribute_exists(cancelled_by) OR stock_code = :s0",
        "is_cancellation = :f AND quantity > :f",  # compares a number with a boolean: nothing passes
        "stock_code IN (:nope)",  # an unknown placeholder: an error
    ]
    out = []
    for expression in filters:
        for extra in ({}, {"Limit": 4}, {"ScanIndexForward": False, "Limit": 5}, _projection("order_key", "m.x")):
            kwargs = {**base, "FilterExpression": expression, **extra}
            if expression == filters[2]:
                kwargs["ExpressionAttributeValues"] = {k: v for k, v in values.items() if k != ":f"}
            for _ in range(30):
                page = _call(ddb.query, **kwargs)
                out.append(page)
                if isinstance(page, tuple) or "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    out.append(
        _call(
            ddb.query,
            TableName="f",
            IndexName="by-stock",
            KeyConditionExpression="stock_code = :s0",
            FilterExpression="quantity > :q",
            ExpressionAttributeValues={":s0": {"S": "P1"}, ":q": {"N": "10"}},
        )
    )
    out.append(_call(ddb.scan, TableName="f"))  # the stored items are unchanged
    return out


def test_filtered_query_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: a table Query with a filter expression filters the stored items and copies only those it keeps
    (moto copied the whole partition first): every page, count, scanned count, key and error is moto's, and only the
    kept items are copied."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    from shoplake import _moto_patches

    monkeypatch.setattr(Item, "__deepcopy__", Item.__deepcopy__)
    monkeypatch.setattr(Table, "query", Table.query)
    with mock_aws():
        unpatched = _filtered_queries()
    _moto_patches._patch_dynamodb_filtered_query()
    with mock_aws():
        patched = _filtered_queries()
    assert len(patched) == len(unpatched) > 30
    for got, want in zip(patched, unpatched, strict=True):
        assert got == want
    pages = [p for p in patched if isinstance(p, dict) and "Count" in p]
    assert any(p["Count"] < p["ScannedCount"] for p in pages) and any(p["Count"] == 0 for p in pages)
    assert any("LastEvaluatedKey" in p for p in pages) and any(isinstance(p, tuple) for p in patched)
    copies = []
    deepcopy = Item.__deepcopy__

    def spy(item, memo):
        copy = deepcopy(item, memo)
        copies.append(copy is not item)
        return copy

    monkeypatch.setattr(Item, "__deepcopy__", spy)
    with mock_aws():
        ddb = _ddb()
        _order_table(ddb, "spy")
        for n in range(10):
            ddb.put_item(TableName="spy", Item=_line("c", n))
        found = ddb.query(
            TableName="spy",
            KeyConditionExpression="customer_id = :c",
            FilterExpression="stock_code = :s",
            ExpressionAttributeValues={":c": {"S": "c"}, ":s": {"S": "P1"}},
        )
    assert found["Count"] == 3 and found["ScannedCount"] == 10
    assert copies.count(True) == 3  # the stored items walked uncopied; the three kept ones copied


def test_backend_lookup_patch_lists_the_same_services(monkeypatch):
    """issue 14: the dispatcher's list of moto's service folders is listed once, not on every request."""
    from moto import backends

    from shoplake import _moto_patches

    monkeypatch.setattr(backends, "list_of_moto_modules", backends.list_of_moto_modules)
    listed = list(backends.list_of_moto_modules())
    _moto_patches._patch_backend_lookup()
    assert list(backends.list_of_moto_modules()) == listed and "dynamodb" in backends.list_of_moto_modules()


def test_every_patch_refuses_another_moto_version(monkeypatch):
    """issue 14: every patch relies on moto's code, so each fails loudly (the emulator does not start) on another
    version than the one it was checked against, which is pyproject.toml's pin — before it changes anything."""
    import ast
    import inspect
    import re
    import textwrap

    import moto

    from shoplake import _moto_patches, config

    pin = re.search(r'"moto\[server\]==([^"]+)"', (config.REPO_ROOT / "pyproject.toml").read_text()).group(1)
    assert _moto_patches.MOTO_VERSION == pin == moto.__version__
    monkeypatch.setattr(moto, "__version__", "9.9.9")
    applied = re.findall(r"^    (_patch_\w+)\(\)$", inspect.getsource(_moto_patches.apply), re.M)
    assert len(applied) == 26 and "_patch_kinesis" in applied
    for name in applied:
        with pytest.raises(RuntimeError, match=f"{name} was written for moto 5"):
            getattr(_moto_patches, name)()
        # ... and the check is its first statement (after the docstring): nothing is patched before it refuses
        body = ast.parse(textwrap.dedent(inspect.getsource(getattr(_moto_patches, name)))).body[0].body
        docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        first = body[1] if docstring else body[0]
        assert ast.unparse(first) == f"_require_moto('{name}')", name


def _pages(ddb, op, **kwargs) -> list:
    """Every page of a Scan or Query: counts, last keys and the items' keys (the 1 MB cut follows the item sizes)."""
    out = []
    while True:
        page = _call(op, **kwargs)
        if isinstance(page, tuple):
            return [*out, page]
        out.append({k: v for k, v in page.items() if k != "Items"} | {"keys": [i["order_key"] for i in page["Items"]]})
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _big_pages() -> list:
    """Scan and Query pages cut by moto's 1 MB result limit (sized from the items' attribute sizes), and a
    BatchGetItem of items of every type."""
    ddb = _ddb()
    _order_table(ddb, "big")
    for n in range(60):  # ~36 KB each, ASCII or not: pages of ~28 items
        pad = ("é" if n % 3 == 0 else "x") * (18_000 if n % 3 == 0 else 36_000)
        ddb.put_item(TableName="big", Item=_line(f"c{n % 2}", n, pad={"S": pad}, num={"N": "-1.5e10"}))
    ddb.put_item(TableName="big", Item={**EVERY_TYPE, "customer_id": {"S": "c0"}, "order_key": {"S": "every"}})
    out = [
        *_pages(ddb, ddb.scan, TableName="big"),
        *_pages(ddb, ddb.query, TableName="big", KeyConditionExpression="customer_id = :c", **_values(":c", "c0")),
    ]
    keys = [{"customer_id": {"S": "c0"}, "order_key": {"S": "every"}}]
    out.append(_call(ddb.batch_get_item, RequestItems={"big": {"Keys": keys}}))
    return out


def _values(name: str, value: str) -> dict:
    return {"ExpressionAttributeValues": {name: {"S": value}}}


def test_size_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 14: strings and numbers are sized without moto's chain of type tests: the same sizes for every type
    (non-ASCII text in UTF-8 bytes, binaries, sets, maps, lists), hence the same 1 MB pages and 400 KB refusals."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    from shoplake import _moto_patches

    monkeypatch.setattr(DynamoType, "size", DynamoType.size)
    monkeypatch.setattr(Item, "size", Item.size)
    values = [
        *EVERY_TYPE.values(),
        {"S": "ünïcode ✓ 🎉"},
        {"S": ""},
        {"N": "-0012.500"},
        {"B": "AAE="},
        {"BOOL": False},
        {"NULL": True},
        {"M": {"ключ": {"S": "значение"}, "n": {"N": "1"}}},
    ]
    items = [Item(DynamoType({"S": "k"}), None, {f"a{n}": v, "ü": v}) for n, v in enumerate(values)]
    unpatched_sizes = [DynamoType(v).size() for v in values] + [i.size() for i in items]
    with mock_aws():
        unpatched = _big_pages() + [_puts()]
    _moto_patches._patch_dynamodb_sizes()
    assert [DynamoType(v).size() for v in values] + [i.size() for i in items] == unpatched_sizes
    with mock_aws():
        patched = _big_pages() + [_puts()]
    assert patched == unpatched
    assert sum("LastEvaluatedKey" in page for page in patched[:-2]) >= 2  # pages were cut by size


def _state(value):
    """A DynamoType (or anything holding them) as plain data: its class, type and value, recursively."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if isinstance(value, DynamoType):
        return ("DynamoType", value.type, _state(value.value))
    if isinstance(value, dict):
        return (type(value).__name__, [(k, _state(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_state(v) for v in value])
    return value


def test_value_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 14: DynamoTypes built from their wire form, and responses converted back to it, without moto's chains
    of type tests: the same objects for every type (and for a DynamoType copied, a multi-key or empty dict), the
    same conversions, and the same answers to writes, errors, projected and whole reads, pages."""
    from moto import mock_aws
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities
    from moto.dynamodb.models.dynamo_type import DynamoType

    from shoplake import _moto_patches

    monkeypatch.setattr(DynamoType, "__init__", DynamoType.__init__)
    monkeypatch.setattr(utilities, "dynamo_to_dict", utilities.dynamo_to_dict)
    monkeypatch.setattr(responses, "dynamo_to_dict", responses.dynamo_to_dict)
    inputs = [*EVERY_TYPE.values(), *ODD_VALUES.values(), {"S": "a", "N": "1"}, {}, {"L": "ab"}, {"B": "AAE="}]

    def build(value):
        try:
            return _state(DynamoType(value))
        except Exception as exc:  # noqa: BLE001 - the same failure on both sides
            return ("raised", type(exc).__name__)

    def convert():
        return [
            utilities.dynamo_to_dict(x)
            for x in (
                [DynamoType(v) for v in (*EVERY_TYPE.values(), *ODD_VALUES.values(), {"B": "AAE="})],
                {"Items": [{"a": DynamoType({"S": "x"}), "b": DynamoType({"BOOL": False})}], "Count": 1},
                DynamoType(DynamoType({"L": [{"N": "1"}]})),
            )
        ]

    built, converted = [build(v) for v in inputs], convert()
    with mock_aws():
        unpatched = _writes_and_errors() + _reads() + _big_pages()
    _moto_patches._patch_dynamodb_values()
    assert responses.dynamo_to_dict is utilities.dynamo_to_dict  # in place, for both callers
    assert "_patch_dynamodb_values" in DynamoType.__init__.__qualname__
    assert [build(v) for v in inputs] == built and convert() == converted
    with mock_aws():
        patched = _writes_and_errors() + _reads() + _big_pages()
    assert patched == unpatched


def test_serializer_map_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 14: a response's item of wire-form values is copied at once instead of value by value: the same answers
    for writes, errors, projected and whole reads, pages and every attribute type."""
    from moto import mock_aws
    from moto.core.serialize import BaseJSONSerializer

    from shoplake import _moto_patches

    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_map", BaseJSONSerializer._serialize_type_map)
    with mock_aws():
        unpatched = [_round_trip(), *_writes_and_errors(), *_reads(), *_big_pages()]
    _moto_patches._patch_dynamodb_serializer_maps()
    assert "_patch_dynamodb_serializer_maps" in BaseJSONSerializer._serialize_type_map.__qualname__
    with mock_aws():
        patched = [_round_trip(), *_writes_and_errors(), *_reads(), *_big_pages()]
    assert patched == unpatched


def _walked_members(monkeypatch) -> list[str]:
    """The name of each structure member moto's response serializer walks from now on (the test's monkeypatch undoes
    the counting)."""
    from moto.core.serialize import ResponseSerializer

    members: list[str] = []
    walk = ResponseSerializer._serialize_structure_member
    monkeypatch.setattr(
        ResponseSerializer,
        "_serialize_structure_member",
        lambda self, serialized, value, shape, key: members.append(key) or walk(self, serialized, value, shape, key),
    )
    return members


def _firehose_batches() -> list:
    """The raw bodies of Firehose PutRecordBatch answers (500 records, 1 record) and of a batch to a missing stream,
    with moto's random ids seeded: the same ids on every run."""
    import boto3
    from moto.moto_api._internal import mock_random

    mock_random.seed(13)
    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    firehose = boto3.client("firehose", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    firehose.create_delivery_stream(
        DeliveryStreamName="hose",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/x",
            "BucketARN": "arn:aws:s3:::lake",
        },
    )
    bodies: list = []
    firehose.meta.events.register(
        "after-call.firehose.PutRecordBatch", lambda http_response, **_: bodies.append(http_response.content)
    )
    for n in (500, 1):
        firehose.put_record_batch(DeliveryStreamName="hose", Records=[{"Data": b"line %d\n" % i} for i in range(n)])
    try:
        firehose.put_record_batch(DeliveryStreamName="nope", Records=[{"Data": b"x"}])
    except firehose.exceptions.ResourceNotFoundException as exc:
        bodies.append(exc.response["Error"])
    return bodies


def test_firehose_batch_response_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: an entry of PutRecordBatch's answer that holds only its record id is written as such (moto's walk
    ran its attribute picker over three members for each of the 500 entries of a call): byte-identical bodies."""
    import json

    from moto import mock_aws
    from moto.core.serialize import BaseJSONSerializer

    from shoplake import _moto_patches

    monkeypatch.setattr(BaseJSONSerializer, "_serialize_type_structure", BaseJSONSerializer._serialize_type_structure)
    members = _walked_members(monkeypatch)
    with mock_aws():
        unpatched = _firehose_batches()
    walked, members[:] = members.count("RecordId"), []
    _moto_patches._patch_firehose_batch_response()
    with mock_aws():
        patched = _firehose_batches()
    assert patched == unpatched
    assert walked == 501 and members.count("RecordId") == 0  # the entries no longer go through the walk
    first = json.loads(patched[0])
    assert first["FailedPutCount"] == 0 and len(first["RequestResponses"]) == 500
    assert set(first["RequestResponses"][0]) == {"RecordId"} and patched[-1]["Code"] == "ResourceNotFoundException"


def _s3_listings() -> list:
    """The raw bodies of S3 listings over objects of every kind a listing entry shows (escaped and non-ASCII keys,
    empty and larger bodies, another storage class, a checksum), paged, with a delimiter, an owner, URL encoding and
    ListObjects v1, and a listing of a missing bucket."""
    import boto3
    from botocore.exceptions import ClientError
    from moto.moto_api._internal import mock_random

    s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for n in range(12):
            s3.put_object(Bucket="lake", Key=f"raw/weblogs/2026/12/06/03/hose-{n:02d}", Body=b"line\n" * n)
        s3.put_object(Bucket="lake", Key="raw/caf\u00e9 & <tags>/\u00fc.txt", Body=b"x" * 70_000)
        s3.put_object(Bucket="lake", Key="cold/old.log", Body=b"old", StorageClass="STANDARD_IA")
        s3.put_object(Bucket="lake", Key="summed.json", Body=b"{}", ChecksumAlgorithm="SHA256")
    bodies: list = []
    for event in ("after-call.s3.ListObjectsV2", "after-call.s3.ListObjects"):
        s3.meta.events.register(event, lambda http_response, **_: bodies.append(http_response.content))
    for kwargs in ({}, {"Prefix": "raw/"}, {"Delimiter": "/"}, {"FetchOwner": True}, {"EncodingType": "url"}):
        s3.list_objects_v2(Bucket="lake", **kwargs)
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="lake", StartAfter="raw/weblogs/2026/12/06/03/hose-03", PaginationConfig={"PageSize": 4}
    )
    assert sum(len(page.get("Contents", [])) for page in pages) == 9
    s3.list_objects(Bucket="lake", Prefix="raw/")
    mock_random.seed(13)  # the error's request id
    try:
        s3.list_objects_v2(Bucket="missing")
    except ClientError as exc:
        bodies.append(exc.response["Error"])
    return bodies


def test_s3_listing_patches_answer_exactly_what_moto_answers(monkeypatch):
    """issue 13: a listing entry of the five members moto sets goes through those members' serializers directly, and
    a timestamp string is converted once: byte-identical listings of the same objects, no entry walked member by
    member, fewer dateutil parses than entries."""
    from moto import mock_aws
    from moto.core import serialize
    from moto.core.serialize import S3Serializer, TimestampSerializer

    from shoplake import _moto_patches

    monkeypatch.setattr(S3Serializer, "_serialize_type_structure", S3Serializer._serialize_type_structure)
    monkeypatch.setattr(TimestampSerializer, "_convert_timestamp_to_str", TimestampSerializer._convert_timestamp_to_str)
    members = _walked_members(monkeypatch)
    parses: list[str] = []
    parse = serialize.parse_to_aware_datetime
    monkeypatch.setattr(serialize, "parse_to_aware_datetime", lambda value: parses.append(value) or parse(value))
    with mock_aws():
        unpatched = _s3_listings()
        walked, members[:] = members.count("StorageClass"), []
        parsed, parses[:] = len(parses), []
        _moto_patches._patch_s3_listing_entries()
        _moto_patches._patch_timestamp_strings()
        patched = _s3_listings()
    assert patched == unpatched
    assert b"caf%C3%A9%20%26%20%3Ctags%3E" in patched[0] and b"<StorageClass>STANDARD_IA</StorageClass>" in patched[0]
    assert b"<ChecksumAlgorithm>SHA256</ChecksumAlgorithm>" in patched[0] and b"<Owner>" in patched[3]
    assert walked == parsed == 81  # every entry of every listing (15 + 13 + 1 + 15 + 15 + 9 + 13)
    assert members.count("StorageClass") == 15 + 13  # the entries with an owner (FetchOwner, v1): moto's walk
    assert 0 < len(parses) <= len(set(parses)) < parsed  # each distinct LastModified string parsed at most once
    assert patched[-1]["Code"] == "NoSuchBucket"


def _service_calls() -> list:
    """The raw bodies of a mix of answers of five services (JSON and XML protocols): DynamoDB writes, reads, a
    Query, a description and errors; Kinesis, SQS, S3 and SNS calls; with moto's random ids seeded and the clock's
    readings (creation times) replaced by ``T``."""
    import re

    import boto3
    from moto.moto_api._internal import mock_random

    mock_random.seed(7)
    bodies: list = []

    def client(service: str):
        c = boto3.client(service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        c.meta.events.register("after-call", lambda http_response, **_: bodies.append(clockless(http_response.content)))
        return c

    def clockless(body: bytes) -> bytes:
        return re.sub(rb"\b1[0-9]{9}(\.[0-9]+)?\b|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)?", b"T", body)

    ddb = client("dynamodb")
    _order_table(ddb, "calls")
    _call(ddb.batch_write_item, RequestItems={"calls": [{"PutRequest": {"Item": _line("c1", n)}} for n in range(25)]})
    _call(ddb.get_item, TableName="calls", Key={"customer_id": {"S": "c1"}, "order_key": {"S": "missing"}})
    _call(ddb.get_item, TableName="nope", Key={"customer_id": {"S": "c1"}, "order_key": {"S": "x"}})
    _call(ddb.query, TableName="calls", KeyConditionExpression="customer_id = :c", **_values(":c", "c1"))
    _call(
        ddb.query,
        TableName="calls",
        KeyConditionExpression="customer_id = :c",
        ReturnConsumedCapacity="INDEXES",
        **_values(":c", "c1"),
    )
    _call(ddb.describe_table, TableName="calls")
    _call(ddb.batch_write_item, RequestItems={"calls": [{"PutRequest": {"Item": {"customer_id": {"S": ""}}}}]})
    kinesis = client("kinesis")
    kinesis.create_stream(StreamName="orders", ShardCount=2)
    kinesis.put_records(StreamName="orders", Records=[{"Data": b"%d" % n, "PartitionKey": str(n)} for n in range(9)])
    _call(kinesis.list_shards, StreamName="orders")
    _call(kinesis.describe_stream_summary, StreamName="orders")
    sqs = client("sqs")
    url = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    sqs.send_message(
        QueueUrl=url, MessageBody="bad record", MessageAttributes={"reason": {"DataType": "String", "StringValue": "x"}}
    )
    _call(sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
    s3 = client("s3")
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    _call(s3.list_buckets)
    sns = client("sns")
    topic = sns.create_topic(Name="alarm")["TopicArn"]
    _call(sns.list_topics)
    _call(sns.get_topic_attributes, TopicArn=topic)
    return bodies


def test_dispatch_and_picker_patches_answer_exactly_what_moto_answers(monkeypatch):
    """issue 13: a response class's action names are listed once per class, and the names moto's attribute picker
    tries for a member of a plain dict once per member shape (moto searched through six alias providers for each
    member of each answer, present or not): byte-identical answers, and a second round asks moto's search nothing
    but for SNS."""
    from moto import mock_aws
    from moto.core import responses
    from moto.core.serialize import XFormedAttributePicker

    from shoplake import _moto_patches

    monkeypatch.setattr(responses, "method_names_from_class", responses.method_names_from_class)
    monkeypatch.setattr(XFormedAttributePicker, "__call__", XFormedAttributePicker.__call__)
    searches: list[tuple[str, str]] = []
    search = XFormedAttributePicker.get_possible_keys
    monkeypatch.setattr(
        XFormedAttributePicker,
        "get_possible_keys",
        lambda self, context: (
            searches.append((context.service_model.service_name, context.key)) or search(self, context)
        ),
    )
    listed: list = []
    names_of = responses.method_names_from_class
    monkeypatch.setattr(responses, "method_names_from_class", lambda cls: listed.append(cls) or names_of(cls))
    with mock_aws():
        unpatched = _service_calls()
    assert len(unpatched) == 20 and b"ConsumedCapacity" in unpatched[5] and b":sns:eu-west-1:" in unpatched[-1]
    searched, searches[:] = len(searches), []
    assert len(listed) > len(set(listed))  # moto listed the same classes again and again
    listed[:] = []
    _moto_patches._patch_action_names()
    _moto_patches._patch_response_picker()
    with mock_aws():
        patched = _service_calls()
    assert patched == unpatched
    assert len(listed) == len(set(listed)) > 3  # each response class listed once
    assert 0 < len(searches) < searched
    searches[:] = []
    with mock_aws():
        assert _service_calls() == unpatched
    # every member's names known from the first round, but SNS's: its answers are built on shapes made per answer
    assert {service for service, _key in searches} == {"sns"}


def test_random_strings_patch_keeps_moto_alphabet_and_seeding(monkeypatch):
    """issue 13: moto's random strings (a 52-character request id in every answer) are drawn in one call: the same
    length, alphabet and case rules as moto's, still reproducible from moto's seed."""
    import string

    from moto.moto_api._internal import mock_random
    from moto.moto_api._internal.moto_random import MotoRandom

    from shoplake import _moto_patches

    monkeypatch.setattr(MotoRandom, "get_random_string", MotoRandom.get_random_string)
    _moto_patches._patch_random_strings()
    mock_random.seed(3)
    ids = [mock_random.get_random_string(length=52) for _ in range(400)]
    mock_random.seed(3)
    assert [mock_random.get_random_string(length=52) for _ in range(400)] == ids  # seeded: the same strings
    assert len(set(ids)) == 400 and {len(i) for i in ids} == {52}
    assert set("".join(ids)) == set(string.ascii_letters + string.digits)  # every character of moto's alphabet
    assert len(mock_random.get_random_string()) == 20
    assert set(mock_random.get_random_string(length=500, include_digits=False)) == set(string.ascii_letters)
    lower = mock_random.get_random_string(length=500, lower_case=True)
    assert lower == lower.lower() and set(lower) == set(string.ascii_lowercase + string.digits)


def test_flask_debug_files_patch_builds_no_class_per_request(monkeypatch):
    """issue 13: moto's Flask apps run in debug mode, where Flask built a new class for the ``files`` of each
    request that is not a form upload (a hint for browser forms); the patch keeps Flask's own class and moto's answers."""
    import flask
    from flask import debughelpers
    from moto.moto_server.werkzeug_app import create_backend_app

    from shoplake import _moto_patches

    monkeypatch.setattr(debughelpers, "attach_enctype_error_multidict", debughelpers.attach_enctype_error_multidict)
    app = create_backend_app("dynamodb")
    assert app.debug
    kinds: list[type] = []

    @app.after_request
    def _files_class(response):
        kinds.append(type(flask.request.files))
        return response

    def answers() -> list:
        client = app.test_client()
        headers = {
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=x/20261207/eu-west-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0",
        }
        return [client.post("/", data=b"{}", headers=headers).get_data() for _ in range(5)]

    unpatched = answers()
    assert len(set(kinds)) == 5  # a new class for every request
    kinds[:] = []
    _moto_patches._patch_flask_debug_files()
    assert answers() == unpatched
    assert set(kinds) == {kinds[0]} and kinds[0].__name__ == "ImmutableMultiDict"


def _in_place_changes() -> list:
    """Items that grow and shrink in place — UpdateItem (SET, REMOVE, ADD, list_append, a nested map member, a
    refused one over 400 KB), TransactWriteItems (applied, and cancelled by a failed condition: rolled back) — with
    the table read after each change by size-cut Scan and Query pages and a GetItem."""
    ddb = _ddb()
    _order_table(ddb, "grow")
    for n in range(40):  # ~30 KB each: ~33 items per 1 MB page
        ddb.put_item(TableName="grow", Item=_line(f"c{n % 2}", n, fill_text={"S": "x" * 30_000}, tags={"L": []}))
    key = {"customer_id": {"S": "c0"}, "order_key": _line("c0", 4)["order_key"]}
    other = {"customer_id": {"S": "c1"}, "order_key": _line("c1", 5)["order_key"]}
    big, small = {":v": {"S": "y" * 300_000}}, {":v": {"S": "z"}}
    changes = [
        (ddb.update_item, {"Key": key, "UpdateExpression": "SET fill_text = :v", "ExpressionAttributeValues": big}),
        (
            ddb.update_item,
            {
                "Key": key,
                "UpdateExpression": "SET m = :m",
                "ExpressionAttributeValues": {":m": {"M": {"part_one": {"S": "w" * 50_000}}}},
            },
        ),
        (ddb.update_item, {"Key": key, "UpdateExpression": "SET m.part_one = :v", "ExpressionAttributeValues": small}),
        (ddb.update_item, {"Key": key, "UpdateExpression": "REMOVE fill_text"}),
        (
            ddb.update_item,
            {
                "Key": key,
                "UpdateExpression": "ADD quantity :n",
                "ExpressionAttributeValues": {":n": {"N": "123456789"}},
            },
        ),
        (
            ddb.update_item,
            {
                "Key": other,
                "UpdateExpression": "SET tags = list_append(tags, :l)",
                "ExpressionAttributeValues": {":l": {"L": [{"S": "t" * 250_000}]}},
            },
        ),
        (
            ddb.update_item,
            {
                "Key": other,
                "UpdateExpression": "SET fill_text = :v",  # 30 + 250 + 300 KB: refused
                "ExpressionAttributeValues": big,
            },
        ),
        (
            ddb.transact_write_items,
            {
                "TransactItems": [
                    {
                        "Update": {
                            "TableName": "grow",
                            "Key": key,
                            "UpdateExpression": "SET fill_text = :v",
                            "ExpressionAttributeValues": big,
                        }
                    },
                ]
            },
        ),
        (
            ddb.transact_write_items,
            {
                "TransactItems": [  # the update, then a failed check: all rolled back
                    {"Update": {"TableName": "grow", "Key": other, "UpdateExpression": "REMOVE tags"}},
                    {
                        "ConditionCheck": {
                            "TableName": "grow",
                            "Key": key,
                            "ConditionExpression": "attribute_not_exists(fill_text)",
                        }
                    },
                ]
            },
        ),
        (
            ddb.update_item,
            {
                "Key": {"customer_id": {"S": "c9"}, "order_key": {"S": "new"}},  # creates the item
                "UpdateExpression": "SET fill_text = :v",
                "ExpressionAttributeValues": big,
            },
        ),
    ]
    out = []
    for op, kwargs in changes:
        if op == ddb.update_item:
            kwargs = {"TableName": "grow", **kwargs}
        out.append(_call(op, **kwargs))
        out.append(_pages(ddb, ddb.scan, TableName="grow"))
        out.append(
            _pages(ddb, ddb.query, TableName="grow", KeyConditionExpression="customer_id = :c", **_values(":c", "c0"))
        )
        out.append(_call(ddb.get_item, TableName="grow", Key=key, ProjectionExpression="order_key, quantity"))
    return out


def _stored_sizes() -> list[tuple[int, int]]:
    """Each stored item's ``size()`` beside its size worked out anew from its attributes (moto's Item.size)."""
    from moto.dynamodb.models import dynamodb_backends

    from shoplake import _moto_patches

    tables = dynamodb_backends["123456789012"]["eu-west-1"].tables.values()
    items = [item for table in tables for bucket in table.items.values() for item in bucket.values()]
    return [(item.size(), _moto_patches._attributes_size(item.attrs)) for item in items]


def test_size_cache_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: an item's size is remembered from its creation until an UpdateItem starts a new generation: every
    size-cut page, count, key and error of reads, of in-place changes (UpdateItem, TransactWriteItems applied and
    rolled back) and of the reads after each is moto's; every stored item's remembered size is the size of what it
    holds; and the reads of unchanged items size none of them again."""
    from moto import mock_aws
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import Item

    from shoplake import _moto_patches

    for cls, name in ((Item, "size"), (Item, "__init__"), (DynamoDBBackend, "update_item")):
        monkeypatch.setattr(cls, name, getattr(cls, name))
    for name in ("active", "generation", "changing"):
        monkeypatch.setattr(_moto_patches._SizeCache, name, getattr(_moto_patches._SizeCache, name))
    sized: list[int] = []
    size = Item.size
    monkeypatch.setattr(Item, "size", lambda self: sized.append(id(self)) or size(self))
    with mock_aws():
        unpatched = _big_pages() + _filtered_queries() + _in_place_changes()
    unpatched_reads = len(sized)
    _moto_patches._patch_dynamodb_item_size()
    _moto_patches._patch_dynamodb_size_cache()
    with mock_aws():
        sized[:] = []
        patched_reads = _big_pages() + _filtered_queries()
        read_sizings = len(sized)
        patched = patched_reads + _in_place_changes()
        stored = _stored_sizes()
    assert patched == unpatched
    assert sum("LastEvaluatedKey" in page for page in patched[:4]) >= 2  # pages were cut by size
    changed = unpatched[-40:]
    assert [type(a) for a in changed[::4]].count(tuple) == 2  # the refused update and the cancelled transaction
    assert len({json.dumps(pages, sort_keys=True) for pages in changed[1::4]}) >= 4  # the changes moved the cuts
    assert stored and all(remembered == anew for remembered, anew in stored)
    assert unpatched_reads > 1000 and read_sizings == 0  # moto sized the items it read; the reads sized none again
    assert _moto_patches._SizeCache.changing == 0
    assert Item(None, None, {"a": {"S": "xyz"}}).size() == 4


CAST_VALUES = [
    *EVERY_TYPE.values(),
    {"S": ""},
    {"S": "1"},
    {"S": "b"},
    {"N": "1"},
    {"N": "1.0"},
    {"N": "-3"},
    {"B": b"\x00\xffbytes"},
    {"B": b"1"},
    {"BOOL": True},
    {"NULL": True},
    {"SS": ["b", "a"]},
    {"L": [{"S": "1"}]},
    {"M": {"a": {"S": "1"}}},
]


def _cast_facts() -> list:
    """What comparisons see of values of every type: each cast (as plain data), and ``==``, ``!=``, ``<`` and hash
    equality of every pair (``<`` across types: what moto raises)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    values = [DynamoType(v) for v in CAST_VALUES]
    facts: list = [repr(_state(v.cast_value)) for v in values]
    for a in values:
        for b in values:
            try:
                less = a < b
            except TypeError as exc:
                less = ("raised", str(exc))
            try:
                same_hash = hash(a) == hash(b)
            except TypeError as exc:  # sets, lists and maps cast to unhashable values
                same_hash = ("raised", str(exc))
            facts.append((a == b, a != b, less, same_hash))
    return facts


def _comparisons() -> list:
    """Filters and conditions comparing attributes of every type with values of the same and of other types (=, <>,
    <, >=, BETWEEN, IN, begins_with, contains), as Scan pages and conditional puts."""
    ddb = _ddb()
    _order_table(ddb, "cmp")
    attributes = {f"v_{k}": v for k, v in EVERY_TYPE.items() if k not in ("pk", "sk")}
    for n in range(6):
        ddb.put_item(TableName="cmp", Item=_line(f"c{n % 2}", n, **attributes, same={"S": "1" if n % 2 else "b"}))
    values = {":s": {"S": "b"}, ":one": {"S": "1"}, ":n": {"N": "1.0"}, ":b": {"B": b"1"}, ":t": {"BOOL": True}}
    filters = [
        f"{name} {op} {value}"
        for name in ("same", "v_s", "v_n", "v_b", "v_t", "quantity")
        for op in ("=", "<>", "<", ">=")
        for value in values
    ]
    filters += [
        "same BETWEEN :one AND :s",
        "quantity BETWEEN :n AND :n",
        "same IN (:one, :n, :b)",
        "v_t IN (:t, :s)",
        "begins_with(v_s, :s)",
        "contains(v_ss, :s)",
        "contains(v_l, :one)",
    ]
    out = []
    for expression in filters:
        out.append(
            _call(
                ddb.scan,
                TableName="cmp",
                FilterExpression=expression,
                ExpressionAttributeValues={k: v for k, v in values.items() if k in expression},
            )
        )
    for condition in ("same = :one", "same <> :one", "v_t = :t", "v_n = :n"):
        item = _line("c1", 1, same={"S": "changed"})
        names = {k: v for k, v in values.items() if k in condition}
        out.append(
            _call(
                ddb.put_item, TableName="cmp", Item=item, ConditionExpression=condition, ExpressionAttributeValues=names
            )
        )
    out.append(_call(ddb.scan, TableName="cmp"))
    return out


def test_cast_value_patch_answers_exactly_what_moto_answers(monkeypatch):
    """issue 13: strings, binaries and booleans are compared by their values without moto's five type tests per
    cast: the same casts, equalities, orders and hashes for values of every type, and the same answers of Queries
    (key conditions, filters, sort orders, pages), Scans, reads and conditional writes."""
    from moto import mock_aws
    from moto.dynamodb.models.dynamo_type import DynamoType

    from shoplake import _moto_patches

    monkeypatch.setattr(DynamoType, "cast_value", DynamoType.cast_value)
    monkeypatch.setattr(DynamoType, "__eq__", DynamoType.__eq__)

    def answers() -> list:
        with mock_aws():
            out = [_queries("S"), _queries("N"), _scans("S"), _filtered_queries(), _reads(), _comparisons()]
        return _strip(out)

    unpatched = (_cast_facts(), answers())
    _moto_patches._patch_dynamodb_cast_value()
    patched = (_cast_facts(), answers())
    assert patched == unpatched
    compared = unpatched[1][-1]
    assert sum(isinstance(a, dict) and a.get("Count", 0) > 0 for a in compared) > 20  # filters let items through
    assert sum(isinstance(a, tuple) for a in compared) >= 2  # conditions failed, type mismatches were refused


def _strip(value):
    """Answers without their request ids (ResponseMetadata), recursively."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list | tuple):
        return type(value)(_strip(v) for v in value)
    return value
