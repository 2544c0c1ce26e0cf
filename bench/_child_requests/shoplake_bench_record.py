"""One recorded request, as ``bench.profile_dynamodb record`` keeps it: shared by the recording process and, through
``sitecustomize.py``, by the processes it spawns."""

import time


def as_kept(request, target: str):
    """``(time sent, method, path, headers, body)`` of a botocore request to ``target`` (a URL), else None."""
    if not request.url.startswith(target):
        return None
    path = request.url[len(target) :] or "/"
    body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
    return time.time(), request.method, path, headers, body
