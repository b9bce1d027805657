"""Pure unit tests of the stub's protocol and schema rules: no sockets, no event loop.

Expected values come from ../shared/reference/openclaw-gateway.md, sections 2-6 and 12.5.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import TOKEN, connect_params
from hypothesis import given
from hypothesis import strategies as st

from gateway_stub.budget import UNKNOWN_CLIENT_IP, PreauthBudget
from gateway_stub.config import ConfigError, config_from_args
from gateway_stub.cost import NO_COST, CostBurner, Distribution, parse_cost
from gateway_stub.generations import APRIL_2026, CURRENT, Generation
from gateway_stub.protocol import (
    MSG_CONTROL_UI_DEVICE,
    MSG_DEVICE_REQUIRED,
    MSG_TOKEN_MISMATCH,
    Accepted,
    ConnectContext,
    Rejected,
    close_reason,
    decide_connect,
    event_frames,
    forbidden,
    frame_text,
    loopback_auth_failure_delay_ms,
    missing_scope,
    negotiate_protocol,
)
from gateway_stub.schema import (
    connect_params_problem,
    exec_approval_get_problem,
    exec_approval_request_problem,
    exec_approval_resolve_problem,
    exec_approvals_set_problem,
)
from openclaw_wire.device_auth import DeviceIdentity, DeviceProofError, verify_device_proof

NONCE = "6f0c2a5e-1c1b-4c55-9a40-1d2f3e4a5b6c"
NOW_MS = 1_795_262_509_198


def ctx(
    generation: Generation = APRIL_2026,
    *,
    auth_mode: str = "token",
    loopback: bool = True,
    origin: bool = False,
    forwarded: bool = False,
    nonce: str = NONCE,
    now_ms: int = NOW_MS,
    issued: dict[str, str] | None = None,
) -> ConnectContext:
    return ConnectContext(
        generation=generation,
        auth_mode=auth_mode,
        shared_secret=TOKEN,
        peer_is_loopback=loopback,
        has_origin=origin,
        has_forwarded_headers=forwarded,
        challenge_nonce=nonce,
        now_ms=now_ms,
        issued_device_tokens=issued or {},
    )


def client(client_id: str = "gateway-client", mode: str = "backend", **extra: Any) -> dict[str, Any]:
    return {"id": client_id, "version": "2026.4.24", "platform": "linux", "mode": mode, **extra}


def accepted(decision: Accepted | Rejected) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def rejected(decision: Accepted | Rejected) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


# ---------------------------------------------------------------------------------------------
# connect_params_problem: the closed ConnectParamsSchema with AJV messages


def test_valid_params_have_no_problem_on_both_generations() -> None:
    assert connect_params_problem(connect_params(3), APRIL_2026) is None
    assert connect_params_problem(connect_params(4), CURRENT) is None


def test_unknown_root_key_is_rejected() -> None:
    params = connect_params(3, surprise=True)
    assert connect_params_problem(params, APRIL_2026) == (
        "invalid connect params: at root: unexpected property 'surprise'"
    )


def test_bad_client_id_is_rejected() -> None:
    params = connect_params(3, client=client("matrix-handler"))
    assert connect_params_problem(params, APRIL_2026) == (
        "invalid connect params: at /client/id: must be equal to one of the allowed values"
    )


def test_docs_operator_mode_is_rejected() -> None:
    # §3.2: the "operator" mode of the docs example is rejected.
    params = connect_params(3, client=client(mode="operator"))
    assert connect_params_problem(params, APRIL_2026) == (
        "invalid connect params: at /client/mode: must be equal to one of the allowed values"
    )


@pytest.mark.parametrize("key", ["minProtocol", "maxProtocol", "client"])
def test_missing_required_root_property(key: str) -> None:
    params = connect_params(3)
    del params[key]
    assert connect_params_problem(params, APRIL_2026) == (
        f"invalid connect params: at root: must have required property '{key}'"
    )


@pytest.mark.parametrize("key", ["id", "version", "platform", "mode"])
def test_missing_required_client_property(key: str) -> None:
    params = connect_params(3)
    del params["client"][key]
    assert connect_params_problem(params, APRIL_2026) == (
        f"invalid connect params: at /client: must have required property '{key}'"
    )


def test_device_requires_all_fields() -> None:
    device = {"id": "abc", "publicKey": "k", "signature": "s", "nonce": NONCE}
    assert connect_params_problem(connect_params(3, device=device), APRIL_2026) == (
        "invalid connect params: at /device: must have required property 'signedAt'"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"minProtocol": "3"}, "at /minProtocol: must be integer"),
        ({"maxProtocol": 3.5}, "at /maxProtocol: must be integer"),
        ({"minProtocol": True}, "at /minProtocol: must be integer"),
        ({"minProtocol": 0}, "at /minProtocol: must be >= 1"),
        ({"client": "gateway-client"}, "at /client: must be object"),
        ({"scopes": "operator.read"}, "at /scopes: must be array"),
        ({"scopes": ["operator.read", 7]}, "at /scopes/1: must be string"),
        ({"role": 1}, "at /role: must be string"),
        ({"auth": {"token": 123}}, "at /auth/token: must be string"),
        ({"auth": "token"}, "at /auth: must be object"),
        ({"caps": [None]}, "at /caps/0: must be string"),
    ],
)
def test_wrong_types(overrides: dict[str, Any], expected: str) -> None:
    assert connect_params_problem(connect_params(3, **overrides), APRIL_2026) == f"invalid connect params: {expected}"


def test_non_object_params() -> None:
    assert connect_params_problem(None, APRIL_2026) == "invalid connect params: at root: must be object"
    assert connect_params_problem([], CURRENT) == "invalid connect params: at root: must be object"


def test_client_version_must_not_be_empty() -> None:
    params = connect_params(3, client=client(version=""))
    assert connect_params_problem(params, APRIL_2026) == (
        "invalid connect params: at /client/version: must NOT have fewer than 1 characters"
    )


def test_build_id_is_at_most_96_characters() -> None:
    assert connect_params_problem(connect_params(3, client=client(buildId="b" * 96)), APRIL_2026) is None
    assert connect_params_problem(connect_params(3, client=client(buildId="b" * 97)), APRIL_2026) == (
        "invalid connect params: at /client/buildId: must NOT have more than 96 characters"
    )


def test_time_zone_is_at_most_64_characters() -> None:
    assert connect_params_problem(connect_params(3, client=client(timeZone="z" * 65)), APRIL_2026) == (
        "invalid connect params: at /client/timeZone: must NOT have more than 64 characters"
    )


@pytest.mark.parametrize("key", ["approvalRuntimeToken", "agentRuntimeIdentityToken"])
def test_april_rejects_runtime_auth_tokens_current_accepts(key: str) -> None:
    params = connect_params(3, auth={"token": TOKEN, key: "secret"})
    assert connect_params_problem(params, APRIL_2026) == (
        f"invalid connect params: at /auth: unexpected property '{key}'"
    )
    assert connect_params_problem({**params, "minProtocol": 4, "maxProtocol": 4}, CURRENT) is None


def test_april_rejects_model_catalog_current_accepts() -> None:
    assert connect_params_problem(connect_params(3, modelCatalog={"snapshot": True}), APRIL_2026) == (
        "invalid connect params: at root: unexpected property 'modelCatalog'"
    )
    assert connect_params_problem(connect_params(4, modelCatalog={"snapshot": True}), CURRENT) is None


def test_auth_is_closed_on_both_generations() -> None:
    params = connect_params(4, auth={"token": TOKEN, "apiKey": "x"})
    assert connect_params_problem(params, CURRENT) == (
        "invalid connect params: at /auth: unexpected property 'apiKey'"
    )


# ---------------------------------------------------------------------------------------------
# The exec-approval params schemas


def test_exec_approval_request_schema_is_closed_per_generation() -> None:
    params = {"command": "ls", "runId": "r1", "toolCallId": "t1"}
    assert exec_approval_request_problem(params, CURRENT) is None
    assert exec_approval_request_problem(params, APRIL_2026) == (
        "invalid exec.approval.request params: at root: unexpected property 'runId'")


@pytest.mark.parametrize(("params", "expected"), [
    ({"command": "ls", "timeoutMs": 0}, "at /timeoutMs: must be >= 1"),
    ({"command": "ls", "timeoutMs": True}, "at /timeoutMs: must be integer"),
    ({"command": ""}, "at /command: must NOT have fewer than 1 characters"),
    ({"id": "x" * 129}, "at /id: must NOT have more than 128 characters"),
    ({"env": {"PATH": 1}}, "at /env/PATH: must be string"),
    ({"turnSourceThreadId": True}, "at /turnSourceThreadId: must match a schema in anyOf"),
    ({"unavailableDecisions": ["deny"]}, "at /unavailableDecisions/0: must be equal to one of the allowed values"),
    ({"commandSpans": [{"startIndex": 0}]}, "at /commandSpans/0: must have required property 'endIndex'"),
    ([], "at root: must be object"),
])
def test_exec_approval_request_schema_messages(params: object, expected: str) -> None:
    assert exec_approval_request_problem(params, CURRENT) == f"invalid exec.approval.request params: {expected}"


def test_exec_approval_resolve_schema() -> None:
    assert exec_approval_resolve_problem({"id": "a", "decision": "deny"}, APRIL_2026) is None
    assert exec_approval_resolve_problem({"id": "a"}, CURRENT) == (
        "invalid exec.approval.resolve params: at root: must have required property 'decision'")
    granted = {"id": "a", "decision": "allow-always", "grantExpiresInDays": 3651}
    assert exec_approval_resolve_problem(granted, CURRENT) == (
        "invalid exec.approval.resolve params: at /grantExpiresInDays: must be <= 3650")
    assert exec_approval_resolve_problem({**granted, "grantExpiresInDays": 30}, APRIL_2026) == (
        "invalid exec.approval.resolve params: at root: unexpected property 'grantExpiresInDays'")


def test_exec_approval_get_and_approvals_set_schemas() -> None:
    assert exec_approval_get_problem({}) == (
        "invalid exec.approval.get params: at root: must have required property 'id'")
    assert exec_approval_get_problem({"id": "a"}) is None
    allowlist = [{"pattern": "ls", "source": "allow-always"}]
    assert exec_approvals_set_problem({"file": {"version": 1, "agents": {"main": {"allowlist": allowlist}}}}) is None
    for version in (2, True):
        assert exec_approvals_set_problem({"file": {"version": version}}) == (
            "invalid exec.approvals.set params: at /file/version: must be equal to constant")


# ---------------------------------------------------------------------------------------------
# negotiate_protocol


@pytest.mark.parametrize(
    ("low", "high", "role", "mode", "expected"),
    [
        (3, 3, "operator", "backend", 3),
        (1, 9, "operator", "backend", 3),
        (4, 4, "operator", "backend", None),
        (2, 2, "operator", "backend", None),
        (4, 4, "node", "node", None),
        (2, 2, "node", "node", None),
    ],
)
def test_april_accepts_protocol_3_only(low: int, high: int, role: str, mode: str, expected: int | None) -> None:
    assert negotiate_protocol(low, high, role, mode, APRIL_2026) == expected


@pytest.mark.parametrize(
    ("low", "high", "role", "mode", "expected"),
    [
        (4, 4, "operator", "backend", 4),
        (3, 4, "operator", "backend", 4),
        (3, 9, "operator", "cli", 4),
        (3, 3, "operator", "backend", None),
        (3, 3, "operator", "cli", None),
        (5, 5, "operator", "backend", None),
        (3, 3, "node", "node", 3),
        (3, 3, "node", "backend", 3),
        (3, 3, "operator", "node", 3),
        (3, 3, "operator", "probe", 3),
        (2, 2, "node", "node", None),
        (3, 4, "node", "node", 4),
    ],
)
def test_current_accepts_4_and_3_for_node_or_probe(
    low: int, high: int, role: str, mode: str, expected: int | None
) -> None:
    assert negotiate_protocol(low, high, role, mode, CURRENT) == expected


# ---------------------------------------------------------------------------------------------
# decide_connect


def test_token_ok_keeps_backend_scopes() -> None:
    decision = accepted(decide_connect(connect_params(3), ctx()))
    assert decision.protocol == 3
    assert decision.role == "operator"
    assert decision.scopes == ("operator.approvals",)
    assert decision.auth_method == "token"
    assert decision.device_id is None
    assert decision.client["id"] == "gateway-client"


def test_password_carries_the_shared_secret() -> None:
    decision = accepted(decide_connect(connect_params(3, auth={"password": TOKEN}), ctx()))
    assert decision.auth_method == "token"


def test_current_negotiates_4() -> None:
    assert accepted(decide_connect(connect_params(4, caps=["approvals"]), ctx(CURRENT))).protocol == 4
    assert accepted(decide_connect(connect_params(4, caps=["approvals"]), ctx(CURRENT))).caps == ("approvals",)


def test_wrong_token() -> None:
    decision = rejected(decide_connect(connect_params(3, auth={"token": "nope"}), ctx()))
    assert decision.error.to_json() == {
        "code": "INVALID_REQUEST",
        "message": MSG_TOKEN_MISMATCH,
        "details": {
            "code": "AUTH_TOKEN_MISMATCH",
            "authReason": "token_mismatch",
            "canRetryWithDeviceToken": False,
            "recommendedNextStep": "update_auth_credentials",
        },
    }
    assert decision.auth_failure is True
    assert decision.close_code == 1008
    assert decision.close_reason == decision.error.message
    assert MSG_TOKEN_MISMATCH == "unauthorized: gateway token mismatch (provide gateway auth token)"


@pytest.mark.parametrize("auth", [None, {}])
def test_no_credentials(auth: dict[str, str] | None) -> None:
    params = connect_params(3)
    if auth is None:
        del params["auth"]
    else:
        params["auth"] = auth
    decision = rejected(decide_connect(params, ctx()))
    assert decision.error.to_json() == {
        "code": "NOT_PAIRED",
        "message": "device identity required",
        "details": {"code": "DEVICE_IDENTITY_REQUIRED"},
    }
    assert MSG_DEVICE_REQUIRED == "device identity required"
    assert (decision.close_code, decision.close_reason) == (1008, "device identity required")
    assert decision.auth_failure is False


def test_auth_mode_none_needs_no_credentials() -> None:
    params = connect_params(3)
    del params["auth"]
    decision = accepted(decide_connect(params, ctx(auth_mode="none")))
    assert decision.auth_method == "none"


def test_protocol_mismatch_current() -> None:
    decision = rejected(decide_connect(connect_params(3), ctx(CURRENT)))
    assert decision.error.to_json() == {
        "code": "INVALID_REQUEST",
        "message": "protocol mismatch",
        "details": {"code": "PROTOCOL_MISMATCH", "clientMinProtocol": 3, "clientMaxProtocol": 3,
                    "expectedProtocol": 4, "minimumProbeProtocol": 3},
    }
    assert (decision.close_code, decision.close_reason) == (1002, "protocol mismatch")
    assert decision.auth_failure is False


def test_protocol_mismatch_april_expects_3() -> None:
    decision = rejected(decide_connect(connect_params(4), ctx()))
    # Recorded on 2026.4.24 and 4.29: the details carry only expectedProtocol.
    assert decision.error.to_json() == {
        "code": "INVALID_REQUEST",
        "message": "protocol mismatch",
        "details": {"expectedProtocol": 3},
    }
    assert (decision.close_code, decision.close_reason) == (1002, "protocol mismatch")
    assert decision.auth_failure is False


def test_protocol_checked_before_token() -> None:
    decision = rejected(decide_connect(connect_params(4, auth={"token": "wrong"}), ctx()))
    assert decision.error.message == "protocol mismatch"


def test_schema_problem_is_invalid_request_1008() -> None:
    decision = rejected(decide_connect(connect_params(3, client=client("nobody")), ctx()))
    message = "invalid connect params: at /client/id: must be equal to one of the allowed values"
    assert decision.error.to_json() == {"code": "INVALID_REQUEST", "message": message}
    assert (decision.close_code, decision.close_reason) == (1008, message)


def test_invalid_role() -> None:
    decision = rejected(decide_connect(connect_params(3, role="admin"), ctx()))
    assert (decision.error.code, decision.error.message) == ("INVALID_REQUEST", "invalid role")
    assert (decision.close_code, decision.close_reason) == (1008, "invalid role")


@pytest.mark.parametrize("role", ["operator", "node", "worker"])
def test_valid_roles(role: str) -> None:
    assert accepted(decide_connect(connect_params(3, role=role), ctx())).role == role


@pytest.mark.parametrize(
    ("client_id", "mode"),
    [("openclaw-control-ui", "ui"), ("openclaw-tui", "cli"), ("webchat-ui", "webchat"), ("openclaw-macos", "ui")],
)
def test_ui_client_without_device(client_id: str, mode: str) -> None:
    decision = rejected(decide_connect(connect_params(3, client=client(client_id, mode)), ctx()))
    assert MSG_CONTROL_UI_DEVICE == "control ui requires device identity (use HTTPS or localhost secure context)"
    assert (decision.error.code, decision.error.message) == ("INVALID_REQUEST", MSG_CONTROL_UI_DEVICE)
    assert (decision.close_code, decision.close_reason) == (1008, MSG_CONTROL_UI_DEVICE)


def test_backend_without_origin_keeps_scopes() -> None:
    assert accepted(decide_connect(connect_params(3), ctx(origin=False))).scopes == ("operator.approvals",)


def test_backend_with_origin_loses_scopes() -> None:
    assert accepted(decide_connect(connect_params(3), ctx(origin=True))).scopes == ()


def test_current_cli_keeps_scopes() -> None:
    params = connect_params(4, client=client("cli", "cli"), scopes=["operator.read", "operator.write"])
    assert accepted(decide_connect(params, ctx(CURRENT))).scopes == ("operator.read", "operator.write")


def test_april_clears_cli_scopes() -> None:
    # Recorded on 2026.4.24 and 4.29: a device-less cli/cli token client is accepted with scopes [].
    params = connect_params(3, client=client("cli", "cli"), scopes=["operator.read", "operator.write"])
    decision = accepted(decide_connect(params, ctx()))
    assert decision.scopes == ()
    assert (decision.protocol, decision.role, decision.client["id"]) == (3, "operator", "cli")


def test_other_shapes_get_no_scopes() -> None:
    params = connect_params(3, client=client("test", "test"), scopes=["operator.admin"])
    decision = accepted(decide_connect(params, ctx()))
    assert decision.scopes == ()
    # gateway-client in another mode is not the backend shape either.
    params = connect_params(3, client=client("gateway-client", "cli"))
    assert accepted(decide_connect(params, ctx())).scopes == ()


@pytest.mark.parametrize(("loopback", "forwarded"), [(False, False), (True, True)])
def test_not_direct_local_loses_scopes(loopback: bool, forwarded: bool) -> None:
    # cli/cli keeps its scopes only on `current`, so that shape is checked there.
    cases = [(APRIL_2026, connect_params(3)), (CURRENT, connect_params(4)),
             (CURRENT, connect_params(4, client=client("cli", "cli")))]
    for generation, params in cases:
        assert accepted(decide_connect(params, ctx(generation, loopback=loopback, forwarded=forwarded))).scopes == ()


def signed_params(
    identity: DeviceIdentity,
    *,
    client_info: dict[str, Any] | None = None,
    scopes: list[str] | None = None,
    auth: dict[str, str] | None = None,
    token: str = TOKEN,
    nonce: str = NONCE,
    signed_at_ms: int = NOW_MS,
    version: str = "v3",
) -> dict[str, Any]:
    client_info = client_info or client("test", "test")
    scopes = ["operator.admin"] if scopes is None else scopes
    device = identity.sign_connect(client=client_info, role="operator", scopes=scopes, token=token, nonce=nonce,
                                   signed_at_ms=signed_at_ms, version=version)
    return connect_params(3, client=client_info, scopes=scopes, device=device, auth=auth or {"token": TOKEN})


def test_device_signed_connect_keeps_scopes_and_device_id() -> None:
    identity = DeviceIdentity.generate()
    decision = accepted(decide_connect(signed_params(identity), ctx(origin=True)))
    assert decision.device_id == identity.device_id
    assert decision.scopes == ("operator.admin",)


def test_device_signed_ui_client_is_allowed() -> None:
    identity = DeviceIdentity.generate()
    params = signed_params(identity, client_info=client("openclaw-control-ui", "ui"))
    assert accepted(decide_connect(params, ctx())).device_id == identity.device_id


def test_bad_device_proof_is_an_auth_failure() -> None:
    params = signed_params(DeviceIdentity.generate(), nonce="other-nonce")
    decision = rejected(decide_connect(params, ctx()))
    assert decision.error.to_json() == {
        "code": "INVALID_REQUEST",
        "message": "device nonce mismatch",
        "details": {"code": "DEVICE_AUTH_NONCE_MISMATCH"},
    }
    assert decision.auth_failure is True
    assert (decision.close_code, decision.close_reason) == (1008, "device nonce mismatch")


def test_device_token_auth() -> None:
    identity = DeviceIdentity.generate()
    params = signed_params(identity, auth={"deviceToken": "dt-1"}, token="dt-1")
    decision = accepted(decide_connect(params, ctx(issued={"dt-1": identity.device_id})))
    assert decision.auth_method == "device-token"
    wrong = rejected(decide_connect(params, ctx(issued={"dt-1": "someone-else"})))
    assert wrong.error.details is not None
    assert wrong.error.details["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"
    assert wrong.auth_failure is True


# ---------------------------------------------------------------------------------------------
# close_reason, auth-failure delay, scopes


def test_close_reason_short_text_unchanged() -> None:
    assert close_reason("protocol mismatch") == "protocol mismatch"
    assert close_reason("a" * 123) == "a" * 123


def test_close_reason_truncates_to_123_bytes() -> None:
    assert close_reason("a" * 200) == "a" * 123


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_close_reason_cuts_on_a_utf8_boundary(char: str) -> None:
    text = "a" * 122 + char * 3  # the first multi-byte character straddles byte 123
    reason = close_reason(text)
    assert reason == "a" * 122
    assert len(reason.encode("utf-8")) <= 123


def test_close_reason_keeps_whole_characters_that_fit() -> None:
    text = "é" * 100  # 200 bytes; 61 characters = 122 bytes fit
    reason = close_reason(text)
    assert reason == "é" * 61
    assert len(reason.encode("utf-8")) == 122


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0), (1, 250), (2, 500), (3, 1000), (4, 2000), (5, 4000), (6, 5000), (7, 5000), (50, 5000)],
)
def test_loopback_auth_failure_delay(failures: int, delay: int) -> None:
    assert loopback_auth_failure_delay_ms(failures) == delay


@pytest.mark.parametrize(
    ("granted", "required", "missing"),
    [
        ((), ("operator.read",), "operator.read"),
        (("operator.approvals",), ("operator.read",), "operator.read"),
        (("operator.read",), ("operator.read",), None),
        (("operator.write",), ("operator.read",), None),
        (("operator.read",), ("operator.write",), "operator.write"),
        (("operator.admin",), ("operator.approvals",), None),
        (("operator.approvals",), ("operator.approvals", "operator.admin"), None),
        (("operator.read",), ("operator.approvals", "operator.admin"), "operator.approvals"),
        ((), (), None),
    ],
)
def test_missing_scope(granted: tuple[str, ...], required: tuple[str, ...], missing: str | None) -> None:
    assert missing_scope(granted, required) == missing


def test_missing_scope_error_april_is_a_bare_invalid_request() -> None:
    # Recorded on 2026.4.24 and 4.29: {"code":"INVALID_REQUEST","message":"missing scope: operator.read"}.
    error = forbidden("operator.read", ("operator.read",), APRIL_2026)
    assert error.to_json() == {"code": "INVALID_REQUEST", "message": "missing scope: operator.read"}


def test_missing_scope_error_current_is_forbidden_with_details() -> None:
    error = forbidden("operator.approvals", ("operator.approvals",), CURRENT)
    assert error.to_json() == {
        "code": "FORBIDDEN",
        "message": "missing scope: operator.approvals",
        "details": {"code": "MISSING_SCOPE", "missingScope": "operator.approvals",
                    "requiredScopes": ["operator.approvals"]},
    }


# ---------------------------------------------------------------------------------------------
# device_auth


def proof(
    identity: DeviceIdentity, *, version: str = "v3", signed_at_ms: int = NOW_MS, nonce: str = NONCE
) -> tuple[dict[str, Any], dict[str, Any]]:
    client_info = client("gateway-client", "backend", platform="Linux", deviceFamily="Server")
    device = identity.sign_connect(client=client_info, role="operator", scopes=["operator.approvals"], token=TOKEN,
                                   nonce=nonce, signed_at_ms=signed_at_ms, version=version)
    return device, client_info


def verify(device: dict[str, Any], client_info: dict[str, Any], **overrides: Any) -> str:
    kwargs: dict[str, Any] = dict(client=client_info, role="operator", scopes=["operator.approvals"], token=TOKEN,
                                  challenge_nonce=NONCE, now_ms=NOW_MS, skew_ms=120_000)
    kwargs.update(overrides)
    return verify_device_proof(device, **kwargs)


def test_device_id_is_sha256_of_raw_key_and_fields_are_unpadded() -> None:
    identity = DeviceIdentity.generate()
    device, _ = proof(identity)
    assert len(identity.public_key_raw) == 32
    assert len(device["id"]) == 64 and device["id"] == device["id"].lower()
    assert "=" not in device["publicKey"] and "=" not in device["signature"]
    assert device["signedAt"] == NOW_MS and device["nonce"] == NONCE


@pytest.mark.parametrize("version", ["v3", "v2"])
def test_sign_then_verify(version: str) -> None:
    identity = DeviceIdentity.generate()
    device, client_info = proof(identity, version=version)
    assert verify(device, client_info) == identity.device_id


def test_signature_covers_role_scopes_and_token() -> None:
    device, client_info = proof(DeviceIdentity.generate())
    for overrides in ({"role": "node"}, {"scopes": ["operator.admin"]}, {"token": "other"}):
        with pytest.raises(DeviceProofError) as info:
            verify(device, client_info, **overrides)
        assert info.value.code == "DEVICE_AUTH_SIGNATURE_INVALID"


def test_v3_signature_covers_platform() -> None:
    device, client_info = proof(DeviceIdentity.generate())
    with pytest.raises(DeviceProofError) as info:
        verify(device, {**client_info, "platform": "darwin"})
    assert info.value.code == "DEVICE_AUTH_SIGNATURE_INVALID"
    # v3 lowercases platform and family, so case alone does not matter.
    assert verify(device, {**client_info, "platform": "LINUX", "deviceFamily": "server"})


def test_tampered_signature() -> None:
    identity = DeviceIdentity.generate()
    device, client_info = proof(identity)
    other, _ = proof(DeviceIdentity.generate())
    with pytest.raises(DeviceProofError) as info:
        verify({**device, "signature": other["signature"]}, client_info)
    assert info.value.code == "DEVICE_AUTH_SIGNATURE_INVALID"
    assert str(info.value) == "device signature invalid"


def test_wrong_nonce() -> None:
    device, client_info = proof(DeviceIdentity.generate(), nonce="stale-nonce")
    with pytest.raises(DeviceProofError) as info:
        verify(device, client_info)
    assert info.value.code == "DEVICE_AUTH_NONCE_MISMATCH"


def test_id_mismatch() -> None:
    device, client_info = proof(DeviceIdentity.generate())
    with pytest.raises(DeviceProofError) as info:
        verify({**device, "id": DeviceIdentity.generate().device_id}, client_info)
    assert info.value.code == "DEVICE_AUTH_ID_MISMATCH"


def test_bad_public_key() -> None:
    device, client_info = proof(DeviceIdentity.generate())
    with pytest.raises(DeviceProofError) as info:
        verify({**device, "publicKey": "AAAA"}, client_info)
    assert info.value.code == "DEVICE_AUTH_INVALID"


@pytest.mark.parametrize("offset_ms", [120_001, -120_001, 600_000])
def test_skew_over_120s_is_expired(offset_ms: int) -> None:
    device, client_info = proof(DeviceIdentity.generate(), signed_at_ms=NOW_MS + offset_ms)
    with pytest.raises(DeviceProofError) as info:
        verify(device, client_info)
    assert info.value.code == "DEVICE_AUTH_SIGNATURE_EXPIRED"


@pytest.mark.parametrize("offset_ms", [120_000, -120_000])
def test_skew_of_exactly_120s_is_accepted(offset_ms: int) -> None:
    identity = DeviceIdentity.generate()
    device, client_info = proof(identity, signed_at_ms=NOW_MS + offset_ms)
    assert verify(device, client_info) == identity.device_id


# ---------------------------------------------------------------------------------------------
# cost


def test_parse_cost_accepted_forms() -> None:
    fixed = parse_cost("fixed:20")
    assert (fixed.distribution, fixed.slice_ms) == (Distribution("fixed", 20.0), 0.0)
    uniform = parse_cost("uniform:10,30@5")
    assert (uniform.distribution, uniform.slice_ms) == (Distribution("uniform", 10.0, 30.0), 5.0)
    lognormal = parse_cost("lognormal:40,0.5")
    assert (lognormal.distribution, lognormal.slice_ms) == (Distribution("lognormal", 40.0, 0.5), 0.0)
    for text in ("0", "none", " none "):
        assert parse_cost(text) == NO_COST
        assert parse_cost(text).is_zero
    assert not fixed.is_zero
    assert parse_cost("fixed:0").is_zero
    assert uniform.describe() == "uniform:10,30@5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fixed", "expected fixed:MS, uniform:LO,HI or lognormal:MEDIAN,SIGMA"),
        ("uniform:30,10", "uniform needs LO <= HI"),
        ("fixed:-1", "fixed ms must be a finite number >= 0"),
        ("gauss:1", "expected fixed:MS, uniform:LO,HI or lognormal:MEDIAN,SIGMA"),
        ("fixed:abc", "fixed ms must be a number, got 'abc'"),
        ("fixed:inf", "fixed ms must be a finite number >= 0"),
        ("uniform:10", "expected fixed:MS"),
        ("fixed:20@x", "slice must be a number"),
    ],
)
def test_parse_cost_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_cost(text)


def test_cost_burner_seeded_samples_are_reproducible() -> None:
    for spec in (parse_cost("uniform:10,30"), parse_cost("lognormal:40,0.5")):
        first = CostBurner(time_scale=1.0, seed=7)
        second = CostBurner(time_scale=1.0, seed=7)
        a = [first.sample_scaled_ms(spec) for _ in range(20)]
        b = [second.sample_scaled_ms(spec) for _ in range(20)]
        assert a == b
        assert len(set(a)) > 1
    burner = CostBurner(time_scale=1.0, seed=7)
    assert all(10.0 <= burner.sample_scaled_ms(parse_cost("uniform:10,30")) <= 30.0 for _ in range(50))


def test_cost_burner_different_seeds_differ() -> None:
    spec = parse_cost("uniform:10,30")
    a = CostBurner(time_scale=1.0, seed=1)
    b = CostBurner(time_scale=1.0, seed=2)
    assert [a.sample_scaled_ms(spec) for _ in range(5)] != [b.sample_scaled_ms(spec) for _ in range(5)]


def test_cost_burner_scales_by_time_scale() -> None:
    spec = parse_cost("uniform:10,30")
    unscaled = CostBurner(time_scale=1.0, seed=3)
    scaled = CostBurner(time_scale=0.25, seed=3)
    for _ in range(10):
        assert scaled.sample_scaled_ms(spec) == pytest.approx(unscaled.sample_scaled_ms(spec) * 0.25)
    assert CostBurner(time_scale=0.1, seed=None).sample_scaled_ms(parse_cost("fixed:20")) == pytest.approx(2.0)
    assert CostBurner(time_scale=5.0, seed=None).sample_scaled_ms(NO_COST) == 0.0


def test_burn_blocking_spins_the_scaled_time() -> None:
    burner = CostBurner(time_scale=0.2, seed=None)
    started = time.perf_counter()
    burned = burner.burn_blocking(parse_cost("fixed:100"))
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert burned == pytest.approx(20.0)
    assert elapsed_ms >= 20.0


# ---------------------------------------------------------------------------------------------
# PreauthBudget


def test_budget_per_ip_limit_and_keys() -> None:
    budget = PreauthBudget(2)
    a1, a2 = budget.try_acquire("127.0.0.1"), budget.try_acquire("127.0.0.1")
    assert a1 is not None and a2 is not None
    assert budget.try_acquire("127.0.0.1") is None
    b1 = budget.try_acquire("127.0.0.2")
    assert b1 is not None
    assert budget.held("127.0.0.1") == 2
    assert budget.held("127.0.0.2") == 1
    assert budget.held() == 3
    a1.release()
    assert budget.held("127.0.0.1") == 1
    assert budget.try_acquire("127.0.0.1") is not None
    assert budget.try_acquire("127.0.0.1") is None


def test_budget_release_is_idempotent() -> None:
    budget = PreauthBudget(1)
    slot = budget.try_acquire("127.0.0.1")
    other = budget.try_acquire("::1")
    assert slot is not None and other is not None
    slot.release()
    slot.release()
    slot.release()
    assert slot.released
    assert budget.held("127.0.0.1") == 0
    assert budget.held("::1") == 1  # a repeated release never gives back someone else's slot
    assert budget.held() == 1
    again = budget.try_acquire("127.0.0.1")
    assert again is not None
    slot.release()
    assert budget.held("127.0.0.1") == 1
    assert budget.try_acquire("127.0.0.1") is None


def test_budget_unknown_ip_key() -> None:
    budget = PreauthBudget(1)
    slot = budget.try_acquire(None)
    assert slot is not None and slot.ip == UNKNOWN_CLIENT_IP == "__openclaw_unknown_client_ip__"
    assert budget.try_acquire("") is None
    assert budget.held(None) == 1


def test_budget_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError):
        PreauthBudget(0)


# ---------------------------------------------------------------------------------------------
# config_from_args

ENV_TIMEOUT = "OPENCLAW_HANDSHAKE_TIMEOUT_MS"


def test_cli_beats_env() -> None:
    env = {ENV_TIMEOUT: "5000", "GATEWAY_STUB_PROFILE": "current", "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP": "4"}
    config = config_from_args(["--handshake-timeout-ms", "2000", "--profile", "april-2026"], env)
    assert config.handshake_timeout_ms == 2000
    assert config.profile == "april-2026"
    assert config.max_preauth_per_ip == 4  # no option given: the env value applies


def test_env_applies_without_cli() -> None:
    config = config_from_args([], {ENV_TIMEOUT: "5000"})
    assert config.handshake_timeout_ms == 5000
    assert config.effective_handshake_timeout_ms == 5000


def test_defaults_follow_the_profile() -> None:
    assert config_from_args([], {}).effective_handshake_timeout_ms == 10_000
    assert config_from_args(["--profile", "current"], {}).effective_handshake_timeout_ms == 15_000


def test_cli_wins_even_over_a_bad_env_value() -> None:
    assert config_from_args(["--handshake-timeout-ms", "3000"], {ENV_TIMEOUT: "15s"}).handshake_timeout_ms == 3000


def test_handshake_timeout_env_accepts_a_plus_sign() -> None:
    assert config_from_args([], {ENV_TIMEOUT: "+15000"}).handshake_timeout_ms == 15_000


@pytest.mark.parametrize("value", ["15s", "-1", "0", " 5", "5 ", "", "1.5", "1e4", "\u0661\u0662"])
def test_handshake_timeout_env_strict_parsing(value: str) -> None:
    with pytest.raises(ConfigError, match=ENV_TIMEOUT):
        config_from_args([], {ENV_TIMEOUT: value})


def test_handshake_timeout_cli_error_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--handshake-timeout-ms"):
        config_from_args(["--handshake-timeout-ms", "15s"], {})


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_non_loopback_host_is_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="--host"):
        config_from_args(["--host", host], {})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert config_from_args(["--host", host], {}).host == host


def test_non_loopback_host_from_env_is_refused() -> None:
    with pytest.raises(ConfigError, match="--host"):
        config_from_args([], {"GATEWAY_STUB_HOST": "10.0.0.1"})


def test_cost_option_errors_name_the_source() -> None:
    with pytest.raises(ConfigError, match="--connect-cost-before-timer"):
        config_from_args(["--connect-cost-before-timer", "gauss:1"], {})
    config = config_from_args([], {"GATEWAY_STUB_CONNECT_COST_BEFORE_TIMER": "fixed:20"})
    assert config.connect_cost_before_timer == parse_cost("fixed:20")



JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(payload=JSON_VALUES, event=st.text(), seq=st.none() | st.integers(min_value=0))
def test_an_event_encoded_once_for_many_connections_reads_as_the_whole_frame(payload: Any, event: str,
                                                                           seq: int | None) -> None:
    frame: dict[str, Any] = {"type": "event", "event": event, "payload": payload}
    if seq is not None:
        frame["seq"] = seq
    assert event_frames(event, payload)(seq) == frame_text(frame)
