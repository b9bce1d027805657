"""Where load may go: loopback only. A target outside 127.0.0.0/8 or ::1 is refused."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from harness.errors import BadInput


def require_loopback_url(url: str, field: str = "target.url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise BadInput(f"{field}: expected a ws:// URL, got {url!r}")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BadInput(f"{field}: refused {host!r}: load goes to loopback only (127.0.0.0/8, ::1, localhost)")
    return url
