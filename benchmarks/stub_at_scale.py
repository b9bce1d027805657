"""The stub holding many authenticated sockets: what ticks and pings cost it, its memory, its event-loop lag.

For each N (and round): the embedded stub (profile `current`, zero cost; its 30 s tick and 25 s keepalive ping
brought to 3 s and 2.5 s, as at time scale 0.1; a 60 s handshake timer, so that all N get in) and N bare
`websockets` asyncio clients in this process, each doing an approvals handler's device-signed handshake, then
reading everything the stub sends (and answering its pings, as websockets does) for an idle window of IDLE_S
real seconds. Measured over the window: the stub's CPU time (as a share of the window, and per tick interval
per 1,000 sockets, pings included), its event-loop lag (its own 50 ms probe: the median of each second's worst,
and the worst, read from /stats every second; and the worst in the two tick intervals between the last
connect and the window, while the stub sends each new client its health event), its resident memory per
socket (against one socket, in the same invocation), and its full garbage collections (how many in the window,
and the longest so far). The per-socket
cost at N against the one at the smallest N is the scaling ratio (1.0: linear). Also the hello-ok each profile
sends, in bytes: `current` lists many more methods and events than `april-2026`.

    python benchmarks/stub_at_scale.py [--counts 1000 10000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from accounts_at_scale import FLEET_TIME_LIMIT_S, MB, _handshake
from websockets.asyncio.client import ClientConnection, connect

from harness.backends.embedded import EmbeddedStub
from harness.client.connect_shape import ClientShape, request_frame
from harness.client.session import signed
from harness.verdict.figures import percentile
from openclaw_wire.constants import PROTOCOL_APRIL, PROTOCOL_CURRENT
from openclaw_wire.device_auth import DeviceIdentity

TICK_REAL_S = 3.0  # ten times OpenClaw's 30 s, as at time scale 0.1, with the handshake timer left alone
PING_REAL_S = 2.5
HANDSHAKE_TIMEOUT_MS = 60_000  # holding is measured here, not connecting: no socket times out on the way in
IDLE_S = 30.0
LAG_POLL_S = 1.0


async def _drain(ws: ClientConnection) -> None:
    try:
        async for _ in ws:
            pass
    except Exception:  # noqa: BLE001 - a socket closed at the end is what we wanted
        return


def _recent_lags(stub: EmbeddedStub, until: float) -> list[float]:
    """The stub's own 50 ms lag probe, read back every second until `until`: /stats keeps its last second of
    samples, so each read's max is that second's worst."""
    lags = []
    while time.monotonic() < until:
        recent = stub.stats()["event_loop_lag_last_interval_ms"]
        if recent.get("max") is not None:
            lags.append(float(recent["max"]))
        time.sleep(LAG_POLL_S)
    return lags


async def _held(stub: EmbeddedStub, count: int) -> dict[str, float]:
    """Connect `count` clients, hold them for the idle window, and read what the stub spent meanwhile."""
    shape = ClientShape(PROTOCOL_CURRENT, DeviceIdentity.generate())
    release = asyncio.Event()
    opened: list[ClientConnection] = []
    tasks = [asyncio.create_task(_handshake(stub.url, stub.token, shape, i, release, opened)) for i in range(count)]
    await asyncio.sleep(0.2)
    release.set()
    drains: list[asyncio.Task[None]] = []
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), FLEET_TIME_LIMIT_S)
        drains = [asyncio.create_task(_drain(ws)) for ws in opened]
        process = psutil.Process(stub.pid)
        # The connect burst's garbage and lag out of the way; what the stub still owes the new clients then
        # (a health event each, 378 ms after its hello on `current`) is timed on its own.
        settling = await asyncio.to_thread(_recent_lags, stub, time.monotonic() + 2 * TICK_REAL_S)
        gc_before = (await asyncio.to_thread(stub.stats))["gc_pauses"]["gen2"]
        cpu_before, started = sum(process.cpu_times()[:2]), time.monotonic()
        lags = await asyncio.to_thread(_recent_lags, stub, started + IDLE_S)
        cpu_s, window_s = sum(process.cpu_times()[:2]) - cpu_before, time.monotonic() - started
        stats = await asyncio.to_thread(stub.stats)
        sockets, gc_after = stats["gauges"]["authenticated_sockets"], stats["gc_pauses"]["gen2"]
        return {"sockets": sockets, "cpu_share": cpu_s / window_s,
                "ms_per_tick_per_1000": cpu_s * 1000.0 / (window_s / TICK_REAL_S) / (count / 1000.0),
                "settle_lag_max_ms": max(settling, default=0.0),
                "lag_p50_ms": percentile(lags, 0.5) or 0.0, "lag_max_ms": max(lags, default=0.0),
                "rss_mb": process.memory_info().rss / MB,
                "full_gcs": gc_after["collections"] - gc_before["collections"],
                "full_gc_longest_ms": gc_after["longest_ms"]}
    finally:
        for task in (*tasks, *drains):
            task.cancel()
        for ws in opened:
            if ws.transport is not None:
                ws.transport.abort()


def held(count: int) -> dict[str, float]:
    options = ["--profile", "current", "--max-preauth-per-ip", str(2 * count), "--tick-interval-ms",
               str(TICK_REAL_S * 1000), "--ping-interval-ms", str(PING_REAL_S * 1000), "--handshake-timeout-ms",
               str(HANDSHAKE_TIMEOUT_MS)]
    with tempfile.TemporaryDirectory(prefix="bench-stub-scale-") as tmp, \
            EmbeddedStub(options, log_path=Path(tmp) / "stub.log") as stub:
        return asyncio.run(_held(stub, count))


async def _hello_bytes(url: str, token: str, protocol: int) -> int:
    shape = ClientShape(protocol, DeviceIdentity.generate())
    async with connect(url, compression=None, open_timeout=30, max_size=None) as ws:
        challenge = json.loads(await ws.recv())
        params = shape.handler_params("matrix", "matrix-1", token)
        _, frame = request_frame("connect", signed(params, shape.device, challenge.get("payload") or {})
                                 if shape.device else params)
        await ws.send(frame)
        while True:
            message = await ws.recv()
            if json.loads(message).get("type") == "res":
                return len(message.encode() if isinstance(message, str) else message)


def hello_bytes(profile: str, protocol: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-stub-hello-") as tmp, \
            EmbeddedStub(["--profile", profile], log_path=Path(tmp) / "stub.log") as stub:
        return asyncio.run(_hello_bytes(stub.url, stub.token, protocol))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    hellos = {"current": hello_bytes("current", PROTOCOL_CURRENT), "april-2026": hello_bytes("april-2026",
                                                                                               PROTOCOL_APRIL)}
    one = held(1)
    rows = []
    for count in args.counts:
        runs = []
        for index in range(args.rounds):
            runs.append(held(count))
            print(f"N={count} round {index + 1}: {runs[-1]}", file=sys.stderr)
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        median["kb_per_socket"] = (median["rss_mb"] - one["rss_mb"]) * 1024.0 / count
        rows.append({"sockets": count, "rounds": runs, "median": median})
    base = rows[0]["median"]["ms_per_tick_per_1000"]
    for row in rows:
        row["median"]["scaling_vs_smallest"] = row["median"]["ms_per_tick_per_1000"] / base
    if args.json:
        print(json.dumps({"hello_ok_bytes": hellos, "one_socket": one, "rows": rows}, indent=2))
        return
    print(f"hello-ok: current {hellos['current']} bytes, april-2026 {hellos['april-2026']} bytes "
          f"({hellos['current'] / hellos['april-2026']:.1f}x)")
    print(f"(medians of {args.rounds}; idle window {IDLE_S:g} s, a tick every {TICK_REAL_S:g} s, a ping every "
          f"{PING_REAL_S:g} s)")
    print(f"{'sockets':>7} {'idle CPU':>8} {'ms/tick/1000':>12} {'scaling':>7} {'settle lag':>10} {'lag p50 ms':>10} "
          f"{'lag max ms':>10} {'KB/socket':>9} {'full GCs':>8} {'longest ms':>10}")
    for row in rows:
        m = row["median"]
        print(f"{row['sockets']:>7} {m['cpu_share']:>8.1%} {m['ms_per_tick_per_1000']:>12.1f} "
              f"{m['scaling_vs_smallest']:>7.2f} {m['settle_lag_max_ms']:>10.1f} {m['lag_p50_ms']:>10.1f} "
              f"{m['lag_max_ms']:>10.1f} "
              f"{m['kb_per_socket']:>9.1f} {m['full_gcs']:>8.0f} {m['full_gc_longest_ms']:>10.1f}")


if __name__ == "__main__":
    main()
