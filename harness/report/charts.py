"""The report's charts, drawn with matplotlib from what a results folder holds: no run, no socket.

Each chart is a `Chart` (a name, a caption and a matplotlib figure) that the report inlines as SVG and saves
beside it as PNG and SVG for pasting into an issue. matplotlib renders offline with its Agg backend; SVG text
stays text (`svg.fonttype: none`), which keeps the files small and the labels searchable.

  timeline  per arm, on axes shared across arms: attempts, hellos and storm entries per second, accounts
            connected, health RPC latency and the gateway's event-loop lag; fault windows shaded, the startup
            window's end and the final window's start marked
  swimlane  one row per account, every attempt a mark coloured by its outcome, connected spans as a line
  prompts   the duplicate-prompt scenario: one row per intent, every prompt a mark, a new approval id in red
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.events import STORM_KIND, Outcome
from harness.report.folder import ArmRun, soak_run_label


def _outcomes(kind: str) -> frozenset[str]:
    return frozenset(outcome.value for outcome, storm_kind in STORM_KIND.items() if storm_kind == kind)


# How an attempt ended, grouped as the storm's kinds (harness.events.STORM_KIND) and coloured for the swimlane.
OUTCOME_GROUPS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("hello", "#2ca02c", frozenset({Outcome.HELLO.value})),
    ("handshake timeout", "#d62728", _outcomes("handshake_timeout")),
    ("503 (pre-auth budget)", "#ff7f0e", _outcomes("preauth_rejected")),
    ("connect error", "#9467bd", _outcomes("connect_error")),
)
RASTER_FROM_BUCKETS = 300  # a longer timeline is drawn as an image inside the SVG
FAULT_SHADE, WINDOW_LINE = "#b39ddb", "#555555"
RASTER_FROM_MARKS = 3000  # more marks than this are drawn as an image inside the SVG, to keep the file small
ROW_INCHES, MAX_LANE_INCHES = 0.24, 16.0


@dataclass
class Chart:
    name: str  # file stem: charts/<name>.png and .svg
    caption: str
    figure: Any  # matplotlib.figure.Figure

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in ("png", "svg"):
            self.figure.savefig(folder / f"{self.name}.{suffix}", dpi=110)

    def inline_svg(self) -> str:
        """The SVG element alone (no XML declaration or doctype), ready to sit in an HTML page."""
        with pyplot().rc_context({"svg.hashsalt": self.name}):  # element ids unique across a page's charts
            out = io.StringIO()
            self.figure.savefig(out, format="svg")
        text = out.getvalue()
        return text[text.index("<svg"):]

    def close(self) -> None:
        pyplot().close(self.figure)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), imported on first use: it costs about half a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _arm_layout(arms: int) -> tuple[int, int]:
    """(rows, columns) of arms: side by side up to three, then two per row."""
    columns = arms if arms <= 3 else 2
    return -(-arms // columns), columns


def timeline_chart(arms: Sequence[ArmRun]) -> Chart:
    """Per arm (columns, on shared axes), four panels over scenario time: attempts, hellos and storm entries per
    bucket; accounts connected; the slowest health RPC; the gateway's reported event-loop lag."""
    plt = pyplot()
    arm_rows, columns = _arm_layout(len(arms))
    figure, grid = plt.subplots(4 * arm_rows, columns, figsize=(max(6.5, 5.2 * columns), 8.5 * arm_rows),
                                sharex=True, squeeze=False, constrained_layout=True)
    for index in range(len(arms), arm_rows * columns):  # an odd arm out leaves its column empty
        for panel in range(4):
            grid[4 * (index // columns) + panel][index % columns].set_visible(False)
    for index, arm in enumerate(arms):
        column, first = index % columns, 4 * (index // columns)
        summary, rows = arm.summary, arm.summary.timeline
        top, connected, health, lag = (grid[first + r][column] for r in range(4))
        if index:  # the same figure on the same scale in every arm
            for panel, axes in enumerate((top, connected, health, lag)):
                axes.sharey(grid[panel][0])
        times = [r.t_s for r in rows]
        bucket_s = times[1] - times[0] if len(times) > 1 else 1.0
        per = "per second" if bucket_s == 1.0 else f"per {bucket_s:g} s"
        raster = len(rows) > RASTER_FROM_BUCKETS
        top.bar(times, [r.attempts for r in rows], width=bucket_s, align="edge", color="#c7c7c7", label="attempts",
                rasterized=raster)
        top.bar(times, [r.storm_entries for r in rows], width=bucket_s, align="edge", color="#d62728",
                label="storm entries", rasterized=raster)
        top.step(times, [r.hellos for r in rows], where="post", color="#2ca02c", label="hellos")
        top.set_title(f"{summary.arm}: {summary.verdict}", loc="left", fontweight="bold")
        # A bucket's count of accounts connected is the one at its end: from there on.
        connected.step([0.0, *(t + bucket_s for t in times)], [0, *(r.connected for r in rows)], where="post",
                       color="#1f77b4")
        connected.axhline(summary.accounts, color="#1f77b4", linestyle=":", linewidth=0.8)
        connected.set_ylim(bottom=0)
        _line(health, times, [r.health_rpc_ms for r in rows], "#8c564b")
        _line(lag, times, [r.event_loop_lag_ms for r in rows], "#e377c2")
        for axes in (top, connected, health, lag):
            _windows(axes, arm, labelled=axes is top)
        top.tick_params(labelbottom=True)
        if column == 0:
            top.set_ylabel(f"attempts {per}")
            connected.set_ylabel(f"accounts connected\n(of {summary.accounts})")
            health.set_ylabel("health RPC ms")
            lag.set_ylabel("event-loop lag ms")
            top.legend(loc="upper right", fontsize="small")
        lag.set_xlabel("scenario time (s)")
        lag.set_xlim(0, summary.duration_s)
    for panel in (2, 3):
        grid[panel][0].set_ylim(bottom=0)
    arms_text = " vs ".join(a.summary.arm for a in arms)
    return Chart("timeline", f"Timeline: {arms_text}. Shaded: fault windows; dashed: end of the startup window and "
                             "start of the final window.", figure)


def swimlane_chart(arms: Sequence[ArmRun]) -> Chart:
    """Per arm, one row per account: each attempt a mark where it ended (coloured by outcome) with a faint line
    while it was in flight, and a band while the account held a session."""
    plt = pyplot()
    accounts = max((len(a.accounts) for a in arms), default=1)
    figure, lanes = _lanes(plt, len(arms), accounts)
    for index, arm in enumerate(arms):
        axes = lanes[index]
        row_of = {name: index for index, name in enumerate(arm.accounts)}
        raster = len(arm.attempts) > RASTER_FROM_MARKS
        if not arm.attempts_recorded:
            axes.text(0.5, 0.5, "attempts not recorded (this folder predates attempts.csv)", ha="center",
                      va="center", transform=axes.transAxes, color="grey")
        for span in arm.connected_spans():
            axes.hlines(row_of[span.account], span.from_s, span.to_s, color="#2ca02c", alpha=0.35, linewidth=2,
                        rasterized=raster)
        for label, colour, outcomes in OUTCOME_GROUPS:
            marks = [a for a in arm.attempts if a.outcome in outcomes and a.account in row_of]
            axes.hlines([row_of[a.account] for a in marks], [a.started_s for a in marks], [a.ended_s for a in marks],
                        color=colour, alpha=0.25, linewidth=1, rasterized=raster)  # the attempt in flight
            axes.scatter([a.ended_s for a in marks], [row_of[a.account] for a in marks], s=14 if accounts <= 64 else 4,
                         marker="|" if label != "hello" else "o", color=colour, label=f"{label} ({len(marks)})",
                         rasterized=raster, linewidths=1.2)
        _windows(axes, arm)
        axes.set_title(f"{arm.summary.arm}: {len(arm.attempts)} attempts", loc="left", fontweight="bold")
        axes.set_xlim(0, arm.summary.duration_s)
        axes.set_xlabel("scenario time (s)")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize="x-small", frameon=False)
        if accounts <= 64:
            axes.set_yticks(range(len(arm.accounts)), arm.accounts, fontsize="x-small")
        axes.set_ylim(-0.7, max(0.7, len(arm.accounts) - 0.3))
        axes.invert_yaxis()
    return Chart("swimlane", "Swimlane: one row per account; each mark is a handshake attempt where it ended, "
                             "coloured by outcome; the green band is a connected session.", figure)


def prompts_chart(arms: Sequence[ArmRun]) -> Chart | None:
    """Prompts per intent over time, for the arms that ran the approval scenario (None when none did)."""
    arms = [a for a in arms if a.intents]
    if not arms:
        return None
    plt = pyplot()
    figure, lanes = _lanes(plt, len(arms), max(len(a.intents) for a in arms))
    for index, arm in enumerate(arms):
        axes = lanes[index]
        keys = [(i.agent, i.run) for i in arm.intents]
        first_id = {(i.agent, i.run): i.approval_ids[0] if i.approval_ids else "" for i in arm.intents}
        for label, colour, first in (("prompt", "#1f77b4", True), ("prompt under a new id", "#d62728", False)):
            marks = [p for p in arm.prompts if (p.agent, p.run) in first_id
                     and (p.approval_id == first_id[(p.agent, p.run)]) == first]
            axes.scatter([p.posted_s for p in marks], [keys.index((p.agent, p.run)) for p in marks], s=22,
                         color=colour, label=f"{label} ({len(marks)})")
        labels = [f"{i.agent}/{i.run[:8]}" + (f" ({i.decisions_lost} lost)" if i.decisions_lost else "")
                  for i in arm.intents]
        axes.set_yticks(range(len(keys)), labels, fontsize="x-small")
        axes.set_ylim(-0.7, max(0.7, len(keys) - 0.3))
        axes.invert_yaxis()
        axes.set_xlim(0, arm.summary.duration_s)
        _windows(axes, arm)
        duplicates = arm.summary.duplicates
        lost = duplicates.decisions_lost if duplicates else 0
        axes.set_title(f"{arm.summary.arm}: {len(arm.prompts)} prompts for {len(keys)} intents, {lost} decisions lost",
                       loc="left", fontweight="bold")
        axes.set_xlabel("scenario time (s)")
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="x-small", frameon=False)
    return Chart("prompts", "Approval prompts per intent (one run's exec call): blue, the first approval id; red, "
                            "the same intent asked again under a new id (openclaw#69478).", figure)


def _lanes(plt: Any, arms: int, lanes: int) -> tuple[Any, list[Any]]:
    """A figure with one lane chart per arm, the lanes (accounts, intents) as rows, sized to their count."""
    arm_rows, columns = _arm_layout(arms)
    height = min(MAX_LANE_INCHES, max(2.5, 1.6 + ROW_INCHES * lanes))
    figure, grid = plt.subplots(arm_rows, columns, figsize=(max(6.5, 5.6 * columns), height * arm_rows),
                                sharex=True, squeeze=False, constrained_layout=True)
    axes = [a for row in grid for a in row]
    for unused in axes[arms:]:
        unused.set_visible(False)
    for other in axes[1:arms]:
        other.tick_params(labelbottom=True)
    return figure, axes[:arms]


def _line(axes: Any, times: list[float], values: list[float | None], colour: str) -> None:
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if points:
        axes.plot([t for t, _ in points], [v for _, v in points], color=colour, linewidth=1.1)
    else:
        axes.text(0.5, 0.5, "not reported", transform=axes.transAxes, ha="center", va="center", color="grey")


def _windows(axes: Any, arm: ArmRun, labelled: bool = False) -> None:
    """Shade the fault windows and mark the startup window's end and the final window's start."""
    summary = arm.summary
    final_from_s = summary.duration_s - summary.windows.final_s
    for fault in summary.faults:
        axes.axvspan(fault.from_s, summary.duration_s if fault.to_s is None else fault.to_s, color=FAULT_SHADE,
                     alpha=0.3, linewidth=0)
        if labelled:
            axes.text(fault.from_s, 1.0, f" #{fault.index} {fault.type or fault.kind}", va="top", fontsize="x-small",
                      transform=axes.get_xaxis_transform(), color="#5e35b1")
    for at_s, text in ((summary.windows.startup_s, "startup ends"), (final_from_s, "final window")):
        axes.axvline(at_s, color=WINDOW_LINE, linestyle="--", linewidth=0.8)
        if labelled:
            axes.text(at_s, 1.0, f" {text}", transform=axes.get_xaxis_transform(), va="bottom", fontsize="x-small",
                      color=WINDOW_LINE)


# Per row of the chart, what is drawn (the first key solid, the next dotted) and the row's label.
SOAK_RESOURCES = ((("rss_mb", "heap_after_gc_mb"), "memory (MB): resident; dotted, heap after GC"),
                  (("descriptors",), "open descriptors"), (("socket_total",), "TCP sockets"))
RUN_COLOURS = {True: "#2ca02c", False: "#d62728", None: "#9e9e9e"}  # as expected, not, inconclusive


def resources_chart(samples: Sequence[dict[str, Any]], fits: Sequence[dict[str, Any]], warmup_s: float) -> Chart:
    """Per process role (columns), memory, descriptors and sockets over the soak (rows), each gateway
    incarnation its own line, with the fitted growth drawn over the span it was fitted on."""
    plt = pyplot()
    roles = sorted({role for s in samples for role, row in s["processes"].items() if row is not None})
    figure, grid = plt.subplots(len(SOAK_RESOURCES), max(1, len(roles)), figsize=(max(6.5, 4.6 * len(roles)), 7.5),
                                sharex=True, squeeze=False, constrained_layout=True)
    for column, role in enumerate(roles):
        points: dict[int, list[tuple[float, dict[str, Any]]]] = {}
        for sample in samples:
            row = sample["processes"].get(role)
            if row is not None:
                points.setdefault(row["incarnation"], []).append((sample["t_s"] / 60.0, row))
        for line, (keys, label) in enumerate(SOAK_RESOURCES):
            axes = grid[line][column]
            for incarnation, rows in sorted(points.items()):
                drawn = axes.plot([t for t, _ in rows], [r[keys[0]] for _, r in rows], linewidth=1,
                                  label=f"#{incarnation}" if len(points) > 1 else None)
                for key in keys[1:]:
                    measured = [(t, r[key]) for t, r in rows if r.get(key) is not None]
                    axes.plot([t for t, _ in measured], [v for _, v in measured], linewidth=1, linestyle=":",
                              color=drawn[0].get_color())
                started = rows[0][1]["started_at_s"]
                axes.axvspan(started / 60.0, (started + warmup_s) / 60.0, color="#eeeeee", linewidth=0)
            for fit in fits:
                if fit["role"] == role and fit["sampled"] in keys:
                    fitted = fit["line"]
                    xs = [fitted["from_s"], fitted["to_s"]]
                    axes.plot([x / 60.0 for x in xs], [fitted["intercept"] + fitted["per_hour"] * x / 3600.0
                                                       for x in xs],
                              color="#d62728" if fit.get("failure") else "black", linestyle="--", linewidth=1)
            if line == 0:
                axes.set_title(role, loc="left", fontweight="bold")
            if column == 0:
                axes.set_ylabel(label)
            if len(points) > 1 and line == 0:
                axes.legend(fontsize="x-small", title="incarnation", title_fontsize="x-small")
        grid[-1][column].set_xlabel("minutes into the soak")
    return Chart("resources", "Resources of each process over the soak: grey, the warm-up after each start; dashed, "
                              "the growth fitted after it (Theil-Sen; red when over its bound).", figure)


def cycles_chart(cycles: Sequence[dict[str, Any]]) -> Chart:
    """Every run of the soak where it ended: one row per run/arm, green as expected, red not, grey
    inconclusive."""
    plt = pyplot()
    labels = list(dict.fromkeys(soak_run_label(c) for c in cycles))
    figure, axes = plt.subplots(figsize=(10, max(2.0, 1.0 + 0.35 * len(labels))), constrained_layout=True)
    for state, colour in RUN_COLOURS.items():
        marks = [c for c in cycles if (None if c["inconclusive"] else c["ok"]) is state]
        name = {True: "as expected", False: "not as expected", None: "inconclusive"}[state]
        axes.scatter([c["ended_at_s"] / 60.0 for c in marks], [labels.index(soak_run_label(c)) for c in marks],
                     color=colour, s=30, label=f"{name} ({len(marks)})")
    axes.set_yticks(range(len(labels)), labels, fontsize="small")
    axes.set_ylim(-0.7, max(0.7, len(labels) - 0.3))
    axes.invert_yaxis()
    axes.set_xlabel("minutes into the soak (when each run ended)")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize="x-small", frameon=False)
    return Chart("cycles", "Every run of every cycle, where it ended.", figure)


def trend_chart(series: Sequence[dict[str, Any]], name: str = "trend") -> Chart | None:
    """Each figure over the nights (one small chart per figure, one line per run or process)."""
    figures = list(dict.fromkeys(s["figure"] for s in series))
    if not figures:
        return None
    plt = pyplot()
    columns = min(3, len(figures))
    rows = -(-len(figures) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows), squeeze=False,
                                constrained_layout=True)
    for index, name_of_figure in enumerate(figures):
        axes = grid[index // columns][index % columns]
        for line in (s for s in series if s["figure"] == name_of_figure):
            points = [(i, p["value"]) for i, p in enumerate(line["nights"]) if p["value"] is not None]
            axes.plot([i for i, _ in points], [v for _, v in points], marker="o", markersize=3, linewidth=1,
                      label=line["arm"])
        axes.set_title(name_of_figure, loc="left", fontsize="small")
        nights_shown = max(len(s["nights"]) for s in series if s["figure"] == name_of_figure)
        axes.set_xticks(range(nights_shown))
        axes.legend(fontsize="xx-small")
    for index in range(len(figures), rows * columns):
        grid[index // columns][index % columns].set_visible(False)
    return Chart(name, "Each figure night after night (the last point is the latest night).", figure)
