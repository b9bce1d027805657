"""Time to verdict and repeatability of the shipped profiles' A/B.

Runs `harness compare` on each profile R times (different seeds, fresh stubs each time) and reports,
per profile and arm: the verdicts seen and how many repetitions agreed with the profile's expected
verdict, the wall-clock time to a verdict (median and max), and the storm entries (median). The
baseline for "time" is the profile's own simulated duration: the ratio wall/profile-time shows what
the time scale buys and what the harness costs on top.

    python benchmarks/verdict_repeatability.py [--repeats 5] [--profiles matrix-11-accounts ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILES = ("matrix-11-accounts", "telegram-4-bots", "single-account")


def expected_verdicts(profile: Path) -> dict[str, Any]:
    from harness.profile import load_profile

    loaded = load_profile(profile)
    out: dict[str, Any] = {}
    for arm in loaded.arms:
        verdicts = [t.value for t in loaded.thresholds_for(arm) if t.metric == "verdict"]
        out[arm] = verdicts[0][0] if verdicts and isinstance(verdicts[0], tuple) else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profiles", nargs="*", default=list(DEFAULT_PROFILES))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    for name in args.profiles:
        path = ROOT / "profiles" / f"{name}.yaml"
        expected = expected_verdicts(path)
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in expected}
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bench-verdict-") as out:
                result = subprocess.run(
                    [sys.executable, "-m", "harness.cli", "compare", str(path), "--seed", str(1000 + repeat),
                     "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=1800)
                if result.returncode not in (0, 1):
                    raise SystemExit(f"{name}: harness exited {result.returncode}: {result.stderr[-500:]}")
                for summary in json.loads((Path(out) / "compare.json").read_text())["arms"]:
                    runs[summary["arm"]].append(summary)
            print(f"{name}: repetition {repeat + 1}/{args.repeats} done", file=sys.stderr)
        report[name] = {}
        for arm, summaries in runs.items():
            walls = [s["wall_clock_s"] for s in summaries]
            report[name][arm] = {
                "expected": expected[arm],
                "verdicts": dict(Counter(s["verdict"] for s in summaries)),
                "agreed": sum(1 for s in summaries if s["verdict"] == expected[arm]),
                "repeats": len(summaries),
                "wall_s_median": round(statistics.median(walls), 2), "wall_s_max": round(max(walls), 2),
                "profile_s": summaries[0]["duration_s"],
                "wall_over_profile_time": round(statistics.median(walls) / summaries[0]["duration_s"], 3),
                "storm_entries_median": statistics.median(s["storm_entries"] for s in summaries),
                "time_to_all_connected_s_median": _median_or_none(s["time_to_all_connected_s"] for s in summaries),
            }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'profile':22} {'arm':20} {'agreed':>8} {'verdicts':24} {'wall s (med/max)':>17} "
          f"{'wall/profile':>12} {'storms':>7} {'all conn. s':>11}")
    for name, arms in report.items():
        for arm, r in arms.items():
            verdicts = ", ".join(f"{v} x{n}" for v, n in r["verdicts"].items())
            print(f"{name:22} {arm:20} {r['agreed']:>3}/{r['repeats']:<4} {verdicts:24} "
                  f"{r['wall_s_median']:>8}/{r['wall_s_max']:<8} {r['wall_over_profile_time']:>12} "
                  f"{r['storm_entries_median']:>7} {str(r['time_to_all_connected_s_median']):>11}")


def _median_or_none(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


if __name__ == "__main__":
    main()
