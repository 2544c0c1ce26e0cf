"""The emulator's HTTP server: the same patched moto app served by waitress (``shoplake._moto_server``, keep-alive, a
fixed pool of threads) against moto's own werkzeug development server (a connection and a thread per request), both
measured in this run.

Each server is a private process on a free loopback port (the shared local services are not touched). The load is
the order pipeline's mix of DynamoDB requests — 25-item BatchWriteItem, a customer's Query, GetItem — plus S3 puts and
gets of a 256 KiB object, sent by :data:`CLIENT_THREADS` client threads. The two servers take turns for
:data:`ROUNDS` rounds and each keeps its median, so that a busy moment on the machine does not pick the winner.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import _report
from bench.bench_orders import process_cpu_s

ROUNDS = 3
CLIENT_THREADS = 4
BATCHES_PER_THREAD = 40  # each batch: 1 BatchWriteItem (25 items), 2 Query, 4 GetItem, 1 S3 put, 1 S3 get
OBJECT_BYTES = 256 * 1024
REQUESTS_PER_BATCH = 1 + 2 + 4 + 2


def _start(server: str) -> tuple[subprocess.Popen, str]:
    from shoplake import local_services

    port = local_services.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoplake._moto_server", "--port", str(port), "--server", server],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + local_services.START_TIMEOUT_S
    while not local_services._moto_healthy(url, timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the {server} emulator did not start on {url}")
        time.sleep(0.1)
    return proc, url


def _clients(url: str) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    # a private emulator: explicit endpoint and placeholder keys, so that nothing here can reach a real account
    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name="eu-west-1")
    conf = Config(retries={"mode": "standard"}, max_pool_connections=CLIENT_THREADS * 2)
    return {name: session.client(name, endpoint_url=url, config=conf) for name in ("dynamodb", "s3")}


def _set_up(clients: dict[str, Any]) -> None:
    clients["dynamodb"].create_table(
        TableName="orders",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("customer", "line")],
        KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"}, {"AttributeName": "line", "KeyType": "RANGE"}],
    )
    clients["s3"].create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})


def _work(clients: dict[str, Any], worker: int, round_no: int) -> int:
    """One client thread's share: returns the requests it sent (every answer checked, so nothing is skipped)."""
    ddb, s3 = clients["dynamodb"], clients["s3"]
    body = bytes([worker]) * OBJECT_BYTES
    sent = 0
    for batch in range(BATCHES_PER_THREAD):
        customer = f"c{round_no}-{worker}-{batch}"
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "customer": {"S": customer},
                        "line": {"S": f"{n:04d}"},
                        "qty": {"N": str(n)},
                        "price": {"N": "2.55"},
                        "description": {"S": "WHITE HANGING HEART T-LIGHT HOLDER"},
                    }
                }
            }
            for n in range(25)
        ]
        answer = ddb.batch_write_item(RequestItems={"orders": items})
        if answer.get("UnprocessedItems"):
            raise RuntimeError("the emulator left items unprocessed")
        for _ in range(2):
            found = ddb.query(
                TableName="orders",
                KeyConditionExpression="customer = :c",
                ExpressionAttributeValues={":c": {"S": customer}},
            )
            if found["Count"] != 25:
                raise RuntimeError(f"query found {found['Count']} of 25 lines")
        for n in range(4):
            if "Item" not in ddb.get_item(
                TableName="orders", Key={"customer": {"S": customer}, "line": {"S": f"{n:04d}"}}
            ):
                raise RuntimeError("a written line is missing")
        key = f"raw/{customer}.bin"
        s3.put_object(Bucket="lake", Key=key, Body=body)
        if s3.get_object(Bucket="lake", Key=key)["Body"].read() != body:
            raise RuntimeError("an object came back different")
        sent += REQUESTS_PER_BATCH
    return sent


def _round(clients: dict[str, Any], pid: int, round_no: int) -> tuple[float, float]:
    """(requests/s, server CPU ms per request) of one round."""
    cpu0, t0 = process_cpu_s(pid), time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        sent = sum(pool.map(lambda w: _work(clients, w, round_no), range(CLIENT_THREADS)))
    wall = time.perf_counter() - t0
    return sent / wall, (process_cpu_s(pid) - cpu0) / sent * 1e3


def main() -> dict[str, float]:
    servers = ("werkzeug", "waitress")
    procs = {name: _start(name) for name in servers}
    try:
        clients = {name: _clients(url) for name, (_proc, url) in procs.items()}
        for name in servers:
            _set_up(clients[name])
            _round(clients[name], procs[name][0].pid, -1)  # warm-up: imports, first connections
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for round_no in range(ROUNDS):
            for name in servers:
                rate, cpu_ms = _round(clients[name], procs[name][0].pid, round_no)
                rates[name].append(rate)
                cpu[name].append(cpu_ms)
    finally:
        for proc, _url in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
    result = {f"{name}_requests_per_s": statistics.median(rates[name]) for name in servers}
    result |= {f"{name}_server_cpu_ms_per_request": statistics.median(cpu[name]) for name in servers}
    for name in servers:
        print(
            f"  {name:<9}: {result[f'{name}_requests_per_s']:8.1f} requests/s, "
            f"server CPU {result[f'{name}_server_cpu_ms_per_request']:.2f} ms a request "
            f"(rounds: {', '.join(f'{r:.0f}' for r in rates[name])} requests/s)"
        )
    for figure, key, unit, goal, higher in (
        ("emulator requests/s, waitress vs werkzeug", "requests_per_s", "requests/s", "ratio > 1", True),
        (
            "emulator server CPU per request (ms), waitress vs werkzeug",
            "server_cpu_ms_per_request",
            "ms",
            "ratio < 1",
            False,
        ),
    ):
        _report.figure(
            figure,
            result[f"waitress_{key}"],
            unit=unit,
            baseline=result[f"werkzeug_{key}"],
            baseline_name="moto's werkzeug server",
            goal=goal,
            higher_is_better=higher,
        )
    return result


if __name__ == "__main__":
    main()
