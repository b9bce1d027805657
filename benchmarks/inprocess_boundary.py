"""The storm boundary in OpenClaw's own code: in-process Matrix accounts on the real gateway, by CPU quota.

For every (accounts, quota) point, `--runs` runs of an in-process profile's shipped arm (`harness run`, one
process each, `--jobs` at a time: a throttled gateway uses little CPU, so two fit on this machine's two cores),
each with its own seed; then one markdown table: the verdicts and how often each held, storm entries (all, in
the final window), accounts connected at the end, time to all connected, the handlers' attempts' `handshakeMs`
(p50, p90, max; how many outlasted the 10 s timer) and whether the handlers' connect errors matched the
gateway's handshake timeouts one to one.

    .venv/bin/python benchmarks/inprocess_boundary.py --accounts 1,6,11,16 --quotas 0.04,0.02,0.01 --runs 3 \
        --out results/inprocess-boundary

Needs the extra `matrix` and `harness openclaw-install 2026.4.24 --matrix`. Each run lasts the profile's
duration from the gateway's launch plus Synapse's start (about 10 s); --duration and --windows change them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_PROFILE = ROOT / "profiles" / "openclaw-2026.4.24-matrix-inprocess.yaml"


def numbers(text: str, kind: type) -> list:
    return [kind(part) for part in text.split(",") if part.strip()]


def run_point(out: Path, accounts: int, quota: float, run: int, args: argparse.Namespace) -> dict:
    folder = out / f"a{accounts}-q{quota:g}-r{run}"
    summary_path = folder / "shipped" / "summary.json"
    if not summary_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        profile = yaml.safe_load(BASE_PROFILE.read_text())
        profile["name"] = f"inprocess-a{accounts}-q{quota:g}"
        profile["target"].update(version=args.version, cpu_quota=quota, cpu_quota_from=args.quota_from)
        if args.handshake_timeout_ms:
            profile["target"]["handshake_timeout_ms"] = args.handshake_timeout_ms
        else:
            profile["target"].pop("handshake_timeout_ms", None)
        profile["accounts"] = {"count": accounts, "channels": {"matrix": accounts}}
        profile["duration_s"] = args.duration
        profile["windows"] = {"startup_s": args.startup, "final_s": args.final}
        profile["seed"] = 70641 + run
        profile.pop("assert", None)
        (folder / "profile.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
        with (folder / "harness.log").open("w") as log:
            harness = Path(sys.executable).parent / "harness"
            command = [str(harness), "run", str(folder / "profile.yaml"), "--arm", "shipped", "--out", str(folder)]
            subprocess.run(command,
                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if not summary_path.is_file():
        return {"accounts": accounts, "quota": quota, "run": run, "error": (folder / "harness.log").read_text()[-300:]}
    summary = json.loads(summary_path.read_text())
    if args.reread:
        timeout_ms = summary["target"]["effective_handshake_timeout_ms"]
        summary = reread(summary_path.parent, accounts, args.duration, args.startup, args.final, timeout_ms)
    return {"accounts": accounts, "quota": quota, "run": run, "summary": summary}


def reread(folder: Path, accounts: int, duration_s: float, startup_s: float, final_s: float,
           timeout_ms: float) -> dict:
    """A run's figures judged again from what it recorded (its console and gateway.jsonl) by the current parser and
    verdict code: for runs recorded before a parser fix. Time 0 is the console's first line (the real run's is
    the launch, a second or so earlier)."""
    import datetime as dt

    from harness.accounts.inprocess import InProcessLedger, console_lines
    from harness.events import RunRecord
    from harness.verdict.figures import (
        gateway_storm_counts,
        handler_errors_correlate,
        handshake_distribution,
        summarize,
    )

    lines = list(console_lines((folder / "openclaw.log").read_text(encoding="utf-8", errors="replace")))
    ledger = InProcessLedger(launched_at=lines[0].at if lines else dt.datetime.now(dt.UTC))
    for line in lines:  # up to the end of the run: its duration, or the harness's SIGTERM if that came first
        if (line.at - ledger.launched_at).total_seconds() > duration_s or "SIGTERM received" in line.message:
            break
        ledger.add(line)
    records = [json.loads(row) for row in (folder / "gateway.jsonl").read_text().splitlines() if row.strip()]
    record = RunRecord(accounts=[f"bot{i:03d}" for i in range(1, accounts + 1)], attempts=ledger.attempts,
                       disconnects=ledger.disconnects, connected_at_end=frozenset(ledger.connected),
                       duration_ms=duration_s * 1000, startup_window_ms=startup_s * 1000,
                       final_window_ms=final_s * 1000, gateway_records=records)
    figures = summarize(record)
    gateway = gateway_storm_counts(records)
    return {"verdict": figures.verdict, "storm_entries": figures.storm_entries,
            "final_window_storm_entries": figures.final_window_storm_entries,
            "connected_accounts_at_end": figures.connected_accounts_at_end,
            "time_to_all_connected_s": figures.time_to_all_connected_s,
            "inprocess": {"handshake_ms": handshake_distribution(ledger.attempts, timeout_ms).model_dump(),
                          "channel_exits": ledger.channel_exits,
                          "correlated": handler_errors_correlate(ledger.handler_connect_errors, gateway, accounts)}}


def fmt(values: list[float | None], digits: int = 1) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1 or min(present) == max(present):
        return f"{present[0]:.{digits}f}"
    return f"{statistics.median(present):.{digits}f} [{min(present):.{digits}f}, {max(present):.{digits}f}]"


def table(results: list[dict]) -> str:
    rows = ["| accounts | quota | verdicts | storm entries | final window | connected at end | all connected (s) "
            "| handshakeMs p50 / p90 / max (s) | over the timer | channel exits | handler errors = gateway timeouts |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    points = sorted({(r["accounts"], r["quota"]) for r in results}, key=lambda p: (p[0], -p[1]))
    for accounts, quota in points:
        runs = [r for r in results if (r["accounts"], r["quota"]) == (accounts, quota)]
        done = [r["summary"] for r in runs if "summary" in r]
        verdicts = Counter(s["verdict"] for s in done)
        errors = len(runs) - len(done)
        shown = ", ".join(f"{n}x {v}" for v, n in verdicts.most_common()) + (f", {errors} failed" if errors else "")
        hs = [s["inprocess"]["handshake_ms"] for s in done]
        correlated = Counter(str(s["inprocess"]["correlated"]).lower() for s in done)
        rows.append(
            f"| {accounts} | {quota:g} | {shown} | {fmt([s['storm_entries'] for s in done], 0)} "
            f"| {fmt([s['final_window_storm_entries'] for s in done], 0)} "
            f"| {fmt([s['connected_accounts_at_end'] for s in done], 0)} / {accounts} "
            f"| {fmt([s['time_to_all_connected_s'] for s in done])} "
            f"| {fmt([h['p50'] and h['p50'] / 1000 for h in hs])} / {fmt([h['p90'] and h['p90'] / 1000 for h in hs])}"
            f" / {fmt([h['max'] and h['max'] / 1000 for h in hs])} | {fmt([h['over_timeout'] for h in hs], 0)} "
            f"| {fmt([s['inprocess'].get('channel_exits') for s in done], 0)} "
            f"| {', '.join(f'{n}x {v}' for v, n in correlated.most_common())} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", default="1,6,11,16")
    parser.add_argument("--quotas", default="0.04,0.02,0.01")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--version", default="2026.4.24")
    parser.add_argument("--handshake-timeout-ms", type=int, default=None, help="default: the version's own")
    parser.add_argument("--quota-from", choices=("ready", "launch"), default="ready")
    parser.add_argument("--duration", type=float, default=360)
    parser.add_argument("--startup", type=float, default=180)
    parser.add_argument("--final", type=float, default=60)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reread", action="store_true",
                        help="judge the runs already in --out again from their consoles (after a parser fix)")
    args = parser.parse_args()
    points = [(a, q, r) for r in range(1, args.runs + 1) for a in numbers(args.accounts, int)
              for q in numbers(args.quotas, float)]
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_point, args.out, a, q, r, args) for a, q, r in points]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results.append(result)
            state = result["summary"]["verdict"] if "summary" in result else "failed"
            print(f"accounts {result['accounts']} quota {result['quota']:g} run {result['run']}: {state}", flush=True)
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
