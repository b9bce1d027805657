"""One native-approvals handler's gateway client, over a real socket (gevent + `websockets.sync`).

It behaves like the April reference client (reference §7, §8.3-8.4): open the socket, wait for
`connect.challenge` (15 s), send the handler's `connect`, wait for the answer (30 s request timeout),
then `exec.approval.list` and stay connected, watching ticks (nothing for 2 x tickIntervalMs closes
4000 "tick timeout"). Every close schedules its own reconnect, 1 s doubling to 30 s with no jitter,
reset on hello; fatal error codes pause it.

The first attempt's result is the handler's start: `on_start(handler_id, attempt)` is called once,
with a hello or the failure. What happens after a failed start is the bootstrap's business; this
client stops there unless `keep_reconnecting_after_failed_start` is set (whether the real 4.20/4.29
bootstrap stops the failed client before its retry is unconfirmed, reference §14 question 5).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from harness.accounts.connect_shape import handler_connect_params, request_frame
from harness.accounts.ledger import Attempt, Disconnect, Outcome
from harness.clock import ScaledClock
from harness.policy.backoff import client_reconnect_backoff

# packages/gateway-client/src/timeouts.ts and client.ts
CONNECT_CHALLENGE_TIMEOUT_MS = 15_000
DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS = 30_000
TICK_INTERVAL_MS = 30_000
# details.code values that pause reconnecting (shouldPauseGatewayReconnect, 9.6; the April list is unconfirmed).
FATAL_DETAIL_CODES = frozenset({
    "AUTH_TOKEN_MISSING", "AUTH_BOOTSTRAP_TOKEN_INVALID", "AUTH_PASSWORD_MISSING", "AUTH_PASSWORD_MISMATCH",
    "AUTH_RATE_LIMITED", "AUTH_DEVICE_TOKEN_MISMATCH", "AUTH_SCOPE_MISMATCH", "AUTH_IDENTITY_HEADER_REQUIRED",
    "AUTH_VERIFIED_USER_REQUIRED", "CONTROL_UI_BUILD_MISMATCH", "PAIRING_REQUIRED",
    "CONTROL_UI_DEVICE_IDENTITY_REQUIRED", "DEVICE_IDENTITY_REQUIRED", "AUTH_TOKEN_MISMATCH", "PROTOCOL_MISMATCH",
})


@dataclass(frozen=True)
class ClientSettings:
    url: str
    token: str
    channel: str
    account: str
    protocol: int = 3
    handshake_timeout_ms: int = 10_000  # the socket's own upgrade timeout, as `ws` handshakeTimeout
    keep_reconnecting_after_failed_start: bool = False


class HandlerClient:
    def __init__(self, settings: ClientSettings, handler_id: int, clock: ScaledClock,
                 on_start: Callable[[int, Attempt], None], on_attempt: Callable[[Attempt], None],
                 on_disconnect: Callable[[Disconnect], None]) -> None:
        self.settings = settings
        self.handler_id = handler_id
        self._clock = clock
        self._on_start = on_start
        self._on_attempt = on_attempt
        self._on_disconnect = on_disconnect
        self._stopped = False
        self._ws: ClientConnection | None = None
        self._greenlet: gevent.Greenlet[Any, None] | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """client.stop(): close the socket and end the reconnect loop."""
        self._stopped = True
        ws = self._ws
        if ws is not None:
            gevent.spawn(_close_quietly, ws, 0.0)
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        backoff = client_reconnect_backoff()
        started = False
        while not self._stopped:
            attempt, ws, retry_after_ms, fatal = self._attempt()
            if self._stopped:
                if ws is not None:
                    _close_quietly(ws, 0.0)
                return
            self._on_attempt(attempt)
            if not started:
                started = True
                self._on_start(self.handler_id, attempt)
                if attempt.outcome is not Outcome.HELLO and not self.settings.keep_reconnecting_after_failed_start:
                    return
            if ws is not None:
                backoff.reset()
                self._hold(ws)
            if fatal or self._stopped:
                return
            gevent.sleep(self._clock.real_s(backoff.next_delay_ms(floor_ms=retry_after_ms)))

    def _attempt(self) -> tuple[Attempt, ClientConnection | None, int, bool]:
        """One connect: (what happened, the socket if it reached hello, retryAfterMs floor, fatal?)."""
        started_ms = self._clock.now_ms()
        s = self.settings

        def ended(outcome: Outcome, close_code: int | None = None, detail: str = "") -> Attempt:
            return Attempt(s.account, self.handler_id, started_ms, self._clock.now_ms(), outcome, close_code, detail)

        try:
            # The connection lives past this call (until the handler stops), hence no context manager.
            ws = connect(s.url, legacy=True, compression=None,
                         open_timeout=self._clock.real_s(s.handshake_timeout_ms),
                         close_timeout=self._clock.real_s(1000), max_size=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            outcome = Outcome.PREAUTH_REJECTED if status == 503 else Outcome.NETWORK_ERROR
            return ended(outcome, detail=f"HTTP {status}"), None, 0, False
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            return ended(Outcome.NETWORK_ERROR, detail=type(exc).__name__), None, 0, False
        self._ws = ws
        try:
            challenge = self._recv(ws, CONNECT_CHALLENGE_TIMEOUT_MS)
            if challenge is None:
                _close_quietly(ws, 0.0, 1008, "connect challenge timeout")
                return ended(Outcome.CHALLENGE_TIMEOUT, 1008, "connect challenge timeout"), None, 0, False
            params = handler_connect_params(channel=s.channel, account=s.account, token=s.token, protocol=s.protocol)
            request_id, frame = request_frame("connect", params)
            ws.send(frame)
            while True:
                reply = self._recv(ws, DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS)
                if reply is None:
                    _close_quietly(ws, 0.0)
                    return ended(Outcome.REQUEST_TIMEOUT, detail="gateway request timeout for connect"), None, 0, False
                if reply.get("type") == "res" and reply.get("id") == request_id:
                    break
            if not reply.get("ok"):
                error = reply.get("error") or {}
                detail_code = (error.get("details") or {}).get("code", "")
                _close_quietly(ws, 0.0)
                return (ended(Outcome.REJECTED, ws.close_code, f"{error.get('code')}: {error.get('message')}"),
                        None, int(error.get("retryAfterMs") or 0), detail_code in FATAL_DETAIL_CODES)
            _, frame = request_frame("exec.approval.list", {})
            ws.send(frame)
            return ended(Outcome.HELLO), ws, 0, False
        except ConnectionClosed:
            close_code, reason = ws.close_code, ws.close_reason or ""
            if close_code == 1000 and not reason:
                return ended(Outcome.HANDSHAKE_TIMEOUT, 1000), None, 0, False
            return ended(Outcome.CLOSED, close_code, reason), None, 0, False
        except OSError as exc:
            return ended(Outcome.NETWORK_ERROR, detail=type(exc).__name__), None, 0, False

    def _recv(self, ws: ClientConnection, timeout_ms: float) -> dict[str, Any] | None:
        """The next frame as JSON, or None when `timeout_ms` (profile time) passes first."""
        try:
            message = ws.recv(timeout=self._clock.real_s(timeout_ms))
        except TimeoutError:
            return None
        frame: dict[str, Any] = json.loads(message)
        return frame

    def _hold(self, ws: ClientConnection) -> None:
        """Stay connected, receiving events; the tick watchdog closes 4000 after 2 x tickIntervalMs of silence."""
        try:
            while not self._stopped:
                if self._recv(ws, 2 * TICK_INTERVAL_MS) is None:
                    _close_quietly(ws, 0.0, 4000, "tick timeout")
                    break
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
        if not self._stopped:
            self._on_disconnect(Disconnect(self.settings.account, self.handler_id, self._clock.now_ms(),
                                           ws.close_code, ws.close_reason or ""))


def _close_quietly(ws: ClientConnection, wait_s: float, code: int = 1000, reason: str = "") -> None:
    if wait_s:
        gevent.sleep(wait_s)
    with contextlib.suppress(Exception):  # a socket already gone is what we wanted
        ws.close(code, reason)
