"""Entry point of an emulator process local_services starts: moto's WSGI app on a loopback port, served by waitress.

``--name`` says which one it is (``main``, or a dedicated one such as ``dynamodb``: see ``local_services.DEDICATED``);
every process runs the same moto with the same patches, and clients send each one only its own services' requests.

Why waitress and not ``moto_server`` (werkzeug's development server): werkzeug answers every request with
``Connection: close`` and a new thread, so every botocore call paid a TCP connect and a thread start on top of moto's
own work. Waitress keeps connections alive and serves them from a fixed pool of threads: the same moto app, the same
answers, less work per request (``bench/bench_emulator.py`` measures both servers in one run). ``--server werkzeug``
still serves it the old way.

What differs from ``moto_server``:

- headers whose names contain ``_`` are dropped, as werkzeug does by default and waitress always does; moto's own
  server keeps them for S3 user metadata (``x-amz-meta-my_key``). shoplake sends no such header.
- the pool has :data:`THREADS` threads: a request that long-polls (SQS ``WaitTimeSeconds``) holds one for its wait, so
  the pool is far larger than the cores; idle threads cost nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from shoplake import _gc

# a long poll (SQS receive, up to 20 s) holds a thread; notebooks, pollers and Lambda workers may each hold one
THREADS = 32
# every client process keeps its pool of connections open; waitress stops accepting beyond this many channels
CONNECTION_LIMIT = 1000
# request and response bodies up to this size stay in memory (waitress spools larger ones to a temporary file, which
# the lake's parquet objects and Firehose's batches would otherwise pay for)
BUFFER_IN_MEMORY = 64 * 1024 * 1024


def app() -> Any:
    """moto's WSGI app with shoplake's patches: the one every service of this process answers from."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from shoplake import _moto_patches

    _moto_patches.apply()
    main_app = DomainDispatcherApplication(create_backend_app)
    main_app.debug = True  # as moto_server: an unexpected error answers with its traceback, which the client logs
    return main_app


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve :func:`app` on ``host:port`` until SIGTERM/SIGINT (both exit cleanly)."""
    import waitress

    # moto builds some URLs it hands out (SQS queue URLs, Lambda's callbacks) from the port it is served on
    os.environ.setdefault("MOTO_PORT", str(port))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    # waitress warns on every backlog of queued requests; the pipeline's bursts are expected, not news
    logging.getLogger("waitress").setLevel(logging.ERROR)
    served = app()
    _gc.tune_process()  # many objects per request, few cycles: collect less often (shoplake._gc)
    waitress.serve(
        served,
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=CONNECTION_LIMIT,
        inbuf_overflow=BUFFER_IN_MEMORY,
        outbuf_overflow=BUFFER_IN_MEMORY,
        asyncore_use_poll=True,  # select() cannot watch file descriptors above 1024
        ident="shoplake-moto",
    )


def serve_werkzeug(port: int, host: str = "127.0.0.1") -> None:
    """moto's own server (werkzeug's development server, a connection and a thread per request), with the same
    patches: the baseline ``bench/bench_emulator.py`` measures waitress against, and the way to keep S3 metadata
    headers with ``_`` in their names."""
    from moto.server import main as moto_main

    from shoplake import _moto_patches

    _moto_patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_main(["-H", host, "-p", str(port)])


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shoplake._moto_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="main")
    parser.add_argument("--server", choices=("waitress", "werkzeug"), default="waitress")
    args = parser.parse_args(argv)
    (serve if args.server == "waitress" else serve_werkzeug)(args.port)


if __name__ == "__main__":
    run()
