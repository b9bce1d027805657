"""How late a harness process's event loop (gevent's hub) wakes a sleeper: the harness's own lag."""

from __future__ import annotations

import time

import gevent

LAG_PROBE_INTERVAL_S = 0.05  # as the stub's own lag probe


class LoopLagWatch:
    """How late this process's event loop (gevent's hub) wakes a 50 ms sleeper: the harness's own lag.

    The accounts, the probe and the timers of this process all wait on this loop; when the host (or this
    process's own work) keeps it from running, every client-side timer fires late by as much.
    """

    def __init__(self, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._lags_ms: list[float] = []

    def restart(self) -> None:
        self._lags_ms = []

    def samples_ms(self) -> list[float]:
        return list(self._lags_ms)

    def run(self) -> None:
        while True:
            started = time.perf_counter()
            gevent.sleep(self._interval_s)
            self._lags_ms.append(max(0.0, (time.perf_counter() - started - self._interval_s) * 1000.0))
