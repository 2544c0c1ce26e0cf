"""Loaded at start-up by the Python processes the bench's order pipeline spawns (its folder is put on PYTHONPATH
for the block, see ``bench.bench_orders._counting_requests``): counts the process's AWS requests by
``service:Operation`` and, at exit, writes them and the process's CPU seconds to ``<SHOPLAKE_BENCH_REQUESTS_DIR>/<pid>.json``.
The poller processes of the local event-source mapping make most of the pipeline's requests; this is how the bench
still counts them. Nothing happens without that environment variable."""

import os

if os.environ.get("SHOPLAKE_BENCH_REQUESTS_DIR"):
    import atexit
    import collections
    import json
    import threading
    import time

    import botocore.client

    _counts: collections.Counter = collections.Counter()
    _lock = threading.Lock()
    _original = botocore.client.BaseClient._make_api_call

    def _counted(client, operation, params):
        with _lock:
            _counts[f"{client.meta.service_model.service_name}:{operation}"] += 1
        return _original(client, operation, params)

    botocore.client.BaseClient._make_api_call = _counted

    @atexit.register
    def _write() -> None:
        path = os.path.join(os.environ["SHOPLAKE_BENCH_REQUESTS_DIR"], f"{os.getpid()}.json")
        with open(path, "w") as out:
            json.dump({"requests": dict(_counts), "cpu_s": time.process_time()}, out)
