"""The closed TypeBox schemas the real gateway checks params against, with AJV's error messages.

OpenClaw validates `connect` params and the exec-approval methods' params with closed TypeBox schemas
compiled by AJV: an unknown key, a wrong type or a value outside an enum refuses the request with the
first problem AJV reports, worded as AJV words it ("at /client/id: must be equal to one of the allowed
values"), except unknown keys, which the gateway words itself ("unexpected property 'x'"). This module
emulates those schemas with small checker combinators and returns the message the gateway would send,
or None; each generation drops the keys its version does not know. It has no I/O and knows nothing of
frames: protocol.py and approval_service.py turn a message into the refusal they send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway_stub.generations import Generation

# packages/gateway-protocol/src/client-info.ts
CLIENT_IDS = (
    "webchat-ui", "openclaw-control-ui", "openclaw-browser-copilot", "openclaw-tui", "webchat", "cli",
    "gateway-client", "openclaw-macos", "openclaw-linux", "openclaw-ios", "openclaw-watchos",
    "openclaw-android", "node-host", "openclaw-worker", "test", "fingerprint", "openclaw-probe",
)
CLIENT_MODES = ("webchat", "cli", "ui", "backend", "node", "worker", "probe", "test")

Problem = tuple[str, str]
Checker = Callable[[object, str], Problem | None]


# ---------------------------------------------------------------------------------------------
# Checkers: each returns None when the value is fine, else (path, message) with AJV's wording.

def _string(min_length: int = 0, max_length: int | None = None) -> Checker:
    def check(value: object, path: str) -> Problem | None:
        if not isinstance(value, str):
            return path, "must be string"
        if len(value) < min_length:
            return path, f"must NOT have fewer than {min_length} characters"
        if max_length is not None and len(value) > max_length:
            return path, f"must NOT have more than {max_length} characters"
        return None

    return check


def _integer(minimum: int, maximum: int | None = None) -> Checker:
    def check(value: object, path: str) -> Problem | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return path, "must be integer"
        if value < minimum:
            return path, f"must be >= {minimum}"
        if maximum is not None and value > maximum:
            return path, f"must be <= {maximum}"
        return None

    return check


def _boolean(value: object, path: str) -> Problem | None:
    return None if isinstance(value, bool) else (path, "must be boolean")


def _number(value: object, path: str) -> Problem | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else (path, "must be number")


def _null(value: object, path: str) -> Problem | None:
    return None if value is None else (path, "must be null")


def _version_1(value: object, path: str) -> Problem | None:
    ok = value == 1 and not isinstance(value, bool)
    return None if ok else (path, "must be equal to constant")


def _any_of(*options: Checker) -> Checker:
    """TypeBox's Union: AJV reports a value matching none of the branches as failing `anyOf`."""
    def check(value: object, path: str) -> Problem | None:
        if any(option(value, path) is None for option in options):
            return None
        return path, "must match a schema in anyOf"

    return check


def _record_of(item: Checker) -> Checker:
    """TypeBox's Record(NonEmptyString, item): an object whose values all fit `item`."""
    def check(value: object, path: str) -> Problem | None:
        if not isinstance(value, dict):
            return path, "must be object"
        for name, element in value.items():
            problem = item(element, f"{path}/{name}")
            if problem:
                return problem
        return None

    return check


def _enum(allowed: tuple[str, ...]) -> Checker:
    def check(value: object, path: str) -> Problem | None:
        return None if value in allowed else (path, "must be equal to one of the allowed values")

    return check


def _array_of(item: Checker) -> Checker:
    def check(value: object, path: str) -> Problem | None:
        if not isinstance(value, list):
            return path, "must be array"
        for index, element in enumerate(value):
            problem = item(element, f"{path}/{index}")
            if problem:
                return problem
        return None

    return check


def _any(value: object, path: str) -> Problem | None:
    return None


def _plain_object(value: object, path: str) -> Problem | None:
    return None if isinstance(value, dict) else (path, "must be object")


def _object(properties: Mapping[str, Checker], required: tuple[str, ...] = ()) -> Checker:
    def check(value: object, path: str) -> Problem | None:
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


# ---------------------------------------------------------------------------------------------
# ConnectParamsSchema (packages/gateway-protocol/src/schema/frames.ts)

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
    "auth": _any,  # replaced per generation below: its closed key set differs by version
    "locale": _string(),
    "userAgent": _string(),
    "modelCatalog": _any,
    "computerUse": _any,
    "workerRuns": _any,
}


def _connect_schema(generation: Generation) -> Checker:
    auth = _object({k: _string() for k in _AUTH_KEYS if k not in generation.unknown_auth_keys})
    properties = {k: v for k, v in _CONNECT_PROPERTIES.items() if k not in generation.unknown_connect_keys}
    properties["auth"] = auth
    return _object(properties, required=("minProtocol", "maxProtocol", "client"))


def connect_params_problem(params: object, generation: Generation) -> str | None:
    """The AJV-style message for invalid connect params, or None when they fit the closed schema."""
    problem = _connect_schema(generation)(params, "")
    if problem is None:
        return None
    path, message = problem
    return f"invalid connect params: at {path or 'root'}: {message}"


# ---------------------------------------------------------------------------------------------
# Params of the exec-approval methods (packages/gateway-protocol/src/schema/exec-approvals.ts, reference §10).
# Closed like the connect schema; each generation drops the keys it does not know (see generations.py).

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


def _invalid_params(method: str, problem: Problem | None) -> str | None:
    if problem is None:
        return None
    path, message = problem
    return f"invalid {method} params: at {path or 'root'}: {message}"


def exec_approval_request_problem(params: object, generation: Generation) -> str | None:
    properties = {k: v for k, v in _EXEC_APPROVAL_REQUEST_PROPERTIES.items()
                  if k not in generation.unknown_approval_request_keys}
    return _invalid_params("exec.approval.request", _object(properties)(params, ""))


def exec_approval_resolve_problem(params: object, generation: Generation) -> str | None:
    properties = {k: v for k, v in _EXEC_APPROVAL_RESOLVE_PROPERTIES.items()
                  if k not in generation.unknown_approval_resolve_keys}
    return _invalid_params("exec.approval.resolve", _object(properties, required=("id", "decision"))(params, ""))


def exec_approval_get_problem(params: object) -> str | None:
    return _invalid_params("exec.approval.get", _EXEC_APPROVAL_GET(params, ""))


def exec_approvals_set_problem(params: object) -> str | None:
    return _invalid_params("exec.approvals.set", _EXEC_APPROVALS_SET(params, ""))
