"""What `harness.api.run` (and so the pytest plugin) adds to a live run: the child process's start, imports and
teardown, against calling the run in-process (in a process that has already imported Locust).

Both run the same short live profile (single-account.yaml, 20 s of scenario at time scale 0.1, one arm) R times,
alternating; the figure is the difference of the medians.

    python benchmarks/api_overhead.py [--repeats 5]
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

ROOT = Path(__file__).resolve().parent.parent
PROFILE = {"duration_s": 20, "windows": {"startup_s": 5, "final_s": 10}}

IN_PROCESS = """
import json, sys, time
from pathlib import Path
import locust  # as the CLI does: gevent patches first
from harness import api
from harness.profile import parse_profile
from harness.run import run_profile
data = api.profile_data(sys.argv[1], overrides=json.loads(sys.argv[2]))
profile = parse_profile(data)
started = time.perf_counter()
run_profile(profile, ["shipped"], Path(sys.argv[3]))
print(time.perf_counter() - started)
"""


def in_process(out: Path) -> float:
    command = [sys.executable, "-c", IN_PROCESS, str(ROOT / "profiles" / "single-account.yaml"), json.dumps(PROFILE),
               str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def through_api(out: Path) -> float:
    from harness import api

    started = time.perf_counter()
    result = api.run(ROOT / "profiles" / "single-account.yaml", arm="shipped", overrides=PROFILE, out=out)
    elapsed = time.perf_counter() - started
    assert result.verdict == "converged", result.explain()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    direct, api_runs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.repeats):
            direct.append(in_process(Path(scratch) / f"direct-{index}"))
            api_runs.append(through_api(Path(scratch) / f"api-{index}"))
    report = {"in_process_s": {"median": round(statistics.median(direct), 3), "all": [round(x, 3) for x in direct]},
              "api_s": {"median": round(statistics.median(api_runs), 3), "all": [round(x, 3) for x in api_runs]},
              "overhead_s": round(statistics.median(api_runs) - statistics.median(direct), 3)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
