"""The sweep's pictures: for each account count, J x K maps of storm probability and p95 time to all connected.

Drawn from sweep.json and recommendation.json alone (so `harness report DIR` can draw them again), with the
recommended setting marked with a star and PR #70649's (J 2000, K 3, hold 30 s) with a ring.
"""

from __future__ import annotations

from typing import Any

from harness.errors import BadInput
from harness.policy.arms import ARMS
from harness.policy.coordinator import DEFAULT_MAX_CONCURRENT_STARTS, DEFAULT_START_JITTER_MS
from harness.report.charts import Chart, pyplot
from harness.verdict.figures import p95_time

STORM_COLOURS, TIME_COLOURS = "Reds", "viridis_r"


def heatmap_charts(sweep: dict[str, Any], recommendation: dict[str, Any]) -> list[Chart]:
    """One chart per account count swept, for the recommended arm (none when no coordinated arm was swept)."""
    arm = recommendation.get("arm")
    if arm is None or arm not in ARMS or not ARMS[arm].coordinated:
        return []
    missing = [key for key in ("axes", "cells", "safe_host_speeds", "name", "seeds") if key not in sweep]
    if missing or not isinstance(sweep["axes"], dict) or "per_accounts" not in recommendation:
        raise BadInput(f"sweep.json: expected {', '.join(missing) or 'axes'} as `harness sweep` writes them")
    axes_of = sweep["axes"]
    jitters: list[Any] = list(axes_of["start_jitter_ms"])
    caps: list[Any] = list(axes_of["max_concurrent_starts"])
    safe_speeds = sweep["safe_host_speeds"]
    recommended = {e["accounts"]: e for e in recommendation["per_accounts"]}
    charts = []
    for accounts in axes_of["accounts"]:
        chosen = recommended.get(accounts) or {}
        hold = chosen.get("start_slot_max_hold_ms") or axes_of["start_slot_max_hold_ms"][0]
        mine = [c for c in sweep["cells"] if c["arm"] == arm and c["accounts"] == accounts
                and c["start_slot_max_hold_ms"] == hold and c["host_speed"] in safe_speeds]
        storm = [[0.0] * len(caps) for _ in jitters]
        pooled: dict[tuple[int, int], list[float | None]] = {}
        for cell in mine:
            cap = "unlimited" if cell["max_concurrent_starts"] is None else cell["max_concurrent_starts"]
            if cell["start_jitter_ms"] not in jitters or cap not in caps:
                continue
            row, col = jitters.index(cell["start_jitter_ms"]), caps.index(cap)
            storm[row][col] = max(storm[row][col], cell["storm_probability"])
            pooled.setdefault((row, col), []).extend(cell["times"])
        times = [[_or_nan(p95_time(pooled.get((row, col), []))) for col in range(len(caps))]
                 for row in range(len(jitters))]
        plt = pyplot()
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        speeds = ", ".join(f"{s:g}" for s in safe_speeds)
        figure.suptitle(f"{sweep['name']}: {accounts} account{'s' if accounts != 1 else ''}, {arm}, hold {hold} ms, "
                        f"{len(sweep['seeds'])} seeds x host speeds {speeds}")
        for axes, values, title, colours, label in (
                (left, storm, "storm probability (worst host speed)", STORM_COLOURS, "fraction of runs not safe"),
                (right, times, "p95 time to all connected (s)", TIME_COLOURS, "seconds (blank: never)")):
            storm_map = colours == STORM_COLOURS
            image = axes.imshow(values, cmap=colours, aspect="auto", origin="lower",
                                vmin=0.0 if storm_map else None, vmax=1.0 if storm_map else None)
            axes.set_title(title)
            axes.set_xticks(range(len(caps)), [str(k) for k in caps])
            axes.set_yticks(range(len(jitters)), [str(j) for j in jitters])
            axes.set_xlabel("K: max concurrent starts")
            axes.set_ylabel("J: start jitter (ms)")
            figure.colorbar(image, ax=axes, label=label)
            for row, line in enumerate(values):
                for col, value in enumerate(line):
                    if value == value:  # not NaN
                        axes.text(col, row, f"{value:.2g}" if storm_map else f"{value:.0f}", ha="center",
                                  va="center", fontsize="x-small", color="grey")
            cap = chosen.get("max_concurrent_starts")
            _mark(axes, jitters, caps, (chosen.get("start_jitter_ms"), "unlimited" if cap is None else cap),
                  "*", "recommended")
            _mark(axes, jitters, caps, (DEFAULT_START_JITTER_MS, DEFAULT_MAX_CONCURRENT_STARTS), "o", "PR #70649",
                  hollow=True)
            axes.set_xlim(-0.5, len(caps) - 0.5)  # the marks would widen the map otherwise
            axes.set_ylim(-0.5, len(jitters) - 0.5)
            axes.legend(loc="upper right", fontsize="small")
        charts.append(Chart(f"accounts-{accounts}", f"J x K for {accounts} account{'s' if accounts != 1 else ''}",
                            figure))
    return charts


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _mark(axes: Any, jitters: list[Any], caps: list[Any], setting: tuple[Any, Any], marker: str, label: str,
          hollow: bool = False) -> None:
    jitter, cap = setting
    if jitter not in jitters or cap not in caps:
        return
    style = {"facecolors": "none", "edgecolors": "deepskyblue", "linewidths": 2.5} if hollow else {
        "color": "gold", "edgecolors": "black"}
    axes.scatter([caps.index(cap)], [jitters.index(jitter)], marker=marker, s=220, label=label, **style)
