"""The gateway's wire protocol with no I/O: frames in, decisions and frames out.

Everything here is a pure function of its arguments (no clock, no sockets), so each rule of the
pre-auth handshake can be tested directly and the server module only wires these to `websockets`.
Facts and exact strings come from ../shared/reference/openclaw-gateway.md, sections 2-6 and 12.5.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_stub.profiles import ProtocolProfile
from openclaw_wire.device_auth import DeviceProofError, verify_device_proof

# src/gateway/server-constants.ts
MAX_PREAUTH_PAYLOAD_BYTES = 65_536
MAX_PAYLOAD_BYTES = 26_214_400
MAX_BUFFERED_BYTES = 52_428_800
# Frames queued while `connect` is processed; the 16th closes the socket.
MAX_PENDING_HANDSHAKE_FRAMES = 15
# DEVICE_SIGNATURE_SKEW_MS, src/gateway/server/ws-connection/connect-device-proof.ts
DEVICE_SIGNATURE_SKEW_MS = 120_000
# WebSocket close reasons are at most 123 bytes (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES = 123

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012

# packages/gateway-protocol/src/client-info.ts
CLIENT_IDS = (
    "webchat-ui", "openclaw-control-ui", "openclaw-browser-copilot", "openclaw-tui", "webchat", "cli",
    "gateway-client", "openclaw-macos", "openclaw-linux", "openclaw-ios", "openclaw-watchos",
    "openclaw-android", "node-host", "openclaw-worker", "test", "fingerprint", "openclaw-probe",
)
CLIENT_MODES = ("webchat", "cli", "ui", "backend", "node", "worker", "probe", "test")
UI_CLIENT_IDS = frozenset({"webchat-ui", "openclaw-control-ui", "openclaw-tui"})
ROLES = ("operator", "node", "worker")
SCOPE_ADMIN = "operator.admin"
SCOPE_READ = "operator.read"
SCOPE_WRITE = "operator.write"
SCOPE_APPROVALS = "operator.approvals"

MSG_TOKEN_MISMATCH = "unauthorized: gateway token mismatch (provide gateway auth token)"
MSG_TOKEN_MISSING = "unauthorized: gateway token missing (provide gateway auth token)"
MSG_DEVICE_REQUIRED = "device identity required"
MSG_CONTROL_UI_DEVICE = "control ui requires device identity (use HTTPS or localhost secure context)"
MSG_FIRST_REQUEST = "invalid handshake: first request must be connect"
REASON_INVALID_FRAME = "invalid request frame"
# Recorded on 4.24, 4.29 and 9.6: the ws library's own 64 KiB limit fires first, with an empty reason.
REASON_PREAUTH_TOO_LARGE = ""
REASON_TOO_MANY_PENDING = "too many pending handshake frames"
REASON_SLOW_CONSUMER = "slow consumer"
REASON_SERVICE_RESTART = "service restart"


@dataclass(frozen=True)
class GatewayError:
    code: str
    message: str
    details: Mapping[str, Any] | None = None
    retryable: bool | None = None
    retry_after_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = dict(self.details)
        if self.retryable is not None:
            out["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            out["retryAfterMs"] = self.retry_after_ms
        return out


def event_frame(event: str, payload: Any, seq: int | None = None) -> str:
    frame: dict[str, Any] = {"type": "event", "event": event, "payload": payload}
    if seq is not None:
        frame["seq"] = seq
    return json.dumps(frame, separators=(",", ":"))


def ok_frame(request_id: str, payload: Any) -> str:
    return json.dumps({"type": "res", "id": request_id, "ok": True, "payload": payload}, separators=(",", ":"))


def error_frame(request_id: str, error: GatewayError) -> str:
    frame = {"type": "res", "id": request_id, "ok": False, "error": error.to_json()}
    return json.dumps(frame, separators=(",", ":"))


def close_reason(text: str) -> str:
    """A close reason cut to the 123 bytes a close frame can carry, on a character boundary."""
    data = text.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", errors="ignore")


def challenge_payload(profile: ProtocolProfile, nonce: str, now_ms: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"nonce": nonce, "ts": now_ms}
    if profile.challenge_capabilities is not None:
        payload["capabilities"] = list(profile.challenge_capabilities)
    return payload


# ---------------------------------------------------------------------------------------------
# Pre-auth frames


@dataclass(frozen=True)
class Request:
    id: str
    method: str
    params: Any


@dataclass(frozen=True)
class CloseWith:
    """The frame is refused: optionally answer with ``reply``, optionally log, then close."""

    code: int
    reason: str
    reply: str | None = None
    log: str | None = None  # "parse/handle error" or "invalid handshake"


def preauth_frame_size(message: str | bytes) -> int:
    return len(message) if isinstance(message, bytes) else len(message.encode("utf-8"))


def parse_request(message: str | bytes) -> Request | CloseWith:
    """Read a frame as a request envelope; say how to close when it is not one.

    Binary frames are read as UTF-8 text, as Node's ``ws`` hands the gateway a Buffer it stringifies.
    """
    try:
        text = message.decode("utf-8") if isinstance(message, bytes) else message
        frame = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return CloseWith(CLOSE_NORMAL, "", log="parse/handle error")
    if not isinstance(frame, dict) or frame.get("type") != "req":
        return CloseWith(CLOSE_POLICY_VIOLATION, REASON_INVALID_FRAME, log="invalid handshake")
    request_id, method = frame.get("id"), frame.get("method")
    if not isinstance(request_id, str) or not request_id or not isinstance(method, str) or not method:
        return CloseWith(CLOSE_POLICY_VIOLATION, REASON_INVALID_FRAME, log="invalid handshake")
    return Request(request_id, method, frame.get("params"))


def first_request_not_connect(request: Request) -> CloseWith:
    error = GatewayError("INVALID_REQUEST", MSG_FIRST_REQUEST)
    return CloseWith(CLOSE_POLICY_VIOLATION, MSG_FIRST_REQUEST, reply=error_frame(request.id, error))


# ---------------------------------------------------------------------------------------------
# The closed ConnectParamsSchema (packages/gateway-protocol/src/schema/frames.ts), with the real
# gateway's error messages (AJV's, except unknown keys: "unexpected property '<name>'").
# A checker returns None when the value is fine, else (path, message).

Problem = tuple[str, str]
Checker = Callable[[Any, str], Problem | None]


def _string(min_length: int = 0, max_length: int | None = None) -> Checker:
    def check(value: Any, path: str) -> Problem | None:
        if not isinstance(value, str):
            return path, "must be string"
        if len(value) < min_length:
            return path, f"must NOT have fewer than {min_length} characters"
        if max_length is not None and len(value) > max_length:
            return path, f"must NOT have more than {max_length} characters"
        return None

    return check


def _integer(minimum: int, maximum: int | None = None) -> Checker:
    def check(value: Any, path: str) -> Problem | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return path, "must be integer"
        if value < minimum:
            return path, f"must be >= {minimum}"
        if maximum is not None and value > maximum:
            return path, f"must be <= {maximum}"
        return None

    return check


def _boolean(value: Any, path: str) -> Problem | None:
    return None if isinstance(value, bool) else (path, "must be boolean")


def _number(value: Any, path: str) -> Problem | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else (path, "must be number")


def _null(value: Any, path: str) -> Problem | None:
    return None if value is None else (path, "must be null")


def _any_of(*options: Checker) -> Checker:
    """TypeBox's Union: AJV reports a value matching none of the branches as failing `anyOf`."""
    def check(value: Any, path: str) -> Problem | None:
        if any(option(value, path) is None for option in options):
            return None
        return path, "must match a schema in anyOf"

    return check


def _record_of(item: Checker) -> Checker:
    """TypeBox's Record(NonEmptyString, item): an object whose values all fit `item`."""
    def check(value: Any, path: str) -> Problem | None:
        if not isinstance(value, dict):
            return path, "must be object"
        for name, element in value.items():
            problem = item(element, f"{path}/{name}")
            if problem:
                return problem
        return None

    return check


def _enum(allowed: tuple[str, ...]) -> Checker:
    def check(value: Any, path: str) -> Problem | None:
        return None if value in allowed else (path, "must be equal to one of the allowed values")

    return check


def _array_of(item: Checker) -> Checker:
    def check(value: Any, path: str) -> Problem | None:
        if not isinstance(value, list):
            return path, "must be array"
        for index, element in enumerate(value):
            problem = item(element, f"{path}/{index}")
            if problem:
                return problem
        return None

    return check


def _any(value: Any, path: str) -> Problem | None:
    return None


def _plain_object(value: Any, path: str) -> Problem | None:
    return None if isinstance(value, dict) else (path, "must be object")


def _object(properties: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    def check(value: Any, path: str) -> Problem | None:
        if not isinstance(value, dict):
            return path, "must be object"
        for name in required:
            if name not in value:
                return path, f"must have required property '{name}'"
        for name in value:
            if name not in properties:
                # The real gateway's wording (observed on 2026.9.6), not AJV's "must NOT have additional properties".
                return path, f"unexpected property '{name}'"
        for name, checker in properties.items():
            if name in value:
                problem = checker(value[name], f"{path}/{name}")
                if problem:
                    return problem
        return None

    return check


_NON_EMPTY = _string(min_length=1)
_CLIENT = _object(
    {
        "id": _enum(CLIENT_IDS),
        "displayName": _string(),
        "version": _NON_EMPTY,
        "platform": _NON_EMPTY,
        "deviceFamily": _string(),
        "modelIdentifier": _string(),
        "mode": _enum(CLIENT_MODES),
        "instanceId": _string(),
        "buildId": _string(max_length=96),
        "timeZone": _string(max_length=64),
    },
    required=("id", "version", "platform", "mode"),
)
_DEVICE = _object(
    {
        "id": _NON_EMPTY,
        "publicKey": _NON_EMPTY,
        "signature": _NON_EMPTY,
        "signedAt": _integer(0),
        "nonce": _NON_EMPTY,
    },
    required=("id", "publicKey", "signature", "signedAt", "nonce"),
)
_AUTH_KEYS = (
    "token", "password", "bootstrapToken", "deviceToken", "approvalRuntimeToken", "agentRuntimeIdentityToken",
)
_CONNECT_PROPERTIES: dict[str, Checker] = {
    "minProtocol": _integer(1),
    "maxProtocol": _integer(1),
    "client": _CLIENT,
    "caps": _array_of(_string()),
    "commands": _array_of(_string()),
    "permissions": _plain_object,
    "pathEnv": _string(),
    "role": _string(),
    "scopes": _array_of(_string()),
    "device": _DEVICE,
    "auth": _any,  # replaced per profile below: its closed key set differs by version
    "locale": _string(),
    "userAgent": _string(),
    "modelCatalog": _any,
    "computerUse": _any,
    "workerRuns": _any,
}


def _connect_schema(profile: ProtocolProfile) -> Checker:
    auth = _object({k: _string() for k in _AUTH_KEYS if k not in profile.unknown_auth_keys})
    properties = {k: v for k, v in _CONNECT_PROPERTIES.items() if k not in profile.unknown_connect_keys}
    properties["auth"] = auth
    return _object(properties, required=("minProtocol", "maxProtocol", "client"))


def connect_params_problem(params: Any, profile: ProtocolProfile) -> str | None:
    """The AJV-style message for invalid connect params, or None when they fit the closed schema."""
    problem = _connect_schema(profile)(params, "")
    if problem is None:
        return None
    path, message = problem
    return f"invalid connect params: at {path or 'root'}: {message}"


# ---------------------------------------------------------------------------------------------
# Params of the exec-approval methods (packages/gateway-protocol/src/schema/exec-approvals.ts, reference §10).
# Closed like the connect schema; each generation drops the keys it does not know (see profiles.py).

_STRING_OR_NULL = _any_of(_string(), _null)
_EXEC_APPROVAL_REQUEST_PROPERTIES: dict[str, Checker] = {
    "id": _string(min_length=1, max_length=128),
    "command": _NON_EMPTY,
    "commandArgv": _array_of(_string()),
    "systemRunPlan": _plain_object,
    "env": _record_of(_string()),
    "cwd": _STRING_OR_NULL,
    "nodeId": _any_of(_NON_EMPTY, _null),
    "host": _STRING_OR_NULL,
    "security": _STRING_OR_NULL,
    "ask": _STRING_OR_NULL,
    "warningText": _STRING_OR_NULL,
    "scope": _any,
    "unavailableDecisions": _array_of(_enum(("allow-always",))),
    "commandSpans": _array_of(_object({"startIndex": _integer(0), "endIndex": _integer(0)},
                                      required=("startIndex", "endIndex"))),
    "agentId": _STRING_OR_NULL,
    "resolvedPath": _STRING_OR_NULL,
    "sessionKey": _STRING_OR_NULL,
    "sessionId": _STRING_OR_NULL,
    "runId": _STRING_OR_NULL,
    "toolCallId": _STRING_OR_NULL,
    "turnSourceChannel": _STRING_OR_NULL,
    "turnSourceTo": _STRING_OR_NULL,
    "turnSourceAccountId": _STRING_OR_NULL,
    "turnSourceThreadId": _any_of(_string(), _number, _null),
    "approvalReviewerDeviceIds": _array_of(_string()),
    "requireDeliveryRoute": _boolean,
    "suppressDelivery": _boolean,
    "deliverToApprovalClientsOnly": _boolean,
    "timeoutMs": _integer(1),
    "twoPhase": _boolean,
}
_EXEC_APPROVAL_RESOLVE_PROPERTIES: dict[str, Checker] = {
    "id": _NON_EMPTY,
    "decision": _NON_EMPTY,
    "reviewer": _plain_object,
    "grantExpiresInDays": _integer(1, 3650),
}
_EXEC_APPROVAL_GET = _object({"id": _NON_EMPTY}, required=("id",))
_ALLOWLIST_ENTRY = _object(
    {
        "id": _NON_EMPTY,
        "pattern": _string(),
        "source": _enum(("allow-always",)),  # openclaw#69482: what an allow-always grant writes
        "commandText": _string(),
        "argPattern": _string(),
        "lastUsedAt": _integer(0),
        "lastUsedCommand": _string(),
        "lastResolvedPath": _string(),
    },
    required=("pattern",),
)
def _version_1(value: Any, path: str) -> Problem | None:
    ok = value == 1 and not isinstance(value, bool)
    return None if ok else (path, "must be equal to constant")


_EXEC_APPROVALS_POLICY: dict[str, Checker] = {
    "security": _string(), "ask": _string(), "askFallback": _string(), "autoAllowSkills": _boolean,
}
_EXEC_APPROVALS_FILE = _object(
    {
        "version": _version_1,
        "socket": _object({"path": _string(), "token": _string()}),
        "defaults": _object(_EXEC_APPROVALS_POLICY),
        "agents": _record_of(_object({**_EXEC_APPROVALS_POLICY, "allowlist": _array_of(_ALLOWLIST_ENTRY)})),
    },
    required=("version",),
)
_EXEC_APPROVALS_SET = _object({"file": _EXEC_APPROVALS_FILE, "baseHash": _NON_EMPTY}, required=("file",))


def _invalid_params(method: str, problem: Problem | None) -> GatewayError | None:
    if problem is None:
        return None
    path, message = problem
    return GatewayError("INVALID_REQUEST", f"invalid {method} params: at {path or 'root'}: {message}")


def exec_approval_request_problem(params: Any, profile: ProtocolProfile) -> GatewayError | None:
    properties = {k: v for k, v in _EXEC_APPROVAL_REQUEST_PROPERTIES.items()
                  if k not in profile.unknown_approval_request_keys}
    return _invalid_params("exec.approval.request", _object(properties)(params, ""))


def exec_approval_resolve_problem(params: Any, profile: ProtocolProfile) -> GatewayError | None:
    properties = {k: v for k, v in _EXEC_APPROVAL_RESOLVE_PROPERTIES.items()
                  if k not in profile.unknown_approval_resolve_keys}
    return _invalid_params("exec.approval.resolve", _object(properties, required=("id", "decision"))(params, ""))


def exec_approval_get_problem(params: Any) -> GatewayError | None:
    return _invalid_params("exec.approval.get", _EXEC_APPROVAL_GET(params, ""))


def exec_approvals_set_problem(params: Any) -> GatewayError | None:
    return _invalid_params("exec.approvals.set", _EXEC_APPROVALS_SET(params, ""))


# ---------------------------------------------------------------------------------------------
# Deciding a connect


@dataclass(frozen=True)
class ConnectContext:
    profile: ProtocolProfile
    auth_mode: str  # "token" | "none"
    shared_secret: str | None
    peer_is_loopback: bool
    has_origin: bool
    has_forwarded_headers: bool
    challenge_nonce: str
    now_ms: int
    issued_device_tokens: Mapping[str, str] = field(default_factory=dict)  # token -> device id


@dataclass(frozen=True)
class Accepted:
    protocol: int
    role: str
    scopes: tuple[str, ...]
    client: Mapping[str, Any]
    caps: tuple[str, ...]
    auth_method: str
    device_id: str | None
    # A device is paired (and gets a device token in hello-ok) unless the shape skips local self-pairing: the
    # direct-local `gateway-client`/`backend` without Origin (shouldSkipLocalBackendSelfPairing; observed on
    # 2026.4.24, 4.29 and 9.6: no `deviceToken` for that shape, one for `cli`/`cli` and `test`/`test`).
    device_paired: bool = False


@dataclass(frozen=True)
class Rejected:
    error: GatewayError
    close_code: int
    close_reason: str
    auth_failure: bool = False


def negotiate_protocol(
    min_protocol: int, max_protocol: int, role: str, mode: str, profile: ProtocolProfile
) -> int | None:
    node_or_probe = role == "node" or mode in ("node", "probe")
    floor = profile.min_node_or_probe_protocol if node_or_probe else profile.protocol
    for candidate in range(profile.protocol, floor - 1, -1):
        if min_protocol <= candidate <= max_protocol:
            return candidate
    return None


def _reject(error: GatewayError, code: int = CLOSE_POLICY_VIOLATION, *, auth_failure: bool = False) -> Rejected:
    return Rejected(error, code, close_reason(error.message), auth_failure)


def decide_connect(params: Any, ctx: ConnectContext) -> Accepted | Rejected:
    profile = ctx.profile
    problem = connect_params_problem(params, profile)
    if problem:
        return _reject(GatewayError("INVALID_REQUEST", problem))
    client: dict[str, Any] = params["client"]
    role: str = params.get("role", "operator")
    protocol = negotiate_protocol(params["minProtocol"], params["maxProtocol"], role, client["mode"], profile)
    if protocol is None:
        details: dict[str, Any] = {"expectedProtocol": profile.protocol}
        if profile.full_protocol_mismatch_details:
            details = {
                "code": "PROTOCOL_MISMATCH",
                "clientMinProtocol": params["minProtocol"],
                "clientMaxProtocol": params["maxProtocol"],
                "expectedProtocol": profile.protocol,
                "minimumProbeProtocol": profile.min_node_or_probe_protocol,
            }
        return _reject(GatewayError("INVALID_REQUEST", "protocol mismatch", details), CLOSE_PROTOCOL_ERROR)
    if role not in ROLES:
        return _reject(GatewayError("INVALID_REQUEST", "invalid role"))

    auth: dict[str, str] = params.get("auth") or {}
    device: dict[str, Any] | None = params.get("device")
    secret = auth.get("token") or auth.get("password")
    device_token = auth.get("deviceToken")
    auth_method = "none"
    if ctx.auth_mode == "token":
        if secret is None and device_token is None and device is None:
            return _reject(GatewayError("NOT_PAIRED", MSG_DEVICE_REQUIRED, {"code": "DEVICE_IDENTITY_REQUIRED"}))
        if secret is not None:
            if secret != ctx.shared_secret:
                return _reject(_token_mismatch(), auth_failure=True)
            auth_method = "token"
        elif device_token is not None:
            if device is None or ctx.issued_device_tokens.get(device_token) != device.get("id"):
                return _reject(_device_token_mismatch(), auth_failure=True)
            auth_method = "device-token"
        else:
            missing = GatewayError("INVALID_REQUEST", MSG_TOKEN_MISSING, {"code": "AUTH_TOKEN_MISSING"})
            return _reject(missing, auth_failure=True)

    device_id: str | None = None
    if device is not None:
        token_for_proof = auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken") or ""
        try:
            device_id = verify_device_proof(
                device,
                client=client,
                role=role,
                scopes=params.get("scopes", []),
                token=token_for_proof,
                challenge_nonce=ctx.challenge_nonce,
                now_ms=ctx.now_ms,
                skew_ms=DEVICE_SIGNATURE_SKEW_MS,
            )
        except DeviceProofError as exc:
            return _reject(GatewayError("INVALID_REQUEST", str(exc), {"code": exc.code}), auth_failure=True)

    is_ui = client["id"] in UI_CLIENT_IDS or client["mode"] == "ui"
    if is_ui and device_id is None:
        details = {"code": "CONTROL_UI_DEVICE_IDENTITY_REQUIRED"}
        return _reject(GatewayError("INVALID_REQUEST", MSG_CONTROL_UI_DEVICE, details))

    scopes = tuple(params.get("scopes", []))
    direct_local = ctx.peer_is_loopback and not ctx.has_forwarded_headers
    shape = (client["id"], client["mode"])
    local_backend = direct_local and shape == ("gateway-client", "backend") and not ctx.has_origin
    keeps_scopes = device_id is not None or local_backend or (
        direct_local and shape == ("cli", "cli") and profile.preserves_local_cli_scopes
    )
    return Accepted(
        protocol=protocol,
        role=role,
        scopes=scopes if keeps_scopes else (),
        client=client,
        caps=tuple(params.get("caps", [])),
        auth_method=auth_method,
        device_id=device_id,
        device_paired=device_id is not None and not local_backend,
    )


def _token_mismatch() -> GatewayError:
    details = {
        "code": "AUTH_TOKEN_MISMATCH",
        "authReason": "token_mismatch",
        "canRetryWithDeviceToken": False,
        "recommendedNextStep": "update_auth_credentials",
    }
    return GatewayError("INVALID_REQUEST", MSG_TOKEN_MISMATCH, details)


def _device_token_mismatch() -> GatewayError:
    details = {"code": "AUTH_DEVICE_TOKEN_MISMATCH", "authReason": "device_token_mismatch"}
    return GatewayError("INVALID_REQUEST", "unauthorized: device token mismatch", details)


def loopback_auth_failure_delay_ms(failures_in_window: int) -> int:
    """The n-th loopback auth failure is answered after min(250 * 2^(n-1), 5000) ms (auth-rate-limit.ts)."""
    if failures_in_window < 1:
        return 0
    return int(min(250 * 2 ** (failures_in_window - 1), 5000))


# ---------------------------------------------------------------------------------------------
# hello-ok


def hello_ok_payload(
    profile: ProtocolProfile,
    accepted: Accepted,
    *,
    conn_id: str,
    uptime_ms: int,
    boot_id: str,
    device_token: str | None,
    now_ms: int,
    http_base: str = "",
    recovery_scope: str = "",
) -> dict[str, Any]:
    """Fill the profile's recorded hello-ok template with this connection's and this boot's values."""
    template = profile.hello_template()
    payload: dict[str, Any] = json.loads(json.dumps(template))  # a deep copy of plain JSON
    payload["protocol"] = accepted.protocol
    server = payload["server"]
    server["connId"] = conn_id
    if "bootId" in server:
        server["bootId"] = boot_id
    payload["snapshot"]["uptimeMs"] = uptime_ms
    auth: dict[str, Any] = {}
    if "method" in template.get("auth", {}):
        auth["method"] = accepted.auth_method
    auth["role"] = accepted.role
    auth["scopes"] = list(accepted.scopes)
    if "recoveryScope" in template.get("auth", {}):
        auth["recoveryScope"] = recovery_scope
    if device_token is not None:
        if "recoveryScope" in auth:  # `current` (observed on 2026.9.6 for a newly paired loopback device)
            auth["recoveryMigrationAllowed"] = True
        auth["deviceToken"] = device_token
        auth["issuedAtMs"] = now_ms
    payload["auth"] = auth
    capability_url = f"{http_base}__openclaw__/cap/{recovery_scope[:24]}"
    if "canvas" in payload.get("pluginSurfaceUrls", {}):
        payload["pluginSurfaceUrls"]["canvas"] = capability_url
    if "canvasHostUrl" in payload:
        payload["canvasHostUrl"] = capability_url
    return payload


# ---------------------------------------------------------------------------------------------
# Scopes after hello (src/gateway/methods/core-descriptors.ts)


def missing_scope(granted: tuple[str, ...], required: tuple[str, ...]) -> str | None:
    """The first required scope the connection lacks; admin covers all, write covers read."""
    if not required or SCOPE_ADMIN in granted:
        return None
    for scope in required:
        if scope in granted or (scope == SCOPE_READ and SCOPE_WRITE in granted):
            return None
    return required[0]


def forbidden(scope: str, required: tuple[str, ...], profile: ProtocolProfile) -> GatewayError:
    if not profile.scope_errors_forbidden:
        return GatewayError("INVALID_REQUEST", f"missing scope: {scope}")
    details = {"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": list(required)}
    return GatewayError("FORBIDDEN", f"missing scope: {scope}", details)
