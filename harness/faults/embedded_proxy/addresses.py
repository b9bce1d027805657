"""The address rules: host:port parsed as Go's net package does, and every address held to loopback.

Toxiproxy binds and dials whatever it is given; this project sends load to loopback only, so a listen
or upstream address that is not 127.0.0.0/8, ::1 or localhost is refused with a 400 that says so, and
a proxy created without `listen` binds 127.0.0.1:0 rather than every interface. A port is ASCII digits (Python's
`int()` would also read `１２３`, and raise on `²`), and an IPv6 zone (`::1%lo`) is refused: a bind to an unknown
zone fails in ways that are not the bind errors the API reports. Pure functions: the API validates with them,
the listeners and the dialer resolve with them.
"""

from __future__ import annotations

import ipaddress
import re

from harness.faults.embedded_proxy.errors import ApiError

_PORT = re.compile(r"0*([0-9]{1,5})")  # leading zeros are read as Go reads them: "00080" is 80
LOOPBACK_RULE = "the embedded proxy listens on and connects to loopback addresses only (127.0.0.0/8, ::1, localhost)"


def split_host_port(address: str) -> tuple[str, str]:
    """Go's net.SplitHostPort: "host:port", "[v6]:port"."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ValueError(f"address {address}: missing ']' in address")
        host, rest = address[1:end], address[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"address {address}: missing port in address")
        return host, rest[1:]
    colon = address.rfind(":")
    if colon < 0:
        raise ValueError(f"address {address}: missing port in address")
    host, port = address[:colon], address[colon + 1:]
    if ":" in host:
        raise ValueError(f"address {address}: too many colons in address")
    return host, port


def loopback_ip(host: str) -> str | None:
    """The loopback IP a host stands for ("localhost" -> 127.0.0.1), or None if it is not loopback."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    if "%" in host:
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def loopback_address(address: str, what: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """(ip, port) of a loopback host:port, or an ApiError 400 that says why not."""
    try:
        host, port_text = split_host_port(address)
    except ValueError as exc:
        raise ApiError(f"invalid {what} address {address!r}: {exc}", 400) from exc
    digits = _PORT.fullmatch(port_text)
    port = int(digits.group(1)) if digits else -1
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ApiError(f"invalid {what} address {address!r}: bad port {port_text!r}", 400)
    ip = loopback_ip(host)
    if ip is None:
        shown = host or "every interface"
        raise ApiError(f"{what} address {address!r} is not loopback ({shown}): {LOOPBACK_RULE}", 400)
    return ip, port


def check_addresses(listen: str, upstream: str) -> None:
    loopback_address(listen, "listen", allow_port_zero=True)
    loopback_address(upstream, "upstream", allow_port_zero=False)
