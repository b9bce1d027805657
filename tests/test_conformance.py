"""Conformance: the same client flows against the stub and the real OpenClaw gateway, compared frame by frame.

Each flow is written once as `async def flow(target) -> observation` and run against both targets of a pair:
the real gateway from npm and the stub profile that imitates it (2026.4.24 against `april-2026`, 2026.4.29
against `april-2026.4.29`, 2026.9.6 against `current`). An observation keeps what a client depends on (frame
types, key sets and their order, value types, error codes and messages, close codes and reasons, who received
which approval event) and drops what differs by nature (nonces, timestamps, connection ids, list contents the stub
copies from a recording). Any other difference is a stub bug, unless it is listed in DELIBERATE_DIFFERENCES with
its reason.

Gateways are started once per module and pair (about 10 s per real launch, plus one with a pre-auth budget of 1
for the 503 case); both use a 2000 ms handshake timeout. Marked `openclaw` (see conftest.require_openclaw).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    CLOSE_TIMEOUT_S,
    FRAME_TIMEOUT_S,
    Frame,
    FrameClient,
    connect_params,
    connect_response,
    open_ws,
    raw_upgrade,
    recv_json,
    require_openclaw,
    wait_closed,
)
from websockets.asyncio.client import ClientConnection

from gateway_stub.config import StubConfig
from gateway_stub.generations import GENERATIONS
from harness.backends.embedded import EmbeddedStub
from harness.backends.openclaw import OpenClawGateway, ensure_openclaw
from harness.client.session import signed
from openclaw_wire.constants import handshake_timeout_ms_for_version
from openclaw_wire.device_auth import DeviceIdentity

pytestmark = pytest.mark.openclaw

HANDSHAKE_TIMEOUT_MS = 2000
# (real openclaw version, stub profile that imitates it)
PAIRS = [("2026.4.29", "april-2026.4.29"), ("2026.9.6", "current"), ("2026.4.24", "april-2026")]
STUB_PROFILE = dict(PAIRS)
KINDS = ("real", "stub")

# Values that differ between any two runs: compared by type only.
VOLATILE_KEYS = frozenset({
    "nonce", "ts", "createdAtMs", "expiresAtMs", "connId", "bootId", "uptimeMs", "recoveryScope", "deviceToken",
    "issuedAtMs", "seq", "signedAt", "buildId", "appliedConfigHash", "canvasHostUrl", "canvas", "requestId", "deviceId",
    # hello-ok's live state: who is connected and the state counters
    "presence", "health",
})

# Where the stub differs from the real gateway on purpose: (case, path into the observation) -> why. The path is
# dropped from both observations of that case before they are compared; "*" matches any case.
DELIBERATE_DIFFERENCES: dict[tuple[str, str], str] = {
    ("hello", "payload.server.version"):
        "april-2026 reports 2026.4.24 (the version that stormed) whichever April build it is compared with",
    ("hello", "payload.features"):
        "the method, event and capability lists are the recorded lists of one build (4.24 for april-2026); "
        "4.29 has 145 methods and 25 events where 4.24 has 132 and 24",
    ("events", "health keys"):
        "the stub's health payload carries `eventLoop` (its loop delay, which the harness's probe charts) in both "
        "generations, as 9.6 does; April has none, and 4.29 adds `plugins` where 4.24 has none",
}
# april-2026's approval surface follows 2026.4.29. 2026.4.24 is compared on the handshake only: its approvals lack
# `request.warningText` and the NOT_FOUND `remediation`, and it forgets a resolved record at once (a repeated resolve
# is "unknown or expired approval id"), see docs/recorded/approvals.md.
HANDSHAKE_ONLY_VERSIONS = frozenset({"2026.4.24"})


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Target:
    kind: str  # "real" | "stub"
    version: str  # the real version of the pair
    url: str
    port: int
    token: str
    protocol: int

    @property
    def april(self) -> bool:
        return self.protocol == 3


def _targets(version: str, profile: str, log_dir: Path, stack: ExitStack, **limits: int) -> dict[str, Target]:
    require_openclaw(version)
    budget = limits.get("max_preauth_per_ip")
    real = stack.enter_context(OpenClawGateway(version, handshake_timeout_ms=HANDSHAKE_TIMEOUT_MS,
                                               max_preauth_per_ip=budget, log_dir=log_dir))
    stub_args = ["--profile", profile, "--handshake-timeout-ms", str(HANDSHAKE_TIMEOUT_MS)]
    if budget is not None:
        stub_args += ["--max-preauth-per-ip", str(budget)]
    stub = stack.enter_context(EmbeddedStub(stub_args, log_path=log_dir / "stub.log"))
    protocol = GENERATIONS[profile].protocol
    return {
        "real": Target("real", version, real.url, real.port, real.token, protocol),
        "stub": Target("stub", version, stub.url, int(stub.ready["port"]), stub.token, protocol),
    }


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{v}-vs-{p}" for v, p in PAIRS])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Target]]:
    """The real gateway and its stub, started once for the module; a 2000 ms handshake timeout on both."""
    version, profile = request.param
    with ExitStack() as stack:
        yield _targets(version, profile, tmp_path_factory.mktemp(f"conformance-{version}"), stack)


@pytest.fixture
def budget_pair(pair: dict[str, Target], tmp_path: Path) -> Iterator[dict[str, Target]]:
    """The same pair again with a pre-auth budget of 1 (OPENCLAW_MAX_PREAUTH_CONNECTIONS_PER_IP=1)."""
    version = pair["real"].version
    with ExitStack() as stack:
        yield _targets(version, STUB_PROFILE[version], tmp_path, stack, max_preauth_per_ip=1)


# The constant's declaration in each package's dist (4.24: `= 1e4` in client-*.js; 4.29: `= 15e3`; 9.6 also minified).
PREAUTH_TIMEOUT_DECLARATION = re.compile(rb"DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS ?= ?([0-9][0-9e_.]*)")


@pytest.mark.parametrize(("version", "profile"), PAIRS)
def test_default_handshake_timeout(version: str, profile: str) -> None:
    """The stub profile's default pre-auth handshake timeout is the one its version's package declares.

    The pairs run with 2000 ms on both sides, so the default is read from the installed package (the real
    gateway's own constant) rather than waited for 10-15 s per pair."""
    require_openclaw(version)
    dist = ensure_openclaw(version) / "node_modules" / "openclaw" / "dist"
    declared = {float(m.group(1).replace(b"_", b"")) for path in (*dist.glob("*.js"), *dist.glob("*.mjs"))
                for m in PREAUTH_TIMEOUT_DECLARATION.finditer(path.read_bytes())}
    assert len(declared) == 1, f"{version}: DEFAULT_PREAUTH_HANDSHAKE_TIMEOUT_MS declared as {sorted(declared)}"
    assert GENERATIONS[profile].handshake_timeout_ms == declared.pop()
    assert StubConfig(profile=profile).effective_handshake_timeout_ms == handshake_timeout_ms_for_version(version)


# ---------------------------------------------------------------------------------------------
# Observations


def normalize(value: Any, key: str = "") -> Any:
    """The value with volatile fields replaced by their type name; dict key order is kept (and compared)."""
    if key in VOLATILE_KEYS:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return {k: normalize(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def kinds_of(items: list[Any]) -> str:
    """A list by the types of its items: what a recorded list is compared by."""
    return "list[" + ",".join(sorted({type(i).__name__ for i in items})) + "]"


def _drop(observation: Any, path: str) -> None:
    *parents, last = path.split(".")
    node = observation
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, dict):
        node.pop(last, None)


def assert_conforms(case: str, observed: dict[str, Any]) -> None:
    """The real and the stub observation of `case` are equal, except the paths listed as deliberate."""
    real, stub = json.loads(json.dumps(observed["real"])), json.loads(json.dumps(observed["stub"]))
    for (listed_case, path), _reason in DELIBERATE_DIFFERENCES.items():
        if listed_case in (case, "*"):
            _drop(real, path)
            _drop(stub, path)
    found = differences(real, stub)
    assert not found, f"{case}: the stub differs from the real gateway:\n  " + "\n  ".join(found)


def differences(real: Any, stub: Any, path: str = "") -> list[str]:
    """Every place where the two differ, as `path: real ... stub ...` (key order of objects included)."""
    if isinstance(real, dict) and isinstance(stub, dict):
        out = [f"{path}.{k}: real {real[k]!r:.300}, missing in the stub" for k in real if k not in stub]
        out += [f"{path}.{k}: stub {stub[k]!r:.300}, missing in the real gateway" for k in stub if k not in real]
        for k in real:
            if k in stub:
                out += differences(real[k], stub[k], f"{path}.{k}")
        common = [k for k in real if k in stub]
        if not out and common != [k for k in stub if k in real]:
            out.append(f"{path}: key order real {common}, stub {[k for k in stub if k in real]}")
        return out
    if isinstance(real, list) and isinstance(stub, list) and len(real) == len(stub):
        return [d for i, (r, s) in enumerate(zip(real, stub, strict=True)) for d in differences(r, s, f"{path}[{i}]")]
    return [] if real == stub else [f"{path}: real {real!r:.300}, stub {stub!r:.300}"]


async def observe(pair: dict[str, Target], flow: Callable[[Target], Any]) -> dict[str, Any]:
    """Run one flow against the real gateway, then the stub; their observations by kind."""
    return {kind: await flow(pair[kind]) for kind in KINDS}


def approvals_compared(pair: dict[str, Target]) -> None:
    version = pair["real"].version
    if version in HANDSHAKE_ONLY_VERSIONS:
        pytest.skip(f"openclaw {version} is compared on the handshake only (see HANDSHAKE_ONLY_VERSIONS)")


# ---------------------------------------------------------------------------------------------
# Clients

def params_for(target: Target, *, name: str, scopes: list[str], caps: list[str] | None = None,
               client_id: str = "gateway-client", mode: str = "backend") -> dict[str, Any]:
    """`gateway-client`/`backend` with the target's token: the device-less shape that keeps its scopes."""
    client = {"id": client_id, "displayName": name, "version": target.version, "platform": "linux", "mode": mode}
    params = connect_params(target.protocol, client=client, scopes=scopes, auth={"token": target.token})
    if caps:
        params["caps"] = caps
    return params


class Session(FrameClient):
    """One socket past hello: requests by id, frames kept in arrival order, approval events collected."""

    def __init__(self, ws: ClientConnection, hello: Frame) -> None:
        super().__init__(ws, timeout=FRAME_TIMEOUT_S)
        self.hello = hello

    @classmethod
    async def open(cls, target: Target, params: dict[str, Any], device: DeviceIdentity | None = None) -> Session:
        ws = await open_ws(target)
        challenge = await recv_json(ws, FRAME_TIMEOUT_S)
        if device is not None:
            params = signed(params, device, challenge["payload"])
        hello = await connect_response(ws, {"type": "req", "id": "connect-1", "method": "connect", "params": params})
        assert hello["ok"] is True, hello
        return cls(ws, hello)

    async def event(self, name: str, approval_id: str, timeout: float = FRAME_TIMEOUT_S) -> Frame | None:
        """The event `name` for `approval_id`, None if it does not come within `timeout`."""
        try:
            return await self.wait_for(lambda f: f["type"] == "event" and f["event"] == name
                                       and f.get("payload", {}).get("id") == approval_id, timeout)
        except TimeoutError:
            return None

    async def approval_events(self) -> list[str]:
        """After a round trip on this socket: every exec-approval event it got so far, as `event id`."""
        await self.call("health", {})
        return [f"{f['event']} {f['payload']['id']}" for f in self.seen
                if f["type"] == "event" and f["event"].startswith("exec.approval.")]


@dataclass
class Clients:
    """The sockets of one approval flow, closed together."""

    stack: AsyncExitStack

    async def open(self, target: Target, params: dict[str, Any], device: DeviceIdentity | None = None) -> Session:
        session = await Session.open(target, params, device)
        self.stack.push_async_callback(session.ws.close)
        return session


def approver_params(target: Target) -> dict[str, Any]:
    """What receives approvals: `operator.approvals` on April; `operator.admin` + cap `approvals` on 9.6 (§12.5)."""
    if target.april:
        return params_for(target, name="Telegram approval (42)", scopes=["operator.approvals"])
    return params_for(target, name="Telegram approval (42)", scopes=["operator.admin"], caps=["approvals"])


def request_params(approval_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": approval_id, "command": "ls -la", "cwd": "/tmp", "host": "gateway", "agentId": "main",
            "sessionKey": "agent:main:main", **extra}


def reply(frame: Frame) -> Any:
    """A res as compared: ok and payload, or the error; the duration asked for where there is one."""
    if not frame["ok"]:
        return {"ok": False, "error": frame["error"]}
    payload = frame["payload"]
    out: dict[str, Any] = {"ok": True, "payload": normalize(payload)}
    if isinstance(payload, dict) and isinstance(payload.get("expiresAtMs"), int) and "createdAtMs" in payload:
        out["timeoutMs"] = payload["expiresAtMs"] - payload["createdAtMs"]
    return out


# ---------------------------------------------------------------------------------------------
# Handshake


async def challenge_flow(target: Target) -> Any:
    ws = await open_ws(target)
    try:
        return normalize(await recv_json(ws, FRAME_TIMEOUT_S))
    finally:
        await ws.close()


async def test_challenge(pair: dict[str, Target]) -> None:
    observed = await observe(pair, challenge_flow)
    assert observed["real"]["event"] == "connect.challenge"
    assert_conforms("challenge", observed)


async def hello_flow(target: Target) -> Any:
    ws = await open_ws(target)
    try:
        await recv_json(ws, FRAME_TIMEOUT_S)
        params = params_for(target, name="Matrix Native Approvals (acct1)", scopes=["operator.approvals"])
        hello = await connect_response(ws, {"type": "req", "id": "connect-1", "method": "connect", "params": params})
    finally:
        await ws.close()
    observation = normalize(hello)
    payload = observation.get("payload", {})
    if isinstance(payload.get("features"), dict):
        payload["features"] = {k: kinds_of(v) for k, v in hello["payload"]["features"].items()}
    return observation


async def test_hello_ok(pair: dict[str, Target]) -> None:
    observed = await observe(pair, hello_flow)
    assert observed["real"]["ok"] is True, observed["real"]
    assert_conforms("hello", observed)


async def device_hello_flow(target: Target) -> Any:
    """hello-ok for the same client signing a device proof (loopback: paired silently, reference §12.5)."""
    observation = {}
    for client_id, mode in (("gateway-client", "backend"), ("cli", "cli")):
        params = params_for(target, name="agent", scopes=["operator.approvals"], client_id=client_id, mode=mode)
        session = await Session.open(target, params, DeviceIdentity.generate())
        await session.ws.close()
        observation[client_id] = normalize(session.hello["payload"]["auth"])
    return observation


async def test_device_signed_hello_auth(pair: dict[str, Target]) -> None:
    assert_conforms("device-hello", await observe(pair, device_hello_flow))


# status's live state: how busy the event loop is now (`degraded`, its `reasons`, since when), memory, worker
# pools, work in flight. A loaded machine changes their values and even their types (null until degraded, then
# a time; an empty list, then ["cpu"]): compared by their keys only.
LIVE_STATUS_KEYS = frozenset({"eventLoop", "processMemory", "workerPools", "shutdownBudget", "modelRuntime"})


def keys_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: keys_only(v) for k, v in value.items()}
    return "list" if isinstance(value, list) else "value"


def shape(value: Any) -> Any:
    """A payload by its keys (in order) and the types of its values, numbers as one type: what a client of a
    live figure (a pid, a delay, a memory size) depends on."""
    if isinstance(value, dict):
        return {k: keys_only(v) if k in LIVE_STATUS_KEYS else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list[" + ",".join(sorted({json.dumps(shape(v)) for v in value})) + "]"
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    return "number" if isinstance(value, int | float) else type(value).__name__


async def status_flow(target: Target) -> Any:
    """`status` for a reader (`gateway-client`/`backend` with operator.read, the CLI's shape), a second after hello
    (the stub has a second of event-loop delays to report, as 9.6 does)."""
    session = await Session.open(target, params_for(target, name="status reader", scopes=["operator.read"]))
    try:
        await asyncio.sleep(1.2)
        status = await session.call("status", {})
    finally:
        await session.ws.close()
    return {"ok": status["ok"], "payload": shape(status.get("payload")), "error": status.get("error")}


async def test_status(pair: dict[str, Target]) -> None:
    observed = await observe(pair, status_flow)
    assert observed["real"]["ok"] is True, observed["real"]
    assert_conforms("status", observed)


async def unknown_method_flow(target: Target) -> Any:
    """A method no gateway has, asked by an approvals client and by an admin: the first learns only that it is
    not an admin (the method is gated like an admin one, reads like a permissions problem); the admin learns the
    method is unknown."""
    observation = {}
    for who, scopes in (("approvals", ["operator.approvals"]), ("admin", ["operator.admin"])):
        session = await Session.open(target, params_for(target, name=f"{who} client", scopes=scopes))
        try:
            observation[who] = reply(await session.call("no.such.method", {}))
        finally:
            await session.ws.close()
    return observation


async def test_unknown_method(pair: dict[str, Target]) -> None:
    observed = await observe(pair, unknown_method_flow)
    assert observed["real"]["approvals"]["ok"] is False, observed["real"]
    assert_conforms("unknown-method", observed)


# Events that depend on the clock or the machine, not on what the clients do: the 30 s tick, and 9.6's update
# check (it announces a newer npm release, to every client, whenever its check happens to run).
UNPROMPTED_EVENTS = frozenset({"tick", "update.available"})
EXPECTED_EVENT_S = 10.0


async def events_flow(target: Target) -> Any:
    """Which events a handler's connection gets in its first 1.5 s, when another client connects, and when that
    one leaves: the load each connection adds for the others during a storm."""
    def events(session: Session) -> list[Frame]:
        return [f for f in session.seen if f["type"] == "event" and f["event"] not in UNPROMPTED_EVENTS]

    async def settled(session: Session, expected: str) -> list[str]:
        """The events that arrive until `expected` has come (at most EXPECTED_EVENT_S: a loaded gateway sends it
        late, and some never send it) and 0.5 s more; a round trip at the end: all sent before it are in."""
        before = len(events(session))
        with contextlib.suppress(TimeoutError):
            await session.wait_for(lambda f: f["type"] == "event" and f["event"] == expected
                                   and f not in events(session)[:before], EXPECTED_EVENT_S)
        await asyncio.sleep(0.5)
        await session.call("status", {})
        return [f["event"] for f in events(session)[before:]]

    params = params_for(target, name="Matrix Native Approvals (watcher)", scopes=["operator.approvals"])
    watcher = await Session.open(target, params)
    try:
        observation: dict[str, Any] = {"after hello": await settled(watcher, "health")}
        if not target.april:  # 9.6 sent none within 10 s in 1 of 3 runs against a gateway that had served others
            observation["after hello"] = "not compared for 9.6: its health event after hello does not always come"
        health = next((f["payload"] for f in events(watcher) if f["event"] == "health"), None)
        observation["health keys"] = sorted(health) if isinstance(health, dict) else None
        other = await Session.open(target, params_for(target, name="Matrix Native Approvals (other)",
                                                      scopes=["operator.approvals"]))
        observation["when another connects"] = await settled(watcher, "health")
        await other.ws.close()
        observation["when it leaves"] = await settled(watcher, "presence")
        presence = next((f["payload"] for f in events(watcher) if f["event"] == "presence"), None)
        observation["presence keys"] = sorted(presence) if isinstance(presence, dict) else None
    finally:
        await watcher.ws.close()
    return observation


async def test_events_after_hello_and_when_another_client_leaves(pair: dict[str, Target]) -> None:
    assert_conforms("events", await observe(pair, events_flow))


async def scope_upgrade_flow(target: Target) -> Any:
    """A device paired with `operator.read` asks again with `operator.admin` too (the CLI's and a node host's shape;
    the local `gateway-client`/`backend` is never paired): April refuses it `pairing required` and closes 1008,
    which stops such a client's reconnects; 9.6 grants it on loopback."""
    observation = {}
    for client_id, mode in (("cli", "cli"), ("node-host", "node"), ("gateway-client", "backend")):
        device = DeviceIdentity.generate()
        steps = []
        for scopes in (["operator.read"], ["operator.read", "operator.admin"], ["operator.read"]):
            params = params_for(target, name="device", scopes=scopes, client_id=client_id, mode=mode)
            ws = await open_ws(target)
            challenge = await recv_json(ws, FRAME_TIMEOUT_S)
            await ws.send(json.dumps({"type": "req", "id": "connect-1", "method": "connect",
                                      "params": signed(params, device, challenge["payload"])}))
            answer = await recv_json(ws, FRAME_TIMEOUT_S)
            step: dict[str, Any] = {"ok": answer["ok"]}
            if answer["ok"]:
                step["scopes"] = answer["payload"]["auth"]["scopes"]
                await ws.close()
            else:
                step["error"] = normalize(answer["error"])
                code, reason = await wait_closed(ws, CLOSE_TIMEOUT_S)
                step["close"] = [code, (reason or "").split(" (requestId: ")[0]]
            steps.append(step)
        observation[client_id] = steps
    return observation


async def test_scope_upgrade_of_a_paired_device(pair: dict[str, Target]) -> None:
    assert_conforms("scope-upgrade", await observe(pair, scope_upgrade_flow))


async def rejected(target: Target, send: Callable[[ClientConnection, Frame], Any]) -> Any:
    """Open, read the challenge, let `send` write something, then every frame until the server closes."""
    ws = await open_ws(target)
    challenge = await recv_json(ws, FRAME_TIMEOUT_S)
    await send(ws, challenge)
    frames: list[Frame] = []
    try:
        while True:
            frames.append(normalize(await recv_json(ws, CLOSE_TIMEOUT_S)))
    except Exception:  # the close ends the stream
        pass
    code, reason = await wait_closed(ws, CLOSE_TIMEOUT_S)
    return {"frames": frames, "close": [code, reason]}


async def bad_token_flow(target: Target) -> Any:
    async def send(ws: ClientConnection, _challenge: Frame) -> None:
        params = params_for(target, name="agent", scopes=["operator.approvals"])
        params["auth"] = {"token": "not-" + target.token}
        await ws.send(json.dumps({"type": "req", "id": "connect-1", "method": "connect", "params": params}))

    return await rejected(target, send)


async def wrong_protocol_flow(target: Target) -> Any:
    async def send(ws: ClientConnection, _challenge: Frame) -> None:
        params = params_for(target, name="agent", scopes=["operator.approvals"])
        params.update(minProtocol=99, maxProtocol=99)
        await ws.send(json.dumps({"type": "req", "id": "connect-1", "method": "connect", "params": params}))

    return await rejected(target, send)


async def oversize_flow(target: Target) -> Any:
    async def send(ws: ClientConnection, _challenge: Frame) -> None:
        params = params_for(target, name="x" * 70_000, scopes=["operator.approvals"])
        await ws.send(json.dumps({"type": "req", "id": "connect-1", "method": "connect", "params": params}))

    return await rejected(target, send)


async def idle_flow(target: Target) -> Any:
    """Never send connect: the server closes at the handshake timeout."""
    async def send(ws: ClientConnection, _challenge: Frame) -> None:
        pass

    opened = time.monotonic()
    observation = await rejected(target, send)
    observation["closed_at_or_after_the_timeout"] = time.monotonic() - opened >= HANDSHAKE_TIMEOUT_MS / 1000 * 0.95
    return observation


@pytest.mark.parametrize("case, flow, close_code", [
    ("bad-token", bad_token_flow, 1008),
    ("wrong-protocol", wrong_protocol_flow, 1002),
    ("oversize-preauth-frame", oversize_flow, 1009),
    ("handshake-timeout", idle_flow, 1000),
])
async def test_handshake_rejections(pair: dict[str, Target], case: str, flow: Callable[[Target], Any],
                                    close_code: int) -> None:
    observed = await observe(pair, flow)
    assert observed["real"]["close"][0] == close_code, observed["real"]
    assert_conforms(case, observed)


async def budget_flow(target: Target) -> Any:
    """Budget 1: one socket waits for its challenge, then a raw upgrade gets the 503."""
    holder = await open_ws(target)
    try:
        await recv_json(holder, FRAME_TIMEOUT_S)
        raw = await raw_upgrade(target.port)
    finally:
        await holder.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    return {"status": status, "headers": headers, "body": body.decode("utf-8")}


async def test_preauth_budget_503(budget_pair: dict[str, Target]) -> None:
    observed = await observe(budget_pair, budget_flow)
    assert observed["real"]["status"] == "HTTP/1.1 503 Service Unavailable", observed["real"]
    assert_conforms("budget-503", observed)


# ---------------------------------------------------------------------------------------------
# Exec approvals (reference §10)


async def approval_methods_flow(target: Target) -> Any:
    """Two-phase request, list/get/waitDecision/resolve and their errors, and who gets which event."""
    async with AsyncExitStack() as stack:
        sockets = Clients(stack)
        approver = await sockets.open(target, approver_params(target))
        bystander = await sockets.open(target, params_for(target, name="bystander", scopes=["operator.approvals"]))
        requester = await sockets.open(target, params_for(target, name="agent", scopes=["operator.approvals"]))
        approval_id = "conf-methods-1"
        request_id = await requester.send("exec.approval.request", request_params(approval_id, twoPhase=True))
        seen: dict[str, Any] = {"accepted": reply(await requester.res(request_id))}
        requested = await approver.event("exec.approval.requested", approval_id)
        seen["requested"] = normalize(requested)
        for name, session in (("approver", approver), ("bystander", bystander), ("requester", requester)):
            seen[f"list by {name}"] = reply(await session.call("exec.approval.list", {}))
            seen[f"get by {name}"] = reply(await session.call("exec.approval.get", {"id": approval_id}))
        seen["get by prefix"] = reply(await approver.call("exec.approval.get", {"id": "conf-methods"}))
        seen["get unknown"] = reply(await approver.call("exec.approval.get", {"id": "conf-nope"}))
        seen["waitDecision unknown"] = reply(await approver.call("exec.approval.waitDecision", {"id": "conf-nope"}))
        seen["resolve unknown"] = reply(await approver.call("exec.approval.resolve",
                                                            {"id": "conf-nope", "decision": "deny"}))
        seen["resolve invalid decision"] = reply(await approver.call("exec.approval.resolve",
                                                                     {"id": approval_id, "decision": "maybe"}))
        wait_id = await requester.send("exec.approval.waitDecision", {"id": approval_id})
        resolve_id = await approver.send("exec.approval.resolve", {"id": approval_id, "decision": "allow-once"})
        seen["resolve"] = reply(await approver.res(resolve_id))
        seen["resolved"] = normalize(await approver.event("exec.approval.resolved", approval_id))
        seen["approver order"] = ["resolve res" if f["type"] == "res" else f["event"] for f in approver.seen
                                  if f.get("id") == resolve_id or f.get("event") == "exec.approval.resolved"]
        seen["final"] = reply(await requester.res(request_id))
        seen["waitDecision"] = reply(await requester.res(wait_id))
        for name, session in (("approver", approver), ("bystander", bystander), ("requester", requester)):
            seen[f"events of {name}"] = await session.approval_events()
        again = {"id": approval_id, "decision": "allow-once"}
        seen["resolve again, same decision"] = reply(await approver.call("exec.approval.resolve", again))
        seen["resolve again by bystander"] = reply(await bystander.call("exec.approval.resolve", again))
        seen["resolve again, other decision"] = reply(await approver.call("exec.approval.resolve",
                                                                          {**again, "decision": "deny"}))
        seen["waitDecision after"] = reply(await requester.call("exec.approval.waitDecision", {"id": approval_id}))
        seen["get after"] = reply(await approver.call("exec.approval.get", {"id": approval_id}))
        seen["list after"] = reply(await approver.call("exec.approval.list", {}))
        return seen


async def test_approval_methods(pair: dict[str, Target]) -> None:
    approvals_compared(pair)
    observed = await observe(pair, approval_methods_flow)
    assert observed["real"]["final"]["payload"]["decision"] == "allow-once", observed["real"]
    assert_conforms("approval-methods", observed)


def listed_ids(frame: Frame) -> Any:
    return sorted(entry["id"] for entry in frame["payload"]) if frame["ok"] else reply(frame)


async def approval_visibility_flow(target: Target) -> Any:
    """Who sees a request from a new socket: a device-less requester, and a device-signed one (§10.4, §12.5)."""
    async with AsyncExitStack() as stack:
        sockets = Clients(stack)
        agent = params_for(target, name="agent", scopes=["operator.approvals"])
        approver = await sockets.open(target, approver_params(target))
        seen: dict[str, Any] = {}
        finals: dict[str, tuple[Session, str]] = {}
        device = DeviceIdentity.generate()
        for label, identity in (("device-less", None), ("device-signed", device)):
            approval_id = f"conf-visibility-{label}"
            requester = await sockets.open(target, agent, identity)
            request_id = await requester.send("exec.approval.request",
                                              request_params(approval_id, command=f"echo {label}", twoPhase=True))
            seen[f"{label}: accepted"] = reply(await requester.res(request_id))
            finals[approval_id] = (requester, request_id)
            again = await sockets.open(target, agent, identity)
            seen[f"{label}: list on a new socket"] = listed_ids(await again.call("exec.approval.list", {}))
            seen[f"{label}: get on a new socket"] = reply(await again.call("exec.approval.get", {"id": approval_id}))
            seen[f"{label}: events of requester"] = await requester.approval_events()
            seen[f"{label}: events of new socket"] = await again.approval_events()
        seen["list by approver"] = listed_ids(await approver.call("exec.approval.list", {}))
        for approval_id, (requester, request_id) in finals.items():
            seen[f"{approval_id}: deny"] = reply(await approver.call("exec.approval.resolve",
                                                                     {"id": approval_id, "decision": "deny"}))
            seen[f"{approval_id}: final"] = reply(await requester.res(request_id))
        seen["events of approver"] = await approver.approval_events()
        return seen


async def test_approval_visibility(pair: dict[str, Target]) -> None:
    approvals_compared(pair)
    observed = await observe(pair, approval_visibility_flow)
    assert_conforms("approval-visibility", observed)


async def approval_no_route_flow(target: Target) -> Any:
    """Nobody but the requester is connected: the request gets one res with decision null (§10.2 step 4)."""
    async with AsyncExitStack() as stack:
        requester = await Clients(stack).open(target, params_for(target, name="agent", scopes=["operator.approvals"]))
        approval_id = "conf-no-route"
        request_id = await requester.send("exec.approval.request", request_params(approval_id, twoPhase=True))
        seen: dict[str, Any] = {"first res": reply(await requester.res(request_id))}
        seen["events of requester"] = await requester.approval_events()
        seen["res frames for the request"] = len([f for f in requester.seen if f.get("id") == request_id])
        seen["waitDecision"] = reply(await requester.call("exec.approval.waitDecision", {"id": approval_id}))
        seen["list"] = reply(await requester.call("exec.approval.list", {}))
        return seen


async def test_approval_without_a_route(pair: dict[str, Target]) -> None:
    approvals_compared(pair)
    observed = await observe(pair, approval_no_route_flow)
    assert_conforms("approval-no-route", observed)


async def approval_expiry_flow(target: Target) -> Any:
    """A request with timeoutMs 1500 that nobody answers, then `ask:"always"` refusing allow-always."""
    async with AsyncExitStack() as stack:
        sockets = Clients(stack)
        approver = await sockets.open(target, approver_params(target))
        requester = await sockets.open(target, params_for(target, name="agent", scopes=["operator.approvals"]))
        approval_id = "conf-expiry"
        request_id = await requester.send("exec.approval.request",
                                          request_params(approval_id, twoPhase=True, timeoutMs=1500))
        seen: dict[str, Any] = {"accepted": reply(await requester.res(request_id))}
        seen["final"] = reply(await requester.res(request_id))
        seen["resolved on expiry"] = normalize(await approver.event("exec.approval.resolved", approval_id, 3.0))
        seen["waitDecision after"] = reply(await requester.call("exec.approval.waitDecision", {"id": approval_id}))
        seen["late resolve"] = reply(await approver.call("exec.approval.resolve",
                                                         {"id": approval_id, "decision": "allow-once"}))
        seen["get after"] = reply(await approver.call("exec.approval.get", {"id": approval_id}))

        approval_id = "conf-ask-always"
        request_id = await requester.send("exec.approval.request",
                                          request_params(approval_id, twoPhase=True, ask="always"))
        seen["ask always: accepted"] = reply(await requester.res(request_id))
        seen["ask always: allow-always"] = reply(await approver.call(
            "exec.approval.resolve", {"id": approval_id, "decision": "allow-always"}))
        seen["ask always: deny"] = reply(await approver.call("exec.approval.resolve",
                                                             {"id": approval_id, "decision": "deny"}))
        seen["ask always: final"] = reply(await requester.res(request_id))
        return seen


async def test_approval_expiry_and_allowed_decisions(pair: dict[str, Target]) -> None:
    approvals_compared(pair)
    observed = await observe(pair, approval_expiry_flow)
    assert observed["real"]["final"]["payload"]["decision"] is None, observed["real"]
    assert_conforms("approval-expiry", observed)
