"""What every Lambda handler here needs of AWS: cached boto3 clients, and a guard for the local emulator's endpoint.

Stdlib + boto3 only (shipped inside each function's zip). boto3 honours ``AWS_ENDPOINT_URL``; locally that is the
emulator, and only a loopback address is accepted, so a leftover setting can never send a handler's calls elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlparse


def check_endpoint() -> None:
    """Refuse a non-loopback ``AWS_ENDPOINT_URL`` or per-service ``AWS_ENDPOINT_URL_<SERVICE>`` (on AWS they are
    unset; locally they are the emulator's processes)."""
    for name, url in sorted(os.environ.items()):
        if not name.startswith("AWS_ENDPOINT_URL") or not url:
            continue
        host = urlparse(url).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise RuntimeError(f"{name}={url} is not a loopback address; unset it to use the real services")


def client(service: str, cache: dict[str, Any]) -> Any:
    """A boto3 client for ``service``, kept in ``cache`` (a handler module's own, so a warm container reuses it)."""
    if service not in cache:
        import boto3
        from botocore.config import Config

        check_endpoint()
        cache[service] = boto3.client(service, config=Config(retries={"max_attempts": 3, "mode": "standard"}))
    return cache[service]
