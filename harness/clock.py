"""Scenario time versus real time: the one place the harness applies the time scale.

Policies, ledgers and figures speak scenario (unscaled) milliseconds, the way a profile states
durations and OpenClaw's constants are written; sockets and sleeps run in real seconds.
`real_s(ms)` turns a scenario duration into the seconds to wait, and `now_ms()` reads the real clock
back in scenario milliseconds since the run started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ScaledClock:
    time_scale: float = 1.0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")

    def restart(self) -> None:
        self.started = time.monotonic()

    def real_s(self, scenario_ms: float) -> float:
        return max(0.0, scenario_ms) * self.time_scale / 1000.0

    def now_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0 / self.time_scale

    def scenario_ms(self, real_seconds: float) -> float:
        return real_seconds * 1000.0 / self.time_scale
