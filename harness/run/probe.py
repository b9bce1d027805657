"""The health probe: an operator client that measures the latency tax a storm puts on normal traffic."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event
from websockets.exceptions import ConnectionClosed

from harness.client.connect_shape import ClientShape
from harness.client.session import HandshakeFailed, RequestTimedOut, call, short_session
from harness.clock import ScaledClock
from harness.events import HealthSample, Outcome
from openclaw_wire.constants import DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS


@dataclass
class HealthProbe:
    """Connected before the accounts start, it calls `health` at a fixed interval over that connection.

    If its connection drops it reconnects like any client, and its failed handshakes are counted, so
    the gateway's log can be reconciled with accounts plus probe. It is the harness's instrument, not a
    fake of a real client: device-less, at the run's protocol, with the longer handshake timeout.
    """

    url: str
    token: str
    clock: ScaledClock
    interval_ms: float
    shape: ClientShape
    samples: list[HealthSample] = field(default_factory=list)
    handshake_timeouts: int = 0
    failures: int = 0
    connected: Event = field(default_factory=Event)

    def run(self) -> None:
        params = self.shape.params("harness health probe", ["operator.read"], self.token)
        while True:
            try:
                with short_session(self.url, params, self.clock,
                                   handshake_timeout_ms=DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS) as ws:
                    self.connected.set()
                    while True:
                        sent_ms, started = self.clock.now_ms(), time.perf_counter()
                        answer = call(ws, "health", {}, self.clock)
                        self.samples.append(HealthSample(sent_ms, self.clock.scenario_ms(time.perf_counter() - started),
                                                         self._event_loop_lag_ms(answer)))
                        gevent.sleep(self.clock.real_s(self.interval_ms))
            except HandshakeFailed as failed:
                self.handshake_timeouts += failed.outcome is Outcome.HANDSHAKE_TIMEOUT
                self.failures += 1
            except (RequestTimedOut, ConnectionClosed, OSError):
                self.failures += 1
            gevent.sleep(self.clock.real_s(self.interval_ms))

    def _event_loop_lag_ms(self, answer: dict[str, Any]) -> float | None:
        """The gateway's worst event-loop delay over its last interval (the stub and 2026.9.6 report it in
        `eventLoop.delayMaxMs`, in real ms), in scenario ms; None where the gateway does not say."""
        payload = answer.get("payload")
        loop = payload.get("eventLoop") if isinstance(payload, dict) else None
        delay = loop.get("delayMaxMs") if isinstance(loop, dict) else None
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            return None
        return round(self.clock.scenario_ms(delay / 1000.0), 3)
