"""The gateway's wire protocol with no I/O: frames, the connect decision, hello-ok and scopes.

Everything here is a pure function of its arguments (no clock, no sockets): frame builders and the
request-envelope parser, the decision on a `connect` (schema, protocol negotiation, auth, device proof,
which scopes a client keeps), the hello-ok payload, and the scope check after hello. The params
schemas live in schema.py; what happens when on one connection lives in handshake.py. Facts and exact
strings come from ../shared/reference/openclaw-gateway.md, sections 2-6 and 12.5.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_stub.generations import Generation
from gateway_stub.schema import connect_params_problem
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
# The stub's own: an object frame nested deeper is read as unparseable. Python's decoder, and every validator and
# copy after it, recurse once per level and fail near 1000; the real gateway's frames are a few levels deep.
MAX_FRAME_DEPTH = 128
# Number.MAX_SAFE_INTEGER: past it a JavaScript number is a double, not an exact integer.
MAX_SAFE_INTEGER = 2**53 - 1

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVICE_RESTART = 1012

# packages/gateway-protocol/src/client-info.ts (the full id and mode lists are in schema.py)
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


def frame_text(frame: Any) -> str:
    """A frame as JSON.stringify writes it: compact, and a number JSON cannot hold (a client's 1e400 read back
    as Infinity) written as null instead of Python's invalid `Infinity`."""
    try:
        return json.dumps(frame, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(frame), separators=(",", ":"))


def _finite(value: Any) -> Any:
    # Frames are at most MAX_FRAME_DEPTH deep (parse_json), so recursing here is bounded.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def event_frame(event: str, payload: Any, seq: int | None = None) -> str:
    return event_frames(event, payload)(seq)


def event_frames(event: str, payload: Any) -> Callable[[int | None], str]:
    """One event for many connections: the payload is encoded once, and each frame gets its own `seq` (the same
    text as encoding `{type, event, payload, seq}` whole, as the real gateway does per client)."""
    unnumbered = frame_text({"type": "event", "event": event, "payload": payload})
    return lambda seq: unnumbered if seq is None else f'{unnumbered[:-1]},"seq":{seq}}}'


def ok_frame(request_id: str, payload: Any) -> str:
    return frame_text({"type": "res", "id": request_id, "ok": True, "payload": payload})


def error_frame(request_id: str, error: GatewayError) -> str:
    return frame_text({"type": "res", "id": request_id, "ok": False, "error": error.to_json()})


def close_reason(text: str) -> str:
    """A close reason cut to the 123 bytes a close frame can carry, on a character boundary."""
    data = text.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", errors="ignore")


def challenge_payload(generation: Generation, nonce: str, now_ms: int) -> dict[str, Any]:
    payload: dict[str, Any] = {"nonce": nonce, "ts": now_ms}
    if generation.challenge_capabilities is not None:
        payload["capabilities"] = list(generation.challenge_capabilities)
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN and Infinity


def _js_int(text: str) -> int | float:
    # Beyond 2^53 JSON.parse gives a double (Infinity past 1e308): what the schemas then see as not an integer.
    value = int(text) if len(text) <= 17 else None
    if value is not None and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return float(text)


def _js_float(text: str) -> int | float:
    # JavaScript has one number type: 3.0 and 1e3 are the integers 3 and 1000 to the gateway's schemas.
    value = float(text)
    return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_js_int, parse_float=_js_float)


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    """`value` with every lone UTF-16 surrogate (a `\\udc80` escape JSON.parse keeps) turned into U+FFFD, the
    way Node encodes one when the string becomes UTF-8 (a close reason, a signed device payload, a log line);
    Python's encoder would raise instead."""
    def clean(text: str) -> str:
        return _SURROGATE.sub("\ufffd", text)

    if isinstance(value, str):
        return clean(value)
    root: list[Any] = [value]
    stack: list[list[Any] | dict[str, Any]] = [root]
    while stack:
        container = stack.pop()
        items = list(container.items()) if isinstance(container, dict) else list(enumerate(container))
        if isinstance(container, dict):
            container.clear()
        for key, item in items:
            if isinstance(item, str):
                item = clean(item)
            elif isinstance(item, dict | list):
                stack.append(item)
            if isinstance(container, dict):
                container[clean(str(key))] = item
            else:
                container[int(key)] = item
    return root[0]


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects in `value` nest more than `limit` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str) -> Any:
    """A frame's JSON as the gateway's JSON.parse reads it (ValueError where it would throw), at most
    MAX_FRAME_DEPTH levels deep."""
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    # Only an object's values travel on (to schemas, copies, replies); counting brackets is cheap, and only a
    # frame with enough of them can be too deep.
    if (isinstance(value, dict) and text.count("[") + text.count("{") > MAX_FRAME_DEPTH
            and _nested_deeper_than(value, MAX_FRAME_DEPTH)):
        raise ValueError("nested too deep")
    if _SURROGATE_ESCAPE.search(text):
        value = _without_lone_surrogates(value)
    return value


def parse_request(message: str | bytes) -> Request | CloseWith:
    """Read a frame as a request envelope; say how to close when it is not one.

    Binary frames are read as UTF-8 text, as Node's ``ws`` hands the gateway a Buffer it stringifies.
    """
    try:
        text = message.decode("utf-8") if isinstance(message, bytes) else message
        frame = parse_json(text)
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
# Deciding a connect


@dataclass(frozen=True)
class ConnectContext:
    generation: Generation
    auth_mode: str  # "token" | "none"
    shared_secret: str | None
    peer_is_loopback: bool
    has_origin: bool
    has_forwarded_headers: bool
    challenge_nonce: str
    now_ms: int
    issued_device_tokens: Mapping[str, str] = field(default_factory=dict)  # token -> device id
    paired_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # device id -> approved scopes


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
    min_protocol: int, max_protocol: int, role: str, mode: str, generation: Generation
) -> int | None:
    node_or_probe = role == "node" or mode in ("node", "probe")
    floor = generation.min_node_or_probe_protocol if node_or_probe else generation.protocol
    for candidate in range(generation.protocol, floor - 1, -1):
        if min_protocol <= candidate <= max_protocol:
            return candidate
    return None


def _reject(error: GatewayError, code: int = CLOSE_POLICY_VIOLATION, *, auth_failure: bool = False) -> Rejected:
    return Rejected(error, code, close_reason(error.message), auth_failure)


def decide_connect(params: Any, ctx: ConnectContext) -> Accepted | Rejected:
    generation = ctx.generation
    problem = connect_params_problem(params, generation)
    if problem:
        return _reject(GatewayError("INVALID_REQUEST", problem))
    client: dict[str, Any] = params["client"]
    role: str = params.get("role", "operator")
    protocol = negotiate_protocol(params["minProtocol"], params["maxProtocol"], role, client["mode"], generation)
    if protocol is None:
        details: dict[str, Any] = {"expectedProtocol": generation.protocol}
        if generation.full_protocol_mismatch_details:
            details = {
                "code": "PROTOCOL_MISMATCH",
                "clientMinProtocol": params["minProtocol"],
                "clientMaxProtocol": params["maxProtocol"],
                "expectedProtocol": generation.protocol,
                "minimumProbeProtocol": generation.min_node_or_probe_protocol,
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
        direct_local and shape == ("cli", "cli") and generation.preserves_local_cli_scopes
    )
    paired = device_id is not None and not local_backend
    approved = ctx.paired_scopes.get(device_id) if paired and device_id is not None else None
    if generation.refuses_scope_upgrade and approved is not None and not set(scopes) <= set(approved):
        return _scope_upgrade_refused(device_id or "", role, scopes, approved)
    return Accepted(
        protocol=protocol,
        role=role,
        scopes=scopes if keeps_scopes else (),
        client=client,
        caps=tuple(params.get("caps", [])),
        auth_method=auth_method,
        device_id=device_id,
        device_paired=paired,
    )


def _scope_upgrade_refused(device_id: str, role: str, scopes: tuple[str, ...], approved: tuple[str, ...]) -> Rejected:
    """April's answer to a paired device asking for more scopes (recorded on 2026.4.29): a pending upgrade request
    the operator must approve, and the socket closed 1008 with the request's id in the reason."""
    request_id = str(uuid.uuid4())
    message = "pairing required: device is asking for more scopes than currently approved"
    details = {"code": "PAIRING_REQUIRED", "reason": "scope-upgrade", "requestId": request_id,
               "remediationHint": "Review the requested scopes, then approve the pending upgrade.",
               "deviceId": device_id, "requestedRole": role, "requestedScopes": list(scopes),
               "approvedRoles": [role], "approvedScopes": list(approved)}
    return Rejected(GatewayError("NOT_PAIRED", message, details), CLOSE_POLICY_VIOLATION,
                    close_reason(f"{message} (requestId: {request_id})"))


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
    generation: Generation,
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
    """Fill the generation's recorded hello-ok template with this connection's and this boot's values."""
    template = generation.hello_template()
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


def forbidden(scope: str, required: tuple[str, ...], generation: Generation) -> GatewayError:
    if not generation.scope_errors_forbidden:
        return GatewayError("INVALID_REQUEST", f"missing scope: {scope}")
    details = {"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": list(required)}
    return GatewayError("FORBIDDEN", f"missing scope: {scope}", details)
