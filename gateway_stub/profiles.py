"""Protocol profiles: the two OpenClaw gateway generations the stub can imitate.

`april-2026` is the gateway that stormed (openclaw 2026.4.20-4.29, protocol 3); `current` is
openclaw 2026.9.6 (protocol 4). Everything that differs between them on the wire lives here, as
data, so the protocol and server modules never branch on a version string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

ApprovalVisibility = Literal["approvals-scoped", "deliverable-and-visible"]
SystemEventDedupe = Literal["consecutive", "keyed"]


@dataclass(frozen=True)
class ProtocolProfile:
    name: str
    protocol: int
    # Lowest protocol a node (`role:"node"`/`mode:"node"`) or `mode:"probe"` client may speak.
    min_node_or_probe_protocol: int
    handshake_timeout_ms: int
    server_version: str
    challenge_capabilities: tuple[str, ...] | None
    # `current` writes `phase=` on its handshake log lines; April does not.
    log_phase: bool
    approval_visibility: ApprovalVisibility
    system_event_dedupe: SystemEventDedupe
    # `connect` params keys this generation's closed schema does not know.
    unknown_connect_keys: frozenset[str]
    unknown_auth_keys: frozenset[str]
    hello_fixture: str

    def hello_template(self) -> dict[str, Any]:
        return _load_fixture(self.hello_fixture)


@cache
def _load_fixture(name: str) -> dict[str, Any]:
    text = resources.files("gateway_stub.fixtures").joinpath(name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


APRIL_2026 = ProtocolProfile(
    name="april-2026",
    protocol=3,
    min_node_or_probe_protocol=3,
    # 2026.4.20/4.24 use 10 000 ms; 4.29 raised it to 15 000 ms (src/gateway/handshake-timeouts.ts).
    handshake_timeout_ms=10_000,
    server_version="2026.4.24",
    challenge_capabilities=None,
    log_phase=False,
    approval_visibility="approvals-scoped",
    system_event_dedupe="consecutive",
    unknown_connect_keys=frozenset({"modelCatalog"}),
    unknown_auth_keys=frozenset({"approvalRuntimeToken", "agentRuntimeIdentityToken"}),
    hello_fixture="hello-april-2026.json",
)

CURRENT = ProtocolProfile(
    name="current",
    protocol=4,
    min_node_or_probe_protocol=3,
    # DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS, packages/gateway-client/src/timeouts.ts (2026.9.6).
    handshake_timeout_ms=15_000,
    server_version="2026.9.6",
    challenge_capabilities=("model-catalog-snapshot",),
    log_phase=True,
    approval_visibility="deliverable-and-visible",
    system_event_dedupe="keyed",
    unknown_connect_keys=frozenset(),
    unknown_auth_keys=frozenset(),
    hello_fixture="hello-current.json",
)

PROFILES: dict[str, ProtocolProfile] = {p.name: p for p in (APRIL_2026, CURRENT)}
DEFAULT_PROFILE = APRIL_2026.name
