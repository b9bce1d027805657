"""`harness`: the command line.

  harness run PROFILE [--arm NAME] [--seed N] [--time-scale X] [--out DIR]   one arm
  harness compare PROFILE [--seed N] [--time-scale X] [--out DIR]            every arm, one table
      both also take --backend {embedded,docker}: where a stub target runs (overrides the profile's)
  harness demo                                                               one handshake, one timeout
  harness toxiproxy [--host 127.0.0.1] [--port 8474]                        a Toxiproxy-compatible server
  harness openclaw-install [VERSION ...]                                     Node 24 + openclaw@VERSION, cached

Exit codes: 0 every threshold met, 1 a threshold failed, 2 invalid input (one line naming the field),
3 the target or environment failed, 130 interrupted (everything started is stopped first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import locust  # noqa: F401,I001  (gevent's monkey-patching must come before sockets and threads are imported)
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from harness.backends.embedded import EmbeddedStub
from harness.client.connect_shape import handler_connect_params, request_frame
from harness.client.session import RequestTimedOut, next_response
from harness.clock import ScaledClock
from harness.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_THRESHOLD_FAILED,
    BackendError,
    BadInput,
    HarnessError,
)
from harness.interrupts import deliver_ctrl_c_to_main_greenlet

DEMO_TIME_SCALE = 0.1  # the April 10 s handshake timeout becomes 1 s


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        print(f"harness: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="harness", description="Chaos and load harness for WebSocket gateways.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    for name, text in (("run", "run one arm of a profile (default: its first arm)"),
                       ("compare", "run every arm of a profile and print them side by side")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("profile", type=Path, help="a profile YAML file (see profiles/)")
        if name == "run":
            sub.add_argument("--arm", help="the arm to run (default: the profile's first)")
        sub.add_argument("--seed", type=int, help="override the profile's seed")
        sub.add_argument("--time-scale", type=float, help="override the profile's time scale (> 0)")
        sub.add_argument("--out", type=Path, help="results folder (default: results/<profile>-<time>)")
        sub.add_argument("--backend", choices=("embedded", "docker"),
                         help="where a stub target runs: child processes or Docker containers (default: the "
                              "profile's target.backend, else embedded)")
    proxy = commands.add_parser("toxiproxy", help="run the embedded Toxiproxy-compatible server in the foreground")
    proxy.add_argument("--host", default="127.0.0.1", help="loopback address for the API (default 127.0.0.1)")
    proxy.add_argument("--port", default="8474", help="API port (default 8474, Toxiproxy's)")
    install = commands.add_parser("openclaw-install", help="install Node 24 and the real gateway into the cache "
                                  "that `target: kind: openclaw` uses (npm, about 30 s and 650 MB per version)")
    install.add_argument("versions", nargs="*", help="openclaw versions (default: the pinned ones, "
                                                     "2026.4.24 2026.4.29 2026.9.6)")
    demo = commands.add_parser("demo", help="start the embedded gateway stub and show a handshake")
    demo.add_argument("--profile", choices=("april-2026", "current"), default="april-2026",
                      help="protocol profile of the stub (default april-2026)")
    demo.add_argument("--out", type=Path, default=None,
                      help="keep the stub's log in this folder (default: a temporary folder, removed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    deliver_ctrl_c_to_main_greenlet()
    try:
        if args.command == "demo":
            return run_demo(args.profile, args.out)
        if args.command == "openclaw-install":
            return install_openclaw(args.versions)
        if args.command == "toxiproxy":
            # The proxy is an asyncio program; this process is patched by gevent, so it hands over instead.
            module = ["-m", "harness.faults.embedded_proxy", "--host", args.host, "--port", args.port]
            os.execv(sys.executable, [sys.executable, *module])
        return run_or_compare(args)
    except KeyboardInterrupt:
        print("harness: interrupted; everything it started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run_or_compare(args: argparse.Namespace) -> int:
    from harness.profile import load_profile
    from harness.report.table import render
    from harness.run import run_profile
    from harness.summary import Comparison
    from harness.target import StubTarget

    profile = load_profile(args.profile).with_overrides(seed=args.seed, time_scale=args.time_scale)
    if args.backend:
        if not isinstance(profile.target, StubTarget):
            raise BadInput(f"--backend: only with target kind stub, this profile's is {profile.target.kind}")
        profile = dataclasses.replace(profile, target=dataclasses.replace(profile.target, backend=args.backend))
    if args.command == "run":
        arm = args.arm or profile.arms[0]
        if arm not in profile.arms:
            raise BadInput(f"--arm: expected one of this profile's arms ({', '.join(profile.arms)}), got {arm!r}")
        arms = [arm]
    else:
        arms = list(profile.arms)
    out = args.out or Path("results") / f"{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"{profile.name}: {profile.account_count} accounts, arms {', '.join(arms)}, "
          f"{profile.duration_s:g} s at time scale {profile.time_scale:g} -> {out}", file=sys.stderr)
    results = run_profile(profile, arms, out)
    summaries = [r.summary for r in results]
    print(render(summaries, f"{profile.name} ({profile.account_count} accounts, seed {profile.seed})"))
    if args.command == "compare":
        Comparison(profile=profile.name, arms=summaries).write(out / "compare.json")
    print(f"results: {out}", file=sys.stderr)
    return EXIT_OK if all(r.passed for r in results) else EXIT_THRESHOLD_FAILED


def install_openclaw(versions: list[str]) -> int:
    import logging

    from harness.backends.openclaw import PINNED_VERSIONS, ensure_node, ensure_openclaw

    logging.basicConfig(level=logging.INFO, format="harness: %(message)s")
    print(f"node: {ensure_node()}", file=sys.stderr)
    for version in versions or PINNED_VERSIONS:
        print(f"openclaw {version}: {ensure_openclaw(version)}", file=sys.stderr)
    return EXIT_OK


def run_demo(profile: str, out: Path | None) -> int:
    work_dir = out or Path(tempfile.mkdtemp(prefix="harness-demo-"))
    try:
        stub_args = ["--profile", profile, "--time-scale", str(DEMO_TIME_SCALE)]
        with EmbeddedStub(stub_args, log_path=work_dir / "stub.log") as stub:
            print(f"gateway stub ({profile}) listening on {stub.url}  [time scale {DEMO_TIME_SCALE:g}]")
            protocol = 3 if profile == "april-2026" else 4
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
        with connect(stub.url, compression=None, open_timeout=10) as ws:
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
            reply = next_response(ws, request_id, ScaledClock(1.0), timeout_ms=10_000)  # skips the health event
            print(f"-> health\n<- {_brief(reply)}")
    except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, RequestTimedOut) as exc:
        raise BackendError(f"demo handshake against {stub.url} failed: {exc}") from None


def _show_handshake_timeout(stub: EmbeddedStub) -> None:
    timeout_ms = stub.stats()["handshake_timeout_ms"]
    print(f"\nA socket that never sends connect (handshake timeout {timeout_ms} ms, scaled x{DEMO_TIME_SCALE:g}):")
    started = time.perf_counter()
    try:
        with connect(stub.url, compression=None, open_timeout=10) as ws:
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


if __name__ == "__main__":
    sys.exit(main())
