"""report.html: one self-contained page per results folder (run, compare or sweep), written with Jinja2.

No network, no CDN, no external fonts or scripts: the charts are inline SVG (`harness.report.charts`), the
style is in the page, and the only links are relative ones to the files beside it (CSVs, summary.json, the
charts' PNG and SVG in `charts/`). `write_report(folder)` needs nothing but the folder, so `harness report DIR`
builds it again later, and the run, compare and sweep commands call it when they finish.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness.report.charts import (
    Chart,
    cycles_chart,
    prompts_chart,
    resources_chart,
    swimlane_chart,
    timeline_chart,
    trend_chart,
)
from harness.report.folder import RunFolder, folder_kind, read_json, read_jsonl, read_run_folder
from harness.report.heatmaps import heatmap_charts
from harness.report.recommendation import render_recommendation
from harness.report.table import render, render_distributions
from harness.summary import Summary

REPORT = "report.html"
CHARTS = "charts"
VERDICT_STYLE = {"converged": "good", "recovered": "warn", "degraded": "warn", "storm": "bad",
                 "inconclusive": "unknown"}

_templates = jinja2.Environment(loader=jinja2.PackageLoader("harness.report", "templates"),
                                autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                                trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class ShownChart:
    name: str
    caption: str
    svg: str


def write_report(root: Path) -> Path:
    """Write `report.html` (and `charts/`) into a results folder; for a compare also compare.md and
    compare.txt. Returns the report's path."""
    kind = folder_kind(root)
    pages = {"sweep": _sweep_page, "soak": _soak_page, "history": _history_page}
    page = pages[kind](root) if kind in pages else _run_page(read_run_folder(root))
    path = root / REPORT
    path.write_text(_templates.get_template("report.html.j2").render(**page), encoding="utf-8")
    return path


def _run_page(run: RunFolder) -> dict[str, Any]:
    summaries = [a.summary for a in run.arms]
    charts = [timeline_chart(run.arms), swimlane_chart(run.arms)]
    prompts = prompts_chart(run.arms)
    if prompts is not None:
        charts.append(prompts)
    title = f"{run.profile}: {' vs '.join(s.arm for s in summaries)}"
    links = [(f"{a.folder.relative_to(run.root).as_posix()}/{name}" if a.folder != run.root else name)
             for a in run.arms for name in a.files]
    links += [name for name in ("compare.json", "compare.md", "compare.txt") if (run.root / name).is_file()]
    links += [(a.folder.parent / "distribution.json").relative_to(run.root).as_posix() for a in run.arms
              if a.folder.name.startswith("run-") and (a.folder.parent / "distribution.json").is_file()]
    return {
        **_common(run.root, title),
        "kind": run.kind, "arms": [_arm_view(a.summary, a.folder, run.root, _spread_of(run, a.summary.arm))
                                   for a in run.arms],
        "table": render(summaries, "figures"),
        "distribution_table": render_distributions(run.distributions, f"{run.runs_per_arm} runs per arm")
        if run.distributions else None,
        "runs_per_arm": run.runs_per_arm,
        "intents": [(a.summary.arm, a.intents) for a in run.arms if a.intents],
        "charts": _shown(charts, run.root),
        "links": links,
    }


def _sweep_page(root: Path) -> dict[str, Any]:
    sweep = read_json(root / "sweep.json")
    recommendation = read_json(root / "recommendation.json")
    charts = heatmap_charts(sweep, recommendation)
    return {
        **_common(root, f"sweep {sweep.get('name', root.name)}"),
        "kind": "sweep",
        "sweep": {"description": sweep.get("description", ""), "runs": sweep.get("runs"),
                  "axes": sweep.get("axes", {}), "objective": recommendation.get("objective", ""),
                  "per_accounts": recommendation.get("per_accounts", []),
                  "recommendation_text": render_recommendation(recommendation)},
        "charts": _shown(charts, root),
        "links": [name for name in ("sweep.csv", "sweep.json", "recommendation.json", "verify.json")
                  if (root / name).is_file()],
    }


def _soak_page(root: Path) -> dict[str, Any]:
    soak = read_json(root / "soak.json")
    charts = [cycles_chart(soak.get("cycles", [])),
              resources_chart(read_jsonl(root / "samples.jsonl"), soak.get("resources", []), soak.get("warmup_s", 0))]
    trend = trend_chart((soak.get("history") or {}).get("trend", []))
    if trend is not None:
        charts.append(trend)
    links = [name for name in ("soak.json", "soak.md", "junit.xml", "samples.jsonl", "cycles.jsonl")
             if (root / name).is_file()]
    links += [f"{c['folder']}/summary.json" for c in soak.get("cycles", [])[:500]
              if (root / c["folder"] / "summary.json").is_file()]
    return {**_common(root, f"soak {soak.get('plan')} against {soak.get('gateway')}"), "kind": "soak",
            "soak": soak, "charts": _shown(charts, root), "links": links}


def _history_page(root: Path) -> dict[str, Any]:
    history = read_json(root / "history.json")
    trend = trend_chart(history.get("series", []))
    return {**_common(root, f"soak history {history.get('file', '')}"), "kind": "history",
            "charts": _shown([trend] if trend is not None else [], root), "links": ["history.json"]}


def _common(root: Path, title: str) -> dict[str, Any]:
    return {"title": title, "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "folder": str(root), "sweep": None, "soak": None, "arms": [], "table": None, "distribution_table": None,
            "runs_per_arm": 1, "intents": []}


def _shown(charts: list[Chart], root: Path) -> list[ShownChart]:
    shown = []
    for chart in charts:
        chart.save(root / CHARTS)
        shown.append(ShownChart(chart.name, chart.caption, chart.inline_svg()))
        chart.close()
    return shown


def _spread_of(run: RunFolder, arm: str) -> str | None:
    """"storm 3/3" over a repeat's runs, for the arm's banner."""
    for spread in run.distributions:
        if spread.arm == arm:
            return ", ".join(f"{v} {n}/{spread.repeats}" for v, n in sorted(spread.verdicts.items(),
                                                                           key=lambda item: -item[1]))
    return None


def _arm_view(summary: Summary, folder: Path, root: Path, over_runs: str | None) -> dict[str, Any]:
    return {"over_runs": over_runs,
        "arm": summary.arm, "verdict": summary.verdict, "style": VERDICT_STYLE.get(summary.verdict, "unknown"),
        "observed": summary.observed_verdict, "inconclusive_reason": summary.inconclusive_reason,
        "passed": summary.passed, "thresholds": summary.thresholds, "witnesses": summary.witnesses,
        "storm_entries": summary.storm_entries, "connected": summary.connected_accounts_at_end,
        "accounts": summary.accounts, "time_to_all_connected_s": summary.time_to_all_connected_s,
        "faults": summary.faults, "target": summary.target.kind, "seed": summary.seed,
        "time_scale": summary.time_scale, "duration_s": summary.duration_s,
        "path": "" if folder == root else folder.relative_to(root).as_posix() + "/",
    }
