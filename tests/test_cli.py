"""`python -m gateway_stub`: help, option errors, exit codes, signals, the ready line and the log file."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TOKEN, StubProcess, connect_params, handshake, recv_json, wait_closed, wait_until
from websockets.asyncio.client import connect

from gateway_stub.config import OPTIONS

StartStub = Callable[..., StubProcess]


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any stub settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "GATEWAY_STUB_"))}
    return {**env, **extra}


def run_stub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway_stub", *args], capture_output=True, text=True,
                          timeout=20, env=env if env is not None else clean_env())


def test_help_names_every_option_and_its_env_var() -> None:
    result = run_stub("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for option in OPTIONS:
        assert re.search(rf"(^|\s){re.escape(option.flag)}\b", result.stdout), option.flag
        assert f"[{option.env}]" in result.stdout, option.env
    assert "OPENCLAW_HANDSHAKE_TIMEOUT_MS" in result.stdout
    assert "OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "0", "--time-scale", "abc"], "--time-scale"),
        (["--port", "70000"], "--port"),
        (["--port", "0", "--profile", "may-2026"], "--profile"),
        (["--port", "0", "--connect-cost-before-timer", "fixed:-3"], "--connect-cost-before-timer"),
        (["--port", "0", "--host", "192.168.1.5"], "--host"),
        (["--port", "0", "--bogus"], "--bogus"),
        (["--port", "0", "--bogus", "two\nlines", "z" * 3000], "--bogus"),  # cut, on one line
    ],
)
def test_bad_option_exits_2_with_one_line_naming_it(args: list[str], named: str) -> None:
    result = run_stub(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and len(lines[0]) <= 330
    assert lines[0].startswith("gateway_stub: error: ")


def test_non_loopback_host_is_refused_not_just_unparsed() -> None:
    line = run_stub("--port", "0", "--host", "192.168.1.5").stderr.strip()
    assert "refused" in line
    assert "192.168.1.5" in line


def test_bad_env_var_exits_2_naming_the_variable() -> None:
    result = run_stub("--port", "0", env=clean_env(OPENCLAW_HANDSHAKE_TIMEOUT_MS="15s"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "OPENCLAW_HANDSHAKE_TIMEOUT_MS" in lines[0]
    assert "15s" in lines[0]


def test_port_in_use_exits_3_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_stub("--port", str(port), "--token", TOKEN)
    assert result.returncode == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(port) in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly_after_shutdown_event_and_1012(stub_process: StartStub, sig: int) -> None:
    proc = stub_process("--challenge-latency-ms", "0", "--hello-latency-ms", "0")
    ws, hello = await handshake(proc.url)
    assert hello["ok"] is True
    idle = await connect(proc.url, compression=None)
    assert (await recv_json(idle))["event"] == "connect.challenge"

    proc.process.send_signal(sig)
    event = await recv_json(ws, timeout=10)
    # The health event the stub sends each new client a few ms after hello can still be on its way (a busy host).
    while event.get("event") == "health":
        event = await recv_json(ws, timeout=10)
    assert event["type"] == "event"
    assert event["event"] == "shutdown"
    assert isinstance(event["payload"]["reason"], str)
    assert await wait_closed(ws) == (1012, "service restart")
    assert await wait_closed(idle) == (1012, "service restart")

    returncode = await asyncio.to_thread(proc.process.wait, 10)
    assert returncode == 0
    stderr = proc.log_text()
    assert re.search(r"\[shutdown\] completed cleanly in \d+ms", stderr), stderr
    assert "Traceback" not in stderr


async def test_ready_line_is_json_with_url_port_token(stub_process: StartStub) -> None:
    proc = stub_process()
    ready = proc.ready
    assert ready["event"] == "ready"
    assert isinstance(ready["port"], int)
    assert ready["port"] > 0
    assert ready["url"] == f"ws://127.0.0.1:{ready['port']}/"
    assert ready["token"] == TOKEN
    assert ready["pid"] == proc.process.pid
    # The console's `[gateway] ready` follows the JSON line on stdout.
    await wait_until(lambda: "[gateway] ready" in proc.log_text())
    ws, hello = await handshake(ready["url"])
    assert hello["ok"] is True
    await ws.close()


async def test_random_token_is_printed_and_accepted() -> None:
    process = subprocess.Popen([sys.executable, "-m", "gateway_stub", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.to_thread(process.stdout.readline))
        token = ready["token"]
        assert isinstance(token, str)
        assert len(token) >= 16
        assert token != TOKEN
        ws, hello = await handshake(ready["url"], connect_params(auth={"token": token}))
        assert hello["ok"] is True
        await ws.close()
    finally:
        process.terminate()
        assert await asyncio.to_thread(process.wait, 10) == 0


async def test_log_file_gets_json_lines(stub_process: StartStub, tmp_path: Path) -> None:
    log_path = tmp_path / "stub.jsonl"
    proc = stub_process("--log-file", str(log_path), "--challenge-latency-ms", "0", "--hello-latency-ms", "0")
    ws, hello = await handshake(proc.url)
    assert hello["ok"] is True
    conn_id = hello["payload"]["server"]["connId"]
    await ws.close()
    assert proc.stop() == 0

    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    assert records
    for record in records:
        assert {"0", "1", "_meta", "event", "time", "tMs", "message"} <= set(record)
    mine = [r["event"] for r in records if r.get("connId") == conn_id]
    assert mine == ["ws.open", "ws.hello", "ws.close"]
