"""The stream detector saves its state less often than every batch: killed at any moment, it resumes exactly once.

A detector process is killed (for real: ``os._exit`` or SIGKILL) between a state save and the checkpoint that follows
it, or at a random moment; a new process resumes from the saved state and the checkpoints. Over both runs every
record is counted once (in = accepted + dead-lettered), re-delivered records are skipped, each incident is texted once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from alarm_day import four_hours_with_incidents

from shoplake import config, infra, lambda_local, streams
from shoplake.alarm import detector as det
from shoplake.alarm import detector_config, messages

# the detector process the tests kill: consumes with small batches and frequent saves; KILL_AFTER_SAVE=n dies right
# after its n-th state save, before the mapping writes the checkpoint that save was made for. SAVE_EVERY_SECONDS: the
# mapping checkpoints (and so the handler saves) at most that often per shard
RUN = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from alarm_day import four_hours_with_incidents
    from shoplake.alarm import detector as det, detector_config

    consumer, kill_after_save, save_every_seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    save = det.StreamHandler.save

    def save_then_die(self, shard_id=None):
        before = self.saves
        save(self, shard_id)
        if kill_after_save and self.saves > before and self.saves >= kill_after_save:
            print("killed after save", self.saves, flush=True)
            os._exit(9)

    det.StreamHandler.save = save_then_die
    print("consuming", flush=True)
    det.consume(consumer, detector_config(600), warmup=four_hours_with_incidents().warmup, batch_size=100,
                save_every_seconds=save_every_seconds)
    print("done", flush=True)
    """
)

BAD = [
    b"{broken json",
    {
        "InvoiceNo": "999999",
        "StockCode": "X",
        "Quantity": 1,
        "InvoiceDate": "2011-11-09T09:00:00Z",  # an hour before the slice: late
        "UnitPrice": 1.0,
        "CustomerID": None,
        "Country": "EIRE",
        "Description": "late",
        "LineNo": 0,
    },
]


@pytest.fixture(scope="module")
def replayed(provisioned):
    """The 4-hour slice with two incidents on the stream, one malformed and one late record; four consumers."""
    sim = four_hours_with_incidents()
    consumers = [f"crash-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    for consumer in consumers:
        det.start_at_stream_end(consumer)
    messages.purge_inbox(quiet_seconds=0)
    streams.replay(sim.events, "orders", progress=False)
    streams.put_records("orders", BAD, progress=False)
    return sim, consumers


def _start(consumer: str, kill_after_save: int = 0, save_every_seconds: float = 0.2) -> subprocess.Popen:
    script = RUN.format(tests=os.path.dirname(__file__))
    return subprocess.Popen(
        [sys.executable, "-c", script, consumer, str(kill_after_save), str(save_every_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )


def _assert_exactly_once(sim, consumer: str, resumed: det.ConsumeResult) -> None:
    counts = resumed.detector.counts  # the saved state's counters: over both runs
    assert counts["records_in"] == len(sim.events) + len(BAD), counts
    assert counts["accepted"] == len(sim.events) and counts["duplicate"] == 0, counts
    assert counts["malformed"] == 1 and counts["late"] == 1, counts
    assert counts["records_in"] == counts["accepted"] + counts["malformed"] + counts["late"]
    # each incident alarmed and texted once over both runs (a replayed alarm is answered "duplicate" by rate_alarm)
    incidents = [a.incident_id for a in resumed.detector.alarms]
    assert len(incidents) == len(set(incidents)) == 2, incidents
    texts = [m["text"] for m in messages.sent_messages(quiet_seconds=0) if consumer in (m["text"] or "")]
    assert len(texts) == 2, texts
    # the dead letters: the malformed and the late record (a re-sent one carries the same shard + sequence)
    sqs, queue = config.client("sqs"), infra.outputs()["queue_url:rate-alarm-dlq"]
    letters: dict[tuple[str, str], str] = {}
    seen = []  # every message is hidden while the queue is paged through, then shown again to the other tests
    while got := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages"):
        for message in got:
            seen.append(message["ReceiptHandle"])
            body = json.loads(message["Body"])
            if body.get("consumer") == f"detector#{consumer}":
                letters[(body["source"]["shard_id"], body["source"]["sequence_number"])] = body["reason"].split(":")[0]
    for handle in seen:
        sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=handle, VisibilityTimeout=0)
    assert sorted(letters.values()) == ["late", "malformed"], letters


def test_killed_between_state_save_and_checkpoint_resumes_exactly_once(replayed):
    sim, consumers = replayed
    consumer = consumers[0]
    # a checkpoint, and so a save, after every batch (the interval path, at a tiny interval): a shard's poller handles
    # its next batch only after its checkpoint, so a save covers at most one batch of 100 per shard (two shards), and
    # the 3rd save comes within the first 600 records however fast the process reads (with 0.2 s between saves a fast
    # reader had consumed every record by its 3rd save)
    proc = _start(consumer, kill_after_save=3, save_every_seconds=1e-6)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 9, out
    assert "killed after save" in out
    saved = det.StateStore(consumer).load()
    assert saved is not None and 0 < saved["counts"]["records_in"] <= 3 * 2 * 100 < len(sim.events)
    checkpointed = lambda_local.Checkpoints(consumer).all()
    # the state is ahead of the checkpoints: the killed process saved, then died before checkpointing
    assert any(int(saved["sequences"][s]) > int(checkpointed.get(s, "0")) for s in saved["sequences"])
    resumed = det.consume(consumer, detector_config(600))
    assert resumed.counts["replayed"] > 0  # records between checkpoint and state: re-delivered and skipped
    _assert_exactly_once(sim, consumer, resumed)


@pytest.mark.parametrize("attempt", [1, 2])
def test_killed_at_a_random_moment_resumes_exactly_once(replayed, attempt):
    sim, consumers = replayed
    consumer = consumers[attempt]
    seed = int(time.time() * 1000) % 10_000
    delay = random.Random(seed).uniform(0.2, 2.5)
    proc = _start(consumer)
    store = det.StateStore(consumer)
    deadline = time.monotonic() + 120
    while store.load() is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the first save: the detector is consuming
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    print(f"seed {seed}: killed {delay:.2f} s after the first save (return code {proc.returncode})\n{out}")
    resumed = det.consume(consumer, detector_config(600))
    _assert_exactly_once(sim, consumer, resumed)


def test_a_redelivered_batch_is_skipped(replayed):
    """The handler itself: the same records twice (a retry, or a replay after a crash) are counted once."""
    sim, consumers = replayed
    consumer = consumers[3]
    shard = streams.shards("orders")[0]
    records = []
    for batch, _ in streams.read_batches("orders", shard, after_sequence=lambda_local.Checkpoints(consumer).get(shard)):
        records += batch
        if len(records) >= 200:
            break
    outputs = infra.outputs()
    detector = det.RateDetector(detector_config(600), name=consumer, shards=streams.shards("orders"))
    handler = det.StreamHandler(
        detector, det.StateStore(consumer), outputs["topic_arn:alarms"], outputs["queue_url:rate-alarm-dlq"]
    )
    event = lambda_local.kinesis_event(records[:200], "arn:aws:kinesis:local:stream/orders", "us-east-1", "role")
    first = handler(event)
    again = handler(event)
    assert first["counts"]["records"] == 200 and first["counts"]["replayed"] == 0
    assert again["counts"]["records"] == 0 and again["counts"]["replayed"] == 200
    assert detector.counts["records_in"] == 200
    saved = det.StateStore(consumer).load()  # save_every_seconds=0: saved after each batch
    assert saved is not None and saved["sequences"][shard] == records[199].sequence_number
    assert saved["counts"]["records_in"] == 200


def test_a_failed_dead_letter_hand_over_is_retried_not_lost(replayed):
    """The dead-letter queue refuses: the invocation fails, the mapping's retry skips the counted records and sends
    the waiting dead letter; nothing counted twice, nothing lost."""
    sim, consumers = replayed
    consumer = f"{consumers[3]}-retry"
    outputs = infra.outputs()
    tail = None
    for shard in streams.shards("orders"):
        start = lambda_local.Checkpoints(consumers[3]).get(shard)
        records = [r for batch, _ in streams.read_batches("orders", shard, after_sequence=start) for r in batch]
        broken = [i for i, r in enumerate(records) if r.data == BAD[0]]
        if broken:
            tail = records[max(0, broken[0] - 20) : broken[0] + 1]
    assert tail is not None and tail[-1].data == BAD[0]
    event = lambda_local.kinesis_event(tail, "arn:aws:kinesis:local:stream/orders", "us-east-1", "role")
    detector = det.RateDetector(detector_config(600), name=consumer, shards=streams.shards("orders"))
    missing = outputs["queue_url:rate-alarm-dlq"] + "-missing"
    handler = det.StreamHandler(detector, det.StateStore(consumer), outputs["topic_arn:alarms"], missing)
    with pytest.raises(Exception, match="NonExistentQueue|does not exist"):
        handler(event)
    assert det.StateStore(consumer).load() is None  # not saved while the dead letter waits
    handler.dlq_url = outputs["queue_url:rate-alarm-dlq"]
    again = handler(event)  # the mapping's retry of the same batch
    assert again["counts"]["replayed"] == len(tail) and again["counts"]["records"] == 0
    assert handler.dead_lettered == 1
    saved = det.StateStore(consumer).load()
    assert saved["counts"]["records_in"] == len(tail) and saved["counts"]["malformed"] == 1
