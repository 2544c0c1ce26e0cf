"""Where the DynamoDB emulator's CPU goes, per operation: record the order pipeline's DynamoDB requests, then replay
them into moto's own server app in this process (werkzeug's test client: no sockets, one request at a time), timed
and optionally under cProfile — with or without shoplake's moto patches.

    # 1. record (local services up, SHOPLAKE_HOME set): the bench's mix — orders.ingest + reconciliation
    python -m bench.profile_dynamodb record --scale small --out /tmp/ddb.pickle
    # 2. replay: CPU seconds per operation (patched, as the emulator process runs), optionally profiled
    python -m bench.profile_dynamodb replay /tmp/ddb.pickle [--unpatched] [--profile /tmp/ddb.prof]
    # 3. the same answers? replay with every patch and without some (--skip), compare every response (status +
    #    body) byte for byte
    python -m bench.profile_dynamodb compare /tmp/ddb.pickle --skip _patch_dynamodb_projection,...

Not part of ``make bench`` (no ``bench_`` prefix): a measuring tool for emulator patches (shoplake._moto_patches).
"""

from __future__ import annotations

import argparse
import collections
import json
import pickle
import subprocess
import sys
import time
from typing import Any

# responses whose body is the same on every run (table descriptions carry creation times, ARNs with random parts)
COMPARED = {"BatchWriteItem", "BatchGetItem", "Query", "Scan", "GetItem", "PutItem", "UpdateItem", "DeleteItem"}


def record(scale: str, out: str) -> None:
    """Run the bench's pipeline (ingest + reconciliation) on the local services and keep every request sent to the
    DynamoDB emulator: method, path, headers, body — in this process and in the poller processes the mapping spawns
    (``_child_requests/sitecustomize.py``, on PYTHONPATH for the run), in the order they were sent."""
    import glob
    import os

    from bench._child_requests.shoplake_bench_record import install
    from bench._spawned import hooked
    from bench.bench_orders import order_pipeline
    from shoplake import config, datagen, local_services, orders

    local_services.ensure()
    target = config.endpoint_url("dynamodb").rstrip("/")
    with hooked("SHOPLAKE_BENCH_RECORD_DIR", SHOPLAKE_BENCH_RECORD_URL=target) as folder:
        kept, stop = install(target)
        try:
            with order_pipeline("prof"):
                dataset = datagen.load(scale=scale, seed=42)
                began = time.perf_counter()
                orders.ingest(dataset.order_lines, progress=False)
                print(f"ingest {time.perf_counter() - began:.1f} s", file=sys.stderr)
                reconciliation = orders.reconcile(dataset.order_lines)
                assert reconciliation.balanced and reconciliation.exactly_once, reconciliation.as_dict()
        finally:
            stop()
        children = sorted(glob.glob(os.path.join(folder, "*.pickle")))
        for name in children:
            with open(name, "rb") as f:
                kept.extend(pickle.load(f))
    kept.sort(key=lambda request: request[0])  # the order they were sent in, across processes
    requests = [request[1:] for request in kept]
    with open(out, "wb") as f:
        pickle.dump(requests, f, protocol=pickle.HIGHEST_PROTOCOL)
    ops = collections.Counter(_operation(h) for _m, _p, h, _b in requests)
    print(
        f"{len(requests)} requests ({len(children)} other processes) kept in {out}: {dict(ops.most_common())}",
        file=sys.stderr,
    )


def _operation(headers: dict[str, str]) -> str:
    target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
    return target.split(".")[-1]


def _app(patched: bool, skip: tuple[str, ...] = ()) -> Any:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if patched:
        from shoplake import _moto_patches

        for name in skip:  # apply() calls the module's functions by name: these become no-ops
            getattr(_moto_patches, name)  # (a typo fails here)
            setattr(_moto_patches, name, lambda: None)
        _moto_patches.apply()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.test import Client

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True  # as moto.server.main has it
    return Client(app)


def replay(
    path: str, patched: bool, profile: str | None, answers: str | None, repeat_reads: int, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Replay the recorded requests in order; CPU seconds (process time) per operation. ``answers``: write each
    compared response (operation, status, body) there. ``repeat_reads``: replay each read (Query, BatchGetItem,
    Scan) that many times more (not timed; for a profile with more reads in it)."""
    with open(path, "rb") as f:
        requests = pickle.load(f)
    client = _app(patched, skip)
    cpu: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    kept = []
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began = time.process_time()
    for method, url_path, headers, body in requests:
        op = _operation(headers)
        t0 = time.process_time()
        response = client.open(url_path, method=method, headers=headers, data=body)
        data = response.get_data()
        cpu[op] += time.process_time() - t0
        count[op] += 1
        for _ in range(repeat_reads if op in ("Query", "BatchGetItem", "Scan") else 0):
            client.open(url_path, method=method, headers=headers, data=body).get_data()
        if answers is not None and op in COMPARED:
            kept.append((op, response.status_code, data))
    total = time.process_time() - began
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    if answers is not None:
        with open(answers, "wb") as f:
            pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)
    report = {
        "patched": patched,
        "skipped_patches": list(skip),
        "requests": sum(count.values()),
        "cpu_s": round(total, 2),
        "by_operation": {
            op: {"n": count[op], "cpu_s": round(cpu[op], 2), "ms_each": round(1000 * cpu[op] / count[op], 3)}
            for op in sorted(cpu, key=lambda o: -cpu[o])
        },
    }
    print(json.dumps(report, indent=1))
    return report


def compare(path: str, skip: tuple[str, ...]) -> None:
    """Replay with every patch and without those of ``skip`` (or without any patch when ``skip`` is empty: slow, moto's
    own Scan and Query are quadratic), in two processes (moto's code is patched in place), and compare every compared
    response byte for byte."""
    outs = {}
    for mode in ("patched", "unpatched"):
        out = f"{path}.{mode}.answers"
        args = [sys.executable, "-m", "bench.profile_dynamodb", "replay", path, "--answers", out]
        if mode == "unpatched":
            args += ["--skip", ",".join(skip)] if skip else ["--unpatched"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        with open(out, "rb") as f:
            outs[mode] = pickle.load(f)
    patched, unpatched = outs["patched"], outs["unpatched"]
    assert len(patched) == len(unpatched), (len(patched), len(unpatched))
    differ = [i for i, (a, b) in enumerate(zip(patched, unpatched, strict=True)) if a != b]
    ops = collections.Counter(op for op, _s, _b in patched)
    statuses = collections.Counter((op, s) for op, s, _b in patched)
    print(f"{len(patched)} responses compared ({dict(ops)}; statuses {dict(statuses)}): {len(differ)} differ")
    for i in differ[:5]:
        print("patched  ", patched[i][:2], patched[i][2][:300])
        print("unpatched", unpatched[i][:2], unpatched[i][2][:300])
    if differ:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_dynamodb")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("record")
    p.add_argument("--scale", default="small")
    p.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("path")
    p.add_argument("--unpatched", action="store_true")
    p.add_argument("--profile")
    p.add_argument("--answers")
    p.add_argument("--repeat-reads", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated _moto_patches functions not to apply")
    p = sub.add_parser("compare")
    p.add_argument("path")
    p.add_argument("--skip", default="", help="the baseline: every patch but these (default: no patch at all)")
    args = parser.parse_args()
    if args.command == "record":
        record(args.scale, args.out)
    elif args.command == "replay":
        skip = tuple(n for n in args.skip.split(",") if n)
        replay(args.path, not args.unpatched, args.profile, args.answers, args.repeat_reads, skip)
    else:
        compare(args.path, tuple(n for n in args.skip.split(",") if n))


if __name__ == "__main__":
    main()
