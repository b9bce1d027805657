"""Handshakes per second of the gateway stub at zero cost, against a bare `websockets` server.

Both servers run as child processes on loopback and are measured in the same run by the same client,
alternating (baseline, stub, baseline, stub, …) so machine noise hits both alike; the figure to read
is the ratio. One "handshake" is what a client needs to be usable:
  baseline: WebSocket open, one text frame echoed, close;
  stub:     WebSocket open, connect.challenge read, connect sent, hello-ok read, close.
The stub runs with no handshake cost and no idle latencies (`--challenge-latency-ms 0
--hello-latency-ms 0`), so the figure is the stub's own overhead. Every round is bounded by a count
and a time limit.

    python benchmarks/stub_handshake_rate.py [--rounds 3] [--handshakes 1500] [--concurrency 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from harness.client.connect_shape import handler_connect_params, request_frame

ROOT = Path(__file__).resolve().parent.parent

ROUND_TIME_LIMIT_S = 30.0
ECHO_SERVER = """
import asyncio, json, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"url": f"ws://127.0.0.1:{port}/"}), flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def start_server(argv: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"server {argv[:3]} did not start (exit {process.wait()})")
    return process, json.loads(line)


async def echo_handshake(url: str, token: str) -> None:
    async with connect(url, compression=None) as ws:
        await ws.send("ping")
        await ws.recv()


async def stub_handshake(url: str, token: str) -> None:
    async with connect(url, compression=None) as ws:
        await ws.recv()  # connect.challenge
        _, frame = request_frame("connect", handler_connect_params(channel="matrix", account="bench", token=token))
        await ws.send(frame)
        reply = json.loads(await ws.recv())
        if not reply.get("ok"):
            raise RuntimeError(f"stub refused the handshake: {reply}")


async def measure(one: Callable[[str, str], Awaitable[None]], url: str, token: str,
                  handshakes: int, concurrency: int) -> float:
    """Handshakes per second for `handshakes` handshakes over `concurrency` sequential workers."""
    left = handshakes
    deadline = time.perf_counter() + ROUND_TIME_LIMIT_S

    async def worker() -> int:
        nonlocal left
        done = 0
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            await one(url, token)
            done += 1
        return done

    started = time.perf_counter()
    done = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=1500, help="per round and server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    echo_proc, echo = start_server([sys.executable, "-c", ECHO_SERVER])
    stub_proc, stub = start_server([
        sys.executable, "-m", "gateway_stub", "--port", "0", "--token", "bench",
        "--challenge-latency-ms", "0", "--hello-latency-ms", "0",
    ])
    rates: dict[str, list[float]] = {"baseline": [], "stub": []}
    try:
        for _ in range(args.rounds):
            rates["baseline"].append(asyncio.run(
                measure(echo_handshake, echo["url"], "", args.handshakes, args.concurrency)))
            rates["stub"].append(asyncio.run(
                measure(stub_handshake, stub["url"], stub["token"], args.handshakes, args.concurrency)))
    finally:
        for process in (echo_proc, stub_proc):
            process.terminate()
            process.wait(10)

    baseline, stub_rate = statistics.median(rates["baseline"]), statistics.median(rates["stub"])
    result = {
        "rounds": args.rounds, "handshakes_per_round": args.handshakes, "concurrency": args.concurrency,
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
        "baseline_handshakes_per_s": [round(r, 1) for r in rates["baseline"]],
        "stub_handshakes_per_s": [round(r, 1) for r in rates["stub"]],
        "baseline_median": round(baseline, 1), "stub_median": round(stub_rate, 1),
        "stub_over_baseline": round(stub_rate / baseline, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"bare websockets echo server : {baseline:8.1f} handshakes/s (median of {args.rounds}: "
          f"{', '.join(f'{r:.0f}' for r in rates['baseline'])})")
    print(f"gateway stub, zero cost     : {stub_rate:8.1f} handshakes/s (median of {args.rounds}: "
          f"{', '.join(f'{r:.0f}' for r in rates['stub'])})")
    print(f"ratio stub / baseline       : {stub_rate / baseline:8.3f}")


if __name__ == "__main__":
    main()
