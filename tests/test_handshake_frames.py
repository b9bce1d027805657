"""The handshake over real sockets: exact frames, close codes and reasons, against the in-process stub.

The pre-auth rules themselves are unit-tested on the `Handshake` object (test_handshake_unit.py); here one case
per close path shows the server carries them out on the wire, beside the challenge, hello-ok and what follows
hello. Expected values come from ../shared/reference/openclaw-gateway.md, sections 2-6 and 12.5.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TOKEN,
    StubFactory,
    connect_frame,
    connect_params,
    handshake,
    recv_json,
    wait_closed,
    wait_until,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from gateway_stub import GatewayStub
from gateway_stub.cost import parse_cost
from gateway_stub.generations import APRIL_2026, CURRENT
from openclaw_wire.constants import PRESENCE_MAX_ENTRIES
from openclaw_wire.device_auth import DeviceIdentity

CLI_CLIENT = {"id": "cli", "version": "2026.4.24", "platform": "linux", "mode": "cli"}
TEST_CLIENT = {"id": "test", "version": "2026.9.6", "platform": "linux", "mode": "test"}


def cli_params(protocol: int = 3, scopes: list[str] | None = None) -> dict[str, Any]:
    return connect_params(protocol, client=dict(CLI_CLIENT), scopes=scopes or ["operator.read"])


def request(request_id: str, method: str, params: Any = None) -> str:
    frame: dict[str, Any] = {"type": "req", "id": request_id, "method": method}
    if params is not None:
        frame["params"] = params
    return json.dumps(frame)


async def open_socket(url: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and read the challenge frame."""
    ws = await connect(url, compression=None)
    challenge = await recv_json(ws)
    return ws, challenge


async def frames_until_closed(ws: ClientConnection, timeout: float = 5.0) -> list[str | bytes]:
    """Every frame the server sends until it closes the socket."""
    frames: list[str | bytes] = []

    async def drain() -> None:
        try:
            while True:
                frames.append(await ws.recv())
        except ConnectionClosed:
            pass

    await asyncio.wait_for(drain(), timeout)
    return frames


def send_burst(ws: ClientConnection, messages: list[str]) -> None:
    """Send text frames in one TCP write, so the server reads them in one go.

    Separate `send` calls can reach the server in several reads; with a blocking connect cost, frames
    read after the burn would only be seen once hello is done, and the test would depend on timing.
    """
    for message in messages:
        ws.protocol.send_text(message.encode("utf-8"))
    ws.transport.write(b"".join(ws.protocol.data_to_send()))


async def connected(url: str, params: dict[str, Any] | None = None) -> ClientConnection:
    ws, res = await handshake(url, params)
    assert res["ok"] is True, res
    assert res["payload"]["type"] == "hello-ok"
    return ws


async def recv_res(ws: ClientConnection, request_id: str) -> dict[str, Any]:
    """The res frame for `request_id`, past the `health` event the gateway sends shortly after hello."""
    while True:
        frame = await recv_json(ws)
        if (frame["type"], frame.get("event")) == ("event", "health"):
            continue
        assert (frame["type"], frame["id"]) == ("res", request_id), frame
        return frame


def key_tree(value: Any) -> Any:
    """The nested key structure of a JSON object (dict keys only, values dropped)."""
    if isinstance(value, dict):
        return {k: key_tree(v) for k, v in value.items()}
    return None


# ---------------------------------------------------------------------------------------------
# connect.challenge


async def test_challenge_april(stub: GatewayStub) -> None:
    ws, frame = await open_socket(stub.url)
    now_ms = time.time() * 1000
    assert set(frame) == {"type", "event", "payload"}  # no seq on the challenge
    assert (frame["type"], frame["event"]) == ("event", "connect.challenge")
    payload = frame["payload"]
    assert set(payload) == {"nonce", "ts"}
    assert str(uuid.UUID(payload["nonce"])) == payload["nonce"]
    assert isinstance(payload["ts"], int) and abs(payload["ts"] - now_ms) < 5000
    await ws.close()


async def test_challenge_current(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    ws, frame = await open_socket(stub.url)
    assert set(frame) == {"type", "event", "payload"}
    assert (frame["type"], frame["event"]) == ("event", "connect.challenge")
    payload = frame["payload"]
    assert set(payload) == {"nonce", "ts", "capabilities"}
    assert payload["capabilities"] == ["model-catalog-snapshot"]
    uuid.UUID(payload["nonce"])
    assert isinstance(payload["ts"], int)
    await ws.close()


async def test_challenge_nonce_is_fresh_per_connection(stub: GatewayStub) -> None:
    sockets = [await open_socket(stub.url) for _ in range(3)]
    assert len({challenge["payload"]["nonce"] for _, challenge in sockets}) == 3
    for ws, _ in sockets:
        await ws.close()


# ---------------------------------------------------------------------------------------------
# hello-ok


async def test_hello_ok_april(stub: GatewayStub) -> None:
    template = APRIL_2026.hello_template()
    ws1, res1 = await handshake(stub.url)
    ws2, res2 = await handshake(stub.url)
    assert set(res1) == {"type", "id", "ok", "payload"}
    assert (res1["type"], res1["id"], res1["ok"]) == ("res", "1:connect", True)
    hello = res1["payload"]
    assert key_tree(hello) == key_tree(template)
    assert hello["type"] == "hello-ok"
    assert hello["protocol"] == 3
    assert hello["server"]["version"] == "2026.4.24"
    assert hello["features"] == template["features"]
    assert hello["policy"] == {"maxPayload": 26214400, "maxBufferedBytes": 52428800, "tickIntervalMs": 30000}
    assert hello["auth"] == {"role": "operator", "scopes": ["operator.approvals"]}  # no auth.method in April
    # The recorded 2026.4.24 lists: 132 methods, 24 events; canvasHostUrl points at this gateway.
    assert (len(hello["features"]["methods"]), len(hello["features"]["events"])) == (132, 24)
    assert hello["canvasHostUrl"].startswith(stub.http_url + "__openclaw__/cap/")
    assert len(hello["canvasHostUrl"]) > len(stub.http_url + "__openclaw__/cap/")
    assert "bootId" not in hello["server"] and "capabilities" not in hello["features"]
    conn_ids = {hello["server"]["connId"], res2["payload"]["server"]["connId"]}
    assert len(conn_ids) == 2 and "" not in conn_ids
    await ws1.close()
    await ws2.close()


async def test_hello_ok_current(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    template = CURRENT.hello_template()
    ws1, res1 = await handshake(stub.url, connect_params(4, caps=["approvals"]))
    ws2, res2 = await handshake(stub.url, connect_params(4))
    assert (res1["type"], res1["id"], res1["ok"]) == ("res", "1:connect", True)
    hello = res1["payload"]
    assert key_tree(hello) == key_tree(template)
    assert hello["type"] == "hello-ok"
    assert hello["protocol"] == 4
    assert hello["server"]["version"] == "2026.9.6"
    # The recorded 2026.9.6 lists: 466 methods, 64 events, 21 capabilities.
    assert (len(hello["features"]["methods"]), len(hello["features"]["events"])) == (466, 64)
    assert "model-catalog-snapshot" in hello["features"]["capabilities"]
    policy = hello["policy"]
    assert (policy["maxPayload"], policy["maxBufferedBytes"], policy["tickIntervalMs"]) == (26214400, 52428800, 30000)
    recovery = hello["auth"].pop("recoveryScope")
    assert recovery and recovery == res2["payload"]["auth"]["recoveryScope"]  # one per boot, as recorded
    assert hello["auth"] == {"method": "token", "role": "operator", "scopes": ["operator.approvals"]}
    assert hello["pluginSurfaceUrls"]["canvas"].startswith(stub.http_url + "__openclaw__/cap/")
    assert hello["server"]["bootId"] != ""
    assert hello["server"]["bootId"] == res2["payload"]["server"]["bootId"]  # one boot, many connections
    conn_ids = {hello["server"]["connId"], res2["payload"]["server"]["connId"]}
    assert len(conn_ids) == 2 and "" not in conn_ids
    await ws1.close()
    await ws2.close()


async def test_current_accepts_protocol_3_from_a_node_client(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    node = {"id": "node-host", "version": "2026.9.6", "platform": "linux", "mode": "node"}
    ws, res = await handshake(stub.url, connect_params(3, client=node, role="node", scopes=[]))
    assert res["ok"] is True
    assert res["payload"]["protocol"] == 3
    await ws.close()


# ---------------------------------------------------------------------------------------------
# Handshake errors: the exact res frame, then the close

MISMATCH_ERROR = {
    "code": "INVALID_REQUEST",
    "message": "unauthorized: gateway token mismatch (provide gateway auth token)",
    "details": {"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch", "canRetryWithDeviceToken": False,
                "recommendedNextStep": "update_auth_credentials"},
}


@pytest.mark.parametrize(
    ("profile", "params", "error", "code", "reason"),
    [
        pytest.param("april-2026", connect_params(auth={"token": "wrong"}), MISMATCH_ERROR, 1008,
                     MISMATCH_ERROR["message"], id="wrong-token"),
        pytest.param("current", connect_params(3),
                     {"code": "INVALID_REQUEST", "message": "protocol mismatch",
                      "details": {"code": "PROTOCOL_MISMATCH", "clientMinProtocol": 3, "clientMaxProtocol": 3,
                                  "expectedProtocol": 4, "minimumProbeProtocol": 3}},
                     1002, "protocol mismatch", id="protocol-mismatch-current"),
        pytest.param("april-2026",
                     connect_params(client={"id": "matrix", "version": "1", "platform": "linux", "mode": "backend"}),
                     {"code": "INVALID_REQUEST",
                      "message": "invalid connect params: at /client/id: must be equal to one of the allowed values"},
                     1008, "invalid connect params: at /client/id: must be equal to one of the allowed values",
                     id="schema-client-id"),
    ],
)
async def test_connect_rejected(
    make_stub: StubFactory, profile: str, params: dict[str, Any], error: dict[str, Any], code: int, reason: str
) -> None:
    stub = await make_stub(profile=profile)
    ws, res = await handshake(stub.url, params)
    assert res == {"type": "res", "id": "1:connect", "ok": False, "error": error}
    assert await wait_closed(ws) == (code, reason)


async def test_first_request_not_connect(stub: GatewayStub) -> None:
    ws, _ = await open_socket(stub.url)
    await ws.send(request("h1", "health"))
    message = "invalid handshake: first request must be connect"
    assert await recv_json(ws) == {"type": "res", "id": "h1", "ok": False,
                                   "error": {"code": "INVALID_REQUEST", "message": message}}
    assert await wait_closed(ws) == (1008, message)


@pytest.mark.parametrize("message", ["{", b"\xff\xfe\x00binary"], ids=["partial-json", "binary-bytes"])
async def test_non_json_first_frame_closes_1000_without_res(stub: GatewayStub, message: str | bytes) -> None:
    ws, _ = await open_socket(stub.url)
    await ws.send(message)
    assert await frames_until_closed(ws) == []
    assert (ws.close_code, ws.close_reason) == (1000, "")


async def test_json_that_is_not_a_request_closes_1008(stub: GatewayStub) -> None:
    ws, _ = await open_socket(stub.url)
    await ws.send(json.dumps({"type": "event", "event": "tick", "payload": {}}))
    assert await frames_until_closed(ws) == []
    assert (ws.close_code, ws.close_reason) == (1008, "invalid request frame")


# Frames JSON.parse reads differently from Python's json (found by tests/test_fuzz_stub.py): the deep ones raised
# RecursionError in the handler (websockets then closed 1011), NaN and Infinity were accepted as numbers.
DEEP_PARAMS = '{"type":"req","id":"1","method":"connect","params":' + "[" * 300 + "]" * 300 + "}"


@pytest.mark.parametrize(("message", "close"), [
    ("[" * 60_000, (1000, "")),  # not JSON at all, as for JSON.parse
    ("[" * 500 + "]" * 500, (1008, "invalid request frame")),  # JSON, not a request
    ("NaN", (1000, "")),
    ('{"type":"req","id":"1","method":"connect","params":{"minProtocol":Infinity}}', (1000, "")),
    (DEEP_PARAMS, (1000, "")),  # the stub's own limit: an object nested past 128 levels is unparseable
], ids=["unclosed-deep", "deep-array", "nan", "infinity", "deep-params"])
async def test_frames_json_parse_refuses_or_nested_too_deep(stub: GatewayStub, message: str,
                                                            close: tuple[int, str]) -> None:
    ws, _ = await open_socket(stub.url)
    await ws.send(message)
    assert await frames_until_closed(ws) == []
    assert (ws.close_code, ws.close_reason) == close


async def test_lone_surrogate_escapes_and_huge_numbers_in_a_connect_are_answered(stub: GatewayStub) -> None:
    # A lone surrogate reaches the close reason (an unexpected property's name); 1e400 is JSON.parse's Infinity.
    params = connect_params()
    frame = connect_frame(params).replace('"role"', '"\\udc80": 1e400, "role"', 1)
    ws, _ = await open_socket(stub.url)
    await ws.send(frame)
    res = await recv_json(ws)
    assert res["error"]["message"] == "invalid connect params: at root: unexpected property '\ufffd'"
    assert await wait_closed(ws) == (1008, "invalid connect params: at root: unexpected property '\ufffd'")


async def test_a_header_sent_twice_does_not_fail_the_upgrade(stub: GatewayStub) -> None:
    # websockets' Headers.get raises on a repeated header; Node keeps the first User-Agent and joins X-Forwarded-For.
    reader, writer = await asyncio.open_connection("127.0.0.1", stub.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nUser-Agent: first\r\n"
                 b"User-Agent: second\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    await wait_until(lambda: stub.gauges()["preauth_sockets"] == 1)
    writer.transport.abort()
    await wait_until(lambda: stub.gauges()["preauth_sockets"] == 0 and stub.gauges()["preauth_budget_held"] == 0)


async def test_binary_frame_carrying_a_connect_is_read_as_text(stub: GatewayStub) -> None:
    ws, _ = await open_socket(stub.url)
    await ws.send(connect_frame().encode("utf-8"))
    res = await recv_json(ws)
    assert res["ok"] is True and res["payload"]["type"] == "hello-ok"
    await ws.close()


# Recorded on 2026.4.24, 4.29 and 9.6: 1009 with an empty reason (the ws library's 64 KiB limit fires first).
@pytest.mark.parametrize("profile", ["april-2026", "current"])
async def test_oversized_first_frame_closes_1009(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    ws, _ = await open_socket(stub.url)
    await ws.send("x" * 70_000)  # not JSON either: the size check comes first
    assert await frames_until_closed(ws) == []
    assert (ws.close_code, ws.close_reason) == (1009, "")
    assert stub.stats()["counters"]["handshakes_rejected_other"] == 1


# ---------------------------------------------------------------------------------------------
# Frames queued while connect is processed

SLOW_CONNECT = {"connect_cost_before_timer": parse_cost("fixed:300")}
MSG_FIRST_REQUEST = "invalid handshake: first request must be connect"


def first_request_error(request_id: str) -> dict[str, Any]:
    return {"type": "res", "id": request_id, "ok": False,
            "error": {"code": "INVALID_REQUEST", "message": MSG_FIRST_REQUEST}}


async def test_sixteenth_pending_frame_closes_1008_on_current(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current", **SLOW_CONNECT)
    ws, _ = await open_socket(stub.url)
    send_burst(ws, [connect_frame(cli_params(4)), *(request(f"h{index}", "health") for index in range(16))])
    frames = await frames_until_closed(ws)
    assert frames == []  # no hello-ok: the connect was abandoned with the socket
    assert (ws.close_code, ws.close_reason) == (1008, "too many pending handshake frames")
    assert stub.stats()["counters"].get("handshakes_succeeded", 0) == 0


async def test_frames_queued_during_connect_are_answered_after_hello_on_current(make_stub: StubFactory) -> None:
    queued = 15
    stub = await make_stub(profile="current", **SLOW_CONNECT)
    ws, _ = await open_socket(stub.url)
    started = time.monotonic()
    send_burst(ws, [connect_frame(cli_params(4)), *(request(f"h{index}", "health") for index in range(queued))])
    hello = await recv_json(ws)
    assert time.monotonic() - started >= 0.25  # the connect really was slow
    assert hello["id"] == "1:connect" and hello["ok"] is True
    answers = [await recv_json(ws) for _ in range(queued)]
    assert {a["id"] for a in answers} == {f"h{i}" for i in range(queued)}
    assert all(a["type"] == "res" and a["ok"] is True and a["payload"]["ok"] is True for a in answers)
    assert ws.close_code is None
    await ws.close()


async def test_april_answers_each_frame_sent_during_connect_then_closes_1008(make_stub: StubFactory) -> None:
    # April has no pending-frame queue (recorded on 2026.4.24 and 4.29, one TCP write of connect + 20 health):
    # every request read while the connect is processed gets its own "first request must be connect" res,
    # then the socket closes 1008; the connect gets no reply, not even a wrong token's.
    sent = 3
    stub = await make_stub(**SLOW_CONNECT)
    ws, _ = await open_socket(stub.url)
    params = connect_params(auth={"token": "wrong"})
    send_burst(ws, [connect_frame(params), *(request(f"h{index}", "health") for index in range(sent))])
    frames = [json.loads(frame) for frame in await frames_until_closed(ws)]
    assert frames == [first_request_error(f"h{index}") for index in range(sent)]
    assert (ws.close_code, ws.close_reason) == (1008, MSG_FIRST_REQUEST)
    counters = stub.stats()["counters"]
    assert counters.get("handshakes_succeeded", 0) == 0
    assert counters.get("handshakes_auth_failed", 0) == 0
    assert counters["handshakes_rejected_other"] == 1


# ---------------------------------------------------------------------------------------------
# Device identity


async def signed_connect(
    url: str, identity: DeviceIdentity, auth: dict[str, str], token: str, *, tamper: bool = False
) -> tuple[ClientConnection, dict[str, Any]]:
    ws, challenge = await open_socket(url)
    nonce, ts = challenge["payload"]["nonce"], challenge["payload"]["ts"]
    scopes = ["operator.admin"]
    device = identity.sign_connect(client=TEST_CLIENT, role="operator", scopes=scopes, token=token, nonce=nonce,
                                   signed_at_ms=ts)
    if tamper:
        other = DeviceIdentity.generate().sign_connect(client=TEST_CLIENT, role="operator", scopes=scopes,
                                                       token=token, nonce=nonce, signed_at_ms=ts)
        device["signature"] = other["signature"]
    params = connect_params(4, client=dict(TEST_CLIENT), scopes=scopes, auth=auth, device=device)
    await ws.send(connect_frame(params))
    return ws, await recv_json(ws)


async def test_device_signed_connect_gets_a_device_token(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    identity = DeviceIdentity.generate()
    ws, res = await signed_connect(stub.url, identity, {"token": TOKEN}, TOKEN)
    assert res["ok"] is True, res
    auth = res["payload"]["auth"]
    # as 2026.9.6 answers a newly paired test/test device (docs/recorded/approvals.md)
    assert set(auth) == {"method", "role", "scopes", "recoveryScope", "recoveryMigrationAllowed", "deviceToken",
                         "issuedAtMs"}
    assert (auth["method"], auth["role"]) == ("token", "operator")
    assert auth["scopes"] == ["operator.admin"]  # a device keeps its scopes, even as test/test
    assert isinstance(auth["deviceToken"], str) and auth["deviceToken"]
    assert isinstance(auth["issuedAtMs"], int) and abs(auth["issuedAtMs"] - time.time() * 1000) < 5000
    await ws.close()

    # The issued token then authenticates the same device on its own.
    device_token = auth["deviceToken"]
    ws2, res2 = await signed_connect(stub.url, identity, {"deviceToken": device_token}, device_token)
    assert res2["ok"] is True, res2
    assert res2["payload"]["auth"]["method"] == "device-token"
    await ws2.close()


async def test_device_token_of_another_device_is_refused(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    ws, res = await signed_connect(stub.url, DeviceIdentity.generate(), {"token": TOKEN}, TOKEN)
    device_token = res["payload"]["auth"]["deviceToken"]
    await ws.close()
    ws2, res2 = await signed_connect(stub.url, DeviceIdentity.generate(), {"deviceToken": device_token}, device_token)
    assert res2["ok"] is False
    assert res2["error"]["details"]["code"] == "AUTH_DEVICE_TOKEN_MISMATCH"
    assert (await wait_closed(ws2))[0] == 1008


async def test_tampered_device_signature_is_refused(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    ws, res = await signed_connect(stub.url, DeviceIdentity.generate(), {"token": TOKEN}, TOKEN, tamper=True)
    assert res == {"type": "res", "id": "1:connect", "ok": False,
                   "error": {"code": "INVALID_REQUEST", "message": "device signature invalid",
                             "details": {"code": "DEVICE_AUTH_SIGNATURE_INVALID"}}}
    assert await wait_closed(ws) == (1008, "device signature invalid")


# ---------------------------------------------------------------------------------------------
# After hello


async def test_health_and_status_for_an_april_reader(stub: GatewayStub) -> None:
    # April keeps the scopes of gateway-client/backend only (recorded: health-status-gwclient-read.json).
    ws, res = await handshake(stub.url, connect_params(scopes=["operator.read"]))
    assert res["payload"]["auth"] == {"role": "operator", "scopes": ["operator.read"]}
    await ws.send(request("2:health", "health"))
    health = await recv_res(ws, "2:health")
    assert (health["type"], health["id"], health["ok"]) == ("res", "2:health", True)
    assert health["payload"]["ok"] is True
    assert health["payload"]["channels"] == {}
    assert set(health["payload"]["eventLoop"]) >= {"degraded", "delayP99Ms", "delayMaxMs", "intervalMs"}
    await ws.send(request("3:status", "status", {}))
    status = await recv_res(ws, "3:status")
    assert (status["type"], status["id"], status["ok"]) == ("res", "3:status", True)
    recorded = recorded_status("2026.4.24")  # the keys and idle values 2026.4.24 answered, in its order
    assert list(status["payload"]) == list(recorded) and status["payload"] == recorded
    await ws.close()


def recorded_status(version: str) -> dict[str, Any]:
    path = Path(__file__).resolve().parent.parent / "docs" / "recorded" / version / "health-status-gwclient-read.json"
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["status"]["payload"]
    return payload


async def test_health_and_status_for_a_current_cli_reader(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    ws, res = await handshake(stub.url, cli_params(4))
    assert res["payload"]["auth"]["scopes"] == ["operator.read"]  # current keeps cli/cli scopes
    await ws.send(request("2:health", "health"))
    health = await recv_res(ws, "2:health")
    assert (health["ok"], health["payload"]["ok"]) == (True, True)
    await ws.send(request("3:status", "status", {}))
    status = await recv_res(ws, "3:status")
    assert (status["type"], status["id"], status["ok"]) == ("res", "3:status", True)
    payload, recorded = status["payload"], recorded_status("2026.9.6")
    assert list(payload) == list(recorded)  # sixteen keys, in 2026.9.6's order
    assert payload["runtimeVersion"] == "2026.9.6" and payload["pid"] == os.getpid()  # the stub runs in this process
    assert 10 * 2**20 < payload["processMemory"]["rssBytes"] < 2**30  # the stub's own, not the recorded 780 MB
    assert set(payload["eventLoop"]) == set(recorded["eventLoop"])
    assert payload["tasks"] == recorded["tasks"] and payload["sessions"] == recorded["sessions"]
    await ws.close()


async def test_april_cli_client_has_no_scopes_so_status_is_refused(stub: GatewayStub) -> None:
    ws, res = await handshake(stub.url, cli_params(scopes=["operator.read", "operator.write"]))
    assert res["ok"] is True
    assert res["payload"]["auth"] == {"role": "operator", "scopes": []}  # recorded on 2026.4.24 and 4.29
    await ws.send(request("2:health", "health"))
    health = await recv_res(ws, "2:health")  # health needs no scope
    assert (health["ok"], health["payload"]["ok"]) == (True, True)
    await ws.send(request("3:status", "status", {}))
    assert await recv_res(ws, "3:status") == {  # status.json, recorded on 2026.4.24
        "type": "res", "id": "3:status", "ok": False,
        "error": {"code": "INVALID_REQUEST", "message": "missing scope: operator.read"}}
    assert ws.close_code is None
    await ws.close()


def missing_scope_error(profile: str, scope: str) -> dict[str, Any]:
    """April's bare INVALID_REQUEST (4.24, 4.29) or current's FORBIDDEN with details (9.6), as recorded."""
    if profile == "april-2026":
        return {"code": "INVALID_REQUEST", "message": f"missing scope: {scope}"}
    return {"code": "FORBIDDEN", "message": f"missing scope: {scope}",
            "details": {"code": "MISSING_SCOPE", "missingScope": scope, "requiredScopes": [scope]}}


@pytest.mark.parametrize(("profile", "protocol"), [("april-2026", 3), ("current", 4)])
async def test_approvals_only_client_may_call_health_but_not_status(
    make_stub: StubFactory, profile: str, protocol: int
) -> None:
    # health-forbidden.json on 2026.4.24, 4.29 and 9.6: health answers any client, status needs operator.read.
    stub = await make_stub(profile=profile)
    ws = await connected(stub.url, connect_params(protocol))  # gateway-client/backend, ["operator.approvals"]
    await ws.send(request("2:health", "health"))
    health = await recv_res(ws, "2:health")
    assert (health["ok"], health["payload"]["ok"]) == (True, True)
    await ws.send(request("3:status", "status", {}))
    assert await recv_res(ws, "3:status") == {"type": "res", "id": "3:status", "ok": False,
                                              "error": missing_scope_error(profile, "operator.read")}
    await ws.close()


@pytest.mark.parametrize(
    ("profile", "protocol", "version"), [("april-2026", 3, "2026.4.24"), ("current", 4, "2026.9.6")]
)
async def test_shape_without_kept_scopes_is_refused_status(
    make_stub: StubFactory, profile: str, protocol: int, version: str
) -> None:
    stub = await make_stub(profile=profile)
    params = connect_params(protocol, client={**TEST_CLIENT, "version": version}, scopes=["operator.read"])
    ws, res = await handshake(stub.url, params)
    assert res["payload"]["auth"]["scopes"] == []  # test/test: scopes cleared (reference §3.4)
    await ws.send(request("2:status", "status"))
    assert await recv_res(ws, "2:status") == {"type": "res", "id": "2:status", "ok": False,
                                              "error": missing_scope_error(profile, "operator.read")}
    await ws.close()


async def test_backend_with_origin_header_loses_scopes(stub: GatewayStub) -> None:
    ws = await connect(stub.url, compression=None, origin=Origin("http://127.0.0.1"))
    await recv_json(ws)
    await ws.send(connect_frame())
    res = await recv_json(ws)
    assert res["ok"] is True and res["payload"]["auth"]["scopes"] == []
    await ws.close()


@pytest.mark.parametrize(
    ("profile", "params"),
    [
        pytest.param("april-2026", connect_params(), id="april-approvals"),  # recorded on 2026.4.24 and 4.29
        pytest.param("current", connect_params(4), id="current-approvals"),  # recorded on 2026.9.6
        pytest.param("current", cli_params(4), id="current-cli-read"),
    ],
)
async def test_unknown_method_needs_admin_before_it_is_called_unknown(
    make_stub: StubFactory, profile: str, params: dict[str, Any]
) -> None:
    stub = await make_stub(profile=profile)
    ws = await connected(stub.url, params)  # no operator.admin
    await ws.send(request("2:nope", "no.such.method", {}))
    assert await recv_res(ws, "2:nope") == {"type": "res", "id": "2:nope", "ok": False,
                                            "error": missing_scope_error(profile, "operator.admin")}
    assert ws.close_code is None
    await ws.close()


@pytest.mark.parametrize(
    ("profile", "params"),
    [
        pytest.param("april-2026", connect_params(scopes=["operator.admin"]), id="april"),
        pytest.param("current", cli_params(4, scopes=["operator.admin"]), id="current"),
    ],
)
async def test_unknown_method_keeps_the_socket_open(
    make_stub: StubFactory, profile: str, params: dict[str, Any]
) -> None:
    stub = await make_stub(profile=profile)
    ws, res = await handshake(stub.url, params)
    assert res["payload"]["auth"]["scopes"] == ["operator.admin"]
    await ws.send(request("2:nope", "no.such.method", {}))
    assert await recv_res(ws, "2:nope") == {
        "type": "res", "id": "2:nope", "ok": False,
        "error": {"code": "INVALID_REQUEST", "message": "unknown method: no.such.method"}}
    await ws.send(request("3:health", "health"))
    answer = await recv_res(ws, "3:health")
    assert answer["id"] == "3:health" and answer["ok"] is True
    assert ws.close_code is None
    await ws.close()


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return sorted(frame["event"] for frame in frames)


async def test_ticks_carry_a_per_connection_seq(make_stub: StubFactory) -> None:
    stub = await make_stub(tick_interval_ms=2000, time_scale=0.05)  # a tick every 100 ms
    first = await connected(stub.url, cli_params())
    # The health event (4 ms after hello, scaled) takes a seq of its own: the ticks follow it.
    frames = [await recv_json(first) for _ in range(3)]
    assert [(f["type"], f["seq"]) for f in frames] == [("event", 1), ("event", 2), ("event", 3)]
    assert kinds(frames) == ["health", "tick", "tick"]
    ticks = [f for f in frames if f["event"] == "tick"]
    assert all(set(t) == {"type", "event", "payload", "seq"} and isinstance(t["payload"]["ts"], int) for t in ticks)
    assert ticks[1]["payload"]["ts"] > ticks[0]["payload"]["ts"]

    second = await connected(stub.url, cli_params())
    second_frames = [await recv_json(second) for _ in range(4)]
    assert [f["seq"] for f in second_frames] == [1, 2, 3, 4]
    assert kinds(second_frames) == ["health", "tick", "tick", "tick"]
    # April sends the second's health event to every client (recorded on 4.24 and 4.29): the first gets it too.
    more = [await recv_json(first) for _ in range(4)]
    assert [t["seq"] for t in more] == [4, 5, 6, 7] and kinds(more) == ["health", "tick", "tick", "tick"]
    await first.close()
    await second.close()


async def test_no_ticks_before_hello(make_stub: StubFactory) -> None:
    stub = await make_stub(tick_interval_ms=2000, time_scale=0.05, handshake_timeout_ms=60_000)
    ws, _ = await open_socket(stub.url)
    authed = await connected(stub.url, cli_params())
    while (await recv_json(authed))["event"] != "tick":  # one tick has gone out since
        pass
    await ws.send(connect_frame(cli_params()))
    hello = await recv_json(ws)
    assert hello["type"] == "res" and hello["ok"] is True
    # No tick reached the socket while it was pre-auth: its seq starts after hello, at the health event.
    frames = [await recv_json(ws) for _ in range(2)]
    assert [f["seq"] for f in frames] == [1, 2]
    assert kinds(frames) == ["health", "tick"]
    await ws.close()
    await authed.close()


@pytest.mark.parametrize(
    ("profile", "protocol", "earliest_s", "latest_s"),
    [("april-2026", 3, 0.0, 0.2), ("current", 4, 0.35, 2.0)],  # recorded: 4 ms on 2026.4.24, 378 ms on 9.6
)
async def test_health_event_follows_hello(
    make_stub: StubFactory, profile: str, protocol: int, earliest_s: float, latest_s: float
) -> None:
    stub = await make_stub(profile=profile)
    ws = await connected(stub.url, connect_params(protocol))  # the approvals-only handler gets it too
    started = time.monotonic()
    event = await recv_json(ws)
    elapsed = time.monotonic() - started
    assert (event["type"], event["event"], event["seq"]) == ("event", "health", 1)
    assert event["payload"]["ok"] is True
    recorded = (APRIL_2026 if profile == "april-2026" else CURRENT).hello_template()["snapshot"]["health"]
    assert set(event["payload"]) >= set(recorded)
    assert earliest_s <= elapsed < latest_s
    await ws.close()


# ---------------------------------------------------------------------------------------------
# Loopback auth-failure delay


async def timed_wrong_token(url: str, protocol: int = 3) -> float:
    ws, _ = await open_socket(url)
    started = time.monotonic()
    await ws.send(connect_frame(connect_params(protocol, auth={"token": "wrong"})))
    res = await recv_json(ws)
    elapsed = time.monotonic() - started
    assert res["error"] == MISMATCH_ERROR
    assert await wait_closed(ws) == (1008, MISMATCH_ERROR["message"])
    return elapsed


async def test_auth_failure_delay_grows_on_current(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current", auth_failure_delay=True, time_scale=1.0)
    first = await timed_wrong_token(stub.url, 4)
    second = await timed_wrong_token(stub.url, 4)
    assert first >= 0.2  # 250 ms
    assert second >= 0.45  # 500 ms
    assert second > first
    await wait_until(lambda: stub.stats()["counters"].get("handshakes_auth_failed") == 2)


async def test_april_answers_a_wrong_token_at_once(make_stub: StubFactory) -> None:
    # Recorded on 2026.4.24 and 4.29: the mismatch res ~3 ms after connect, no loopback back-off.
    stub = await make_stub(auth_failure_delay=True, time_scale=1.0)
    elapsed = [await timed_wrong_token(stub.url) for _ in range(3)]
    assert max(elapsed) < 0.2
    await wait_until(lambda: stub.stats()["counters"].get("handshakes_auth_failed") == 3)


async def test_auth_failure_delay_off(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")  # FAST turns the delay off
    assert stub.config.auth_failure_delay is False
    assert await timed_wrong_token(stub.url, 4) < 0.2


async def test_current_health_has_the_recorded_shape(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    ws = await connected(stub.url, cli_params(4))
    await ws.send(request("2:health", "health"))
    health = (await recv_res(ws, "2:health"))["payload"]
    recorded = CURRENT.hello_template()["snapshot"]["health"]
    assert set(health) == set(recorded)
    assert health["defaultAgentId"] == "main" and health["eventLoop"]["degraded"] in (True, False)
    await ws.close()


@pytest.mark.parametrize(
    ("profile", "handler_params", "reader_params"),
    [
        # On April only gateway-client/backend keeps operator.read; on current cli/cli does too.
        pytest.param("april-2026", connect_params(), connect_params(scopes=["operator.read"]), id="april"),
        pytest.param("current", connect_params(4), cli_params(4), id="current"),
    ],
)
async def test_exec_approval_list_answers_the_handler_with_no_pending_records(
    make_stub: StubFactory, profile: str, handler_params: dict[str, Any], reader_params: dict[str, Any]
) -> None:
    stub = await make_stub(profile=profile)
    ws = await connected(stub.url, handler_params)  # the approvals handler: gateway-client/backend, approvals
    await ws.send(request("2:list", "exec.approval.list", {}))
    assert await recv_res(ws, "2:list") == {"type": "res", "id": "2:list", "ok": True, "payload": []}
    await ws.close()
    reader, res = await handshake(stub.url, reader_params)
    assert res["payload"]["auth"]["scopes"] == ["operator.read"]  # operator.read cannot list approvals
    await reader.send(request("2:list", "exec.approval.list", {}))
    # current: the frame recorded on 2026.9.6 (reference §6); April: the bare INVALID_REQUEST of 4.24 and 4.29.
    assert (await recv_res(reader, "2:list"))["error"] == missing_scope_error(profile, "operator.approvals")
    await reader.close()


async def test_a_number_json_cannot_hold_comes_back_as_null_as_json_stringify_writes_it(stub: GatewayStub) -> None:
    # JSON.parse reads 1e400 as Infinity, the schema takes it as a number, JSON.stringify writes it as null; Python's
    # json wrote `Infinity`, which no JSON parser reads.
    watcher = await connected(stub.url, connect_params())
    agent = await connected(stub.url, connect_params())
    await agent.send('{"type":"req","id":"r1","method":"exec.approval.request","params":{"id":"inf","command":"ls",'
                     '"turnSourceThreadId":1e400,"twoPhase":true}}')

    def strict(text: str | bytes) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text!r}"))
        return frame

    while (event := strict(await asyncio.wait_for(watcher.recv(), 5))).get("event") != "exec.approval.requested":
        pass
    assert event["payload"]["request"]["turnSourceThreadId"] is None
    await watcher.close()
    await agent.close()


async def test_april_keeps_at_most_200_presence_entries_newest_first(make_stub: StubFactory) -> None:
    # listSystemPresence (2026.4.24): past MAX_ENTRIES = 200 the oldest entries go; the gateway's own entry is extra.
    stub = await make_stub(profile="april-2026")
    sockets = []
    for index in range(PRESENCE_MAX_ENTRIES + 3):
        params = connect_params()
        params["client"] = {**params["client"], "displayName": f"Matrix Native Approvals (acct{index})"}
        sockets.append(await connected(stub.url, params))
    watcher = sockets[-1]
    # A client leaving (its socket dropped: an unread client's close handshake waits behind its queued events).
    sockets[0].transport.abort()
    while (event := await recv_json(watcher)).get("event") != "presence":
        pass
    hosts = [entry["host"] for entry in event["payload"]["presence"]]
    assert len(hosts) == 1 + PRESENCE_MAX_ENTRIES
    clients = [f"Matrix Native Approvals (acct{i})" for i in range(PRESENCE_MAX_ENTRIES + 3)]
    # Newest first: acct0's disconnect is the newest entry; the three oldest connects (acct1-acct3) are gone.
    assert hosts[1:3] == [clients[0], clients[-1]] and clients[1] not in hosts and clients[4] in hosts
    # The rest close with the stub: closed one by one, each would send the others a 200-entry `presence`.
