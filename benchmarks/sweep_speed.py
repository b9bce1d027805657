"""How fast the simulator and the sweep are, against real sockets in the same run.

1. `profiles/matrix-11-accounts.yaml`, both arms: R runs in the simulator and one `harness compare` over real
   sockets (the stub at time scale 0.1), timed in the same process: the ratio of the profile's wall time.
   Real sockets at time scale 1 would take ten times the measured wall time; both ratios are printed.
2. A sweep of N matrix-11-like cells (180 s of profile time each, one seed, the coordinator arm over a J x K x
   accounts x host-speed grid), on every core: wall time, and the peak RSS of the sweep's process and of its
   worker processes (ru_maxrss of the process and of its reaped children), for 100 and for 1,000 cells.

    python benchmarks/sweep_speed.py [--repeats 20] [--cells 100 1000] [--skip-live]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"


def simulated_s(repeats: int) -> list[float]:
    from harness.profile import load_profile
    from harness.sim import simulated_summary

    profile = load_profile(MATRIX_11).with_overrides(target="sim")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for arm in profile.arms:
            simulated_summary(profile, arm)
        times.append(time.perf_counter() - started)
    return times


def live_s(folder: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(MATRIX_11), "--out", str(folder)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def grid_spec(folder: Path, cells: int) -> Path:
    """A coordinator grid of about `cells` cells: accounts x host speeds x J x K."""
    shapes = {100: ([4, 11, 16, 32], [0.5, 1], [0, 2000, 5000], [1, 3, 6, "unlimited"]),
              1000: ([1, 2, 4, 8, 11, 16, 32, 64], [0.5, 0.75, 1, 1.5, 2], [0, 500, 1000, 2000, 5000],
                     [1, 2, 3, 4, 8]),}
    accounts, speeds, jitters, caps = shapes[cells]
    spec = {"name": f"bench-{cells}", "base": str(MATRIX_11), "seeds": [70641],
            "axes": {"accounts": accounts, "host_speed": speeds, "arm": ["coordinator"], "start_jitter_ms": jitters,
                     "max_concurrent_starts": caps}}
    path = folder / f"bench-{cells}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(spec: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-c", "import resource, sys; from harness.cli import main; code = main(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)",
               "sweep", str(spec), "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    self_kb, children_kb = (int(v) for v in result.stderr.strip().splitlines()[-1].split())
    runs = len((out / "sweep.csv").read_text().splitlines()) - 1
    return {"runs": runs, "wall_s": round(wall, 2), "peak_rss_mb": round(self_kb / 1024, 1),
            "worker_peak_rss_mb": round(children_kb / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cells", type=int, nargs="*", default=[100, 1000], choices=[100, 1000])
    parser.add_argument("--skip-live", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    sims = simulated_s(args.repeats)
    report["simulated_matrix11_s"] = {"median": round(statistics.median(sims), 4), "max": round(max(sims), 4),
                                      "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        if not args.skip_live:
            live = live_s(folder / "live")
            report["live_matrix11_s_at_time_scale_0.1"] = round(live, 2)
            report["speedup_vs_time_scale_0.1"] = round(live / statistics.median(sims))
            report["speedup_vs_real_time"] = round(live * 10 / statistics.median(sims))
        for cells in args.cells:
            report[f"sweep_{cells}_cells"] = sweep(grid_spec(folder, cells), folder / f"out-{cells}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
