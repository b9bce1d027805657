"""Where the real gateway's event loop is blocked: during a handshake, after hello-ok, after a `health` request.

The stub's health-refresh cost (profiles/calibration/) needs the real refresh's shape, not only its CPU: one
long synchronous run lets nothing else through, short runs with waits between them let other sockets
upgrade and handshake in the gaps. This launches the real gateway with benchmarks/node_loop_trace.cjs
preloaded (NODE_OPTIONS), which notes every event-loop block longer than 2 ms, then per round, on one idle
gateway (optionally held to a CPU quota): one device-signed April handler connect up to hello-ok, a quiet
window, one `health` request, a quiet window, close. Each block is attributed to the window it ended in:

* `idle`: the same length of quiet before the round (the baseline: timers, the trace itself),
* `handshake`: from TCP connect to hello-ok,
* `after hello`: hello-ok to the health request (the post-connect health refresh, `probe: true`),
* `after health`: the health request to the close (the background refresh a health call starts).

Per window and round: blocks (count, total, largest, each one as +offset ms:duration ms) and the window's
busy span (first block start to last block end) with the share of it blocked.

    python benchmarks/openclaw_loop_blocks.py [--version 2026.4.24] [--rounds 5] [--quotas none,0.05]
        [--window-s 3] [--out DIR]

Prints the table and writes DIR/loop-blocks.json (default results/loop-blocks/<UTC time>/). Loopback only;
every wait is bounded; the gateway and its cgroup are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from openclaw_calibration import (
    Target,
    _floats,
    real_gateway,
    reply_to,
    signed_connect_frame,
    warm_up,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.backends.cpu_throttle import throttle_cpu
from harness.client.connect_shape import request_frame
from openclaw_wire.device_auth import DeviceIdentity

ROOT = Path(__file__).resolve().parent.parent

TRACE_JS = ROOT / "benchmarks" / "node_loop_trace.cjs"
WINDOWS = ("idle", "handshake", "after hello", "after health")
REPLY_TIMEOUT_S = 120.0


def now_ms() -> float:
    return time.time() * 1000.0


async def one_round(target: Target, device: DeviceIdentity, window_s: float, account: str) -> dict[str, float]:
    """The round's window boundaries, in epoch ms."""
    marks = {"idle": now_ms()}
    await asyncio.sleep(window_s)
    async with asyncio.timeout(REPLY_TIMEOUT_S + 2 * window_s):
        marks["handshake"] = now_ms()
        async with connect(target.url, compression=None, proxy=None, max_size=None, ping_interval=None,
                           open_timeout=REPLY_TIMEOUT_S, close_timeout=2) as ws:
            challenge = json.loads(await ws.recv())
            request_id, frame = signed_connect_frame(challenge, target.token, target.protocol, device, account)
            await ws.send(frame)
            hello = await reply_to(ws, request_id)
            if not hello.get("ok"):
                raise SystemExit(f"{target.name}: connect refused: {hello.get('error')}")
            marks["after hello"] = now_ms()
            await asyncio.sleep(window_s)
            marks["after health"] = now_ms()
            request_id, frame = request_frame("health", {})
            await ws.send(frame)
            await reply_to(ws, request_id)
            await asyncio.sleep(window_s)
    marks["end"] = now_ms()
    return marks


def read_blocks(trace: Path) -> list[tuple[float, float]]:
    """(start epoch ms, blocked ms) of every block the preload noted."""
    blocks = []
    for line in trace.read_text(encoding="utf-8").splitlines() if trace.exists() else []:
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            blocks.append((record["end"] - record["ms"], float(record["ms"])))
    return sorted(blocks)


def describe_window(blocks: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    inside = [(s, ms) for s, ms in blocks if start <= s + ms < end]
    total = sum(ms for _, ms in inside)
    span = (inside[-1][0] + inside[-1][1] - inside[0][0]) if inside else 0.0
    return {"count": len(inside), "total_ms": round(total, 1), "largest_ms": max((ms for _, ms in inside), default=0.0),
            "span_ms": round(span, 1), "blocked_share_of_span": round(total / span, 3) if span else None,
            "blocks": [[round(s - start, 1), ms] for s, ms in inside]}


def measure(target: Target, gateway: Any, device: DeviceIdentity, trace: Path, quota: float | None, rounds: int,
            window_s: float) -> list[dict[str, Any]]:
    throttle = (throttle_cpu(gateway.session_pids, quota, name="loop-blocks") if quota is not None
                else contextlib.nullcontext())
    marks = []
    with throttle:
        for index in range(rounds):
            try:
                marks.append(asyncio.run(one_round(target, device, window_s, f"round{index + 1}")))
            except (TimeoutError, OSError, ConnectionClosed) as exc:  # reported, and the next quota goes on
                print(f"  quota {quota or 'none'}: round {index + 1} failed ({type(exc).__name__}: {exc}); "
                      f"this quota stops here", file=sys.stderr, flush=True)
                break
            print(f"  quota {quota or 'none'}: round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    time.sleep(0.6)  # the preload flushes every 250 ms
    blocks = read_blocks(trace)
    rows = []
    for round_marks in marks:
        bounds = [round_marks[name] for name in WINDOWS] + [round_marks["end"]]
        rows.append({"quota": quota, "windows": {name: describe_window(blocks, bounds[i], bounds[i + 1])
                                                 for i, name in enumerate(WINDOWS)},
                     "hello_ms": round(round_marks["after hello"] - round_marks["handshake"], 1)})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| quota | window | blocks (median) | blocked ms (median) | largest ms (median, max) | busy span ms "
          "(median) | blocked share of span |")
    print("|---|---|---|---|---|---|---|")
    for quota in dict.fromkeys(row["quota"] for row in rows):
        of_quota = [row for row in rows if row["quota"] == quota]
        for name in WINDOWS:
            cells = [row["windows"][name] for row in of_quota]
            largest = [c["largest_ms"] for c in cells]
            shares = [c["blocked_share_of_span"] for c in cells if c["blocked_share_of_span"] is not None]
            print(f"| {quota or 'none'} | {name} | {statistics.median(c['count'] for c in cells):g} "
                  f"| {statistics.median(c['total_ms'] for c in cells):.0f} "
                  f"| {statistics.median(largest):.0f}, {max(largest):.0f} "
                  f"| {statistics.median(c['span_ms'] for c in cells):.0f} "
                  f"| {statistics.median(shares) if shares else 0:.2f} |")
    for row in rows[:1] + [r for r in rows if r["quota"] != rows[0]["quota"]][:1]:
        for name in ("after hello", "after health"):
            blocks = " ".join(f"+{s:g}:{ms:g}" for s, ms in row["windows"][name]["blocks"])
            print(f"first round at quota {row['quota'] or 'none'}, {name} (+offset:ms): {blocks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default="2026.4.24")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quotas", default="none,0.05", help="'none' or a fraction of one core, comma-separated")
    parser.add_argument("--window-s", type=float, default=3.0,
                        help="quiet time before the round, after hello and after health; at a quota q, x 0.2/q")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.rounds < 1 or args.window_s <= 0:
        parser.error("--rounds and --window-s: expected a count >= 1 and seconds > 0")
    out = args.out or ROOT / "results" / "loop-blocks" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    trace = out / "loop-trace.jsonl"
    os.environ["NODE_OPTIONS"] = f"--require {TRACE_JS}"
    os.environ["LOOP_TRACE_FILE"] = str(trace)
    quotas: list[float | None] = _floats(args.quotas, lambda q: None if q.strip() == "none" else float(q))
    device = DeviceIdentity.generate()
    rows: list[dict[str, Any]] = []
    with real_gateway(args.version, None, out / f"openclaw-{args.version}") as (target, gateway):
        warm_up(target, device)
        for quota in quotas:
            window_s = args.window_s if quota is None else args.window_s * max(1.0, 0.2 / quota)
            rows += measure(target, gateway, device, trace, quota, args.rounds, window_s)
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
              "version": args.version, "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                                                   "loadavg_at_end": os.getloadavg()},
              "rows": rows}
    (out / "loop-blocks.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_table(rows)
    print(f"\nwrote {out / 'loop-blocks.json'}")


if __name__ == "__main__":
    main()
