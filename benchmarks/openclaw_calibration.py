"""Calibrate the stub's handshake cost against the real OpenClaw gateway: latency and CPU per handshake.

For each real version asked (2026.4.24 first: the matrix-11 storm's target), one gateway is launched and,
at each CPU quota (none, then e.g. 0.25, 0.1, 0.05 of one core, applied to its whole session with
harness/backends/cpu_throttle.py), waves of `c` simultaneous handshakes are sent (c = 1, 4, 11, 32), each a
device-signed April native-approvals handler connect (reference §8.3: `gateway-client`/`backend`,
`operator.approvals`, token + Ed25519 device proof, one shared device identity as the handlers of one
process share it). Per wave it records, per attempt, the time from the first byte to the challenge, to
`connect` sent and to hello-ok (or the close), and the gateway session's CPU time (utime + stime of every
process in its session, from /proc) from just before the wave to its last hello, minus the session's idle
CPU rate over the same wall time (measured at that quota before the waves).

The stub is measured in the same run, the same way, with candidate costs: (a) throttled at the same quota
with a CPU-clock cost (`--cost-clock cpu`), which checks the CPU model, and (b) unthrottled with the
wall-clock cost a throttled gateway's handshake takes (CPU per handshake / quota), the form a profile uses.

The split experiment (where the CPU goes relative to the handshake timer) launches the real gateway with
its own handshake timeout (10 s on 4.24) and sends 11 simultaneous handshakes at a quota where they take
longer than that: connections cut by the timer (close 1000 "" before hello, JSON log cause
`handshake-timeout`) mean the work is before the timer is cleared; hellos arriving after the timeout mean
it is after.

    python benchmarks/openclaw_calibration.py [--versions 2026.4.24] [--quotas none,0.25,0.1,0.05]
        [--concurrency 1,4,11,32] [--rounds 2] [--stub-cost-cpu-ms auto]
        [--stub-hello-cpu-ms 0] [--skip-real] [--split-quotas 0.05] [--storm-quotas ''] [--out DIR]

Prints the tables and writes DIR/calibration.json (default results/calibration/<UTC time>/). Loopback only;
every wait is bounded; gateways, stubs and cgroups are removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.backends.cpu_throttle import CLOCK_TICKS, cpu_seconds, throttle_cpu
from harness.backends.embedded import EmbeddedStub
from harness.backends.local_service import session_pids
from harness.backends.openclaw import OpenClawGateway
from harness.client.connect_shape import backend_connect_params, handler_display_name, request_frame
from harness.verdict.figures import gateway_storm_counts, percentile
from openclaw_wire.device_auth import DeviceIdentity

ROOT = Path(__file__).resolve().parent.parent

# Waits: a wave gives up this long after the slowest expected close (handshake timeout + the reference
# client's 30 s request timeout), so every loop here ends.
CLIENT_REQUEST_TIMEOUT_S = 30.0
IDLE_SAMPLE_S = 3.0
SETTLE_S = 1.0
QUIET_WINDOW_S = 1.0  # the session is quiet again when a window this long burns no more than idle (+1 tick)
QUIET_LIMIT_S = 90.0
WARMUP_HANDSHAKES = 5
LATENCY_HANDSHAKE_TIMEOUT_MS = 120_000  # the latency tables: no connection is cut by the gateway's timer
SCOPES = ["operator.approvals"]


# --- one handshake, one wave ---------------------------------------------------------------------------


@dataclass
class Attempt:
    challenge_ms: float | None = None  # from the start of the wave
    connect_sent_ms: float | None = None
    done_ms: float | None = None
    outcome: str = "pending"  # hello | timeout (1000 "" before hello) | closed:<code> <reason> | error:<what>


def signed_connect_frame(challenge: dict[str, Any], token: str, protocol: int, device: DeviceIdentity,
                         account: str) -> tuple[str, str]:
    """The April native-approvals handler's `connect` answering `challenge`: (request id, frame text)."""
    params = backend_connect_params(display_name=handler_display_name("matrix", account), scopes=SCOPES,
                                    token=token, protocol=protocol)
    payload = challenge["payload"]
    params["device"] = device.sign_connect(client=params["client"], role="operator", scopes=SCOPES, token=token,
                                           nonce=payload["nonce"], signed_at_ms=int(payload["ts"]))
    return request_frame("connect", params)


async def reply_to(ws: Any, request_id: str) -> dict[str, Any]:
    """The `res` frame answering `request_id`; events and other replies before it are skipped."""
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "res" and frame.get("id") == request_id:
            return frame


async def handshake(url: str, token: str, protocol: int, device: DeviceIdentity, account: str, wave_start: float,
                    limit_s: float) -> Attempt:
    attempt = Attempt()

    def now_ms() -> float:
        return (time.monotonic() - wave_start) * 1000.0

    try:
        async with asyncio.timeout(limit_s):
            async with connect(url, compression=None, proxy=None, max_size=None, ping_interval=None,
                               open_timeout=limit_s, close_timeout=2) as ws:
                challenge = json.loads(await ws.recv())
                attempt.challenge_ms = now_ms()
                request_id, frame = signed_connect_frame(challenge, token, protocol, device, account)
                await ws.send(frame)
                attempt.connect_sent_ms = now_ms()
                reply = await reply_to(ws, request_id)
                attempt.done_ms = now_ms()
                attempt.outcome = "hello" if reply.get("ok") else f"error:{reply['error'].get('code')}"
                return attempt
    except ConnectionClosed as closed:
        attempt.done_ms = now_ms()
        code = closed.rcvd.code if closed.rcvd else None
        reason = closed.rcvd.reason if closed.rcvd else ""
        attempt.outcome = "timeout" if (code, reason) == (1000, "") else f"closed:{code} {reason}".strip()
    except TimeoutError:
        attempt.done_ms = now_ms()
        attempt.outcome = "error:client-timeout"
    except OSError as exc:
        attempt.done_ms = now_ms()
        attempt.outcome = f"error:{type(exc).__name__}"
    return attempt


async def wave(url: str, token: str, protocol: int, device: DeviceIdentity, count: int,
               limit_s: float) -> list[Attempt]:
    """`count` handshakes released on the same tick; each holds its socket until every one is done."""
    start = time.monotonic()
    return list(await asyncio.gather(*(handshake(url, token, protocol, device, f"acct{i + 1}", start, limit_s)
                                       for i in range(count))))


# --- CPU of a session ----------------------------------------------------------------------------------------


def session_cpu_s(session_id: int) -> float:
    return cpu_seconds(session_pids(session_id))


def wait_quiet(session_id: int, idle_rate: float) -> float:
    """Wait (at most QUIET_LIMIT_S) until the session's CPU is back to its idle rate; the CPU time then.

    The real gateway keeps working after the last hello (its post-connect health refresh), so the CPU of a
    wave is counted until then.
    """
    deadline = time.monotonic() + QUIET_LIMIT_S
    cpu = session_cpu_s(session_id)
    while time.monotonic() < deadline:
        time.sleep(QUIET_WINDOW_S)
        now_cpu = session_cpu_s(session_id)
        if now_cpu - cpu <= idle_rate * QUIET_WINDOW_S + 1.5 / CLOCK_TICKS:
            return now_cpu
        cpu = now_cpu
    return cpu


def idle_cpu_rate(session_id: int) -> float:
    """CPU seconds per wall second the session burns with no client."""
    before, started = session_cpu_s(session_id), time.monotonic()
    time.sleep(IDLE_SAMPLE_S)
    return (session_cpu_s(session_id) - before) / (time.monotonic() - started)


# --- targets ---------------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # e.g. "openclaw 2026.4.24", "stub cpu:fixed:30@10"
    url: str
    token: str
    session_id: int
    protocol: int
    handshake_timeout_ms: int


def measure(target: Target, quota: float | None, concurrency: list[int], rounds: int,
            device: DeviceIdentity) -> list[dict[str, Any]]:
    """Rows of the latency/CPU table for one target at one quota (the throttle is held for all of them)."""
    rows = []
    throttle = (throttle_cpu(lambda: session_pids(target.session_id), quota, name="calibration")
                if quota is not None else contextlib.nullcontext())
    with throttle as held:
        idle_rate = idle_cpu_rate(target.session_id)
        method = held.method if held is not None else None
        for count in concurrency:
            attempts: list[Attempt] = []
            wave_cpu = WaveCpu()
            for _ in range(rounds):
                wait_quiet(target.session_id, idle_rate)
                cpu_before, started = session_cpu_s(target.session_id), time.monotonic()
                limit_s = target.handshake_timeout_ms / 1000 + CLIENT_REQUEST_TIMEOUT_S
                attempts += asyncio.run(wave(target.url, target.token, target.protocol, device, count, limit_s))
                wave_cpu.to_last_s += session_cpu_s(target.session_id) - cpu_before
                wave_cpu.to_last_wall_s += time.monotonic() - started
                wave_cpu.to_quiet_s += wait_quiet(target.session_id, idle_rate) - cpu_before
                wave_cpu.to_quiet_wall_s += time.monotonic() - started
            rows.append(summarise(target, quota, method, count, attempts, wave_cpu, idle_rate))
            print(format_row(rows[-1]), flush=True)
    return rows


@dataclass
class WaveCpu:
    to_last_s: float = 0.0  # from just before the waves' first byte to their last hello or close
    to_last_wall_s: float = 0.0
    to_quiet_s: float = 0.0  # ... to when the session is back to its idle CPU rate
    to_quiet_wall_s: float = 0.0


def summarise(target: Target, quota: float | None, method: str | None, count: int, attempts: list[Attempt],
              cpu: WaveCpu, idle_rate: float) -> dict[str, Any]:
    hellos = [a for a in attempts if a.outcome == "hello"]
    outcomes: dict[str, int] = {}
    for attempt in attempts:
        outcomes[attempt.outcome] = outcomes.get(attempt.outcome, 0) + 1

    def per_attempt_ms(cpu_s: float, wall_s: float) -> float:
        return round(1000 * max(0.0, cpu_s - idle_rate * wall_s) / len(attempts), 2)

    def dist(values: list[float]) -> dict[str, float | None]:
        return {"p50": percentile(values, 0.5), "p90": percentile(values, 0.9), "max": percentile(values, 1.0)}

    return {
        "target": target.name, "quota": quota, "method": method, "concurrency": count, "attempts": len(attempts),
        "outcomes": outcomes,
        "hello_ms": dist([a.done_ms for a in hellos if a.done_ms is not None]),
        "challenge_ms": dist([a.challenge_ms for a in attempts if a.challenge_ms is not None]),
        "connect_to_hello_ms": dist([a.done_ms - a.connect_sent_ms for a in hellos
                                     if a.done_ms is not None and a.connect_sent_ms is not None]),
        "cpu_ms_per_handshake": per_attempt_ms(cpu.to_quiet_s, cpu.to_quiet_wall_s),
        "cpu_ms_per_handshake_to_last": per_attempt_ms(cpu.to_last_s, cpu.to_last_wall_s),
        "idle_cpu_rate": round(idle_rate, 4), "wall_s_to_quiet": round(cpu.to_quiet_wall_s, 2),
    }


def format_row(row: dict[str, Any]) -> str:
    quota = "none" if row["quota"] is None else f"{row['quota']:g}"
    hello = row["hello_ms"]
    ok = row["outcomes"].get("hello", 0)
    other = {k: v for k, v in row["outcomes"].items() if k != "hello"}
    return (f"{row['target']:<34} {quota:>5} {row['concurrency']:>3} {ok:>3}/{row['attempts']:<3} "
            f"{_ms(hello['p50']):>8} {_ms(hello['max']):>8} {_ms(row['challenge_ms']['max']):>8} "
            f"{_ms(row['connect_to_hello_ms']['p50']):>8} {row['cpu_ms_per_handshake']:>8.1f} "
            f"{row['cpu_ms_per_handshake_to_last']:>8.1f} {row['idle_cpu_rate']:>6.3f}  {other or ''}")


HEADER = (f"{'target':<34} {'quota':>5} {'c':>3} {'hello':>7} {'p50 ms':>8} {'max ms':>8} {'chal.max':>8} "
          f"{'conn>hel':>8} {'cpu/hs':>8} {'to-last':>8} {'idle':>6}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@contextlib.contextmanager
def real_gateway(version: str, handshake_timeout_ms: int | None, log_dir: Path) -> Iterator[tuple[Target, Any]]:
    protocol = 3 if version.startswith("2026.4.") else 4
    with OpenClawGateway(version, handshake_timeout_ms=handshake_timeout_ms, max_preauth_per_ip=64,
                         log_dir=log_dir) as gw:
        default_timeout_ms = 10_000 if version in ("2026.4.20", "2026.4.24") else 15_000
        yield Target(f"openclaw {version}", gw.url, gw.token, gw.pid, protocol,
                     handshake_timeout_ms or default_timeout_ms), gw


@contextlib.contextmanager
def stub(name: str, args: list[str], handshake_timeout_ms: int, log_dir: Path) -> Iterator[Target]:
    log_dir.mkdir(parents=True, exist_ok=True)
    stub_args = ["--profile", "april-2026", "--handshake-timeout-ms", str(handshake_timeout_ms),
                 "--max-preauth-per-ip", "64", "--log-file", str(log_dir / "stub.jsonl"), *args]
    with EmbeddedStub(stub_args, log_path=log_dir / "stub.log") as process:
        yield Target(name, process.url, process.token, process.process.pid, 3, handshake_timeout_ms)


def warm_up(target: Target, device: DeviceIdentity) -> None:
    """First handshakes pair the device and warm the JIT; they are not measured."""
    for _ in range(WARMUP_HANDSHAKES):
        attempts = asyncio.run(wave(target.url, target.token, target.protocol, device, 1, 60.0))
        if attempts[0].outcome != "hello":
            raise SystemExit(f"{target.name}: warm-up handshake failed: {attempts[0].outcome}")


# --- the experiments -----------------------------------------------------------------------------------------


def latency_tables(version: str, quotas: list[float | None], concurrency: list[int], rounds: int,
                   model: StubModel | None, out: Path, device: DeviceIdentity, *, real: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    if real:
        with real_gateway(version, LATENCY_HANDSHAKE_TIMEOUT_MS, out / f"openclaw-{version}") as (target, _gw):
            warm_up(target, device)
            for quota in quotas:
                rows += measure(target, quota, concurrency, rounds, device)
    with stub("stub (no cost)", [], LATENCY_HANDSHAKE_TIMEOUT_MS, out / "stub-zero") as target:
        warm_up(target, device)
        rows += measure(target, None, concurrency, rounds, device)
    if model is None:
        model = StubModel(calibrated_cpu_ms([r for r in rows if r["target"].startswith("openclaw")],
                                            [r for r in rows if r["target"] == "stub (no cost)"]), 0.0)
    throttled = [q for q in quotas if q is not None]
    # (a) the stub held to the same quota, its costs burned as CPU time: checks the CPU model
    with stub(f"stub cpu-clock {model.describe()}", [*model.args(1.0), "--cost-clock", "cpu"],
              LATENCY_HANDSHAKE_TIMEOUT_MS, out / "stub-cpu") as target:
        for quota in throttled:
            rows += measure(target, quota, concurrency, rounds, device)
    # (b) the stub unthrottled, its costs the wall time they take at the quota: the form a profile uses
    for quota in throttled:
        with stub(f"stub wall {model.describe(quota)}", model.args(quota), LATENCY_HANDSHAKE_TIMEOUT_MS,
                  out / f"stub-wall-{quota:g}") as target:
            rows += measure(target, None, [c for c in concurrency if c <= 11], rounds, device)
    return {"version": version, "stub_model": asdict(model), "rows": rows}


@dataclass
class StubModel:
    """The stub's handshake cost as CPU milliseconds of one core: before the timer, and co-located after hello."""

    before_timer_cpu_ms: float
    after_hello_cpu_ms: float
    slice_ms: float = 10.0

    def specs(self, quota: float) -> tuple[str, str]:
        """The cost specs as wall time at `quota` (1.0: as CPU time, for `--cost-clock cpu`)."""
        return (f"fixed:{self.before_timer_cpu_ms / quota:.0f}@{self.slice_ms:g}",
                f"fixed:{self.after_hello_cpu_ms / quota:.0f}@{self.slice_ms:g}")

    def args(self, quota: float) -> list[str]:
        before, after = self.specs(quota)
        args = ["--connect-cost-before-timer", before]
        return args + (["--colocated-hello-cost", after] if self.after_hello_cpu_ms > 0 else [])

    def describe(self, quota: float = 1.0) -> str:
        before, after = self.specs(quota)
        text = f"before {before}" + (f" hello {after}" if self.after_hello_cpu_ms > 0 else "")
        return text + (f" (q={quota:g})" if quota != 1.0 else "")


def calibrated_cpu_ms(real: list[dict[str, Any]], stub_zero: list[dict[str, Any]]) -> float:
    throttled = [r for r in real if r["quota"] is not None] or real
    lowest = min(r["quota"] or 99.0 for r in throttled)
    at_lowest = [r for r in throttled if (r["quota"] or 99.0) == lowest]
    chosen = next((r for r in at_lowest if r["concurrency"] == 11), at_lowest[-1])
    own = next((r for r in stub_zero if r["concurrency"] == chosen["concurrency"]), stub_zero[-1])
    return max(1.0, chosen["cpu_ms_per_handshake"] - own["cpu_ms_per_handshake"])


def split_experiment(version: str, quota: float, count: int, out: Path, device: DeviceIdentity) -> dict[str, Any]:
    """`count` simultaneous handshakes at `quota` against the version's own handshake timeout."""
    with real_gateway(version, None, out / f"openclaw-{version}-split-{quota:g}") as (target, gw):
        warm_up(target, device)
        with throttle_cpu(gw.session_pids, quota, name="calibration-split") as held:
            time.sleep(SETTLE_S)
            limit_s = target.handshake_timeout_ms / 1000 + CLIENT_REQUEST_TIMEOUT_S
            attempts = asyncio.run(wave(target.url, target.token, target.protocol, device, count, limit_s))
            throttle = held.describe()
        time.sleep(2 * SETTLE_S)  # the close records reach the JSON log
        records = gw.json_log_records()
    timeout_ms = target.handshake_timeout_ms
    timeouts = [r for r in records if "handshake-timeout" in json.dumps(r)]
    handshake_ms = sorted(v for r in timeouts for v in _find_numbers(r, "handshakeMs"))
    result = {
        "version": version, "quota": quota, "concurrency": count, "handshake_timeout_ms": timeout_ms,
        "throttle": throttle,
        "attempts": [asdict(a) for a in attempts],
        "hellos": sum(a.outcome == "hello" for a in attempts),
        "hellos_after_timeout": sum(a.outcome == "hello" and (a.done_ms or 0) > timeout_ms for a in attempts),
        "cut_by_timeout": sum(a.outcome == "timeout" for a in attempts),
        "cut_after_connect_sent": sum(a.outcome == "timeout" and a.connect_sent_ms is not None for a in attempts),
        "log_handshake_timeouts": gateway_storm_counts(records).handshake_timeout,
        "log_handshake_ms": handshake_ms,
    }
    print(f"split {version} quota {quota:g} c={count} timeout {timeout_ms} ms: hellos {result['hellos']} "
          f"(after the timeout: {result['hellos_after_timeout']}), cut by the timer {result['cut_by_timeout']} "
          f"(of which after connect was sent: {result['cut_after_connect_sent']}), log timeouts "
          f"{result['log_handshake_timeouts']} handshakeMs {handshake_ms}", flush=True)
    for attempt in attempts:
        print(f"    challenge {_ms(attempt.challenge_ms):>7}  connect sent {_ms(attempt.connect_sent_ms):>7}  "
              f"done {_ms(attempt.done_ms):>7}  {attempt.outcome}")
    return result


STORM_FIGURES = ("verdict", "storm_entries", "storm_entries_after_startup", "final_window_storm_entries",
                 "connected_accounts_at_end", "time_to_all_connected_s", "handshake_attempts_total", "handshake_ms",
                 "health_rpc_ms")


def storm_check(version: str, quota: float, duration_s: float, out: Path) -> dict[str, Any]:
    """The matrix-11 `shipped` arm (`harness run`, time scale 1) against the real gateway held to `quota`."""
    run_dir = out / f"storm-{version}-q{quota:g}"
    with real_gateway(version, None, run_dir) as (target, gw), \
            throttle_cpu(gw.session_pids, quota, name="calibration-storm") as held:
        profile = {
            "name": f"calibration-storm-{version}-q{quota:g}",
            "description": "matrix-11 shipped arm, throttled real gateway (benchmarks/openclaw_calibration.py)",
            "target": {"kind": "url", "url": target.url, "token": target.token, "protocol": target.protocol,
                       "device_signed": True},
            "accounts": {"count": 11, "channels": {"matrix": 11}},
            "arms": ["shipped"], "time_scale": 1, "duration_s": duration_s,
            "windows": {"startup_s": min(60, duration_s / 3), "final_s": min(60, duration_s / 3)}, "seed": 70641,
        }
        profile_path = run_dir / "profile.json"  # JSON is YAML
        profile_path.write_text(json.dumps(profile, indent=1) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "harness.cli", "run", str(profile_path), "--out", str(run_dir / "run")]
        completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                   timeout=duration_s + 300, check=False)
        throttle = held.describe()
        records = gw.json_log_records()
    summary_path = run_dir / "run" / "shipped" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    result = {"version": version, "quota": quota, "duration_s": duration_s, "exit_code": completed.returncode,
              "throttle": throttle,
              "gateway_log_handshake_timeouts": gateway_storm_counts(records).handshake_timeout,
              **{key: summary.get(key) for key in STORM_FIGURES}}
    if not summary:
        result["stderr_tail"] = completed.stderr.strip().splitlines()[-5:]
    print(f"storm {version} quota {quota:g}: " + json.dumps({k: v for k, v in result.items() if k != "throttle"}),
          flush=True)
    return result


def _find_numbers(value: Any, key: str) -> list[float]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == key and isinstance(v, (int, float))]
        return found + [n for v in value.values() for n in _find_numbers(v, key)]
    if isinstance(value, list):
        return [n for v in value for n in _find_numbers(v, key)]
    if isinstance(value, str) and value.startswith("{") and key in value:
        with contextlib.suppress(ValueError):
            return _find_numbers(json.loads(value), key)
    return []


def _floats(text: str, parse: Callable[[str], Any]) -> list[Any]:
    return [parse(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", default="2026.4.24")
    parser.add_argument("--quotas", default="none,0.25,0.1,0.05")
    parser.add_argument("--concurrency", default="1,4,11,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stub-cost-cpu-ms", default="auto",
                        help="the stub's CPU cost per handshake before the timer; auto = the real gateway's at the "
                             "lowest quota and c=11, minus the stub's own")
    parser.add_argument("--stub-hello-cpu-ms", type=float, default=0.0,
                        help="the stub's co-located CPU cost after each hello (--colocated-hello-cost)")
    parser.add_argument("--skip-real", action="store_true", help="latency tables for the stub only")
    parser.add_argument("--split-quotas", default="0.05", help="quotas for the split experiment ('' skips it)")
    parser.add_argument("--split-concurrency", type=int, default=11)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--storm-quotas", default="", help="quotas for the matrix-11 shipped storm check")
    parser.add_argument("--storm-duration-s", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or ROOT / "results" / "calibration" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    quotas: list[float | None] = _floats(args.quotas, lambda q: None if q.strip() == "none" else float(q))
    concurrency: list[int] = _floats(args.concurrency, int)
    model = (None if args.stub_cost_cpu_ms == "auto"
             else StubModel(float(args.stub_cost_cpu_ms), args.stub_hello_cpu_ms))
    device = DeviceIdentity.generate()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": os.getloadavg()},
        "versions": {},
    }
    for version in _floats(args.versions, str):
        entry: dict[str, Any] = {}
        if not args.skip_latency:
            print(f"\n== {version}: latency and CPU per handshake\n{HEADER}", flush=True)
            entry["latency"] = latency_tables(version, quotas, concurrency, args.rounds, model, out, device,
                                              real=not args.skip_real)
            report["versions"][version] = entry
            (out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        entry["split"] = [split_experiment(version, quota, args.split_concurrency, out, device)
                          for quota in _floats(args.split_quotas, float)]
        entry["storm"] = [storm_check(version, quota, args.storm_duration_s, out)
                          for quota in _floats(args.storm_quotas, float)]
        report["versions"][version] = entry
        (out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    (out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out / 'calibration.json'}")


if __name__ == "__main__":
    main()
