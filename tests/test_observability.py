"""What the stub shows about itself (/metrics, /stats, /healthz), and that it stays sane under bad clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from conftest import StubFactory, connect_frame, connect_params, handshake, recv_json, wait_closed, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway_stub import GatewayStub

PROFILE_LABEL = '{profile="april-2026"}'


async def http_get(url: str) -> tuple[int, str, str]:
    """GET from a worker thread, so the in-process stub's loop (the test's own) keeps running."""
    def fetch() -> tuple[int, str, str]:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode("utf-8")

    return await asyncio.to_thread(fetch)


def parse_prometheus(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


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

    status, content_type, text = await http_get(stub.http_url + "metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "# TYPE gateway_stub_handshakes_started_total counter" in text.splitlines()
    assert "# TYPE gateway_stub_handshake_ms histogram" in text.splitlines()
    samples = parse_prometheus(text)
    expected = {"started": 4, "succeeded": 2, "timed_out": 1, "rejected_503": 1, "auth_failed": 1,
                "rejected_other": 0}
    for name, value in expected.items():
        assert samples[f"gateway_stub_handshakes_{name}_total{PROFILE_LABEL}"] == value, name
    assert samples[f"gateway_stub_closed_before_connect_total{PROFILE_LABEL}"] == 2
    assert samples['gateway_stub_handshake_ms_bucket{profile="april-2026",le="+Inf"}'] == 2
    assert samples[f"gateway_stub_handshake_ms_count{PROFILE_LABEL}"] == 2
    assert samples[f"gateway_stub_handshake_ms_sum{PROFILE_LABEL}"] > 0
    assert samples[f"gateway_stub_authenticated_sockets{PROFILE_LABEL}"] == 1
    assert samples[f"gateway_stub_preauth_sockets{PROFILE_LABEL}"] == 0
    assert samples[f"gateway_stub_preauth_budget_held{PROFILE_LABEL}"] == 0
    # Buckets are cumulative.
    buckets = [v for k, v in samples.items() if k.startswith("gateway_stub_handshake_ms_bucket")]
    assert buckets == sorted(buckets)

    status, content_type, body = await http_get(stub.http_url + "stats")
    assert status == 200
    assert content_type.startswith("application/json")
    stats: dict[str, Any] = json.loads(body)
    assert stats["time_scale"] == 1.0
    assert stats["handshake_timeout_ms"] == 300
    counters = stats["counters"]
    for name, value in expected.items():
        assert counters[f"handshakes_{name}"] == value, name
    assert stats["gauges"]["preauth_sockets"] == 0
    assert stats["gauges"]["authenticated_sockets"] == 1
    assert stats["gauges"]["preauth_budget_held"] == 0
    handshake_ms = stats["handshake_ms"]
    assert set(handshake_ms) == {"count", "p50", "p99", "max"}
    assert handshake_ms["count"] == 2
    assert 0 < handshake_ms["p50"] <= handshake_ms["p99"] <= handshake_ms["max"] < 5000
    lag = stats["event_loop_lag_ms"]
    assert {"p50", "p99", "max"} <= set(lag)
    await kept.close()


async def test_healthz(stub: GatewayStub) -> None:
    status, content_type, body = await http_get(stub.http_url + "healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert json.loads(body) == {"ok": True, "status": "live"}


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
