"""What the stub counts, and how it shows it: /metrics through `prometheus_client`, /stats as JSON.

`StubMetrics` is the one record of what happened: counters that only grow, and the handshake-duration and
event-loop-lag histograms. /stats reads it directly (milliseconds, percentiles over a recent window);
/metrics reads the same record through `StubCollector`, a custom collector registered in a
`CollectorRegistry` of the stub's own (several stubs can run in one process), so a scrape and /stats can
never disagree, and the gauges are read from the server's live state at scrape time rather than kept in
step with it. Names follow Prometheus' conventions: `_total` once on counters, durations in seconds
(`gateway_stub_handshake_duration_seconds`, `gateway_stub_event_loop_lag_seconds`), every sample labelled
with the stub's `profile`. `exposition` answers the format the scrape asks for: the text format by default,
OpenMetrics for `Accept: application/openmetrics-text`, as prometheus_client's own handler chooses.
Durations are real (scaled) time as measured; the `time_scale` gauge converts them back to scenario time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

METRIC_PREFIX = "gateway_stub_"
# Bucket upper bounds in seconds. A handshake runs from a few ms on an idle loop to past the 10-15 s timeout
# in a storm; the loop lag from under a millisecond to whole seconds while a cost blocks the loop.
HANDSHAKE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAMPLE_WINDOW = 10_000  # the recent samples /stats takes its percentiles over
# The interval health's `eventLoop` figures cover: 2026.9.6 reports `intervalMs` of about 1000 with the delay
# over it (docs/recorded/2026.9.6/http-root.txt), so a probe calling health sees the lag of the last second
# (scaled by the stub's time scale, as its other durations).
LOOP_DELAY_INTERVAL_S = 1.0
LAG_PROBE_INTERVAL_S = 0.05


def percentile(samples: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class SampleWindow:
    """The last `size` samples, held in memory taken up front.

    A window that grew as it filled (a deque of 10,000 floats takes about 0.3 MB, filled over hours of
    handshakes) made the stub's memory rise through a whole soak and read as a leak; this one never grows.
    """

    def __init__(self, size: int = SAMPLE_WINDOW) -> None:
        self._values = array("d", bytes(8 * size))
        self._seen = 0

    def append(self, value: float) -> None:
        self._values[self._seen % len(self._values)] = value
        self._seen += 1

    def __len__(self) -> int:
        return min(self._seen, len(self._values))

    def __iter__(self) -> Iterator[float]:
        return iter(self._values[:len(self)])


@dataclass
class Histogram:
    """Durations observed in milliseconds (what /stats shows), bucketed in seconds (what /metrics shows)."""

    buckets_s: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative: observe() touches one
    total_ms: float = 0.0
    count: int = 0
    maximum_ms: float = 0.0
    recent: SampleWindow = field(default_factory=SampleWindow)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets_s)

    def observe(self, ms: float) -> None:
        self.total_ms += ms
        self.count += 1
        self.maximum_ms = max(self.maximum_ms, ms)
        self.recent.append(ms)
        seconds = ms / 1000.0
        for index, bound in enumerate(self.buckets_s):
            if seconds <= bound:
                self.counts[index] += 1
                break

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        """(le, count) pairs as Prometheus wants them: cumulative, ending with +Inf (the total count)."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.buckets_s, self.counts, strict=True):
            running += count
            out.append((repr(float(bound)), running))  # Go's float text for these bounds
        out.append(("+Inf", self.count))
        return out

    def summary(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "p50": _round(percentile(self.recent, 0.50)),
            "p99": _round(percentile(self.recent, 0.99)),
            "max": _round(self.maximum_ms) if self.count else None,
        }


@dataclass
class RecentLag:
    """The loop-lag samples of the last `interval_s` of real time: what health's `eventLoop` reports."""

    interval_s: float = LOOP_DELAY_INTERVAL_S
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time.monotonic(), lag ms)

    def observe(self, ms: float, now_s: float | None = None) -> None:
        now_s = time.monotonic() if now_s is None else now_s
        self.samples.append((now_s, ms))
        self._trim(now_s)

    def summary(self, now_s: float | None = None) -> dict[str, float | None]:
        self._trim(time.monotonic() if now_s is None else now_s)
        lags = [ms for _, ms in self.samples]
        return {"interval_ms": self.interval_s * 1000.0, "p99": _round(percentile(lags, 0.99)),
                "max": _round(max(lags)) if lags else None}

    def _trim(self, now_s: float) -> None:
        while self.samples and self.samples[0][0] < now_s - self.interval_s:
            self.samples.popleft()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Keyed by the name /stats shows; the Prometheus counter is named without a trailing `_total`, which the
# exposition adds once (`requests_total` is `gateway_stub_requests_total`).
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

GAUGES = {
    "preauth_sockets": "Open WebSocket connections that have not reached hello-ok.",
    "authenticated_sockets": "Open WebSocket connections past hello-ok.",
    "preauth_budget_held": "Pre-auth budget slots held, over all client IPs.",
    "time_scale": "Factor applied to every duration the stub uses.",
}


def counter_metric_name(stats_name: str) -> str:
    """The Prometheus counter a /stats counter is exposed as, without the `_total` the exposition adds."""
    return METRIC_PREFIX + stats_name.removesuffix("_total")


class GcPauses:
    """How long CPython's cyclic garbage collector held the stub's one thread, per generation.

    A full (generation 2) collection walks every tracked object: with thousands of connections that is a pause
    the event loop cannot run through, which the loop-lag probe sees as lag with no cause of its own. While
    installed (`install`/`remove`), every collection is timed through `gc.callbacks`."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.longest_ms = [0.0, 0.0, 0.0]
        self.total_ms = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        ms = (time.perf_counter() - self._started) * 1000.0
        self._started = None
        generation = info.get("generation", 0)
        self.count[generation] += 1
        self.total_ms[generation] += ms
        self.longest_ms[generation] = max(self.longest_ms[generation], ms)

    def summary(self) -> dict[str, dict[str, float]]:
        return {f"gen{g}": {"collections": self.count[g], "longest_ms": round(self.longest_ms[g], 3),
                            "total_ms": round(self.total_ms[g], 3)} for g in range(3)}


@dataclass
class StubMetrics:
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    handshake: Histogram = field(default_factory=lambda: Histogram(HANDSHAKE_BUCKETS_S))
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS_S))
    recent_loop_lag: RecentLag = field(default_factory=RecentLag)
    gc_pauses: GcPauses = field(default_factory=GcPauses)

    def observe_loop_lag(self, ms: float) -> None:
        self.loop_lag.observe(ms)
        self.recent_loop_lag.observe(ms)

    def bump(self, name: str) -> None:
        self.counters[name] += 1


Gauges = Callable[[], Mapping[str, float]]


class StubCollector:
    """Every /metrics family, built from `StubMetrics` and the live gauges each time a scrape asks."""

    def __init__(self, metrics: StubMetrics, gauges: Gauges, profile: str) -> None:
        self._metrics = metrics
        self._gauges = gauges
        self._labels = [profile]

    def collect(self) -> Iterator[Metric]:
        labels = ["profile"]
        for name, help_text in COUNTERS.items():
            counter = CounterMetricFamily(counter_metric_name(name), help_text, labels=labels)
            counter.add_metric(self._labels, self._metrics.counters[name])
            yield counter
        gauges = self._gauges()
        for name, help_text in GAUGES.items():
            gauge = GaugeMetricFamily(METRIC_PREFIX + name, help_text, labels=labels)
            gauge.add_metric(self._labels, gauges[name])
            yield gauge
        for name, histogram, help_text in (
            ("handshake_duration_seconds", self._metrics.handshake,
             "Time from the WebSocket's open to hello-ok prepared."),
            ("event_loop_lag_seconds", self._metrics.loop_lag, "How late the event loop ran a 50 ms timer."),
        ):
            family = HistogramMetricFamily(METRIC_PREFIX + name, help_text, labels=labels, unit="seconds")
            family.add_metric(self._labels, histogram.cumulative_buckets(), histogram.total_ms / 1000.0)
            yield family


def stub_registry(metrics: StubMetrics, gauges: Gauges, profile: str) -> CollectorRegistry:
    """A registry of one stub's own: stubs sharing a process (tests) never see each other's figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StubCollector(metrics, gauges, profile))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and content type for a scrape that sent `Accept: accept`, chosen as prometheus_client does."""
    try:
        encoder, content_type = choose_encoder(accept or "")
    except (TypeError, ValueError):
        # prometheus_client 0.26 compares the version parameter unparsed and raises on one it cannot read
        # (`application/openmetrics-text; version=abc`): a bad header gets the default format, not a 500.
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    return encoder(registry), content_type


async def watch_event_loop_lag(metrics: StubMetrics, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
    """Sleep a fixed interval and record how late the loop woke: the lag any timer suffered."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(interval_s)
        late_ms = max(0.0, (time.perf_counter() - started - interval_s) * 1000.0)
        metrics.observe_loop_lag(late_ms)
