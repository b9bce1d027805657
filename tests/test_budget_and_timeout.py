"""The per-IP pre-auth budget (reference §5), the handshake timeout and the handshake's log lines (§4)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FAST,
    StubFactory,
    connect_frame,
    connect_params,
    handshake,
    raw_upgrade,
    recv_json,
    wait_closed,
    wait_until,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.http11 import USER_AGENT

from gateway_stub import GatewayStub, StubConfig
from gateway_stub.gateway_log import GatewayLog
from openclaw_wire.log_records import fields

BUDGET_BODY = b"Too many unauthenticated sockets"
# 10 000 ms scaled by 0.05: the handshake timer fires after 0.5 s of real time.
TIMEOUT_OPTIONS: dict[str, Any] = dict(handshake_timeout_ms=10_000, time_scale=0.05)
SCALED_TIMEOUT_S = 0.5


class LoggedStub:
    def __init__(self, stub: GatewayStub, console: io.StringIO, json_path: Path) -> None:
        self.stub = stub
        self.console = console
        self.json_path = json_path

    def console_lines(self) -> list[str]:
        return self.console.getvalue().splitlines()

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        if not self.json_path.exists():
            return []
        lines = self.json_path.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if event is None or r["event"] == event]


LoggedStubFactory = Callable[..., Awaitable[LoggedStub]]


@pytest.fixture
async def make_logged_stub(tmp_path: Path) -> AsyncIterator[LoggedStubFactory]:
    """Like `make_stub`, but the console goes to a StringIO and JSON lines to tmp_path/log-N.jsonl."""
    async with AsyncExitStack() as stack:
        async def factory(**options: Any) -> LoggedStub:
            console = io.StringIO()
            json_path = tmp_path / f"log-{len(list(tmp_path.glob('log-*.jsonl')))}.jsonl"
            json_path.touch()
            log = GatewayLog(console=console, json_path=json_path)
            stub = await stack.enter_async_context(GatewayStub(StubConfig(**{**FAST, **options}), log=log))
            return LoggedStub(stub, console, json_path)

        yield factory


async def open_idle(url: str) -> ClientConnection:
    """Open a socket and read the challenge, but never send connect."""
    ws = await connect(url, compression=None)
    challenge = await recv_json(ws)
    assert challenge["event"] == "connect.challenge"
    return ws


async def expect_503(url: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(url, compression=None, open_timeout=5)
    assert info.value.response.status_code == 503
    assert info.value.response.body == BUDGET_BODY


# -- budget ----------------------------------------------------------------------------------------


async def test_33rd_concurrent_unauthenticated_socket_gets_503(make_stub: StubFactory) -> None:
    stub = await make_stub()
    assert stub.config.max_preauth_per_ip == 32
    results = await asyncio.gather(*(connect(stub.url, compression=None) for _ in range(33)),
                                   return_exceptions=True)
    opened = [r for r in results if isinstance(r, ClientConnection)]
    refused = [r for r in results if not isinstance(r, ClientConnection)]
    try:
        assert len(opened) == 32
        assert len(refused) == 1
        error = refused[0]
        assert isinstance(error, InvalidStatus), repr(error)
        assert error.response.status_code == 503
        assert error.response.body == BUDGET_BODY
        assert len(BUDGET_BODY) == 32
        for ws in opened:
            assert (await recv_json(ws))["event"] == "connect.challenge"
        gauges = stub.gauges()
        assert gauges["preauth_budget_held"] == 32
        assert gauges["preauth_sockets"] == 32
        assert stub.metrics.counters["handshakes_rejected_503"] == 1
        assert stub.metrics.counters["handshakes_started"] == 32
    finally:
        await asyncio.gather(*(ws.close() for ws in opened))
    await wait_until(lambda: stub.gauges()["preauth_budget_held"] == 0)


async def test_raw_upgrade_over_budget_gets_exact_503_response(make_logged_stub: LoggedStubFactory) -> None:
    logged = await make_logged_stub(max_preauth_per_ip=1)
    holder = await open_idle(logged.stub.url)
    console_before = logged.console.getvalue()
    raw = await raw_upgrade(logged.stub.port)
    # Byte for byte what 2026.9.6 sends (recorded): three headers, no Date, no Server.
    assert raw == (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\n\r\n" + BUDGET_BODY)
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line == "HTTP/1.1 503 Service Unavailable"
    headers = {name.strip().lower(): value.strip() for name, value in (h.split(":", 1) for h in header_lines)}
    assert headers["connection"].lower() == "close"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == BUDGET_BODY
    assert len(body) == 32
    assert "upgrade" not in headers
    # A 503 budget rejection writes no console line (reference §5).
    assert logged.console.getvalue() == console_before
    assert [r["status"] for r in logged.records("http.preauth_rejected")] == [503]  # a stub-only record
    # The holder is unaffected.
    assert logged.stub.gauges()["preauth_budget_held"] == 1
    await holder.close()


async def test_slot_released_on_hello(make_stub: StubFactory) -> None:
    stub = await make_stub(max_preauth_per_ip=1)
    authed, hello = await handshake(stub.url)
    assert hello["ok"] is True
    # The authenticated socket stays open and no longer counts: a new one gets in...
    second = await open_idle(stub.url)
    assert stub.gauges()["preauth_budget_held"] == 1
    # ...and takes the only slot.
    await expect_503(stub.url)
    await second.close()
    await authed.close()


async def test_slot_released_on_client_close(make_stub: StubFactory) -> None:
    stub = await make_stub(max_preauth_per_ip=1)
    first = await open_idle(stub.url)
    await expect_503(stub.url)
    await first.close()
    await wait_until(lambda: stub.gauges()["preauth_budget_held"] == 0)
    second = await open_idle(stub.url)
    await expect_503(stub.url)
    await second.close()


async def test_slot_released_after_handshake_timeout(make_stub: StubFactory) -> None:
    stub = await make_stub(max_preauth_per_ip=1, **TIMEOUT_OPTIONS)
    first = await open_idle(stub.url)
    await expect_503(stub.url)
    assert await wait_closed(first) == (1000, "")
    await wait_until(lambda: stub.gauges()["preauth_budget_held"] == 0)
    second = await open_idle(stub.url)
    assert stub.gauges()["preauth_budget_held"] == 1
    await second.close()


# -- handshake timeout -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["april-2026", "current"])
async def test_never_connect_is_closed_1000_at_timeout_with_log_lines(
    make_logged_stub: LoggedStubFactory, profile: str
) -> None:
    logged = await make_logged_stub(profile=profile, **TIMEOUT_OPTIONS)
    stub = logged.stub
    started = time.monotonic()
    ws = await open_idle(stub.url)
    client_port = ws.local_address[1]
    code, reason = await wait_closed(ws, timeout=10)
    elapsed = time.monotonic() - started
    assert (code, reason) == (1000, "")
    assert elapsed >= SCALED_TIMEOUT_S - 0.01
    assert elapsed < SCALED_TIMEOUT_S + 2.0

    await wait_until(lambda: len(logged.records("ws.closed_before_connect")) == 1)
    [timeout_record] = logged.records("ws.handshake_timeout")
    [closed_record] = logged.records("ws.closed_before_connect")
    conn_id = timeout_record["connId"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", conn_id)

    peer = f"127.0.0.1:{client_port}->127.0.0.1:{stub.port}"
    phase = " phase=ws_upgrade_started" if profile == "current" else ""
    expected_timeout = f"handshake timeout conn={conn_id} peer={peer} remote=127.0.0.1{phase}"
    expected_closed = (f"closed before connect conn={conn_id} peer={peer} remote=127.0.0.1 fwd=n/a origin=n/a "
                       f"host=127.0.0.1:{stub.port} ua={USER_AGENT} code=1000 reason=n/a{phase}")
    closed_fields = fields(closed_record)
    lines = logged.console_lines()
    assert len(lines) == 2, lines
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \[ws\] "
    assert re.fullmatch(stamp + re.escape(expected_timeout), lines[0]), lines[0]
    if profile == "current":
        # As on 2026.9.6 (--verbose), the console appends the record's fields as key=value after the message.
        appended = " ".join(f"{k}={json.dumps(v) if ' ' in str(v) else v}" for k, v in closed_fields.items())
        assert re.fullmatch(stamp + re.escape(f"{expected_closed} {appended}"), lines[1]), lines[1]
    else:
        # As on 2026.4.24 and 4.29: the line ends at `code=1000 reason=n/a`, no fields appended.
        assert re.fullmatch(stamp + re.escape(expected_closed), lines[1]), lines[1]
        assert lines[1].endswith(" code=1000 reason=n/a")
        assert "phase=" not in logged.console.getvalue()
        assert "cause=" not in logged.console.getvalue()

    # The real gateway's tslog shape: "0" logger name, "1" message (timeout) or fields + "2" message.
    assert timeout_record["0"] == '{"subsystem":"gateway/ws"}'
    assert timeout_record["1"] == timeout_record["message"] == expected_timeout
    assert timeout_record["_meta"]["logLevelName"] == "WARN"
    assert closed_record["connId"] == conn_id
    assert closed_record["2"] == closed_record["message"] == expected_closed
    assert closed_fields["cause"] == "handshake-timeout"
    assert closed_fields["handshake"] == "failed"
    assert SCALED_TIMEOUT_S * 1000 - 10 <= closed_fields["handshakeMs"] < (SCALED_TIMEOUT_S + 2.0) * 1000
    assert closed_fields["durationMs"] >= closed_fields["handshakeMs"]
    assert closed_fields["durationMs"] < (SCALED_TIMEOUT_S + 2.0) * 1000
    assert (closed_fields["remoteAddr"], closed_fields["remotePort"]) == ("127.0.0.1", client_port)
    assert closed_fields["endpoint"] == peer
    assert ("phase" in closed_fields) == (profile == "current")
    assert stub.metrics.counters["handshakes_timed_out"] == 1
    assert stub.metrics.counters["closed_before_connect"] == 1


@pytest.mark.parametrize(
    ("frame", "close", "cause", "console"),
    [
        pytest.param(json.dumps({"type": "event", "event": "tick", "payload": {}}), (1008, "invalid request frame"),
                     "invalid-handshake", "invalid handshake", id="not-a-request"),
        pytest.param(connect_frame(connect_params(4, auth={"token": "wrong"})),
                     (1008, "unauthorized: gateway token mismatch (provide gateway auth token)"),
                     "connect-rejected", None, id="wrong-token"),
    ],
)
async def test_refused_socket_logs_its_close_cause(
    make_logged_stub: LoggedStubFactory, frame: str, close: tuple[int, str], cause: str, console: str | None
) -> None:
    logged = await make_logged_stub(profile="current")
    ws = await open_idle(logged.stub.url)
    client_port = ws.local_address[1]
    await ws.send(frame)
    assert await wait_closed(ws) == close
    await wait_until(lambda: len(logged.records("ws.closed_before_connect")) == 1)
    [opened] = logged.records("ws.open")
    [closed] = logged.records("ws.closed_before_connect")
    conn_id = opened["connId"]
    assert closed["connId"] == conn_id
    closed_fields = fields(closed)
    assert closed_fields["cause"] == cause
    assert "handshakeMs" not in closed_fields  # only the timer records how long the handshake ran
    assert closed["message"].endswith(f" code={close[0]} reason={close[1]} phase={closed_fields['phase']}")
    described = (f"conn={conn_id} peer=127.0.0.1:{client_port}->127.0.0.1:{logged.stub.port} remote=127.0.0.1 "
                 f"fwd=n/a origin=n/a host=127.0.0.1:{logged.stub.port} ua={USER_AGENT}")
    lines = logged.console_lines()
    if console is None:
        assert [r["connId"] for r in logged.records("ws.connect_rejected")] == [conn_id]
        assert len(lines) == 1 and "closed before connect" in lines[0]
    else:
        assert len(lines) == 2 and lines[0].endswith(f"[ws] {console} {described}"), lines
    assert logged.records("ws.handshake_timeout") == []


async def test_completed_handshake_is_not_timed_out(make_logged_stub: LoggedStubFactory) -> None:
    logged = await make_logged_stub(**TIMEOUT_OPTIONS)
    ws, hello = await handshake(logged.stub.url)
    assert hello["ok"] is True
    # A socket opened later times out; by then the authenticated one's timer would have fired long ago.
    idle = await open_idle(logged.stub.url)
    assert await wait_closed(idle) == (1000, "")
    assert ws.close_code is None
    # The health event the gateway sends after hello (4 ms on April, scaled) came first, with seq 1.
    event = await recv_json(ws)
    assert (event["type"], event["event"], event["seq"]) == ("event", "health", 1)
    await ws.send(json.dumps({"type": "req", "id": "2", "method": "health", "params": {}}))
    answer = await recv_json(ws)
    assert (answer["type"], answer["id"], answer["ok"]) == ("res", "2", True)
    assert len(logged.records("ws.handshake_timeout")) == 1
    assert logged.console.getvalue().count("handshake timeout") == 1
    await ws.close()


async def _get_json(url: str) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    return await asyncio.to_thread(fetch)


async def test_env_vars_set_timeout_and_budget_in_child_process(stub_process: Callable[..., Any]) -> None:
    proc = stub_process("--challenge-latency-ms", "0", env={
        "OPENCLAW_HANDSHAKE_TIMEOUT_MS": "400",
        "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP": "2",
    })
    stats = await _get_json(proc.http_url + "stats")
    assert stats["handshake_timeout_ms"] == 400
    assert stats["config"]["max_preauth_per_ip"] == 2

    started = time.monotonic()
    results = await asyncio.gather(*(connect(proc.url, compression=None) for _ in range(3)),
                                   return_exceptions=True)
    opened = [r for r in results if isinstance(r, ClientConnection)]
    refused = [r for r in results if isinstance(r, InvalidStatus)]
    assert len(opened) == 2, results
    assert len(refused) == 1
    assert refused[0].response.status_code == 503
    assert refused[0].response.body == BUDGET_BODY

    closes = await asyncio.gather(*(wait_closed(ws, timeout=10) for ws in opened))
    elapsed = time.monotonic() - started
    assert closes == [(1000, ""), (1000, "")]
    # 0.4 s from the env var, not the profile's 10 s.
    assert 0.39 <= elapsed < 3.0
    # The stub logs "closed before connect" after giving the slot back: then a new socket gets in.
    await wait_until(lambda: proc.log_text().count("closed before connect") == 2)
    assert proc.log_text().count("handshake timeout conn=") == 2
    ws = await open_idle(proc.url)
    await ws.close()
