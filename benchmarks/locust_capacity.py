"""How many concurrent accounts one Locust process sustains against the stub at zero handshake cost.

For each N it runs `harness run` with a generated profile: N accounts, shipped arm, the embedded stub
with no handshake cost and a pre-auth budget large enough not to interfere, 60 s at time scale 1.
An N is sustained when every account connects and stays connected with no storm entry. It reports
time to all connected and the handshake p99 beside the same figures for N=1 measured in the same run
(the baseline), as ratios. Every run is bounded (60 s of scenario time plus teardown).

    python benchmarks/locust_capacity.py [--counts 1 100 250 500 1000 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DURATION_S = 60


def profile_text(count: int, stub_profile: str = "current", duration_s: int = DURATION_S) -> str:
    return f"""
name: capacity-{count}
target:
  kind: stub
  profile: {stub_profile}
  max_preauth_per_ip: {max(32, count * 2)}
accounts:
  count: {count}
arms: [shipped]
time_scale: 1
duration_s: {duration_s}
windows: {{startup_s: 30, final_s: 20}}
probe: {{interval_ms: 1000}}
seed: 1
"""


def run(count: int, stub_profile: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        path = Path(tmp) / "profile.yaml"
        path.write_text(profile_text(count, stub_profile), encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--out", str(Path(tmp) / "o")],
                                cwd=ROOT, capture_output=True, text=True, timeout=DURATION_S * 5)
        if result.returncode not in (0, 1):
            raise SystemExit(f"N={count}: harness exited {result.returncode}: {result.stderr[-500:]}")
        s: dict[str, Any] = json.loads((Path(tmp) / "o" / "shipped" / "summary.json").read_text())
    return {
        "accounts": count, "connected_at_end": s["connected_accounts_at_end"], "storm_entries": s["storm_entries"],
        "sustained": s["connected_accounts_at_end"] == count and s["storm_entries"] == 0,
        "time_to_all_connected_s": s["time_to_all_connected_s"], "handshake_ms_p99": s["handshake_ms"]["p99"],
        "health_rpc_ms_p99": s["health_rpc_ms"]["p99"], "wall_clock_s": s["wall_clock_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[1, 100, 250, 500, 1000, 2000])
    parser.add_argument("--stub-profile", default="current",
                        help="the stub's protocol profile (default current: april-2026 sends every hello's health "
                             "event to every connected client, as April does, which is quadratic in accounts)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for count in args.counts:
        rows.append(run(count, args.stub_profile))
        print(f"N={count} done", file=sys.stderr)
    base = rows[0]
    for row in rows:
        for key in ("time_to_all_connected_s", "handshake_ms_p99"):
            b, v = base[key], row[key]
            row[f"{key}_ratio"] = round(v / b, 1) if b and v else None
    if args.json:
        print(json.dumps({"baseline_accounts": base["accounts"], "rows": rows}, indent=2))
        return
    print(f"ratios are against N={base['accounts']} measured in this run")
    print(f"{'accounts':>8} {'sustained':>9} {'connected':>9} {'storms':>6} {'all conn. s':>11} {'ratio':>6} "
          f"{'hs p99 ms':>9} {'ratio':>6} {'health p99':>10}")
    for r in rows:
        print(f"{r['accounts']:>8} {str(r['sustained']):>9} {r['connected_at_end']:>9} {r['storm_entries']:>6} "
              f"{str(r['time_to_all_connected_s']):>11} {str(r['time_to_all_connected_s_ratio']):>6} "
              f"{str(r['handshake_ms_p99']):>9} {str(r['handshake_ms_p99_ratio']):>6} "
              f"{str(r['health_rpc_ms_p99']):>10}")


if __name__ == "__main__":
    main()
