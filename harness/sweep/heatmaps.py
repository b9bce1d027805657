"""The sweep's pictures: for each account count, J x K maps of storm probability and p95 time to all connected.

Drawn with matplotlib's Agg backend (no display, no network), saved as PNG and SVG side by side; the
recommended setting is marked with a star and PR #70649's (J 2000, K 3) with a ring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.policy.arms import ARMS
from harness.sweep.recommend import PR_SETTING, p95
from harness.sweep.spec import SweepSpec


def draw_heatmaps(spec: SweepSpec, cells: list[dict[str, Any]], recommendation: dict[str, Any], folder: Path) -> None:
    arm = recommendation.get("arm")
    if arm is None or not ARMS[arm].coordinated:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    jitters = list(spec.start_jitter_ms)
    caps = ["unlimited" if k is None else k for k in spec.max_concurrent_starts]
    recommended = {e["accounts"]: e for e in recommendation["per_accounts"]}
    for accounts in spec.accounts:
        chosen = recommended.get(accounts) or {}
        hold = chosen.get("start_slot_max_hold_ms") or spec.start_slot_max_hold_ms[0]
        storm = [[0.0] * len(caps) for _ in jitters]
        times = [[float("nan")] * len(caps) for _ in jitters]
        for cell in cells:
            if cell["arm"] != arm or cell["accounts"] != accounts or cell["start_slot_max_hold_ms"] != hold \
                    or cell["host_speed"] not in spec.safe_host_speeds:
                continue
            row, col = jitters.index(cell["start_jitter_ms"]), caps.index(cell["max_concurrent_starts"])
            storm[row][col] = max(storm[row][col], cell["storm_probability"])
        for row, jitter in enumerate(jitters):
            for col, cap in enumerate(caps):
                pooled = [t for c in cells if c["arm"] == arm and c["accounts"] == accounts
                          and c["start_jitter_ms"] == jitter and c["max_concurrent_starts"] == cap
                          and c["start_slot_max_hold_ms"] == hold and c["host_speed"] in spec.safe_host_speeds
                          for t in c["times"]]
                value = p95(pooled)
                times[row][col] = float("nan") if value is None else value
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
        speeds = ", ".join(f"{s:g}" for s in spec.safe_host_speeds)
        figure.suptitle(f"{spec.name}: {accounts} account{'s' if accounts != 1 else ''}, {arm}, hold {hold} ms, "
                        f"{len(spec.seeds)} seeds x host speeds {speeds}")
        for axes, values, title, colours, label in (
                (left, storm, "storm probability (worst host speed)", "Reds", "fraction of runs not safe"),
                (right, times, "p95 time to all connected (s)", "viridis_r", "seconds (blank: never)")):
            image = axes.imshow(values, cmap=colours, aspect="auto", origin="lower",
                                vmin=0.0 if colours == "Reds" else None, vmax=1.0 if colours == "Reds" else None)
            axes.set_title(title)
            axes.set_xticks(range(len(caps)), [str(k) for k in caps])
            axes.set_yticks(range(len(jitters)), [str(j) for j in jitters])
            axes.set_xlabel("K: max concurrent starts")
            axes.set_ylabel("J: start jitter (ms)")
            figure.colorbar(image, ax=axes, label=label)
            for row, line in enumerate(values):
                for col, value in enumerate(line):
                    if value == value:  # not NaN
                        axes.text(col, row, f"{value:.2g}" if colours == "Reds" else f"{value:.0f}", ha="center",
                                  va="center", fontsize="x-small", color="grey")
            _mark(axes, jitters, caps, (chosen.get("start_jitter_ms"), chosen.get("max_concurrent_starts")),
                  "*", "recommended")
            _mark(axes, jitters, caps, (PR_SETTING[0], PR_SETTING[1]), "o", "PR #70649", hollow=True)
            axes.legend(loc="upper right", fontsize="small")
        for suffix in ("png", "svg"):
            figure.savefig(folder / f"accounts-{accounts}.{suffix}", dpi=110)
        plt.close(figure)


def _mark(axes: Any, jitters: list[int], caps: list[Any], setting: tuple[Any, Any], marker: str, label: str,
          hollow: bool = False) -> None:
    jitter, cap = setting
    if jitter not in jitters or cap not in caps:
        return
    style = {"facecolors": "none", "edgecolors": "deepskyblue", "linewidths": 2.5} if hollow else {
        "color": "gold", "edgecolors": "black"}
    axes.scatter([caps.index(cap)], [jitters.index(jitter)], marker=marker, s=220, label=label, **style)
