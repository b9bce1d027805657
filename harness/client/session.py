"""One authenticated gateway session over a plain socket (`harness.client.plain_socket`), opened as the
reference client opens it.

`open_session` connects, waits for `connect.challenge` (15 s), sends `connect` and waits for its answer
(30 s request timeout); with a device key, the connect carries a device proof signed over the
challenge's nonce and ts (reference §12.5). It returns the socket at hello, or raises `HandshakeFailed` with the outcome
classified (see `harness.events.Outcome`). `call` sends one request and returns its response
frame, skipping events and other responses. Handler clients, the health probe, the agents' short-lived
sockets and the operator's click all use these, so they fail in the same words.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from harness.client.connect_shape import request_frame
from harness.client.plain_socket import PlainSocketConnection, connect
from harness.clock import ScaledClock
from harness.events import Outcome
from openclaw_wire.constants import CONNECT_CHALLENGE_TIMEOUT_MS, DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS
from openclaw_wire.device_auth import DeviceIdentity

# details.code values that pause reconnecting (shouldPauseGatewayReconnect, 9.6; the April list is unconfirmed).
FATAL_DETAIL_CODES = frozenset({
    "AUTH_TOKEN_MISSING", "AUTH_BOOTSTRAP_TOKEN_INVALID", "AUTH_PASSWORD_MISSING", "AUTH_PASSWORD_MISMATCH",
    "AUTH_RATE_LIMITED", "AUTH_DEVICE_TOKEN_MISMATCH", "AUTH_SCOPE_MISMATCH", "AUTH_IDENTITY_HEADER_REQUIRED",
    "AUTH_VERIFIED_USER_REQUIRED", "CONTROL_UI_BUILD_MISMATCH", "PAIRING_REQUIRED",
    "CONTROL_UI_DEVICE_IDENTITY_REQUIRED", "DEVICE_IDENTITY_REQUIRED", "AUTH_TOKEN_MISMATCH", "PROTOCOL_MISMATCH",
})


class HandshakeFailed(Exception):
    def __init__(self, outcome: Outcome, close_code: int | None = None, detail: str = "",
                 retry_after_ms: int = 0, fatal: bool = False) -> None:
        super().__init__(f"{outcome.value}: {detail}" if detail else outcome.value)
        self.outcome = outcome
        self.close_code = close_code
        self.detail = detail
        self.retry_after_ms = retry_after_ms
        self.fatal = fatal


class RequestTimedOut(Exception):
    """No response within the request timeout: `gateway request timeout for <method>`."""


def open_session(url: str, connect_params: dict[str, Any], clock: ScaledClock, *,
                 handshake_timeout_ms: float, device: DeviceIdentity | None = None) -> PlainSocketConnection:
    try:
        # The connection outlives this call, hence no context manager.
        # No client pings: the reference client (Node `ws`) sends none; the gateway pings it every 25 s.
        ws = connect(url, open_timeout=clock.real_s(handshake_timeout_ms), close_timeout=clock.real_s(1000))
    except InvalidStatus as exc:
        status = exc.response.status_code
        outcome = Outcome.PREAUTH_REJECTED if status == 503 else Outcome.NETWORK_ERROR
        raise HandshakeFailed(outcome, detail=f"HTTP {status}") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise HandshakeFailed(Outcome.NETWORK_ERROR, detail=type(exc).__name__) from None
    try:
        challenge = _recv(ws, clock, CONNECT_CHALLENGE_TIMEOUT_MS)
        if challenge is None:
            close_quietly(ws, 1008, "connect challenge timeout")
            raise HandshakeFailed(Outcome.CHALLENGE_TIMEOUT, 1008, "connect challenge timeout")
        if device is not None:
            connect_params = signed(connect_params, device, challenge.get("payload") or {})
        try:
            reply = call(ws, "connect", connect_params, clock)
        except RequestTimedOut:
            close_quietly(ws)
            raise HandshakeFailed(Outcome.REQUEST_TIMEOUT, detail="gateway request timeout for connect") from None
        if not reply.get("ok"):
            error = reply.get("error") or {}
            detail_code = (error.get("details") or {}).get("code", "")
            close_quietly(ws)
            raise HandshakeFailed(Outcome.REJECTED, ws.close_code, f"{error.get('code')}: {error.get('message')}",
                                  int(error.get("retryAfterMs") or 0), detail_code in FATAL_DETAIL_CODES)
        return ws
    except ConnectionClosed:
        close_code, reason = ws.close_code, ws.close_reason or ""
        if close_code == 1000 and not reason:
            raise HandshakeFailed(Outcome.HANDSHAKE_TIMEOUT, 1000) from None
        raise HandshakeFailed(Outcome.CLOSED, close_code, reason) from None
    except OSError as exc:
        raise HandshakeFailed(Outcome.NETWORK_ERROR, detail=type(exc).__name__) from None


def signed(connect_params: dict[str, Any], device: DeviceIdentity, challenge: dict[str, Any]) -> dict[str, Any]:
    """`connect_params` plus `device`: the v3 proof over the challenge's nonce, signed at the challenge's ts."""
    proof = device.sign_connect(client=connect_params["client"], role=connect_params["role"],
                                scopes=connect_params.get("scopes", []), token=connect_params["auth"]["token"],
                                nonce=str(challenge.get("nonce", "")), signed_at_ms=int(challenge.get("ts", 0)))
    return {**connect_params, "device": proof}


@contextlib.contextmanager
def short_session(url: str, connect_params: dict[str, Any], clock: ScaledClock, *,
                  handshake_timeout_ms: float, device: DeviceIdentity | None = None) -> Iterator[PlainSocketConnection]:
    """A session for one or two requests, closed afterwards: April's callGateway and resolver clients."""
    ws = open_session(url, connect_params, clock, handshake_timeout_ms=handshake_timeout_ms, device=device)
    try:
        yield ws
    finally:
        close_quietly(ws)


def call(ws: PlainSocketConnection, method: str, params: Any, clock: ScaledClock,
         timeout_ms: float = DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS) -> dict[str, Any]:
    """Send one request; return its first response frame. Raises RequestTimedOut or ConnectionClosed."""
    request_id, frame = request_frame(method, params)
    ws.send(frame)
    return next_response(ws, request_id, clock, timeout_ms)


def next_response(ws: PlainSocketConnection, request_id: str, clock: ScaledClock, timeout_ms: float) -> dict[str, Any]:
    deadline_ms = clock.now_ms() + timeout_ms
    while True:
        frame = _recv(ws, clock, deadline_ms - clock.now_ms())
        if frame is None:
            raise RequestTimedOut(request_id)
        if frame.get("type") == "res" and frame.get("id") == request_id:
            return frame


def _recv(ws: PlainSocketConnection, clock: ScaledClock, timeout_ms: float) -> dict[str, Any] | None:
    if timeout_ms <= 0:
        return None
    try:
        message = ws.recv(timeout=clock.real_s(timeout_ms))
    except TimeoutError:
        return None
    frame: dict[str, Any] = json.loads(message)
    return frame


def recv_frame(ws: PlainSocketConnection, clock: ScaledClock, timeout_ms: float) -> dict[str, Any] | None:
    """The next frame, or None when `timeout_ms` (scenario time) passes first."""
    return _recv(ws, clock, timeout_ms)


def close_quietly(ws: PlainSocketConnection, code: int = 1000, reason: str = "") -> None:
    with contextlib.suppress(Exception):  # a socket already gone is what we wanted
        ws.close(code, reason)
