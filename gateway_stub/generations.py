"""Gateway generations: the two OpenClaw gateway versions the stub can imitate, as data.

`april-2026` is the gateway that stormed (openclaw 2026.4.20-4.29, protocol 3); `current` is
openclaw 2026.9.6 (protocol 4). Everything that differs between them on the wire lives here, so the
protocol, schema, handshake and server modules never branch on a version string. The user picks one
with `--profile` (`StubConfig.profile`); inside the code it is a `Generation`, because in this project
a "profile" is a scenario YAML file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any, Literal

from openclaw_wire.constants import (
    APRIL_HANDSHAKE_TIMEOUT_MS,
    DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS,
    PROTOCOL_APRIL,
    PROTOCOL_CURRENT,
)

# Idle latencies measured on the real gateways, unthrottled, after 5 warm-up handshakes, 2026-11-30
# (benchmarks/openclaw_calibration.py --quotas none --concurrency 1 --rounds 12): p50 of TCP connect to challenge and
# of connect to hello-ok, rounded to the ms (4.24: 3.2 and 2.4; 4.29: 3.6 and 2.3; 9.6: 3.4 and 7.4). The stub adds
# about 1.5 ms of its own to the first and 0.3 ms to the second (its hello p50 7.7 ms against 4.29's 6.5 ms).
CHALLENGE_424, HELLO_424 = 3.0, 2.0
CHALLENGE_429, HELLO_429 = 4.0, 2.0
CHALLENGE_96, HELLO_96 = 3.0, 7.0

ApprovalVisibility = Literal["approvals-scoped", "deliverable-and-visible"]


@dataclass(frozen=True)
class Generation:
    name: str
    protocol: int
    # Lowest protocol a node (`role:"node"`/`mode:"node"`) or `mode:"probe"` client may speak.
    min_node_or_probe_protocol: int
    handshake_timeout_ms: int
    server_version: str
    challenge_capabilities: tuple[str, ...] | None
    # `current` writes `phase=` on its handshake log lines; April does not.
    log_phase: bool
    # `current` (--verbose) appends the record's fields as key=value to `closed before connect`.
    console_appends_fields: bool
    # Frames sent while `connect` is processed: `current` queues up to 15; April answers the first one
    # "invalid handshake: first request must be connect" and closes 1008 (recorded on 4.24 and 4.29).
    queues_handshake_frames: bool
    # April's protocol-mismatch details carry only `expectedProtocol`.
    full_protocol_mismatch_details: bool
    # April reports a missing scope as a bare INVALID_REQUEST "missing scope: X"; `current` as FORBIDDEN
    # with MISSING_SCOPE details.
    scope_errors_forbidden: bool
    # `cli`/`cli` on loopback keeps its scopes in `current` (shouldPreserveLocalCliSharedAuthScopes); April
    # clears them.
    preserves_local_cli_scopes: bool
    # The n-th loopback auth failure is answered after min(250*2^(n-1), 5000) ms in `current`; April
    # answered a wrong token in about 3 ms.
    loopback_auth_failure_delay: bool
    # Idle latencies (an unloaded gateway, one handshake at a time; benchmarks/openclaw_calibration.py, c = 1):
    # TCP connect to connect.challenge, and connect to hello-ok.
    challenge_latency_ms: float
    hello_latency_ms: float
    # A `health` event follows hello after this long (recorded: 4 ms on 4.24, 378 ms on 9.6).
    health_event_after_hello_ms: int
    # April sends that `health` event to every connected client (hellos close together share one), and a
    # `presence` event to the others when a client leaves (recorded on 4.24 and 4.29); 9.6 sends the new client its
    # own `health` only. During a storm each hello thus costs April one frame per connected client.
    health_event_to_every_client: bool
    presence_events: bool
    # A paired device (any shape but the local `gateway-client`/`backend`) asking for more scopes than it was
    # paired with is refused `pairing required` (NOT_PAIRED, reason scope-upgrade, close 1008) on April
    # (recorded on 4.29 for `cli` and `node-host`); 9.6 grants it on loopback.
    refuses_scope_upgrade: bool
    # Who receives exec-approval events and sees records (reference §10.4): April pushes to every connection
    # with operator.approvals/admin, requester included; `current` targets deliverable and visible ones.
    approval_visibility: ApprovalVisibility
    # `current`'s approval payloads carry the 9.6 fields (§10.2, §10.3, §10.5): `approvalKind`, `scope`,
    # `commandAnalysis`, `sessionId`, `runId`, `toolCallId` and the cron fields in `requested`, `deliveryRoute` in
    # the "accepted" res, `terminalReason` from waitDecision.
    approval_extended_payloads: bool
    # `requireDeliveryRoute:false` keeps a request with no route pending (9.6; §10.2 step 4).
    honors_require_delivery_route: bool
    # Params keys the closed exec.approval.request / exec.approval.resolve schemas of this generation do not know.
    unknown_approval_request_keys: frozenset[str]
    unknown_approval_resolve_keys: frozenset[str]
    # exec.approval.resolve refusing allow-always where it is not allowed (observed: 4.24/4.29 word it after the
    # policy, 9.6 after the command).
    allow_always_unavailable_message: str
    # Expiry publishes `exec.approval.resolved` with decision "deny" and resolvedBy null (observed on 2026.9.6);
    # April broadcasts nothing on expiry (observed on 2026.4.24 and 4.29).
    resolved_event_on_expiry: bool
    # An allow-always grant is persisted with `source:"allow-always"` (9.6 schema; openclaw#69482, §11).
    allow_always_grants_carry_source: bool
    # `connect` params keys this generation's closed schema does not know.
    unknown_connect_keys: frozenset[str]
    unknown_auth_keys: frozenset[str]
    hello_fixture: str
    # The `status` reply recorded from the real gateway (docs/recorded/<version>/health-status-gwclient-read.json).
    status_fixture: str

    def hello_template(self) -> dict[str, Any]:
        return _load_fixture(self.hello_fixture)

    def status_template(self) -> dict[str, Any]:
        return _load_fixture(self.status_fixture)


@cache
def _load_fixture(name: str) -> dict[str, Any]:
    text = resources.files("gateway_stub.fixtures").joinpath(name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


APRIL_2026 = Generation(
    name="april-2026",
    protocol=PROTOCOL_APRIL,
    min_node_or_probe_protocol=3,
    # 2026.4.20/4.24 use 10 000 ms; 4.29 raised it to 15 000 ms (src/gateway/handshake-timeouts.ts).
    handshake_timeout_ms=APRIL_HANDSHAKE_TIMEOUT_MS,
    server_version="2026.4.24",
    challenge_latency_ms=CHALLENGE_424,
    hello_latency_ms=HELLO_424,
    challenge_capabilities=None,
    log_phase=False,
    console_appends_fields=False,
    queues_handshake_frames=False,
    full_protocol_mismatch_details=False,
    scope_errors_forbidden=False,
    preserves_local_cli_scopes=False,
    loopback_auth_failure_delay=False,
    health_event_after_hello_ms=4,
    health_event_to_every_client=True,
    presence_events=True,
    refuses_scope_upgrade=True,
    approval_visibility="approvals-scoped",
    approval_extended_payloads=False,
    honors_require_delivery_route=False,
    unknown_approval_request_keys=frozenset({"runId", "toolCallId"}),
    unknown_approval_resolve_keys=frozenset({"grantExpiresInDays"}),
    allow_always_unavailable_message="allow-always is unavailable because the effective policy requires approval "
                                     "every time",
    resolved_event_on_expiry=False,
    allow_always_grants_carry_source=False,
    unknown_connect_keys=frozenset({"modelCatalog"}),
    unknown_auth_keys=frozenset({"approvalRuntimeToken", "agentRuntimeIdentityToken"}),
    hello_fixture="hello-april-2026.json",
    status_fixture="status-april-2026.json",
)

CURRENT = Generation(
    name="current",
    protocol=PROTOCOL_CURRENT,
    min_node_or_probe_protocol=3,
    handshake_timeout_ms=DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS,
    server_version="2026.9.6",
    challenge_latency_ms=CHALLENGE_96,
    hello_latency_ms=HELLO_96,
    challenge_capabilities=("model-catalog-snapshot",),
    log_phase=True,
    console_appends_fields=True,
    queues_handshake_frames=True,
    full_protocol_mismatch_details=True,
    scope_errors_forbidden=True,
    preserves_local_cli_scopes=True,
    loopback_auth_failure_delay=True,
    health_event_after_hello_ms=378,
    health_event_to_every_client=False,
    presence_events=False,
    refuses_scope_upgrade=False,
    approval_visibility="deliverable-and-visible",
    approval_extended_payloads=True,
    honors_require_delivery_route=True,
    unknown_approval_request_keys=frozenset(),
    unknown_approval_resolve_keys=frozenset(),
    allow_always_unavailable_message="allow-always is unavailable for this command",
    resolved_event_on_expiry=True,
    allow_always_grants_carry_source=True,
    unknown_connect_keys=frozenset(),
    unknown_auth_keys=frozenset(),
    hello_fixture="hello-current.json",
    status_fixture="status-current.json",
)

# 2026.4.29: April's wire with the 15 s pre-auth handshake timeout (DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS = 15e3 in
# its package), so `april-2026` keeps 4.24's 10 s.
APRIL_2026_4_29 = replace(
    APRIL_2026,
    name="april-2026.4.29",
    handshake_timeout_ms=DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS,
    server_version="2026.4.29",
    challenge_latency_ms=CHALLENGE_429,
    hello_latency_ms=HELLO_429,
)

GENERATIONS: dict[str, Generation] = {g.name: g for g in (APRIL_2026, APRIL_2026_4_29, CURRENT)}
DEFAULT_GENERATION = APRIL_2026.name
