"""One native-approvals handler's gateway client, over a real socket (gevent + `harness.client.plain_socket`).

It behaves like the April reference client (reference §7, §8.3-8.4): open the session (see
`harness.client.session`), then `exec.approval.list` and stay connected, passing every event to
`on_event` and watching ticks (nothing for 2 x tickIntervalMs closes 4000 "tick timeout"). Every close
schedules its own reconnect, 1 s doubling to 30 s with no jitter, reset on hello; fatal error codes
pause it.

The first attempt's result is the handler's start: `on_start(handler_id, attempt)` is called once,
with a hello or the failure. What happens after a failed start is the bootstrap's business; this
client stops there unless `keep_reconnecting_after_failed_start` is set (whether the real 4.20/4.29
bootstrap stops the failed client before its retry is unconfirmed, reference §14 question 5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from websockets.exceptions import ConnectionClosed

from harness.client.connect_shape import ClientShape, request_frame
from harness.client.plain_socket import PlainSocketConnection
from harness.client.session import HandshakeFailed, close_quietly, open_session, recv_frame
from harness.clock import ScaledClock
from harness.events import Attempt, Disconnect, Outcome
from harness.policy.backoff import client_reconnect_backoff
from openclaw_wire.constants import APRIL_HANDSHAKE_TIMEOUT_MS, TICK_INTERVAL_MS


@dataclass(frozen=True)
class ClientSettings:
    url: str
    token: str
    channel: str
    account: str
    shape: ClientShape = ClientShape()
    handshake_timeout_ms: int = APRIL_HANDSHAKE_TIMEOUT_MS  # the socket's own upgrade timeout, as `ws` handshakeTimeout
    keep_reconnecting_after_failed_start: bool = False


class HandlerClient:
    def __init__(self, settings: ClientSettings, handler_id: int, clock: ScaledClock,
                 on_start: Callable[[int, Attempt], None], on_attempt: Callable[[Attempt], None],
                 on_disconnect: Callable[[Disconnect], None],
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.settings = settings
        self.handler_id = handler_id
        self._clock = clock
        self._on_start = on_start
        self._on_attempt = on_attempt
        self._on_disconnect = on_disconnect
        self._on_event = on_event
        self._stopped = False
        self._ws: PlainSocketConnection | None = None
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """client.stop(): close the socket and end the reconnect loop."""
        self._stopped = True
        ws = self._ws
        if ws is not None:
            gevent.spawn(close_quietly, ws)
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        backoff = client_reconnect_backoff()
        started = False
        while not self._stopped:
            attempt, ws, retry_after_ms, fatal = self._attempt()
            if self._stopped:
                if ws is not None:
                    close_quietly(ws)
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

    def _attempt(self) -> tuple[Attempt, PlainSocketConnection | None, int, bool]:
        """One connect: (what happened, the socket if it reached hello, retryAfterMs floor, fatal?)."""
        s = self.settings
        started_ms = self._clock.now_ms()
        params = s.shape.handler_params(s.channel, s.account, s.token)
        try:
            ws = open_session(s.url, params, self._clock, handshake_timeout_ms=s.handshake_timeout_ms,
                              device=s.shape.device)
        except HandshakeFailed as failed:
            attempt = Attempt(s.account, self.handler_id, started_ms, self._clock.now_ms(), failed.outcome,
                              failed.close_code, failed.detail)
            return attempt, None, failed.retry_after_ms, failed.fatal
        self._ws = ws
        attempt = Attempt(s.account, self.handler_id, started_ms, self._clock.now_ms(), Outcome.HELLO)
        # Replay: what is pending now is handled like a pushed `requested` event (reference §8.4).
        with contextlib.suppress(ConnectionClosed):
            ws.send(request_frame("exec.approval.list", {})[1])
        return attempt, ws, 0, False

    def _hold(self, ws: PlainSocketConnection) -> None:
        """Stay connected, handing events on; the tick watchdog closes 4000 after 2 x tickIntervalMs of silence."""
        try:
            while not self._stopped:
                frame = recv_frame(ws, self._clock, 2 * TICK_INTERVAL_MS)
                if frame is None:
                    close_quietly(ws, 4000, "tick timeout")
                    break
                if self._on_event is not None:
                    self._on_event(frame)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
        if not self._stopped:
            self._on_disconnect(Disconnect(self.settings.account, self.handler_id, self._clock.now_ms(),
                                           ws.close_code, ws.close_reason or ""))
