"""The request recorder of ``bench.profile_dynamodb record``: installed in the recording process and, through
``sitecustomize.py``, in the processes it spawns."""

import threading
import time


def install(target: str):
    """Keep ``(time sent, method, path, headers, body)`` of every botocore request to ``target`` (a URL) from now
    on; returns the list they are appended to and a function that stops recording."""
    import botocore.endpoint

    kept: list = []
    lock = threading.Lock()
    send = botocore.endpoint.Endpoint._send

    def recorded(self, request):
        if request.url.startswith(target):
            path = request.url[len(target) :] or "/"
            body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
            headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            with lock:
                kept.append((time.time(), request.method, path, headers, body))
        return send(self, request)

    botocore.endpoint.Endpoint._send = recorded

    def stop() -> None:
        botocore.endpoint.Endpoint._send = send

    return kept, stop
