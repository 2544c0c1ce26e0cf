"""``make bench``: run every ``bench/bench_*.py`` (or ``--only name``), print their figures and write them, with their
same-run baselines, ratios, scale, date and core count, to ``build/bench.json`` (``bench/_report.py``)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
from datetime import UTC, datetime

import bench
from bench import _report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names, e.g. orders,warehouse")
    parser.add_argument("--scale", default=None, help="override each benchmark's default scale")
    args = parser.parse_args()
    names = sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - set(names)
        if unknown:
            sys.exit(f"unknown benchmark(s) {sorted(unknown)}; available: {names}")
        names = [n for n in names if n in wanted]
    from shoplake import local_services

    was_up = local_services.status().up
    local_services.ensure()
    failed = []
    started = datetime.now(UTC)
    try:
        for name in names:
            print(f"\n=== bench {name} ===", flush=True)
            began = time.perf_counter()
            module = importlib.import_module(f"bench.bench_{name}")
            default_scale = inspect.signature(module.main).parameters.get("scale")
            _report.begin(name, args.scale or (default_scale.default if default_scale is not None else None))
            try:
                _report.returned(name, module.main(**({"scale": args.scale} if args.scale else {})))
            except Exception as exc:  # report and go on with the other benchmarks
                failed.append(name)
                print(f"bench {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            print(f"--- {name}: {time.perf_counter() - began:.1f} s", flush=True)
    finally:
        if not was_up:
            local_services.down()
        path = _report.write(started, failed)
        print(f"\n{_report.table()}\n\nfigures written to {path}", flush=True)
    if failed:
        sys.exit(f"failed benchmarks: {failed}")


if __name__ == "__main__":
    main()
