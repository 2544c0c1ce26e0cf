"""The emulator's HTTP server (``shoplake._moto_server``: moto's app on waitress): connections stay open between
requests, a long poll does not hold up the other clients, and large bodies come back byte for byte."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
import uuid

from shoplake import config, local_services


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)


def test_every_emulator_keeps_a_connection_open_for_the_next_request(local_stack):
    for url in local_services.emulator_urls():
        conn = _connection(url)
        try:
            socks = []
            for _ in range(3):
                conn.request("GET", "/moto-api/")
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200
                assert (answer.getheader("Connection") or "").lower() != "close", url
                assert not answer.will_close, url
                socks.append(conn.sock)
            assert socks[0] is not None and all(s is socks[0] for s in socks), f"{url} closed the connection"
        finally:
            conn.close()


def test_a_long_poll_does_not_hold_up_other_requests(local_stack):
    """Several clients wait on an empty queue (SQS long polling, as the alarm's readers do) while another client's
    calls are answered at once: each long poll holds one of the server's threads, not the server."""
    sqs = config.client("sqs")
    url = sqs.create_queue(QueueName=f"{config.settings().prefix}-longpoll-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    waits = 3
    pollers = [
        threading.Thread(target=sqs.receive_message, kwargs={"QueueUrl": url, "WaitTimeSeconds": waits})
        for _ in range(6)
    ]
    try:
        began = time.monotonic()
        for poller in pollers:
            poller.start()
        time.sleep(0.3)  # the polls are waiting inside the emulator now
        for _ in range(5):
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        answered_after = time.monotonic() - began
        assert answered_after < waits, f"other requests waited {answered_after:.1f} s behind the long polls"
        for poller in pollers:
            poller.join(timeout=waits + 10)
        assert time.monotonic() - began >= waits  # the polls did wait: the test measured what it claims
    finally:
        sqs.delete_queue(QueueUrl=url)


def test_large_objects_go_in_and_come_back_byte_for_byte(local_stack):
    """Bodies above what the server keeps in memory go through its temporary files; both sizes come back whole."""
    from shoplake import _moto_server

    s3 = config.client("s3")
    bucket = f"shoplake-{config.settings().prefix}-server-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    try:
        for size in (3 * 1024 * 1024, _moto_server.BUFFER_IN_MEMORY + 1024):
            body = uuid.uuid4().bytes * (size // 16)
            s3.put_object(Bucket=bucket, Key=f"k{size}", Body=body)
            assert s3.get_object(Bucket=bucket, Key=f"k{size}")["Body"].read() == body
            s3.delete_object(Bucket=bucket, Key=f"k{size}")
    finally:
        s3.delete_bucket(Bucket=bucket)
