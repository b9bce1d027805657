"""The gateway a run aims at, as types, and where load may go: loopback only.

A profile's `target:` is one of four kinds, each its own type: the gateway stub (`StubTarget`, run by
the harness in a child process or containers), a gateway already running at a loopback URL
(`UrlTarget`), the real OpenClaw gateway from npm (`OpenClawTarget`, started by the harness), or the
stub as the simulator models it (`SimTarget`, in virtual time, no sockets). A run
picks the backend for its target in one place (`harness.backends.open_backend`). A URL outside
127.0.0.0/8, ::1 or localhost is refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from gateway_stub.config import StubConfig
from harness.errors import BadInput
from openclaw_wire.constants import handshake_timeout_ms_for_protocol, handshake_timeout_ms_for_version

StubBackendName = Literal["embedded", "docker"]
STUB_BACKENDS: tuple[StubBackendName, ...] = ("embedded", "docker")


def require_loopback_url(url: str, field: str = "target.url") -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadInput(f"{field}: expected a ws:// URL with a host and a port, got {url[:80]!r} ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        raise BadInput(f"{field}: expected a ws:// URL, got {url[:80]!r}")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BadInput(f"{field}: refused {host[:80]!r}: load goes to loopback only (127.0.0.0/8, ::1, localhost)")
    if port == 0:
        raise BadInput(f"{field}: expected a port from 1 to 65535, got 0")
    return url


@dataclass(frozen=True)
class StubTarget:
    """The gateway stub, as the profile configures it."""

    kind: ClassVar[str] = "stub"
    config: StubConfig  # the options as the stub will run them (port 0: a free one)
    args: tuple[str, ...]  # the same options, for `python -m gateway_stub`
    protocol: int  # the accounts' protocol
    device_signed: bool  # one Ed25519 device key signs every fake client's connect
    backend: StubBackendName = "embedded"  # where it runs: a child process, or Docker containers

    @property
    def effective_handshake_timeout_ms(self) -> int:
        return self.config.effective_handshake_timeout_ms


@dataclass(frozen=True)
class UrlTarget:
    """A gateway already running at a loopback URL, with its token."""

    kind: ClassVar[str] = "url"
    url: str
    token: str
    protocol: int
    device_signed: bool

    @property
    def effective_handshake_timeout_ms(self) -> int:
        # The gateway's own is unknown: a client assumes its protocol generation's.
        return handshake_timeout_ms_for_protocol(self.protocol)


@dataclass(frozen=True)
class OpenClawTarget:
    """The real gateway from npm: `openclaw@<version>`, with the environment it is started with."""

    kind: ClassVar[str] = "openclaw"
    version: str
    handshake_timeout_ms: int | None  # OPENCLAW_HANDSHAKE_TIMEOUT_MS; None keeps the version's default
    max_preauth_per_ip: int | None  # OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP
    cpu_quota: float | None  # a fraction of one core for the gateway's processes; None: unthrottled
    protocol: int
    device_signed: bool
    cpu_quota_from: Literal["ready", "launch"] = "ready"  # when the quota starts holding
    # In-process accounts: this many Matrix accounts inside the gateway, on a local Synapse (0: none; the
    # accounts are then the harness's fake clients). `exec_approvals` is their `execApprovals.enabled`, as the arm
    # sets it (the shipped config: on; the workaround arm `approvals-off`: off).
    matrix_accounts: int = 0
    exec_approvals: bool = True
    # In-process only: every answer of the homeserver reaches the gateway this much later (a Toxiproxy latency toxic
    # between them), as from a homeserver across the internet rather than on loopback. 0: none.
    homeserver_latency_ms: int = 0

    @property
    def inprocess(self) -> bool:
        return self.matrix_accounts > 0

    @property
    def effective_handshake_timeout_ms(self) -> int:
        return self.handshake_timeout_ms or handshake_timeout_ms_for_version(self.version)


@dataclass(frozen=True)
class SimTarget:
    """The gateway stub as the simulator models it (`harness.sim`): the stub's options, in virtual time."""

    kind: ClassVar[str] = "sim"
    stub: StubTarget  # the stub the model follows, configured as the profile says

    @property
    def protocol(self) -> int:
        return self.stub.protocol

    @property
    def device_signed(self) -> bool:
        return self.stub.device_signed

    @property
    def effective_handshake_timeout_ms(self) -> int:
        return self.stub.effective_handshake_timeout_ms


Target = StubTarget | UrlTarget | OpenClawTarget | SimTarget
