"""Many accounts in one harness process against the stub at zero cost, against a bare asyncio fleet in the same run.

For each N and round, alternating (baseline, harness) so machine noise falls on both:
  baseline: the embedded stub (profile `current`, zero cost, a pre-auth budget of 2N) and N bare `websockets`
            asyncio clients in this process, released together, each doing the handshake the harness's accounts
            do (open, connect.challenge, the device-signed connect of an approvals handler, one Ed25519 key for
            all, hello-ok); the time from release to the last hello-ok;
  harness:  `harness run --processes P` of a profile with the same stub and N accounts (shipped arm, 40 s), for
            each P asked for: summary.json's time to all connected, and the peak resident memory of the harness's
            processes (added: the master and its workers) and of the stub's, sampled every 0.2 s.
Figures are medians over the rounds; the ratio is harness / baseline per round. Memory per account is (peak at
N - peak at 1 account) / N, the 1-account run measured once per invocation. Everything is bounded: every wait has
a time limit, and the stub and the harness are stopped at the end, also on Ctrl-C.

    python benchmarks/accounts_at_scale.py [--counts 2000 6000] [--processes 1 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from locust_capacity import profile_text
from websockets.asyncio.client import ClientConnection, connect

from harness.backends.embedded import EmbeddedStub
from harness.client.connect_shape import ClientShape, request_frame
from harness.client.session import signed
from openclaw_wire.constants import PROTOCOL_CURRENT
from openclaw_wire.device_auth import DeviceIdentity

ROOT = Path(__file__).resolve().parent.parent
FLEET_TIME_LIMIT_S = 120.0
HARNESS_DURATION_S = 40
MB = 1024.0 * 1024.0


async def _handshake(url: str, token: str, shape: ClientShape, index: int, release: asyncio.Event,
                     opened: list[ClientConnection]) -> float:
    """One bare client: wait for the release, then the handshake; the monotonic time of its hello-ok."""
    await release.wait()
    ws = await connect(url, compression=None, open_timeout=FLEET_TIME_LIMIT_S, ping_interval=None, max_size=None)
    opened.append(ws)
    challenge = json.loads(await ws.recv())
    params = shape.handler_params("matrix", f"matrix-{index + 1}", token)
    assert shape.device is not None
    _, frame = request_frame("connect", signed(params, shape.device, challenge.get("payload") or {}))
    await ws.send(frame)
    while True:
        reply = json.loads(await ws.recv())
        if reply.get("type") == "res":
            if not reply.get("ok"):
                raise RuntimeError(f"the stub refused a baseline handshake: {reply.get('error')}")
            return time.monotonic()


async def _fleet(url: str, token: str, count: int) -> float:
    shape = ClientShape(PROTOCOL_CURRENT, DeviceIdentity.generate())
    release = asyncio.Event()
    opened: list[ClientConnection] = []
    tasks = [asyncio.create_task(_handshake(url, token, shape, i, release, opened)) for i in range(count)]
    await asyncio.sleep(0.5)  # every task is waiting at the release, as the accounts wait at their barrier
    started = time.monotonic()
    release.set()
    try:
        hellos = await asyncio.wait_for(asyncio.gather(*tasks), FLEET_TIME_LIMIT_S)
    finally:
        for task in tasks:
            task.cancel()
        for ws in opened:
            if ws.transport is not None:
                ws.transport.abort()  # no close handshakes: the stub sees them go at once
    return max(hellos) - started


def baseline(count: int) -> float:
    """Seconds from release to the last hello-ok for `count` bare asyncio clients."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, \
            EmbeddedStub(["--profile", "current", "--max-preauth-per-ip", str(2 * count)],
                         log_path=Path(tmp) / "stub.log") as stub:
        return asyncio.run(_fleet(stub.url, stub.token, count))


def _peak_rss(process: subprocess.Popen[str], timeout_s: float) -> tuple[float, float]:
    """(harness MB, stub MB): the peak resident memory of the run's processes (the master and its workers, each
    process's peak, added) and of its stub, until it exits."""
    peaks: dict[int, float] = {}
    stub_peak = 0.0
    deadline = time.monotonic() + timeout_s
    root = psutil.Process(process.pid)
    while process.poll() is None and time.monotonic() < deadline:
        try:
            tree = [root, *root.children(recursive=True)]
            for member in tree:
                command = " ".join(member.cmdline())
                rss = member.memory_info().rss / MB
                if "gateway_stub" in command:
                    stub_peak = max(stub_peak, rss)
                elif "harness.cli" in command:
                    peaks[member.pid] = max(peaks.get(member.pid, 0.0), rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    return sum(peaks.values()), stub_peak


def harness_run(count: int, processes: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        path = Path(tmp) / "profile.yaml"
        path.write_text(profile_text(count, duration_s=HARNESS_DURATION_S), encoding="utf-8")
        command = [sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(Path(tmp) / "o"), "--no-report",
                   "--processes", str(processes)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            harness_mb, stub_mb = _peak_rss(process, HARNESS_DURATION_S * 5)
            _, stderr = process.communicate(timeout=HARNESS_DURATION_S * 5)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        if process.returncode not in (0, 1):
            raise SystemExit(f"N={count}: harness exited {process.returncode}: {stderr[-500:]}")
        summary: dict[str, Any] = json.loads((Path(tmp) / "o" / "shipped" / "summary.json").read_text())
    return {"time_to_all_connected_s": summary["time_to_all_connected_s"], "storm_entries": summary["storm_entries"],
            "connected": summary["connected_accounts_at_end"], "harness_mb": harness_mb, "stub_mb": stub_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[2000, 6000])
    parser.add_argument("--processes", type=int, nargs="*", default=[1],
                        help="harness processes to run each count with (--processes of harness run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    one = {processes: harness_run(1, processes) for processes in args.processes}
    rows = []
    for count in args.counts:
        rounds: dict[int, list[dict[str, Any]]] = {processes: [] for processes in args.processes}
        for index in range(args.rounds):
            fleet_s = baseline(count)
            for processes in args.processes:
                run = harness_run(count, processes)
                rounds[processes].append({"baseline_s": round(fleet_s, 3), **run,
                                          "ratio": round(run["time_to_all_connected_s"] / fleet_s, 2)
                                          if run["time_to_all_connected_s"] is not None else None})
                print(f"N={count} processes={processes} round {index + 1}: {rounds[processes][-1]}", file=sys.stderr)
        for processes, runs in rounds.items():
            median = {key: statistics.median(r[key] for r in runs if r[key] is not None)
                      for key in ("baseline_s", "time_to_all_connected_s", "ratio", "harness_mb", "stub_mb")
                      if any(r[key] is not None for r in runs)}
            base = one[processes]
            rows.append({"accounts": count, "processes": processes, "rounds": runs, "median": median,
                         "harness_kb_per_account": round((median["harness_mb"] - base["harness_mb"]) * 1024 / count, 1),
                         "stub_kb_per_account": round((median["stub_mb"] - base["stub_mb"]) * 1024 / count, 1)})
    if args.json:
        print(json.dumps({"one_account": one, "rows": rows}, indent=2))
        return
    for processes, base in one.items():
        print(f"one account, {processes} process(es): harness {base['harness_mb']:.0f} MB, "
              f"stub {base['stub_mb']:.0f} MB")
    print(f"{'accounts':>8} {'procs':>5} {'baseline s':>10} {'harness s':>9} {'ratio':>6} {'storms':>6} "
          f"{'harness KB/acct':>15} {'stub KB/acct':>12}   (medians of {args.rounds})")
    for row in rows:
        m = row["median"]
        storms = max(r["storm_entries"] for r in row["rounds"])
        print(f"{row['accounts']:>8} {row['processes']:>5} {m['baseline_s']:>10.2f} "
              f"{m.get('time_to_all_connected_s', float('nan')):>9.2f} "
              f"{m.get('ratio', float('nan')):>6.2f} {storms:>6} {row['harness_kb_per_account']:>15} "
              f"{row['stub_kb_per_account']:>12}")


if __name__ == "__main__":
    main()
