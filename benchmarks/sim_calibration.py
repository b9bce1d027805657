"""The simulator against the gateway stub over real sockets: the calibration grid (docs/simulator.md).

Each cell is a profile derived from profiles/matrix-11-accounts.yaml (an account count, a connect cost
before the timer in 10 ms slices, one start arm) run for `--duration` scenario seconds at time scale 0.1:
once per seed on the stub over real sockets (`harness run`, a child process each) and once per seed in the
simulator. Per cell it compares the modal verdict, the median storm entries and the median time to all
connected. A cell is "near" the storm boundary when its cost is within 25% of the arm's nominal boundary,
the handshake timeout divided by the handshakes that run at once (N for shipped and backoff, min(N, K) behind
the coordinator).

    python benchmarks/sim_calibration.py [--out DIR] [--seeds 3] [--duration 90] [--cells small|full]
        [--markdown FILE]

Live runs already in --out are reused (the grid resumes). Run it on a quiet machine: the stub's own spread
with host load is what it would measure otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "profiles" / "matrix-11-accounts.yaml"
ARMS = ("shipped", "coordinator", "backoff", "coordinator+backoff")
# (accounts, connect cost ms): the cost applies to every arm of that account count.
FULL_CELLS = ((1, 5000), (1, 15000), (4, 3000), (6, 2000), (11, 2000), (11, 800), (16, 1000), (32, 250))
SMALL_CELLS = ((11, 2000),)
TOLERANCE = 0.20


@dataclass(frozen=True)
class Cell:
    accounts: int
    cost_ms: int
    arm: str

    @property
    def name(self) -> str:
        return f"n{self.accounts}-c{self.cost_ms}-{self.arm.replace('+', '_')}"

    def boundary_ms(self, timeout_ms: float = 10_000, k: int = 3) -> float:
        at_once = min(self.accounts, k) if self.arm.startswith("coordinator") else self.accounts
        return timeout_ms / at_once

    @property
    def near(self) -> bool:
        return abs(self.cost_ms / self.boundary_ms() - 1) < 0.25


def profile_data(cell: Cell, seed: int, duration_s: float) -> dict[str, Any]:
    data = yaml.safe_load(BASE.read_text())
    data.update(name=cell.name, seed=seed, duration_s=duration_s, arms=[cell.arm], time_scale=0.1,
                windows={"startup_s": duration_s / 3, "final_s": duration_s / 3})
    data["accounts"] = {"count": cell.accounts, "channels": {"matrix": cell.accounts}}
    data["target"]["connect_cost_before_timer"] = f"fixed:{cell.cost_ms}@10"
    # No health probe: its own handshake pays the connect cost too, and above the timer it could never connect.
    data["probe"] = {"interval_ms": 0}
    data.pop("assert", None)
    return data


def live(cell: Cell, seed: int, duration_s: float, out: Path) -> dict[str, Any]:
    folder = out / "live" / f"{cell.name}-s{seed}"
    summary = folder / "summary.json"
    if not summary.exists():
        folder.mkdir(parents=True, exist_ok=True)
        profile = folder / "profile.yaml"
        profile.write_text(yaml.safe_dump(profile_data(cell, seed, duration_s)))
        subprocess.run([sys.executable, "-m", "harness.cli", "run", str(profile), "--out", str(folder / "run")],
                       cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        produced = folder / "run" / cell.arm.replace("+", "_") / "summary.json"
        if not produced.exists():
            raise SystemExit(f"{cell.name} seed {seed}: the live run wrote no summary (see {folder / 'run'})")
        summary.write_text(produced.read_text())
    result: dict[str, Any] = json.loads(summary.read_text())
    return result


def simulated(cell: Cell, seed: int, duration_s: float, tuning: Any = None) -> dict[str, Any]:
    from harness.profile import parse_profile
    from harness.sim import simulated_summary

    data = profile_data(cell, seed, duration_s)
    data["target"]["kind"] = "sim"
    summary, _ = simulated_summary(parse_profile(data), cell.arm, tuning)
    return summary.model_dump(mode="json")


def figures(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts = Counter(s["observed_verdict"] for s in summaries)
    connected = [s["time_to_all_connected_s"] for s in summaries if s["time_to_all_connected_s"] is not None]
    return {
        "verdicts": dict(verdicts),
        "verdict": verdicts.most_common(1)[0][0],
        "storm_entries": statistics.median(s["storm_entries"] for s in summaries),
        "time_to_all_connected_s": statistics.median(connected) if len(connected) == len(summaries) else None,
        "host_busy": [s["verdict"] == "inconclusive" for s in summaries].count(True),
    }


def within(a: float | None, b: float | None, absolute: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= max(absolute, TOLERANCE * abs(b))


def compare(cell: Cell, sim: dict[str, Any], stub: dict[str, Any]) -> dict[str, Any]:
    return {
        "cell": cell.name, "accounts": cell.accounts, "cost_ms": cell.cost_ms, "arm": cell.arm, "near": cell.near,
        "sim": sim, "stub": stub,
        "same_verdict": sim["verdict"] == stub["verdict"],
        "storm_entries_within": within(sim["storm_entries"], stub["storm_entries"], 2),
        "time_to_all_connected_within": within(sim["time_to_all_connected_s"], stub["time_to_all_connected_s"], 1.0),
    }


def markdown(rows: list[dict[str, Any]], seeds: int, duration_s: float) -> str:
    lines = [f"| accounts | cost ms | arm | near | stub verdicts ({seeds} seeds) | sim verdicts | stub storm entries "
             "| sim | stub s to all connected | sim | agree |",
             "|---:|---:|---|---|---|---|---:|---:|---:|---:|---|"]

    def shown(value: Any) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    for r in rows:
        sim, stub = r["sim"], r["stub"]
        agree = ("verdict" if r["same_verdict"] else "**verdict differs**",
                 "entries" if r["storm_entries_within"] else "**entries**",
                 "time" if r["time_to_all_connected_within"] else "**time**")
        lines.append(f"| {r['accounts']} | {r['cost_ms']} | {r['arm']} | {'near' if r['near'] else ''} | "
                     f"{_verdicts(stub['verdicts'])} | {_verdicts(sim['verdicts'])} | {shown(stub['storm_entries'])} | "
                     f"{shown(sim['storm_entries'])} | {shown(stub['time_to_all_connected_s'])} | "
                     f"{shown(sim['time_to_all_connected_s'])} | {', '.join(agree)} |")
    same = sum(r["same_verdict"] for r in rows)
    away = [r for r in rows if not r["near"]]
    lines.append("")
    lines.append(f"Same verdict in {same} of {len(rows)} cells ({sum(r['same_verdict'] for r in away)} of {len(away)} "
                 f"away from the boundary); storm entries within ±20% (or 2) in "
                 f"{sum(r['storm_entries_within'] for r in rows)}, time to all connected within ±20% (or 1 s) in "
                 f"{sum(r['time_to_all_connected_within'] for r in rows)}. {duration_s:g} s per run at time scale 0.1.")
    return "\n".join(lines)


def _verdicts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {n}" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "sim-calibration")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--cells", choices=("small", "full"), default="full")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--tuning", type=json.loads, default={},
                        help='try these model tuning values, JSON, e.g. {"close_real_ms": [10, 60]} '
                             "(default: calibrated)")
    parser.add_argument("--sim-seeds", type=int, help="simulate this many seeds per cell (default: --seeds)")
    args = parser.parse_args()
    from harness.sim.network import CALIBRATED

    tuning = dataclasses.replace(CALIBRATED, **{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in args.tuning.items()})
    sim_seeds = [70641 + i for i in range(args.sim_seeds or args.seeds)]
    cells = [Cell(n, cost, arm) for n, cost in (FULL_CELLS if args.cells == "full" else SMALL_CELLS) for arm in ARMS]
    seeds = [70641 + i for i in range(args.seeds)]
    rows = []
    for index, cell in enumerate(cells):
        stub = figures([live(cell, seed, args.duration, args.out) for seed in seeds])
        sim = figures([simulated(cell, seed, args.duration, tuning) for seed in sim_seeds])
        rows.append(compare(cell, sim, stub))
        print(f"[{index + 1}/{len(cells)}] {cell.name}: stub {stub['verdict']} {stub['storm_entries']:g} "
              f"{stub['time_to_all_connected_s']}, sim {sim['verdict']} {sim['storm_entries']:g} "
              f"{sim['time_to_all_connected_s']}", file=sys.stderr, flush=True)
    (args.out / "calibration.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows, args.seeds, args.duration)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
