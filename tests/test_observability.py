"""What the stub shows about itself (/metrics, /stats, /healthz), and that it stays sane under bad clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterable
from typing import Any

from conftest import StubFactory, connect_frame, connect_params, handshake, recv_json, wait_closed, wait_until
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway_stub import GatewayStub
from gateway_stub.metrics import COUNTERS, GAUGES, Histogram, RecentLag

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# Every family /metrics has, by the name both parsers give it (a counter's without its `_total`).
COUNTER_FAMILIES = {f"gateway_stub_{name.removesuffix('_total')}": name for name in COUNTERS}
HISTOGRAM_FAMILIES = {"gateway_stub_handshake_duration_seconds": "handshake_ms",
                      "gateway_stub_event_loop_lag_seconds": "event_loop_lag_ms"}


async def http_get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    """GET from a worker thread, so the in-process stub's loop (the test's own) keeps running."""
    def fetch() -> tuple[int, str, str]:
        request = urllib.request.Request(url, headers={"Accept": accept} if accept is not None else {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode("utf-8")

    return await asyncio.to_thread(fetch)


class Scrape:
    """One /metrics answer as a parser read it: families by name, samples by name and labels."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = {family.name: family for family in families}

    def value(self, sample_name: str, **labels: str) -> float:
        labels = {"profile": "april-2026", **labels}
        for family in self.families.values():
            for sample in family.samples:
                if sample.name == sample_name and sample.labels == labels:
                    return sample.value
        raise AssertionError(f"no sample {sample_name}{labels}")

    def buckets(self, family: str) -> list[tuple[float, float]]:
        """(upper bound in seconds, cumulative count), in the order exposed."""
        return [(float(s.labels["le"]), s.value) for s in self.families[family].samples
                if s.name == f"{family}_bucket"]


async def scrape(stub: GatewayStub, accept: str | None = None) -> tuple[str, Scrape]:
    status, content_type, text = await http_get(stub.http_url + "metrics", accept)
    assert status == 200
    if content_type.startswith("application/openmetrics-text"):
        return content_type, Scrape(parse_openmetrics(text))
    return content_type, Scrape(parse_prometheus_text(text))


def assert_matches_stats(scraped: Scrape, stats: dict[str, Any]) -> None:
    """Every counter and gauge equals /stats; each histogram counts what /stats counts, in seconds."""
    assert set(scraped.families) == {*COUNTER_FAMILIES, *(f"gateway_stub_{g}" for g in GAUGES), *HISTOGRAM_FAMILIES}
    for family, stats_name in COUNTER_FAMILIES.items():
        assert scraped.families[family].type == "counter"
        assert scraped.value(f"{family}_total") == stats["counters"][stats_name], family
    for name in GAUGES:
        assert scraped.families[f"gateway_stub_{name}"].type == "gauge"
        expected = stats["time_scale"] if name == "time_scale" else stats["gauges"][name]
        assert scraped.value(f"gateway_stub_{name}") == expected, name
    handshake_family = "gateway_stub_handshake_duration_seconds"
    assert scraped.families[handshake_family].type == "histogram"
    count = scraped.value(f"{handshake_family}_count")
    assert count == stats["handshake_ms"]["count"]
    buckets = scraped.buckets(handshake_family)
    assert [le for le, _ in buckets] == sorted(le for le, _ in buckets)
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    assert buckets[-1] == (float("inf"), count)
    if count:
        # Seconds, not milliseconds: the first bucket holding every handshake is the one the longest fits in.
        first_full = next(le for le, n in buckets if n == count)
        below = [le for le, _ in buckets if le < first_full]
        longest_s = stats["handshake_ms"]["max"] / 1000.0
        assert (below[-1] if below else 0.0) < longest_s <= first_full
        assert 0 < scraped.value(f"{handshake_family}_sum") <= count * longest_s + 1e-9
    # The lag probe records every 50 ms, so /stats (read after the scrape) may have a few more.
    lag_count = scraped.value("gateway_stub_event_loop_lag_seconds_count")
    assert 0 < lag_count <= stats["event_loop_lag_ms"]["count"]


async def open_idle(url: str) -> ClientConnection:
    ws = await connect(url, compression=None)
    assert (await recv_json(ws))["event"] == "connect.challenge"
    return ws


async def test_metrics_and_stats_count_what_happened(make_stub: StubFactory) -> None:
    stub = await make_stub(max_preauth_per_ip=1, handshake_timeout_ms=300)
    kept, hello = await handshake(stub.url)
    assert hello["ok"] is True
    closed, hello = await handshake(stub.url)
    assert hello["ok"] is True
    await closed.close()
    # One idle socket holds the only slot: the next upgrade is refused, then the idle one times out.
    idle = await open_idle(stub.url)
    try:
        await connect(stub.url, compression=None)
        raise AssertionError("expected a 503")
    except InvalidStatus as exc:
        assert exc.response.status_code == 503
    assert await wait_closed(idle) == (1000, "")
    await wait_until(lambda: stub.gauges()["preauth_budget_held"] == 0)
    wrong, reply = await handshake(stub.url, connect_params(auth={"token": "wrong"}))
    assert reply["ok"] is False
    assert (await wait_closed(wrong))[0] == 1008
    await wait_until(lambda: stub.gauges()["preauth_sockets"] == 0)

    # The Prometheus text format by default, as prometheus_client's own handler answers.
    content_type, text_scrape = await scrape(stub)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    status, content_type, body = await http_get(stub.http_url + "stats")
    assert status == 200
    assert content_type.startswith("application/json")
    stats: dict[str, Any] = json.loads(body)
    expected = {"started": 4, "succeeded": 2, "timed_out": 1, "rejected_503": 1, "auth_failed": 1,
                "rejected_other": 0}
    for name, value in expected.items():
        assert stats["counters"][f"handshakes_{name}"] == value, name
    assert stats["counters"]["closed_before_connect"] == 2
    assert stats["gauges"] == {"preauth_sockets": 0, "authenticated_sockets": 1, "preauth_budget_held": 0,
                               "time_scale": 1.0}
    assert_matches_stats(text_scrape, stats)

    # OpenMetrics when the scrape asks for it; its parser insists on the format's rules (# EOF, units, names).
    content_type, om_scrape = await scrape(stub, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om_scrape.families["gateway_stub_handshake_duration_seconds"].unit == "seconds"
    assert_matches_stats(om_scrape, json.loads((await http_get(stub.http_url + "stats"))[2]))

    # /stats keeps its keys and its milliseconds.
    assert stats["time_scale"] == 1.0
    assert stats["handshake_timeout_ms"] == 300
    handshake_ms = stats["handshake_ms"]
    assert set(handshake_ms) == {"count", "p50", "p99", "max"}
    assert handshake_ms["count"] == 2
    assert 0 < handshake_ms["p50"] <= handshake_ms["p99"] <= handshake_ms["max"] < 5000
    lag = stats["event_loop_lag_ms"]
    assert {"p50", "p99", "max"} <= set(lag)
    await kept.close()


async def test_metrics_accept_header_that_prometheus_client_cannot_read_gets_the_text_format(
        stub: GatewayStub) -> None:
    # prometheus_client's choose_encoder raises TypeError on an unreadable version: a scrape still gets 200.
    for accept in ("application/openmetrics-text; version=abc", "application/openmetrics-text; version=1.x",
                   "text/plain; version=zz", ";;;=", ""):
        content_type, scraped = await scrape(stub, accept)
        assert content_type.startswith("text/plain"), accept
        assert "gateway_stub_handshakes_started" in scraped.families


async def test_each_stub_has_its_own_registry(make_stub: StubFactory) -> None:
    busy = await make_stub()
    quiet = await make_stub(profile="current")
    ws, hello = await handshake(busy.url)
    assert hello["ok"] is True
    _, busy_scrape = await scrape(busy)
    status, _, text = await http_get(quiet.http_url + "metrics")
    assert status == 200
    quiet_scrape = Scrape(parse_prometheus_text(text))
    assert busy_scrape.value("gateway_stub_handshakes_succeeded_total") == 1
    assert busy_scrape.value("gateway_stub_authenticated_sockets") == 1
    assert quiet_scrape.value("gateway_stub_handshakes_succeeded_total", profile="current") == 0
    assert quiet_scrape.value("gateway_stub_authenticated_sockets", profile="current") == 0
    await ws.close()


async def test_healthz(stub: GatewayStub) -> None:
    status, content_type, body = await http_get(stub.http_url + "healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert json.loads(body) == {"ok": True, "status": "live"}


async def test_stats_can_free_the_cyclic_garbage_before_counting_the_live_heap(stub: GatewayStub) -> None:
    import gc

    gc.disable()  # the stub runs in this process: its blocks are this process's
    try:
        for _ in range(5_000):  # cycles only the collector frees
            cycle: list[Any] = []
            cycle.append(cycle)
        del cycle
        _, _, body = await http_get(stub.http_url + "stats")
        with_garbage = json.loads(body)["python_allocated_blocks"]
        _, _, body = await http_get(stub.http_url + "stats?collect=1")
        collected = json.loads(body)["python_allocated_blocks"]
    finally:
        gc.enable()
    assert with_garbage - collected > 4_000, (with_garbage, collected)


async def test_gauges_return_to_zero_after_misbehaving_clients(make_stub: StubFactory) -> None:
    # A 200 ms idle hello latency leaves time to drop a socket while its connect is being processed.
    stub = await make_stub(handshake_timeout_ms=500, hello_latency_ms=200)
    port = stub.port
    upgrade_head = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")

    async def good_then_close() -> None:
        ws, hello = await handshake(stub.url)
        assert hello["ok"] is True
        await ws.close()

    async def good_then_abort() -> None:
        ws, hello = await handshake(stub.url)
        assert hello["ok"] is True
        assert ws.transport is not None
        ws.transport.abort()

    async def wrong_token() -> None:
        ws, reply = await handshake(stub.url, connect_params(auth={"token": "nope"}))
        assert reply["ok"] is False
        assert (await wait_closed(ws))[0] == 1008

    async def never_connect() -> None:
        assert await wait_closed(await open_idle(stub.url)) == (1000, "")

    async def send_then_expect_close(frame: str | bytes, expected: tuple[int, str]) -> None:
        ws = await open_idle(stub.url)
        await ws.send(frame)
        assert await wait_closed(ws) == expected

    async def abort_before_connect() -> None:
        ws = await open_idle(stub.url)
        assert ws.transport is not None
        ws.transport.abort()

    async def abort_during_connect() -> None:
        ws = await open_idle(stub.url)
        await ws.send(connect_frame())
        assert ws.transport is not None
        ws.transport.abort()

    async def half_upgrade_then_vanish() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_head.encode()[:60])
        await writer.drain()
        writer.transport.abort()

    async def full_upgrade_then_vanish() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((upgrade_head + "\r\n").encode())
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 101")
        writer.transport.abort()

    await asyncio.gather(
        good_then_close(),
        good_then_close(),
        good_then_abort(),
        wrong_token(),
        never_connect(),
        send_then_expect_close("{not json", (1000, "")),
        send_then_expect_close(b"\xff\xfe\x00garbage\x80", (1000, "")),
        send_then_expect_close("x" * 70_000, (1009, "")),  # empty reason, as recorded on 4.24, 4.29 and 9.6
        abort_before_connect(),
        abort_during_connect(),
        half_upgrade_then_vanish(),
        full_upgrade_then_vanish(),
    )

    def drained() -> bool:
        gauges = stub.gauges()
        return (gauges["preauth_sockets"], gauges["authenticated_sockets"], gauges["preauth_budget_held"]) == (0, 0, 0)

    await wait_until(drained, timeout=10)
    counters = stub.stats()["counters"]
    # Eleven sockets reached the WebSocket handler (the half upgrade never did).
    assert counters["handshakes_started"] == 11
    assert counters["handshakes_succeeded"] == 3
    assert counters["handshakes_auth_failed"] == 1
    assert counters["handshakes_timed_out"] == 1
    assert counters["handshakes_rejected_other"] == 3
    assert counters["handshakes_rejected_503"] == 0
    assert counters["closed_before_connect"] == 8
    assert stub.stats()["handshake_ms"]["count"] == 3

    # Still serving.
    ws, hello = await handshake(stub.url)
    assert hello["ok"] is True
    assert hello["payload"]["type"] == "hello-ok"
    assert stub.gauges()["authenticated_sockets"] == 1
    await ws.close()
    await wait_until(lambda: stub.gauges()["authenticated_sockets"] == 0)


def test_health_reports_the_loop_delay_of_its_last_interval_only() -> None:
    # As 2026.9.6's health (`intervalMs` about 1000): a block two intervals ago no longer shows.
    recent = RecentLag(interval_s=1.0)
    recent.observe(900.0, now_s=10.0)
    recent.observe(2.0, now_s=10.5)
    assert recent.summary(now_s=10.9) == {"interval_ms": 1000.0, "p99": 900.0, "max": 900.0}
    recent.observe(3.0, now_s=11.2)
    assert recent.summary(now_s=11.3) == {"interval_ms": 1000.0, "p99": 3.0, "max": 3.0}
    assert recent.summary(now_s=20.0) == {"interval_ms": 1000.0, "p99": None, "max": None}


def test_the_handshake_percentiles_cover_the_last_window_of_samples_in_memory_that_never_grows() -> None:
    histogram = Histogram((1.0,))
    histogram.recent = type(histogram.recent)(size=4)
    before = histogram.recent._values.buffer_info()
    for ms in (900.0, 800.0, 1.0, 2.0, 3.0, 4.0):
        histogram.observe(ms)
    assert sorted(histogram.recent) == [1.0, 2.0, 3.0, 4.0]  # the two slow ones have left the window
    assert histogram.summary() == {"count": 6, "p50": 2.0, "p99": 4.0, "max": 900.0}
    assert histogram.recent._values.buffer_info() == before  # the same buffer, the same size


async def test_stats_time_the_garbage_collector_while_the_stub_runs(make_stub: StubFactory) -> None:
    import gc

    stub = await make_stub()
    before = stub.stats()["gc_pauses"]["gen2"]["collections"]
    garbage = [[] for _ in range(20_000)]
    for item in garbage:
        item.append(item)  # cycles: only the collector frees them
    del garbage
    gc.collect()
    full = stub.stats()["gc_pauses"]["gen2"]
    assert full["collections"] == before + 1
    assert full["longest_ms"] > 0 and full["total_ms"] >= full["longest_ms"]
    callback = stub.metrics.gc_pauses._on_gc
    await stub.stop()
    assert callback not in gc.callbacks  # one stub's timer does not outlive it
