"""Shared fixtures: an in-process stub, a stub in a child process, and a small handshake client.

Every stub binds 127.0.0.1 on port 0 and is stopped by its fixture, whatever the test did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway_stub import GatewayStub, StubConfig
from harness.backends.embedded import EmbeddedStub

pytest_plugins = ["pytester"]

TOKEN = "test-token"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real gateway and Docker are slow by nature: out of the quick tier (`pytest -m "not slow"`)."""
    for item in items:
        if item.get_closest_marker("openclaw") or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.slow)
# Idle latencies off and no auth delay: tests state the timing they depend on.
FAST = dict(port=0, token=TOKEN, challenge_latency_ms=0, hello_latency_ms=0, auth_failure_delay=False)


def connect_params(protocol: int = 3, **overrides: Any) -> dict[str, Any]:
    """The April native-approvals handler's connect params (reference §8.3), token auth, no device."""
    params: dict[str, Any] = {
        "minProtocol": protocol,
        "maxProtocol": protocol,
        "client": {"id": "gateway-client", "displayName": "Matrix Native Approvals (acct1)",
                   "version": "2026.4.24", "platform": "linux", "mode": "backend"},
        "role": "operator",
        "scopes": ["operator.approvals"],
        "auth": {"token": TOKEN},
    }
    params.update(overrides)
    return params


def connect_frame(params: dict[str, Any] | None = None, request_id: str = "1:connect") -> str:
    return json.dumps({"type": "req", "id": request_id, "method": "connect", "params": params or connect_params()})


async def recv_json(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def wait_closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Drain until the server closes; return (close code, reason)."""
    async def drain() -> None:
        try:
            while True:
                await ws.recv()
        except Exception:
            pass

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code, ws.close_reason


async def handshake(url: str, params: dict[str, Any] | None = None) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect, read the challenge, send connect, return the socket and the connect response frame."""
    ws = await connect(url, compression=None)
    challenge = await recv_json(ws)
    assert challenge["event"] == "connect.challenge"
    await ws.send(connect_frame(params))
    return ws, await recv_json(ws)


# Frames from the real gateway (tests marked `openclaw`) get longer than conftest's defaults of 5 s and 10 s.
FRAME_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 15.0


class HasUrl(Protocol):
    @property
    def url(self) -> str: ...


async def open_ws(target: HasUrl) -> ClientConnection:
    """A client socket as the recordings were made: no compression, no Origin header, never through a proxy."""
    return await connect(target.url, compression=None, proxy=None, max_size=None, ping_interval=None,
                         open_timeout=FRAME_TIMEOUT_S)


async def connect_response(ws: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
    """Send a `connect` request frame and return its response, skipping any event before it."""
    await ws.send(json.dumps(request))
    while True:
        frame = await recv_json(ws, FRAME_TIMEOUT_S)
        if frame.get("type") == "res" and frame.get("id") == request["id"]:
            return frame


async def raw_upgrade(port: int) -> bytes:
    """A WebSocket upgrade written by hand on 127.0.0.1; everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), FRAME_TIMEOUT_S)  # Connection: close ends the stream
    finally:
        writer.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


StubFactory = Callable[..., Awaitable[GatewayStub]]


@pytest.fixture
async def make_stub() -> AsyncIterator[StubFactory]:
    """`stub = await make_stub(handshake_timeout_ms=..., ...)`: an in-process stub, stopped after the test."""
    async with AsyncExitStack() as stack:
        async def factory(**options: Any) -> GatewayStub:
            return await stack.enter_async_context(GatewayStub(StubConfig(**{**FAST, **options})))

        yield factory


@pytest.fixture
async def stub(make_stub: StubFactory) -> GatewayStub:
    return await make_stub()


# The stub as a child process is the harness's own embedded backend.
StubProcess = EmbeddedStub


def start_stub_process(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> StubProcess:
    log_path = tmp_path / f"stub-stderr-{len(list(tmp_path.glob('stub-stderr-*')))}.log"
    stub = EmbeddedStub(["--token", TOKEN, *args], log_path=log_path, env=env)
    stub.start()
    return stub


@pytest.fixture
def stub_process(tmp_path: Path) -> Iterator[Callable[..., StubProcess]]:
    """`proc = stub_process("--connect-cost-before-timer", "fixed:20")`: the stub as a child process."""
    started: list[StubProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> StubProcess:
        proc = start_stub_process(list(args), tmp_path, env)
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop()


# Tests that need something from outside the project (a Docker daemon, Node and the openclaw package) skip
# with a stated reason where it is missing, unless the run requires it: CI sets HARNESS_REQUIRE_<KIND>=1 once it
# has provisioned the thing, and then such a skip is a failure.
def skip_unless_available(kind: str, reason: str) -> None:
    """Skip the test for `reason`; fail it instead when `HARNESS_REQUIRE_<KIND>=1`."""
    if os.environ.get(f"HARNESS_REQUIRE_{kind.upper()}") == "1":
        pytest.fail(f"HARNESS_REQUIRE_{kind.upper()}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_synapse() -> None:
    """Skip, saying why, where Synapse (the extra `matrix`) is not installed."""
    from harness.backends.synapse import INSTALL_HINT, synapse_installed

    if not synapse_installed():
        skip_unless_available("matrix", f"Synapse is not installed ({INSTALL_HINT})")


_openclaw_unavailable: dict[str, str] = {}


def require_openclaw(version: str) -> None:
    """Install Node 24 and `openclaw@<version>` into the harness cache (once), or skip saying why.

    `HARNESS_OPENCLAW_TESTS=0` opts out (about 650 MB per version on first use, ~10 s per gateway launch).
    """
    from harness.backends.openclaw import ensure_openclaw
    from harness.errors import BackendError, BadInput

    if os.environ.get("HARNESS_OPENCLAW_TESTS") == "0":
        skip_unless_available("openclaw", "HARNESS_OPENCLAW_TESTS=0 opts out of the real-gateway tests")
    if version not in _openclaw_unavailable:
        try:
            ensure_openclaw(version)
            _openclaw_unavailable[version] = ""
        except (BackendError, BadInput) as exc:
            _openclaw_unavailable[version] = str(exc)
    if _openclaw_unavailable[version]:
        skip_unless_available("openclaw", f"Node 24 or openclaw@{version} cannot be installed: "
                                          f"{_openclaw_unavailable[version]}")


Frame = dict[str, Any]
_frame_ids = itertools.count(1)


class FrameClient:
    """One socket past hello: sends requests and waits for frames, keeping the ones it was not waiting for."""

    def __init__(self, ws: ClientConnection, name: str = "", timeout: float = 5.0) -> None:
        self.ws = ws
        self.name = name
        self.timeout = timeout  # the default wait for a frame
        self.seen: list[Frame] = []  # every frame after hello-ok, in arrival order
        self._unread: list[Frame] = []

    async def send(self, method: str, params: Any = None) -> str:
        request_id = f"{next(_frame_ids)}:{method}"
        frame: Frame = {"type": "req", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        await self.ws.send(json.dumps(frame))
        return request_id

    async def wait_for(self, match: Callable[[Frame], bool], timeout: float | None = None) -> Frame:
        for frame in self._unread:
            if match(frame):
                self._unread.remove(frame)
                return frame

        async def read() -> Frame:
            while True:
                frame: Frame = json.loads(await self.ws.recv())
                self.seen.append(frame)
                if match(frame):
                    return frame
                self._unread.append(frame)

        return await asyncio.wait_for(read(), self.timeout if timeout is None else timeout)

    async def res(self, request_id: str, timeout: float | None = None) -> Frame:
        return await self.wait_for(lambda f: f["type"] == "res" and f["id"] == request_id, timeout)

    async def call(self, method: str, params: Any = None) -> Frame:
        return await self.res(await self.send(method, params))


# Hypothesis profiles for the fuzz suites (tests/test_fuzz_stub.py, tests/test_fuzz_proxy.py). `quick`, the default,
# is the bounded slice the normal suite runs; `campaign` is the long run, selected by the environment:
#   HYPOTHESIS_PROFILE=campaign nice -n 10 .venv/bin/python -m pytest tests/test_fuzz_stub.py tests/test_fuzz_proxy.py
# No example database (it would be a .hypothesis/ folder in the checkout); a failure prints its reproducer.
from hypothesis import settings as _hypothesis_settings  # noqa: E402 - kept with the block it belongs to

_hypothesis_settings.register_profile("quick", max_examples=25, deadline=2000, database=None, print_blob=True)
_hypothesis_settings.register_profile("campaign", max_examples=2500, deadline=None, database=None, print_blob=True)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))
CAMPAIGN = os.environ.get("HYPOTHESIS_PROFILE") == "campaign"


def report(config: pytest.Config, line: str) -> None:
    """A campaign's figures, on the terminal: written with pytest's output capture suspended."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(line)
