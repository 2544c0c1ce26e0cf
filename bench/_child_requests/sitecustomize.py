"""Loaded at start-up by the Python processes the bench's order pipeline spawns (its folder is put on PYTHONPATH
for the block, see ``bench.bench_orders._counting_requests``): counts the process's AWS requests by
``service:Operation`` and, at exit, writes them and the process's CPU seconds to ``<SHOPLAKE_BENCH_REQUESTS_DIR>/<pid>.json``.
The poller processes of the local event-source mapping make most of the pipeline's requests; this is how the bench
still counts them. With ``SHOPLAKE_BENCH_RECORD_DIR`` and ``SHOPLAKE_BENCH_RECORD_URL`` set, it also keeps every request
sent to that URL (time sent, method, path, headers, body) and pickles them to ``<SHOPLAKE_BENCH_RECORD_DIR>/<pid>.pickle``
at exit (``bench.profile_dynamodb record``). Nothing happens without those environment variables."""

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
        folder = os.environ["SHOPLAKE_BENCH_REQUESTS_DIR"]
        if not os.path.isdir(folder):  # a process outliving the block (multiprocessing's manager): not a poller
            return
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as out:
            json.dump({"requests": dict(_counts), "cpu_s": time.process_time()}, out)


if os.environ.get("SHOPLAKE_BENCH_RECORD_DIR") and os.environ.get("SHOPLAKE_BENCH_RECORD_URL"):
    import atexit
    import pickle

    from shoplake_bench_record import install

    _kept, _ = install(os.environ["SHOPLAKE_BENCH_RECORD_URL"])

    @atexit.register
    def _write_recorded() -> None:
        folder = os.environ["SHOPLAKE_BENCH_RECORD_DIR"]
        if not _kept or not os.path.isdir(folder):  # nothing sent there, or a process outliving the recording
            return
        with open(os.path.join(folder, f"{os.getpid()}.pickle"), "wb") as out:
            pickle.dump(_kept, out, protocol=pickle.HIGHEST_PROTOCOL)
