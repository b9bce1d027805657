"""What the stub counts, and how it shows it: Prometheus text on /metrics, JSON on /stats.

Counters only grow; gauges are read from the server's live state at scrape time, so they cannot
drift from it. Handshake durations and event-loop lag are real (scaled) milliseconds as measured;
the stats carry the time scale so a reader can convert them back to scenario time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

HANDSHAKE_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 15000, 30000, 60000)
SAMPLE_WINDOW = 10_000
LAG_PROBE_INTERVAL_S = 0.05


def percentile(samples: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    maximum: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_WINDOW))

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        self.maximum = max(self.maximum, value)
        self.recent.append(value)
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "p50": _round(percentile(self.recent, 0.50)),
            "p99": _round(percentile(self.recent, 0.99)),
            "max": _round(self.maximum) if self.count else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


COUNTERS = {
    "handshakes_started": "WebSocket connections opened (handshake timer started).",
    "handshakes_succeeded": "Handshakes that reached hello-ok.",
    "handshakes_timed_out": "Pre-auth handshakes closed by the handshake timer.",
    "handshakes_rejected_503": "Upgrades refused by the per-IP pre-auth budget.",
    "handshakes_auth_failed": "Connects refused for credentials (token, device proof).",
    "handshakes_rejected_other": "Connects refused for other reasons (schema, protocol, role, frames).",
    "closed_before_connect": "Pre-auth sockets closed for any reason.",
    "requests_total": "Requests handled after hello.",
    "health_refreshes": "Health refreshes started (--health-refresh-cost): after hello-ok, health requests, 60 s.",
    "health_refresh_joins": "Refresh requests while one ran: joined it (join) or folded into the next (rearm).",
}


@dataclass
class StubMetrics:
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    handshake_ms: Histogram = field(default_factory=lambda: Histogram(HANDSHAKE_MS_BUCKETS))
    loop_lag_ms: Histogram = field(default_factory=lambda: Histogram(HANDSHAKE_MS_BUCKETS))

    def bump(self, name: str) -> None:
        self.counters[name] += 1


async def watch_event_loop_lag(metrics: StubMetrics, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
    """Sleep a fixed interval and record how late the loop woke: the lag any timer suffered."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(interval_s)
        late_ms = max(0.0, (time.perf_counter() - started - interval_s) * 1000.0)
        metrics.loop_lag_ms.observe(late_ms)


def render_prometheus(metrics: StubMetrics, gauges: dict[str, float], labels: dict[str, str]) -> str:
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    lines: list[str] = []

    def emit(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP gateway_stub_{name} {help_text}")
        lines.append(f"# TYPE gateway_stub_{name} {kind}")
        for suffix, value in samples:
            lines.append(f"gateway_stub_{name}{suffix} {_fmt(value)}")

    base = "{" + label_text + "}" if label_text else ""
    for name, help_text in COUNTERS.items():
        emit(f"{name}_total", "counter", help_text, [(base, metrics.counters[name])])
    for name, value in gauges.items():
        emit(name, "gauge", GAUGE_HELP.get(name, name), [(base, value)])
    for name, histogram, help_text in (
        ("handshake_ms", metrics.handshake_ms, "Time from connection to hello-ok sent, in milliseconds."),
        ("event_loop_lag_ms", metrics.loop_lag_ms, "How late the event loop ran a 50 ms timer, in ms."),
    ):
        samples: list[tuple[str, float]] = []
        prefix = label_text + "," if label_text else ""
        for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
            samples.append((f'_bucket{{{prefix}le="{bound}"}}', count))
        samples.append((f'_bucket{{{prefix}le="+Inf"}}', histogram.count))
        samples.append((f"_sum{base}", histogram.total))
        samples.append((f"_count{base}", histogram.count))
        emit(name, "histogram", help_text, samples)
    return "\n".join(lines) + "\n"


GAUGE_HELP = {
    "preauth_sockets": "Open WebSocket connections that have not reached hello-ok.",
    "authenticated_sockets": "Open WebSocket connections past hello-ok.",
    "preauth_budget_held": "Pre-auth budget slots held, over all client IPs.",
    "time_scale": "Factor applied to every duration the stub uses.",
}


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))

