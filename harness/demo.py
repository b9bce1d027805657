"""`harness demo`: start the embedded gateway stub and show one handshake and one handshake timeout, frame by frame."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gateway_stub.generations import GENERATIONS
from harness.backends.embedded import EmbeddedStub
from harness.client.connect_shape import handler_connect_params, request_frame
from harness.client.plain_socket import connect
from harness.client.session import RequestTimedOut, next_response
from harness.clock import ScaledClock
from harness.errors import EXIT_OK, BackendError

DEMO_TIME_SCALE = 0.1  # the April 10 s handshake timeout becomes 1 s
REPLY_TIMEOUT_MS = 10_000  # real milliseconds: the demo runs its client at time scale 1


def run_demo(profile: str, out: Path | None) -> int:
    work_dir = out or Path(tempfile.mkdtemp(prefix="harness-demo-"))
    try:
        stub_args = ["--profile", profile, "--time-scale", str(DEMO_TIME_SCALE)]
        with EmbeddedStub(stub_args, log_path=work_dir / "stub.log") as stub:
            print(f"gateway stub ({profile}) listening on {stub.url}  [time scale {DEMO_TIME_SCALE:g}]")
            protocol = GENERATIONS[profile].protocol
            _show_handshake(stub, protocol)
            _show_handshake_timeout(stub)
            counters = stub.stats()["counters"]
        print("\nstub counters: " + ", ".join(f"{k}={v}" for k, v in counters.items() if v))
        if out:
            print(f"stub log: {work_dir / 'stub.log'}")
    finally:
        if out is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return EXIT_OK


def _show_handshake(stub: EmbeddedStub, protocol: int) -> None:
    params = handler_connect_params(channel="matrix", account="acct1", token=stub.token, protocol=protocol)
    started = time.perf_counter()
    try:
        with connect(stub.url, open_timeout=10, close_timeout=1) as ws:
            challenge = json.loads(ws.recv(timeout=10))
            print(f"\n<- {_brief(challenge)}")
            _, frame = request_frame("connect", params)
            ws.send(frame)
            print(f"-> connect  client={params['client']['displayName']!r} scopes={params['scopes']}")
            hello = json.loads(ws.recv(timeout=10))
            elapsed_ms = (time.perf_counter() - started) * 1000
            if not hello.get("ok"):
                raise BackendError(f"handshake refused: {hello.get('error')}")
            payload = hello["payload"]
            print(f"<- hello-ok protocol={payload['protocol']} connId={payload['server']['connId']} "
                  f"methods={len(payload['features']['methods'])} auth={payload['auth']}  ({elapsed_ms:.0f} ms)")
            request_id, frame = request_frame("health", {})
            ws.send(frame)
            # next_response skips the health event that may come first
            reply = next_response(ws, request_id, ScaledClock(1.0), timeout_ms=REPLY_TIMEOUT_MS)
            print(f"-> health\n<- {_brief(reply)}")
    except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, RequestTimedOut) as exc:
        raise BackendError(f"demo handshake against {stub.url} failed: {exc}") from None


def _show_handshake_timeout(stub: EmbeddedStub) -> None:
    timeout_ms = stub.stats()["handshake_timeout_ms"]
    print(f"\nA socket that never sends connect (handshake timeout {timeout_ms} ms, scaled x{DEMO_TIME_SCALE:g}):")
    started = time.perf_counter()
    try:
        with connect(stub.url, open_timeout=10, close_timeout=1) as ws:
            ws.recv(timeout=10)  # the challenge
            with contextlib.suppress(ConnectionClosed):
                ws.recv(timeout=30)
            print(f"<- closed code={ws.close_code} reason={ws.close_reason!r} "
                  f"after {(time.perf_counter() - started) * 1000:.0f} ms")
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise BackendError(f"demo timeout check against {stub.url} failed: {exc}") from None


def _brief(frame: dict[str, Any]) -> str:
    text = json.dumps(frame, separators=(",", ":"))
    return text if len(text) <= 160 else text[:157] + "..."
