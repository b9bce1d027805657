"""The real OpenClaw gateway through harness/backends/openclaw.py, checked against docs/recorded/<version>/.

Marked `openclaw` (see conftest.require_openclaw): the first run installs Node 24 (PyPI) and `openclaw@<version>` (npm,
about 30 s and 650 MB each) under `$HARNESS_CACHE_DIR`; every launch takes about 10 s and 750 MB.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLOSE_TIMEOUT_S,
    FRAME_TIMEOUT_S,
    connect_response,
    open_ws,
    recv_json,
    require_openclaw,
    wait_closed,
)

from harness.backends.local_service import session_pids
from harness.backends.openclaw import OpenClawGateway
from harness.client.connect_shape import backend_connect_params, handler_display_name

pytestmark = pytest.mark.openclaw

VERSIONS = ["2026.4.29", "2026.9.6"]
RECORDED = Path(__file__).resolve().parent.parent / "docs" / "recorded"
HANDSHAKE_TIMEOUT_MS = 2000


def recorded(version: str, name: str) -> Any:
    return json.loads((RECORDED / version / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=VERSIONS)
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenClawGateway]:
    """One gateway per version for the frame checks, with the recordings' 2 s handshake timeout."""
    version: str = request.param
    require_openclaw(version)
    log_dir = tmp_path_factory.mktemp(f"openclaw-{version}")
    with OpenClawGateway(version, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS, log_dir=log_dir) as gw:
        yield gw


def connect_request(gw: OpenClawGateway, token: str) -> dict[str, Any]:
    """The April native-approvals handler's connect (reference §8.3) at the version's protocol."""
    protocol = recorded(gw.version, "hello-ok.json")["payload"]["protocol"]
    params = backend_connect_params(display_name=handler_display_name("matrix", "acct1"),
                                    scopes=["operator.approvals"], token=token, protocol=protocol,
                                    client_version=gw.version)
    return {"type": "req", "id": f"1:{uuid.uuid4()}", "method": "connect", "params": params}


async def test_challenge_has_the_recorded_shape(gateway: OpenClawGateway) -> None:
    expected = recorded(gateway.version, "challenge.json")
    ws = await open_ws(gateway)
    try:
        challenge = await recv_json(ws, FRAME_TIMEOUT_S)
    finally:
        await ws.close()
    assert challenge.keys() == expected.keys()
    assert (challenge["type"], challenge["event"]) == ("event", "connect.challenge")
    assert challenge["payload"].keys() == expected["payload"].keys()
    assert isinstance(challenge["payload"]["nonce"], str) and isinstance(challenge["payload"]["ts"], int)


async def test_handler_handshake_gets_hello_ok_with_the_recorded_keys(gateway: OpenClawGateway) -> None:
    expected = recorded(gateway.version, "hello-ok.json")
    ws = await open_ws(gateway)
    try:
        await recv_json(ws, FRAME_TIMEOUT_S)
        response = await connect_response(ws, connect_request(gateway, gateway.token))
    finally:
        await ws.close()
    assert response["ok"] is True, response
    assert response.keys() == expected.keys()
    assert response["payload"].keys() == expected["payload"].keys()
    assert response["payload"]["type"] == "hello-ok"
    assert response["payload"]["protocol"] == expected["payload"]["protocol"]
    assert response["payload"]["server"]["version"] == gateway.version
    assert response["payload"]["auth"]["scopes"] == expected["payload"]["auth"]["scopes"]


async def test_wrong_token_gets_the_recorded_error_and_close_1008(gateway: OpenClawGateway) -> None:
    case = recorded(gateway.version, "errors.json")["wrong_token"]
    expected = next(f["frame"] for f in case["frames"] if f["frame"].get("type") == "res")
    ws = await open_ws(gateway)
    await recv_json(ws, FRAME_TIMEOUT_S)
    request = connect_request(gateway, "not-" + gateway.token)
    response = await connect_response(ws, request)
    code, reason = await wait_closed(ws, CLOSE_TIMEOUT_S)
    assert response == {**expected, "id": request["id"]}
    assert (code, reason) == (case["close_code"], case["close_reason"]) == (1008, expected["error"]["message"])


async def test_handshake_timeout_closes_1000_after_2_s(gateway: OpenClawGateway) -> None:
    expected = recorded(gateway.version, "timeout.json")
    assert expected["handshake_timeout_env_ms"] == HANDSHAKE_TIMEOUT_MS
    ws = await open_ws(gateway)
    opened = time.monotonic()
    challenge = await recv_json(ws, FRAME_TIMEOUT_S)
    code, reason = await wait_closed(ws, CLOSE_TIMEOUT_S)
    elapsed = time.monotonic() - opened
    assert challenge["event"] == "connect.challenge"
    assert (code, reason) == (expected["close_code"], expected["close_reason"]) == (1000, "")
    assert 1.9 <= elapsed <= 3.0, elapsed
    # The shared JSON log names this gateway's port in its "closed before connect" record.
    deadline = time.monotonic() + 5
    while not any("handshake-timeout" in json.dumps(record) for record in gateway.json_log_records()):
        assert time.monotonic() < deadline, f"no handshake-timeout record in {gateway.json_log_path}"
        await asyncio.sleep(0.1)


def test_gateway_listens_on_loopback_only(gateway: OpenClawGateway) -> None:
    findings = gateway.check_loopback_only("in the test")
    assert not [f for f in gateway.external_sockets + findings if " LISTEN " in f or " BOUND " in f]
    outbound = sorted(set(gateway.external_sockets + findings))
    if outbound:  # the launcher warned; the gateway reached beyond loopback on its own (see the module docs)
        warnings.warn(f"openclaw {gateway.version} connected beyond loopback: {outbound}", stacklevel=1)


@pytest.mark.parametrize("version", VERSIONS)
def test_stop_leaves_no_process_and_closes_the_port(version: str, tmp_path: Path) -> None:
    require_openclaw(version)
    gw = OpenClawGateway(version, log_dir=tmp_path)
    with gw:
        pids = gw.session_pids()
        pid, port, home = gw.pid, gw.port, gw.home
        assert pid in pids
        assert home is not None and home.is_dir()
        stopping = time.monotonic()
        exit_code = gw.stop()
        stop_s = time.monotonic() - stopping
    assert exit_code == 0
    assert stop_s < 15
    assert session_pids(pid) == []
    assert not [p for p in pids if _alive(p)]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert not home.exists()
    console = gw.log_text()
    assert "[gateway] ready" in console


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def test_restart_sigterms_with_a_client_connected_and_comes_back_on_the_same_port_and_token(
        tmp_path: Path) -> None:
    version = "2026.9.6"
    require_openclaw(version)
    with OpenClawGateway(version, log_dir=tmp_path) as gw:
        pid, url, token, home = gw.pid, gw.url, gw.token, gw.home
        heap = gw.heap_after_gc_mb()  # its main thread collected while loading the gateway
        assert heap is not None and 5 < heap < 500
        ws = await open_ws(gw)
        await recv_json(ws, FRAME_TIMEOUT_S)
        assert (await connect_response(ws, connect_request(gw, gw.token)))["ok"] is True
        restart = await asyncio.to_thread(gw.restart)
        code, _ = await wait_closed(ws, CLOSE_TIMEOUT_S)
        assert code == 1012  # `shutdown`, then "service restart" (reference, close codes)
        assert (gw.url, gw.token, gw.home) == (url, token, home) and gw.pid != pid
        assert restart.exit_code == 0 and not restart.killed and 0 < restart.exited_after_s < 15
        assert session_pids(pid) == []
        assert gw.heap_after_gc_mb() is not None  # the new process's own, not the stopped one's
        ws = await open_ws(gw)  # the same client comes back to the same address and token
        try:
            await recv_json(ws, FRAME_TIMEOUT_S)
            assert (await connect_response(ws, connect_request(gw, token)))["ok"] is True
        finally:
            await ws.close()
    assert gw.log_text().count("[gateway] ready") == 2  # both starts' consoles kept
    assert "Mark-Compact" in gw.log_path.read_text() and "Mark-Compact" not in gw.log_text()
