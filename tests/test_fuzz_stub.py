"""Fuzzing the gateway stub with hypothesis: frames thrown at the handshake object, then at a running stub.

(a) The sans-I/O `Handshake`, driven the way server.py drives it (a connect's cost finishing, the hello
being prepared and sent, the auth-failure delay ending), with arbitrary frames, timer firings, peer closes
and slow-consumer alarms interleaved: no input raises, every action is well formed, the socket is closed at
most once and never after the peer went, the phase only moves forward, and each handshake counts one start
and at most one outcome. (b) A running in-process stub on 127.0.0.1 port 0 (its own event loop, in a
thread, as in production), with several sockets at once sending the same frames, raw HTTP upgrade junk and
abrupt disconnects: nothing it sends is malformed, no task or handler fails, and once every socket is gone
its gauges are back to 0 and /healthz answers. Frames come from a grammar of valid and near-valid OpenClaw
frames (connect params built from the schema's own enums, then broken one field at a time) plus raw junk:
bad UTF-8, deep nesting, huge and non-finite numbers, lone surrogate escapes, oversized frames. conftest's
`quick` profile is the slice the normal suite runs; `HYPOTHESIS_PROFILE=campaign` runs the long one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, get_args

import pytest
from conftest import CAMPAIGN, FAST, TOKEN, report
from conftest import connect_params as valid_connect_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from gateway_stub import GatewayStub, StubConfig
from gateway_stub.generations import APRIL_2026, CURRENT, Generation
from gateway_stub.handshake import (
    Action,
    Bump,
    Close,
    ConsoleLine,
    DelayRejection,
    Dispatch,
    Endpoint,
    Handshake,
    LogLevel,
    Peer,
    Phase,
    Ready,
    Record,
    Register,
    Send,
    StartConnect,
)
from gateway_stub.metrics import COUNTERS
from gateway_stub.protocol import MAX_CLOSE_REASON_BYTES, ROLES, ConnectContext, decide_connect
from gateway_stub.schema import CLIENT_IDS, CLIENT_MODES
from openclaw_wire.device_auth import DeviceIdentity
from openclaw_wire.log_records import StubEvent

# Examples per test, relative to the loaded profile's max_examples: the handshake object takes microseconds.
OBJECT_EXAMPLES = settings().max_examples * 12
SOCKET_EXAMPLES = settings().max_examples
NONCE = "5b0c4b8e-7a4e-4d8f-9a57-0e6f1d2c3b4a"
NOW_MS = 1_780_000_000_000
DEVICE = DeviceIdentity.generate()
PHASES = list(Phase)
OUTCOMES = ("handshakes_succeeded", "handshakes_timed_out", "handshakes_auth_failed", "handshakes_rejected_other")
# What the stub may close with: normal, protocol error, policy, too big, websockets' own 1011 for a ping timeout,
# service restart; 1006 is what a client reports for a connection that ended without a close frame.
CLOSE_CODES = {1000, 1002, 1008, 1009, 1011, 1012}
CLIENT_SEEN_CLOSE_CODES = CLOSE_CODES | {1006}
SCOPES = ("operator.approvals", "operator.read", "operator.write", "operator.admin", "operator.pairing", "nope")
METHODS = ("connect", "health", "status", "exec.approval.list", "exec.approval.request", "exec.approval.get",
           "exec.approval.resolve", "exec.approval.waitDecision", "exec.approvals.set", "no.such.method", "")

frames_thrown: Counter[str] = Counter()  # by level, reported by the campaign


# ---------------------------------------------------------------------------------------------
# The frame grammar


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)


JSON_VALUES = _json_values()


def _maybe(value: st.SearchStrategy[Any], junk_weight: int = 1) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes any JSON value in its place."""
    return st.one_of(*([value] * 4), *([JSON_VALUES] * junk_weight))


@st.composite
def connect_params(draw: st.DrawFn) -> dict[str, Any]:
    """Connect params built from the schema's own enums, with any field broken, dropped or added."""
    protocol = draw(st.sampled_from([3, 4, 3, 4, 1, 2, 5]))
    client: dict[str, Any] = {
        "id": draw(_maybe(st.sampled_from(CLIENT_IDS))),
        "version": draw(_maybe(st.sampled_from(["2026.4.24", "2026.9.6", "1"]))),
        "platform": draw(_maybe(st.sampled_from(["linux", "darwin", ""]))),
        "mode": draw(_maybe(st.sampled_from(CLIENT_MODES))),
    }
    if draw(st.booleans()):
        client["displayName"] = draw(_maybe(st.text(max_size=20)))
    role = draw(_maybe(st.sampled_from([*ROLES, "admin", ""])))
    scopes = draw(_maybe(st.lists(st.sampled_from(SCOPES), max_size=3)))
    params: dict[str, Any] = {
        "minProtocol": draw(_maybe(st.just(protocol))),
        "maxProtocol": draw(_maybe(st.just(draw(st.sampled_from([protocol, protocol + 1]))))),
        "client": client,
        "role": role,
        "scopes": scopes,
        "auth": draw(_maybe(st.sampled_from([{"token": TOKEN}, {"token": TOKEN}, {"token": "wrong"}, {},
                                             {"password": TOKEN}, {"deviceToken": "x"}]))),
    }
    if draw(st.booleans()):
        params["caps"] = draw(_maybe(st.lists(st.sampled_from(["approvals", "tool-events", "x"]), max_size=2)))
    if draw(st.integers(0, 3)) == 0 and isinstance(role, str) and isinstance(scopes, list) \
            and all(isinstance(s, str) for s in scopes) and isinstance(client["id"], str) \
            and isinstance(client["mode"], str):
        device = DEVICE.sign_connect(client=client, role=role, scopes=scopes, token=TOKEN,
                                     nonce=draw(st.sampled_from([NONCE, "other-nonce"])),
                                     signed_at_ms=draw(st.sampled_from([NOW_MS, NOW_MS - 10**7, 0])))
        params["device"] = draw(_maybe(st.just(device)))
    for key in draw(st.lists(st.sampled_from(list(params)), max_size=2)):
        params.pop(key, None)
    if draw(st.integers(0, 5)) == 0:
        params[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    return params


@st.composite
def valid_connects(draw: st.DrawFn) -> dict[str, Any]:
    """A connect the schema accepts (the April handler's), with the protocol, credentials and device varied."""
    auth = draw(st.sampled_from([{"token": TOKEN}, {"token": TOKEN}, {"token": "wrong"}, {"password": "x"}, {}]))
    params = valid_connect_params(draw(st.sampled_from([3, 4])), auth=auth)
    odd = draw(st.integers(0, 5))
    if odd == 0:  # a lone surrogate escape where the client's own text goes: a name, an unknown key
        params["client"]["displayName"] = draw(st.sampled_from(["x\ud800", "\udfff", "\ud83d\ude00"]))
    elif odd == 1:
        params[draw(st.sampled_from(["\udc80", "k\ud800"]))] = 1
    elif odd in (2, 3):
        params["device"] = DEVICE.sign_connect(client=params["client"], role=params["role"], scopes=params["scopes"],
                                               token=auth.get("token", ""), nonce=NONCE, signed_at_ms=NOW_MS)
    return {"type": "req", "id": draw(st.sampled_from(["1:connect", "c"])), "method": "connect", "params": params}


@st.composite
def approval_requests(draw: st.DrawFn) -> dict[str, Any]:
    """An exec.approval.request the schema accepts, whose fields come back in events and replies."""
    params: dict[str, Any] = {"command": draw(st.sampled_from(["ls -la", "rm -rf /tmp/x", "\ud800"])),
                              "cwd": "/tmp", "host": "gateway", "agentId": "main", "sessionKey": "agent:main:main"}
    if draw(st.booleans()):
        params["id"] = draw(st.sampled_from(["a1", "a2", "plugin:x"]))
    if draw(st.booleans()):
        params["turnSourceThreadId"] = 3  # a number field echoed back: the RAW_NUMBERS mutation may make it 1e400
    if draw(st.booleans()):
        params["timeoutMs"] = draw(st.sampled_from([1, 3, 60_000]))
    if draw(st.booleans()):
        params["twoPhase"] = True
    return {"type": "req", "id": draw(st.sampled_from(["r1", "r2"])), "method": "exec.approval.request",
            "params": params}


@st.composite
def request_objects(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 5))
    if kind < 2:
        return draw(valid_connects())
    if kind == 2:
        return draw(approval_requests())
    method = draw(st.sampled_from(METHODS) | st.text(max_size=10))
    params = draw(connect_params()) if method == "connect" and draw(st.integers(0, 4)) else draw(JSON_VALUES)
    frame: dict[str, Any] = {"type": draw(_maybe(st.sampled_from(["req", "req", "req", "event", "res"]))),
                             "id": draw(_maybe(st.sampled_from(["1:connect", "2", "x"]) | st.text(max_size=6))),
                             "method": method}
    if draw(st.integers(0, 6)):
        frame["params"] = params
    return frame


class Big(str):
    """A long frame that hypothesis shows by its length, not by its 70 000 characters."""

    def __repr__(self) -> str:
        return f"Big({self[:24]!r} + {len(self) - 24} more characters)"


# Literals Python's json would write differently from what an attacker sends, spliced in for a number.
RAW_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 400, "3.0", "1e3", "-0", "2e308",
               "123456789012345678901234567890", "0.1e-400")
DEEP = tuple(map(Big, ("[" * 200 + "]" * 200, "[" * 1000, "[" * 70_000, '{"a":' * 5000,
                       '{"type":"req","id":"1","method":"connect","params":' + "[" * 3000 + "]" * 3000 + "}")))
OVERSIZED = tuple(map(Big, ("x" * 65_537, json.dumps({"type": "req", "id": "1", "method": "connect",
                                                     "params": {"p": "y" * 70_000}}))))


@st.composite
def text_frames(draw: st.DrawFn) -> str:
    text = json.dumps(draw(request_objects()))
    mutation = draw(st.integers(0, 9))
    if mutation == 0:
        return text[:draw(st.integers(0, len(text)))]  # cut short
    if mutation == 1:
        return text.replace("3", draw(st.sampled_from(RAW_NUMBERS)), 1)
    if mutation == 2:
        return text.replace('"', '"\\ud800', 1) if draw(st.booleans()) else text.replace('":', '\\udc80":', 1)
    if mutation == 3:
        return text + draw(st.sampled_from(["", " ", "}", "garbage", "\n" + text]))
    return text


FRAMES: st.SearchStrategy[str | bytes] = st.one_of(
    text_frames(), text_frames(), text_frames(), text_frames(),
    text_frames().map(str.encode),  # a binary frame carrying JSON: read as UTF-8, as Node's ws does
    st.binary(max_size=40),
    st.text(max_size=40),
    st.sampled_from(DEEP),
    st.sampled_from(OVERSIZED),
    st.sampled_from([b"\xff\xfe{}", b'{"type":"req","id":"\xc3\x28","method":"connect"}', "", "null", "[]", "{}",
                     '{"type":"req"}', '{"type":"req","id":"","method":"connect"}']),
)


# ---------------------------------------------------------------------------------------------
# (a) The Handshake object, driven as server.py drives it

PEER = Peer("fuzz-conn", Endpoint("127.0.0.1", 50000), Endpoint("127.0.0.1", 18789), host="127.0.0.1:18789",
            user_agent="fuzz")
Event = tuple[str, Any]
EVENTS = st.lists(
    st.one_of(FRAMES.map(lambda f: ("frame", f)), FRAMES.map(lambda f: ("frame", f)),
              FRAMES.map(lambda f: ("frame", f)), st.just(("work", None)), st.just(("work", None)),
              st.just(("work", None)), st.just(("timer", None)), st.just(("peer_closes", None)),
              st.just(("slow_consumer", None))),
    max_size=30,
)


def _check_frame(frame: str) -> None:
    def no_constants(name: str) -> None:
        raise AssertionError(f"the stub wrote {name}, which is not JSON")

    parsed = json.loads(frame, parse_constant=no_constants)
    assert isinstance(parsed, dict) and parsed.get("type") in ("res", "event"), frame
    if parsed["type"] == "res":
        assert isinstance(parsed["id"], str) and isinstance(parsed["ok"], bool), frame
        if not parsed["ok"]:
            assert isinstance(parsed["error"]["code"], str) and isinstance(parsed["error"]["message"], str)


@dataclass
class Driver:
    """The server's side of one connection, minus the sockets: what it would call, in the order it would."""

    generation: Generation
    auth_failure_delay: bool
    handshake: Handshake = field(init=False)
    socket_open: bool = True
    elapsed_ms: float = 0.0
    pending: deque[str] = field(default_factory=deque)  # server work waiting its turn, in order
    counts: Counter[str] = field(default_factory=Counter)
    closes: int = 0
    registered: bool = False

    def __post_init__(self) -> None:
        self.handshake = Handshake(PEER, self.generation, auth_failure_delay=self.auth_failure_delay)
        self.take(self.handshake.opened(), socket_open=True)

    def decide(self) -> Any:
        request = self.handshake._connect  # the connect being decided, as the server's closure holds it
        assert request is not None
        context = ConnectContext(generation=self.generation, auth_mode="token", shared_secret=TOKEN,
                                 peer_is_loopback=True, has_origin=False, has_forwarded_headers=False,
                                 challenge_nonce=NONCE, now_ms=NOW_MS)
        return decide_connect(request.params, context)

    def take(self, actions: list[Action], *, socket_open: bool) -> None:
        """Check what the handshake answered, and queue the server work it asks for."""
        phase_before = PHASES.index(self.handshake.phase)
        for action in actions:
            match action:
                case Send(frame):
                    _check_frame(frame)
                case Close(code, reason, _):
                    assert socket_open, f"{action} after the peer closed"
                    self.closes += 1
                    assert self.closes == 1, "a socket closed twice"
                    assert code in CLOSE_CODES, action
                    assert len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES, action
                case Record(event, level, message, fields, _, _):
                    assert isinstance(event, StubEvent) and level in get_args(LogLevel), action
                    assert "\n" not in message, action
                    json.dumps(fields, allow_nan=False)
                case ConsoleLine(message):
                    assert "\n" not in message, action
                case Bump(counter):
                    assert counter in COUNTERS, action
                    self.counts[counter] += 1
                case StartConnect(request):
                    assert request.method == "connect" and isinstance(request.id, str) and request.id, action
                    self.pending.append("cost_done")
                case DelayRejection():
                    self.pending.append("rejection_due")
                case Register(accepted):
                    assert not self.registered and accepted is self.handshake.accepted, action
                    self.registered = True
                    self.pending.append("hello_prepared")
                case Ready(handshake_ms):
                    assert self.registered and math.isfinite(handshake_ms) and handshake_ms >= 0, action
                case Dispatch(message):
                    assert self.registered, action
                case _:
                    raise AssertionError(f"unknown action {action!r}")
        assert PHASES.index(self.handshake.phase) >= phase_before, "the phase moved backwards"
        outcomes = sum(self.counts[name] for name in OUTCOMES)
        assert outcomes <= 1, f"one handshake, several outcomes: {dict(self.counts)}"
        assert self.counts["handshakes_started"] == 1

    def step(self, kind: str, value: Any) -> None:
        self.elapsed_ms += 7.5
        hs, open_ = self.handshake, self.socket_open
        if kind == "frame":
            frames_thrown["object"] += 1
            self.take(hs.frame_received(value, socket_open=open_), socket_open=open_)
        elif kind == "timer" and not self.registered:  # Register cancels the timer
            self.take(hs.timer_fired(self.elapsed_ms, socket_open=open_), socket_open=open_)
        elif kind == "peer_closes":
            self.socket_open = False
        elif kind == "slow_consumer":
            self.take(hs.slow_consumer(socket_open=open_), socket_open=open_)
        elif kind == "work" and self.pending:
            self.work(self.pending.popleft())

    def work(self, item: str) -> None:
        hs, open_ = self.handshake, self.socket_open
        if item == "cost_done":
            self.take(hs.connect_cost_done(self.decide, socket_open=open_), socket_open=open_)
            if hs.accepted is not None:
                self.pending.append("hello_due")
        elif item == "rejection_due":
            self.take(hs.rejection_due(socket_open=open_), socket_open=open_)
        elif item == "hello_due":
            self.take(hs.hello_due(socket_open=open_), socket_open=open_)
        elif item == "hello_prepared":
            self.take(hs.hello_prepared(self.elapsed_ms), socket_open=open_)
            if open_:  # the server sends hello-ok; a closed socket ends its connect task there
                self.pending.append("hello_sent")
        elif item == "hello_sent":
            self.take(hs.hello_sent(), socket_open=open_)

    def close(self, code: int | None, reason: str | None) -> None:
        before = self.counts["closed_before_connect"]
        self.take(self.handshake.closed(code, reason, self.elapsed_ms), socket_open=False)
        assert self.counts["closed_before_connect"] - before == (0 if self.registered else 1)


@settings(max_examples=OBJECT_EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(generation=st.sampled_from([APRIL_2026, CURRENT]), auth_failure_delay=st.booleans(), events=EVENTS,
       drain=st.booleans(), close=st.sampled_from([(1000, ""), (1006, None), (None, None), (1008, "x")]))
def test_handshake_object_survives_any_sequence_of_inputs(generation: Generation, auth_failure_delay: bool,
                                                         events: list[Event], drain: bool,
                                                         close: tuple[int | None, str | None]) -> None:
    driver = Driver(generation, auth_failure_delay)
    for kind, value in events:
        driver.step(kind, value)
    while drain and driver.pending:  # the server finishes what it started unless the socket closes first
        driver.work(driver.pending.popleft())
    driver.close(*close)


# ---------------------------------------------------------------------------------------------
# (b) A running stub over real sockets


class StubThread:
    """A stub serving from its own event loop in a thread, as in production; problems it logs are kept."""

    def __init__(self, **options: Any) -> None:
        self.problems: list[str] = []
        self._ready: Future[GatewayStub] = Future()
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, args=(options,), daemon=True)
        self._thread.start()
        self.stub = self._ready.result(timeout=10)

    def _run(self, options: dict[str, Any]) -> None:
        asyncio.run(self._main(options))

    async def _main(self, options: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(lambda _, context: self.problems.append(str(context.get("message"))
                                                                               + repr(context.get("exception"))))
        self._stop = asyncio.Event()
        try:
            async with GatewayStub(StubConfig(**{**FAST, **options})) as stub:
                self._ready.set_result(stub)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def call(self, function: Any) -> Any:
        """Run `function()` on the stub's loop and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def gauges(self) -> dict[str, float]:
        gauges: dict[str, float] = self.call(self.stub.gauges)
        return gauges

    def close(self) -> None:
        assert self.loop is not None and self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


class _Problems(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()} {record.exc_info!r}")


@pytest.fixture(scope="module")
def stubs(request: pytest.FixtureRequest) -> Iterator[dict[str, StubThread]]:
    # websockets logs a failing handler or opening handshake through the stub's logger; asyncio its own.
    handler = _Problems()
    watched = [logging.getLogger("gateway_stub.websockets"), logging.getLogger("asyncio")]
    for logger in watched:
        logger.addHandler(handler)
    running = {name: StubThread(profile=name, handshake_timeout_ms=3000, max_preauth_per_ip=64)
               for name in ("april-2026", "current")}
    for thread in running.values():
        thread.problems = handler.records  # one list: any problem from either stub or the loggers
    yield running
    for thread in running.values():
        thread.close()
    for logger in watched:
        logger.removeHandler(handler)
    if CAMPAIGN:
        report(request.config, f"\nfuzz_stub: {frames_thrown['object']} frames at the handshake object, "
                               f"{frames_thrown['sockets']} over sockets")


Step = tuple[str, Any]
STEPS = st.lists(st.one_of(FRAMES.map(lambda f: ("send", f)), FRAMES.map(lambda f: ("send", f)),
                           st.just(("read", None)), st.just(("pause", None))), max_size=6)
UPGRADE_JUNK = st.sampled_from([
    # Repeated headers: a client may send any header twice; websockets' Headers.get raises on that.
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: a\r\nOrigin: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: a\r\nOrigin: b\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nUser-Agent: x\r\n"
    b"User-Agent: y\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text\r\nAccept: text/plain\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text; version=abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Forwarded-For: 1\r\n"
    b"X-Forwarded-For: 2\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"GET /stats HTTP/1.1\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",
    b"GARBAGE\r\n\r\n",
])
SOCKETS = st.lists(st.one_of(
    st.tuples(st.just("raw"), UPGRADE_JUNK, st.just([])),
    st.tuples(st.sampled_from(["ws", "ws", "hello"]), st.just(b""), STEPS),
), min_size=1, max_size=4)


async def _drain_frames(ws: Any, timeout: float) -> None:
    """Read whatever arrives within `timeout`; every frame the stub sends must be well formed."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except (TimeoutError, ConnectionClosed):
            return
        assert isinstance(message, str), message
        _check_frame(message)


async def _play(url: str, port: int, kind: str, raw: bytes, steps: list[Step], ending: str) -> None:
    if kind == "raw":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(65536), 0.1)  # a partial request waits for more
            assert not answer or answer.startswith(b"HTTP/1.1 "), answer[:100]
            if answer.startswith(b"HTTP/1.1 5"):
                raise AssertionError(f"a 5xx from the stub: {answer[:200]!r}")
        except (TimeoutError, ConnectionError):
            pass
        writer.transport.abort()
        return
    try:
        ws = await connect(url, compression=None, max_size=None, open_timeout=5, ping_interval=None)
    except InvalidStatus as exc:
        assert exc.response.status_code == 503, exc  # the pre-auth budget, the only refusal there is
        return
    except (InvalidHandshake, OSError, TimeoutError):
        return
    try:
        await _drain_frames(ws, 0.0)
        if kind == "hello":
            await ws.send(json.dumps({"type": "req", "id": "1:connect", "method": "connect",
                                      "params": {"minProtocol": 3, "maxProtocol": 4,
                                                 "client": {"id": "gateway-client", "version": "1",
                                                            "platform": "linux", "mode": "backend"},
                                                 "role": "operator", "scopes": ["operator.approvals"],
                                                 "auth": {"token": TOKEN}}}))
        for action, value in steps:
            if action == "send":
                frames_thrown["sockets"] += 1
                try:
                    await ws.send(value)
                except ConnectionClosed:
                    break
            elif action == "read":
                await _drain_frames(ws, 0.02)
            else:
                await asyncio.sleep(0.005)
        await _drain_frames(ws, 0.01)
        if ws.close_code is not None:
            assert ws.close_code in CLIENT_SEEN_CLOSE_CODES, (ws.close_code, ws.close_reason)
    finally:
        if ending == "abort" and ws.transport is not None:
            ws.transport.abort()
        else:
            await ws.close()


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        status: int = response.status
        return status


@settings(max_examples=SOCKET_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(profile=st.sampled_from(["april-2026", "current"]), sockets=SOCKETS,
       endings=st.lists(st.sampled_from(["abort", "close"]), min_size=4, max_size=4))
def test_running_stub_survives_random_frames_and_disconnects(stubs: dict[str, StubThread], profile: str,
                                                             sockets: list[tuple[str, bytes, list[Step]]],
                                                             endings: list[str]) -> None:
    thread = stubs[profile]
    stub = thread.stub
    thread.problems.clear()  # each example answers for its own problems

    async def clients() -> None:
        await asyncio.gather(*(_play(stub.url, stub.port, kind, raw, steps, ending)
                               for (kind, raw, steps), ending in zip(sockets, itertools.cycle(endings))))

    asyncio.run(clients())
    deadline = time.monotonic() + 10
    while (gauges := thread.gauges()) and any(gauges[g] for g in ("preauth_sockets", "authenticated_sockets",
                                                                   "preauth_budget_held")):
        assert time.monotonic() < deadline, f"gauges stuck after every socket closed: {gauges}"
        time.sleep(0.01)
    assert _get(stub.http_url + "healthz") == 200
    assert thread.problems == []
