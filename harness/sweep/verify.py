"""`harness sweep --verify N`: the most informative cells again, on the stub over real sockets.

Which cells, taken in turn from three lists until N: for each account count, the recommended setting at the
slowest safe host speed; its neighbours in the J x K grid; and cells on the storm boundary (some seeds safe,
some not). Each runs once (the sweep's first seed) through
`harness run` in a child process (the sweep's own process stays free of gevent), and agrees when the stub's
run is safe exactly when the simulated one was. The result goes to verify.json and a table.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.report.recommendation import accounts_text
from harness.sweep.cells import Cell, cell_profile_data, cells
from harness.sweep.recommend import is_safe
from harness.sweep.spec import SweepSpec

RUN_TIMEOUT_S = 900


def informative(spec: SweepSpec, rows: list[dict[str, Any]], recommendation: dict[str, Any], count: int) -> list[Cell]:
    grid = list(cells(spec))
    by_index = {c.index: c for c in grid}
    safe_by_cell: dict[int, list[bool]] = {}
    for row in rows:
        safe_by_cell.setdefault(row["cell"], []).append(is_safe(row))
    slowest = min(spec.safe_host_speeds)
    picks = {e["accounts"]: e for e in recommendation.get("per_accounts", []) if e["start_jitter_ms"] is not None}
    recommended: list[Cell] = []
    neighbours: list[Cell] = []
    for accounts, entry in picks.items():
        setting = (entry["start_jitter_ms"], _cap(entry["max_concurrent_starts"]), entry["start_slot_max_hold_ms"])
        recommended += [c for c in grid if c.accounts == accounts and c.host_speed == slowest
                        and c.arm == recommendation["arm"] and _coordinator_setting(c) == setting][:1]
        neighbours += _neighbours(spec, grid, accounts, slowest, recommendation["arm"], entry)
    boundary = [by_index[i] for i, safe in sorted(safe_by_cell.items()) if 0 < sum(safe) < len(safe)]
    chosen: list[Cell] = []
    for group in itertools.zip_longest(recommended, neighbours, boundary):
        for cell in group:
            if cell is not None and cell not in chosen and len(chosen) < count:
                chosen.append(cell)
    return chosen


def _cap(value: Any) -> int | None:
    return None if value == "unlimited" else value


def _coordinator_setting(cell: Cell) -> tuple[Any, Any, Any]:
    return (cell.param("start_jitter_ms"), cell.param("max_concurrent_starts"), cell.param("start_slot_max_hold_ms"))


def _neighbours(spec: SweepSpec, grid: list[Cell], accounts: int, speed: float, arm: str,
                entry: dict[str, Any]) -> list[Cell]:
    jitters, caps = list(spec.start_jitter_ms), list(spec.max_concurrent_starts)
    j, k = jitters.index(entry["start_jitter_ms"]), caps.index(_cap(entry["max_concurrent_starts"]))
    wanted = [(jitters[j2], caps[k2]) for j2, k2 in ((j - 1, k), (j + 1, k), (j, k - 1), (j, k + 1))
              if 0 <= j2 < len(jitters) and 0 <= k2 < len(caps)]
    return [c for c in grid if c.accounts == accounts and c.host_speed == speed and c.arm == arm
            and _coordinator_setting(c)[:2] in wanted
            and c.param("start_slot_max_hold_ms") == entry["start_slot_max_hold_ms"]]


def verify(spec: SweepSpec, out: Path, count: int) -> str:
    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()[1:]]
    recommendation = json.loads((out / "recommendation.json").read_text())
    seed = spec.seeds[0]
    simulated = {(r["cell"], r["seed"]): r for r in rows}
    results = []
    for number, cell in enumerate(informative(spec, rows, recommendation, count), start=1):
        sim = simulated[(cell.index, seed)]
        stub = _run_on_stub(spec, cell, seed, out / "verify" / f"cell-{cell.index}")
        agree = stub is not None and is_safe(stub) == is_safe(sim)
        results.append({**cell.columns(), "seed": seed, "sim_safe": is_safe(sim),
                        "stub_safe": None if stub is None else is_safe(stub),
                        "sim_verdict": sim["observed_verdict"],
                        "stub_verdict": None if stub is None else stub["verdict"],
                        "sim_time_to_all_connected_s": sim["time_to_all_connected_s"],
                        "stub_time_to_all_connected_s": None if stub is None else stub["time_to_all_connected_s"],
                        "agree": agree})
        print(f"verify {number}/{count}: cell {cell.index} ({accounts_text(cell.accounts)}, speed {cell.host_speed:g}, "
              f"{cell.arm} {dict(cell.params)}): sim "
              f"{'safe' if is_safe(sim) else 'not safe'}, stub "
              f"{'-' if stub is None else 'safe' if is_safe(stub) else 'not safe'}", file=sys.stderr, flush=True)
    (out / "verify.json").write_text(json.dumps(results, indent=2) + "\n")
    agreed = sum(r["agree"] for r in results)
    return f"verify: the stub over real sockets agreed with the simulator in {agreed} of {len(results)} cells " \
           f"(safe or not; details in {out / 'verify.json'})"


def _run_on_stub(spec: SweepSpec, cell: Cell, seed: int, folder: Path) -> dict[str, Any] | None:
    folder.mkdir(parents=True, exist_ok=True)
    data = cell_profile_data(spec, cell, seed, kind="stub")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as handle:
        yaml.safe_dump(data, handle)
    command = [sys.executable, "-m", "harness.cli", "run", handle.name, "--out", str(folder)]
    try:
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    summary = folder / cell.arm.replace("+", "_") / "summary.json"
    if not summary.exists():
        return None
    result: dict[str, Any] = json.loads(summary.read_text())
    return {**result, "accounts": cell.accounts, "connected_accounts_at_end": result["connected_accounts_at_end"]}
