"""From a sweep's runs to the figures per cell and the recommended start settings, with the objective stated.

The objective (recorded in recommendation.json as text):
- a setting (J, K, H) is *safe* for N accounts when, in every seed at every host speed of the spec's
  `safe_host_speeds`, no storm entry follows the startup window and every account is connected at the end;
- among the safe settings for N, prefer the lowest 95th-percentile time to all connected (nearest rank, over
  those seeds and host speeds), counting settings within `P95_TIE_S` of the best as equal; then the smallest
  J (a single-account install waits J/2 on average before its first start); then the smallest K;
- `margin` is how many times slower than host speed 1 the host may be while the setting stays safe at that
  speed and every faster one swept (`margin_is_lower_bound` when it held at the slowest speed swept);
- the `default` is one setting safe for every swept N up to the largest it can cover, chosen the same way on
  the worst p95 over those N;
- `pr_70649` is J = 2000 ms, K = 3, H = 30 000 ms: the largest N it keeps safe at each host speed, and how its
  p95 compares with the default's where both are safe.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from harness.policy.arms import ARMS
from harness.policy.coordinator import (
    DEFAULT_MAX_CONCURRENT_STARTS,
    DEFAULT_START_JITTER_MS,
    DEFAULT_START_SLOT_MAX_HOLD_MS,
)
from harness.sweep.spec import PARAMS, SweepSpec
from harness.verdict.figures import p95_time

P95_TIE_S = 0.5
OBJECTIVE = __doc__.split("The objective (recorded in recommendation.json as text):\n", 1)[1].strip()
# A setting is the values of every fix parameter (PARAMS, in order; None where it does not apply to the arm).
Setting = tuple[Any, ...]
PR_SETTING: Setting = (DEFAULT_START_JITTER_MS, DEFAULT_MAX_CONCURRENT_STARTS, DEFAULT_START_SLOT_MAX_HOLD_MS,
                       *(None,) * (len(PARAMS) - 3))
COORDINATOR_PARAMS = PARAMS[:3]


def is_safe(row: dict[str, Any]) -> bool:
    return bool(row["storm_entries_after_startup"] == 0 and row["connected_accounts_at_end"] == row["accounts"])


def _setting(row: dict[str, Any]) -> Setting:
    return tuple(row[name] for name in PARAMS)


def aggregate(spec: SweepSpec, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: its settings, runs, safe runs, storm probability, p95 time to all connected, median storm entries."""
    by_cell: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_cell[row["cell"]].append(row)
    out = []
    for index in sorted(by_cell):
        runs = by_cell[index]
        first = runs[0]
        safe = sum(is_safe(r) for r in runs)
        entries = sorted(r["storm_entries"] for r in runs)
        out.append({
            "cell": index, "accounts": first["accounts"], "host_speed": first["host_speed"], "arm": first["arm"],
            **{name: first[name] for name in PARAMS}, "runs": len(runs), "safe_runs": safe,
            "storm_probability": round(1 - safe / len(runs), 6),
            "p95_time_to_all_connected_s": p95_time([r["time_to_all_connected_s"] for r in runs]),
            "median_storm_entries": entries[len(entries) // 2],
            "times": [r["time_to_all_connected_s"] for r in runs],
        })
    return out


class _Grid:
    """The cells of one arm, looked up by (setting, N, speed)."""

    def __init__(self, spec: SweepSpec, cells: list[dict[str, Any]], arm: str) -> None:
        self.spec = spec
        self.cells = {(_setting(c), c["accounts"], c["host_speed"]): c for c in cells if c["arm"] == arm}
        self.settings = sorted({s for s, _, _ in self.cells}, key=_order)

    def safe(self, setting: Setting, accounts: int, speeds: Iterable[float]) -> bool:
        cells = [self.cells.get((setting, accounts, s)) for s in speeds]
        return all(c is not None and c["storm_probability"] == 0 for c in cells)

    def p95(self, setting: Setting, accounts: int) -> float | None:
        times: list[float | None] = []
        for speed in self.spec.safe_host_speeds:
            times += self.cells[(setting, accounts, speed)]["times"]
        return p95_time(times)

    def margin(self, setting: Setting, accounts: int) -> tuple[float | None, bool]:
        """(how many times slower than speed 1 the host may be, whether that is only a lower bound)."""
        slowest = None
        for speed in sorted(self.spec.host_speeds, reverse=True):
            if not self.safe(setting, accounts, [speed]):
                break
            slowest = speed
        if slowest is None:
            return None, False
        return round(1.0 / slowest, 3), slowest == min(self.spec.host_speeds)

    def covers_up_to(self, setting: Setting, speeds: Iterable[float]) -> int:
        """The largest swept N it keeps safe, with every smaller swept N (0: not even the smallest)."""
        speeds = list(speeds)
        covered = 0
        for accounts in sorted(self.spec.accounts):
            if not self.safe(setting, accounts, speeds):
                break
            covered = accounts
        return covered

    def best(self, candidates: list[tuple[Setting, float]]) -> tuple[Setting, float] | None:
        """Lowest p95 (within the tie), then the smallest J, then the smallest K."""
        if not candidates:
            return None
        lowest = min(p for _, p in candidates)
        tied = [(s, p) for s, p in candidates if p <= lowest + P95_TIE_S]
        return min(tied, key=lambda sp: _order(sp[0]))


def _order(setting: Setting) -> tuple[float, ...]:
    """Smaller first: J, then K (unlimited last), then the rest."""
    return tuple(math.inf if value == "unlimited" else (value or 0) for value in setting)


def _described(setting: Setting, names: tuple[str, ...] = COORDINATOR_PARAMS) -> dict[str, Any]:
    """The coordinator's three, always; another parameter only where it applies."""
    values = dict(zip(PARAMS, setting, strict=True))
    return {name: value for name, value in values.items() if name in names or value is not None}


def recommend(spec: SweepSpec, cells: list[dict[str, Any]]) -> dict[str, Any]:
    coordinated = [a for a in spec.arms if ARMS[a].coordinated]
    out: dict[str, Any] = {"objective": OBJECTIVE, "safe_host_speeds": list(spec.safe_host_speeds),
                           "seeds": len(spec.seeds), "arm": coordinated[0] if coordinated else None,
                           "per_accounts": [], "default": None, "pr_70649": None,
                           "families": _families(spec, cells)}
    if not coordinated:
        return out
    grid = _Grid(spec, cells, coordinated[0])
    speeds = spec.safe_host_speeds
    for accounts in spec.accounts:
        candidates = [(s, p) for s in grid.settings if grid.safe(s, accounts, speeds)
                      and (p := grid.p95(s, accounts)) is not None]
        chosen = grid.best(candidates)
        entry: dict[str, Any] = {"accounts": accounts, "safe_settings": len(candidates)}
        if chosen is None:
            entry.update(_described((None,) * len(PARAMS)), p95_time_to_all_connected_s=None, margin=None,
                         margin_is_lower_bound=False)
        else:
            margin, bound = grid.margin(chosen[0], accounts)
            entry.update(_described(chosen[0]), p95_time_to_all_connected_s=chosen[1], margin=margin,
                         margin_is_lower_bound=bound)
        out["per_accounts"].append(entry)
    out["default"] = _default(grid, speeds)
    out["pr_70649"] = _pr(grid, out["default"])
    return out


def _default(grid: _Grid, speeds: Sequence[float]) -> dict[str, Any] | None:
    reach = {s: grid.covers_up_to(s, speeds) for s in grid.settings}
    largest = max(reach.values(), default=0)
    if largest == 0:
        return None
    covered = [n for n in grid.spec.accounts if n <= largest]
    candidates = []
    for setting, n in reach.items():
        if n != largest:
            continue
        worst = [grid.p95(setting, accounts) for accounts in covered]
        if all(p is not None for p in worst):
            candidates.append((setting, max(p for p in worst if p is not None)))
    chosen = grid.best(candidates)
    if chosen is None:
        return None
    margin, bound = grid.margin(chosen[0], largest)
    return {**_described(chosen[0]), "covers_accounts_up_to": largest, "p95_time_to_all_connected_s": chosen[1],
            "margin": margin, "margin_is_lower_bound": bound,
            "p95_by_accounts": {str(n): grid.p95(chosen[0], n) for n in covered}}


def _pr(grid: _Grid, default: dict[str, Any] | None) -> dict[str, Any]:
    setting: Setting = PR_SETTING
    if setting not in grid.settings:
        return {**_described(setting), "in_grid": False}
    out: dict[str, Any] = {**_described(setting), "in_grid": True,
                           "safe_up_to_accounts_by_host_speed": {
                               str(speed): grid.covers_up_to(setting, [speed]) for speed in grid.spec.host_speeds},
                           "safe_up_to_accounts": grid.covers_up_to(setting, grid.spec.safe_host_speeds)}
    if default is not None:
        diffs = {}
        for n_text, default_p95 in default["p95_by_accounts"].items():
            n = int(n_text)
            pr_p95 = grid.p95(setting, n) if grid.safe(setting, n, grid.spec.safe_host_speeds) else None
            diffs[n_text] = None if pr_p95 is None or default_p95 is None else round(pr_p95 - default_p95, 3)
        out["p95_minus_default_s_by_accounts"] = diffs
    return out


def _families(spec: SweepSpec, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm and N: whether any of its settings is safe, and the best p95 among the safe ones."""
    out = []
    for arm in spec.arms:
        grid = _Grid(spec, cells, arm)
        for accounts in spec.accounts:
            safe = [(s, p) for s in grid.settings if grid.safe(s, accounts, spec.safe_host_speeds)
                    and (p := grid.p95(s, accounts)) is not None]
            chosen = grid.best(safe)
            out.append({"arm": arm, "accounts": accounts, "safe_settings": len(safe), "settings": len(grid.settings),
                        "best": None if chosen is None else {**_described(chosen[0], ()),
                                                              "p95_time_to_all_connected_s": chosen[1]}})
    return out
