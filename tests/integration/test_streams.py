"""shoplake.streams against the emulator: batching limits, retry of only the failed records, readers, replay."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest

from shoplake import config, streams


@pytest.fixture(scope="module")
def kinesis(local_stack):
    return config.client("kinesis")


@pytest.fixture
def stream(kinesis):
    """A fresh 2-shard stream of this test's own (deleted afterwards)."""
    name = config.resource_name(f"st-{uuid.uuid4().hex[:8]}")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def delivery_stream(local_stack):
    s3 = config.client("s3")
    firehose = config.client("firehose")
    bucket = f"shoplake-{config.settings().prefix}-fh-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    name = config.resource_name(f"fh-{uuid.uuid4().hex[:8]}")
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": "raw/",
        },
    )
    yield name, bucket
    firehose.delete_delivery_stream(DeliveryStreamName=name)


def order_event(i: int, customer: str | None = "17850") -> dict[str, Any]:
    return {
        "InvoiceNo": f"5{i:05d}",
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART",
        "Quantity": 6,
        "InvoiceDate": "2011-01-02T08:26:00Z",
        "UnitPrice": 2.55,
        "CustomerID": customer,
        "Country": "United Kingdom",
        "LineNo": 0,
    }


class FlakyKinesis:
    """The real emulator client, except that chosen records get a per-record ErrorCode on their first attempts
    (as Kinesis does under throttling) without being sent. Moto never fails single records by itself."""

    def __init__(
        self, real: Any, fail_first: int, fail_times: int = 1, code: str = "ProvisionedThroughputExceededException"
    ):
        self.real = real
        self.fail_first = fail_first  # the first N distinct payloads fail ...
        self.fail_times = fail_times  # ... this many times each
        self.code = code
        self.failures: Counter[bytes] = Counter()
        self.calls: list[int] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(len(Records))
        out: list[dict[str, Any] | None] = []
        send = []
        for record in Records:
            data = record["Data"]
            doomed = len(self.failures) < self.fail_first or data in self.failures
            if doomed and self.failures[data] < self.fail_times:
                self.failures[data] += 1
                out.append({"ErrorCode": self.code, "ErrorMessage": "Rate exceeded for shard"})
            else:
                out.append(None)
                send.append(record)
        sent = self.real.put_records(StreamName=StreamName, Records=send)["Records"] if send else []
        it = iter(sent)
        records = [r if r is not None else next(it) for r in out]
        return {"FailedRecordCount": sum(1 for r in records if "ErrorCode" in r), "Records": records}


def test_put_records_batches_and_reads_back_every_record_once(stream):
    events = [order_event(i, customer=None if i % 7 == 0 else str(12000 + i % 13)) for i in range(1203)]
    result = streams.put_records(stream, events)
    assert (result.sent, result.failed, result.rejected, result.retried) == (1203, 0, 0, 0)
    assert result.calls == 3  # 500 + 500 + 203
    back = streams.read_all(stream)
    assert sorted(r.json()["InvoiceNo"] for r in back) == sorted(e["InvoiceNo"] for e in events)
    # default partition key: customer, or guest-<InvoiceNo>
    keys = {r.json()["InvoiceNo"]: r.partition_key for r in back}
    assert keys["500000"] == "guest-500000"
    assert keys["500001"] == "12001"
    assert len({r.shard_id for r in back}) == 2
    # each shard reads back in sequence order
    for shard_id in streams.shards(stream):
        seqs = [int(r.sequence_number) for r in back if r.shard_id == shard_id]
        assert seqs == sorted(seqs)


def test_batches_respect_the_5_mib_call_limit(stream, kinesis):
    flaky = FlakyKinesis(kinesis, fail_first=0)
    big = [{"n": i, "pad": "x" * 300_000} for i in range(40)]  # 40 × ~300 KB = 12 MB
    result = streams.put_records(stream, big, partition_key=lambda r: str(r["n"]), client=flaky)
    assert result.sent == 40
    assert all(n * 300_020 <= streams.KINESIS_MAX_BATCH_BYTES for n in flaky.calls)
    assert len(flaky.calls) >= 3


def test_oversized_record_is_rejected_with_a_reason_and_not_sent(stream):
    records = [b"small-1", b"x" * (streams.KINESIS_MAX_RECORD_BYTES + 1), b"small-2"]
    result = streams.put_records(stream, records, partition_key="k")
    assert (result.sent, result.rejected, result.failed) == (2, 1, 0)
    assert "at most" in result.rejected_records[0]["reason"]
    assert sorted(r.data for r in streams.read_all(stream)) == [b"small-1", b"small-2"]


def test_only_failed_records_are_retried_and_nothing_is_duplicated(stream, kinesis):
    flaky = FlakyKinesis(kinesis, fail_first=37, fail_times=2)
    events = [order_event(i) for i in range(620)]
    result = streams.put_records(stream, events, client=flaky, base_delay=0.001)
    assert result.sent == 620 and result.failed == 0
    assert result.retried == 37 * 2
    # first call had all 500, retries carry only the failed ones
    assert flaky.calls[0] == 500 and flaky.calls[1] == 37
    back = Counter(r.json()["InvoiceNo"] for r in streams.read_all(stream))
    assert set(back.values()) == {1} and len(back) == 620


def test_records_failing_every_attempt_are_reported_failed(stream, kinesis):
    flaky = FlakyKinesis(kinesis, fail_first=3, fail_times=99)
    result = streams.put_records(
        stream, [order_event(i) for i in range(10)], client=flaky, max_attempts=3, base_delay=0.001
    )
    assert (result.sent, result.failed) == (7, 3)
    assert all(f["attempts"] == 3 and "ProvisionedThroughput" in f["reason"] for f in result.failed_records)
    assert len(streams.read_all(stream)) == 7


def test_permanent_error_code_is_not_retried(stream, kinesis):
    flaky = FlakyKinesis(kinesis, fail_first=2, fail_times=99, code="KMSAccessDeniedException")
    result = streams.put_records(stream, [order_event(i) for i in range(5)], client=flaky, base_delay=0.001)
    assert (result.sent, result.failed, result.retried) == (3, 2, 0)


def test_missing_stream_gives_a_clear_error(local_stack):
    with pytest.raises(streams.StreamError, match="00_provision"):
        streams.put_records("no-such-stream-xyz", [order_event(1)])


def test_read_shard_resumes_after_a_sequence_number(stream):
    streams.put_records(stream, [b"a", b"b", b"c", b"d"], partition_key="same")
    shard_id = next(r.shard_id for r in streams.read_all(stream))
    first = list(streams.read_shard(stream, shard_id))
    assert [r.data for r in first] == [b"a", b"b", b"c", b"d"]
    rest = list(streams.read_shard(stream, shard_id, after_sequence=first[1].sequence_number))
    assert [r.data for r in rest] == [b"c", b"d"]
    assert all(r.arrival > 1.6e9 for r in first)


def test_replay_dataframe_as_fast_as_possible_and_time_compressed(stream):
    import pandas as pd

    frame = pd.DataFrame([order_event(i) for i in range(30)])
    frame["InvoiceDate"] = pd.date_range("2011-01-01", periods=30, freq="10s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.loc[3, "CustomerID"] = None
    fast = streams.replay(frame, stream, progress=False)
    assert fast.sent == 30
    timed = streams.replay(frame, stream, speed=290.0 / 0.6, progress=False)  # 290 event-seconds in ~0.6 s
    assert timed.sent == 30 and timed.calls > 1
    assert 0.5 <= timed.elapsed_s < 3.0
    back = [r.json() for r in streams.read_all(stream)]
    assert len(back) == 60
    guest = [r for r in back if r["InvoiceNo"] == "500003"]
    assert guest[0]["CustomerID"] is None


@pytest.mark.parametrize("speed", [0, -5.0, float("nan"), float("inf"), float("-inf")])
def test_replay_rejects_bad_speed(stream, speed):
    """issue 16: NaN used to pass the `speed <= 0` check and loop forever sending empty slices."""
    with pytest.raises(streams.StreamError, match="speed must be a positive, finite number"):
        streams.replay([order_event(1)], stream, speed=speed)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
@pytest.mark.parametrize("option", ["stall_seconds", "base_delay", "max_delay"])
def test_producer_numbers_must_be_finite_and_not_negative(stream, option, value):
    with pytest.raises(streams.StreamError, match=option):
        streams.put_records(stream, [order_event(1)], **{option: value})
    with pytest.raises(streams.StreamError, match=option):
        streams.put_firehose("any-delivery-stream", [order_event(1)], **{option: value})


@pytest.mark.parametrize(("option", "value"), [("poll_interval", float("nan")), ("poll_interval", -1), ("limit", 0)])
def test_reader_numbers_are_checked(stream, option, value):
    with pytest.raises(streams.StreamError, match=option):
        next(streams.read_batches(stream, "shardId-000000000000", **{option: value}))


def test_put_firehose_writes_json_lines(delivery_stream):
    name, bucket = delivery_stream
    result = streams.put_firehose(name, [order_event(i) for i in range(1100)] + [b"raw line"])
    assert result.sent == 1101 and result.calls == 3
    s3 = config.client("s3")
    lines = []
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix="raw/").get("Contents", []):
        lines.extend(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode().splitlines())
    assert len(lines) == 1101
    assert "raw line" in lines
    invoices = sorted(json.loads(line)["InvoiceNo"] for line in lines if line != "raw line")
    assert invoices == sorted(f"5{i:05d}" for i in range(1100))


def test_throttled_records_are_retried_for_as_long_as_others_are_accepted(stream, kinesis):
    """Under throttling (2 shards, a large replay) records fail many times over; while the stream keeps accepting
    others, nothing is given up on, and every re-send is counted."""
    flaky = FlakyKinesis(kinesis, fail_first=40, fail_times=12)
    events = [order_event(i) for i in range(600)]
    result = streams.put_records(stream, events, client=flaky, base_delay=0.001, max_delay=0.005)
    assert (result.sent, result.failed) == (600, 0)
    assert result.retried == 40 * 12
    assert len(streams.read_all(stream)) == 600


def test_records_fail_only_after_no_record_is_accepted_for_the_stall_time(stream, kinesis):
    flaky = FlakyKinesis(kinesis, fail_first=4, fail_times=10**6)
    result = streams.put_records(
        stream, [order_event(i) for i in range(4)], client=flaky, stall_seconds=0.3, base_delay=0.001, max_delay=0.02
    )
    assert (result.sent, result.failed) == (0, 4) and result.retried > 4
    assert all("no record accepted for" in f["reason"] for f in result.failed_records)
    with pytest.raises(streams.StreamError, match="stall_seconds"):
        streams.put_records(stream, [order_event(0)], stall_seconds=0)


def test_last_sequence_number_finds_a_shards_end_without_reading_it_whole(stream, kinesis):
    """The newest record's sequence number by a search on arrival times: the same as reading the shard to its end,
    with a fraction of its records read (bursts seconds apart; an empty shard has none)."""
    import time

    one_shard = {"partition_key": lambda _: "k"}  # every record on one shard
    shard = streams.put_records(stream, [order_event(0)], **one_shard).sequence_numbers.popitem()[0]
    other = next(s for s in streams.shards(stream) if s != shard)
    assert streams.last_sequence_number(stream, other) is None
    for burst in range(3):
        time.sleep(2.1)  # arrival times a few seconds apart (AT_TIMESTAMP takes whole seconds)
        streams.put_records(stream, [order_event(i) for i in range(1000 * burst, 1000 * burst + 1000)], **one_shard)
    whole = [r for batch, _ in streams.read_batches(stream, shard) for r in batch]
    returned = []
    real_get_records = kinesis.get_records

    def counting(**kwargs: Any) -> Any:
        response = real_get_records(**kwargs)
        returned.extend(response.get("Records", []))
        return response

    kinesis.get_records = counting
    try:
        found = streams.last_sequence_number(stream, shard, client=kinesis)
    finally:
        del kinesis.get_records
    assert found == whole[-1].sequence_number and len(whole) == 3001
    assert len(returned) <= 1100, len(returned)  # the last burst (and a few probes), not the 3,001 records
