"""What a soak concludes from its cycles and samples, and the files it says it in.

  soak.json   the plan, every cycle's run (verdict, expected, figures), per process role and gateway
              incarnation the growth after warm-up of its live heap and its resident memory (% per hour;
              the live heap judged where it is known, see LIVE_HEAP), descriptors and sockets (per hour) with
              95% confidence intervals, the failures, and with a history the nights compared, the trend of
              each figure and the regressions
  soak.md     the same, short, in Markdown: for a CI job summary
  junit.xml   one test case per run, per resource bound and per history check
  report.html the cycles, the resource curves with their fitted growth, the trend over nights (harness.report)
"""

from __future__ import annotations

import datetime
import json
import statistics
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK, EXIT_REGRESSION, EXIT_THRESHOLD_FAILED
from harness.report.folder import soak_run_label, soak_run_name
from harness.report.html import write_report
from harness.soak.history import Night, Regression, opened, record, regressions
from harness.soak.history import nights as read_nights
from harness.soak.plan import RUN_FIGURES, SoakPlan
from harness.soak.resources import Growth, growth

# A growth fitted over less is shown, not judged: per hour from minutes says little, and a Python process is
# still settling (its allocator, caches, the first of each kind of run) for the first 10-12 minutes of a soak.
MIN_JUDGED_S = 600.0
# A process's live heap, where its runtime says: V8's heap after its latest full collection (the real gateway,
# from Node's --trace-gc lines), CPython's allocated blocks (sys.getallocatedblocks(): the stub's /stats, the
# harness's own). Its resident memory is then shown, not judged: Node's rises and falls by hundreds of MB with
# what awaits collection (280-760 MB within minutes), and CPython's allocator keeps the arenas of its busiest
# moment (the stub's rose in steps during storms while its Python objects did not grow: tracemalloc, 10 runs).
HEAP_AFTER_GC = "heap_after_gc_mb"
ALLOCATED_BLOCKS = "python_allocated_blocks"
LIVE_HEAP = (HEAP_AFTER_GC, ALLOCATED_BLOCKS)
RESOURCES = (("rss_mb", "rss_percent_per_hour", "% per hour"),
             (HEAP_AFTER_GC, "heap_percent_per_hour", "% per hour"),
             (ALLOCATED_BLOCKS, "heap_percent_per_hour", "% per hour"),
             ("descriptors", "descriptors_per_hour", "per hour"), ("socket_total", "sockets_per_hour", "per hour"))
PERCENT_OF_START = ("rss_mb", *LIVE_HEAP)
# What follows the load is fitted on the samples taken after each run only, when nothing is in flight and each
# process's cyclic garbage has been collected: CPython's allocated blocks (a storm's connections are objects too),
# and every process's descriptors and sockets (the harness's floor rose by one account's three descriptors every
# ten minutes in a two-hour soak, sockets in CLOSE_WAIT that only CPython's cyclic collector closed, and fell
# back when it ran). V8's heap after a full collection, and resident memory, are read as they come.
AT_REST_ONLY = (ALLOCATED_BLOCKS, "descriptors", "socket_total")
NOT_JUDGED_RSS = "its live heap is judged: resident memory keeps what awaits collection or what the allocator once held"


@dataclass(frozen=True)
class SoakResult:
    out: Path
    exit_code: int
    failures: list[str]
    regressions: list[str]


def write_outputs(plan: SoakPlan, out: Path, *, cycles: list[dict[str, Any]], samples: list[dict[str, Any]],
                  started_at: datetime.datetime, history: Path | None, gateway_name: str,
                  interrupted: bool) -> SoakResult:
    fits = resource_fits(plan, samples)
    failures = [f"cycle {c['cycle']}: {soak_run_label(c)} " + (f"could not run: {c['error']}" if c.get("error") else
                f"gave {c['verdict']}, expected {c['expected']}") + f" ({c['folder']})" for c in cycles if not c["ok"]]
    failures += [fit["failure"] for fit in fits if fit.get("failure")]
    exit_code = EXIT_THRESHOLD_FAILED if failures else EXIT_OK
    figures = night_figures(cycles, samples, fits, plan)
    compared: dict[str, Any] | None = None
    found: list[Regression] = []
    if history is not None and not interrupted:
        with opened(history) as connection:
            earlier = read_nights(connection, plan.name, gateway_name, limit=plan.nights)
            tonight = Night(0, started_at.date().isoformat(), plan.name, gateway_name, figures)
            found = regressions(tonight, earlier, plan.tolerance)
            if found and exit_code == EXIT_OK:
                exit_code = EXIT_REGRESSION
            record(connection, tonight.night, started_at.isoformat(timespec="seconds"), plan.name, gateway_name,
                   len({c["cycle"] for c in cycles}), exit_code, figures)
            compared = {"file": str(history), "nights_before": [n.night for n in earlier],
                        "trend": _trend(earlier, tonight)}
    soak = {
        "plan": plan.name, "description": plan.description, "gateway": gateway_name,
        "started_at": started_at.isoformat(timespec="seconds"), "interrupted": interrupted,
        "duration_s": round(max((s["t_s"] for s in samples), default=0.0), 1), "exit_code": exit_code,
        "cycles": cycles, "arms": _arm_counts(cycles), "resources": fits, "bounds": asdict(plan.bounds),
        "warmup_s": plan.warmup_s, "failures": failures, "figures": [
            {"arm": arm, "figure": figure, "value": value} for (arm, figure), value in sorted(figures.items())],
        "history": compared, "regressions": [r.line() for r in found],
    }
    (out / "soak.json").write_text(json.dumps(soak, indent=2) + "\n", encoding="utf-8")
    (out / "soak.md").write_text(markdown(soak) + "\n", encoding="utf-8")
    _junit(out / "junit.xml", soak)
    write_report(out)
    return SoakResult(out, exit_code, failures, [r.line() for r in found])


def resource_fits(plan: SoakPlan, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process role and incarnation (a restarted gateway is a new one), the growth of each resource over the
    samples after warm-up, and the bound it breaks, if any."""
    series: dict[tuple[str, int], list[tuple[float, dict[str, Any]]]] = {}
    for sample in samples:
        for role, row in sample["processes"].items():
            if row is not None and sample["t_s"] - row["started_at_s"] >= plan.warmup_s:
                series.setdefault((role, row["incarnation"]), []).append(
                    (sample["t_s"], {**row, "at_rest": sample.get("at_rest", False)}))
    fits = []
    bounds = asdict(plan.bounds)
    for (role, incarnation), points in sorted(series.items()):
        live_heap = any(row.get(key) is not None for _, row in points for key in LIVE_HEAP)
        for key, name, unit in RESOURCES:
            measured = [(t, row[key]) for t, row in points if row.get(key) is not None
                        and (row["at_rest"] or key not in AT_REST_ONLY)]
            fitted = growth([t for t, _ in measured], [value for _, value in measured]) if measured else None
            if fitted is None:
                continue
            shown = fitted.percent_per_hour() if key in PERCENT_OF_START else fitted
            entry: dict[str, Any] = {"role": role, "incarnation": incarnation, "resource": name, "unit": unit,
                                     **_rounded(shown), "bound": bounds[name], "sampled": key,
                                     "line": {"from_s": fitted.from_s, "to_s": fitted.to_s,
                                              "per_hour": fitted.per_hour, "intercept": fitted.intercept}}
            entry["judged"] = fitted.to_s - fitted.from_s >= MIN_JUDGED_S and not (key == "rss_mb" and live_heap)
            if key == "rss_mb" and live_heap:
                entry["not_judged"] = NOT_JUDGED_RSS
            if entry["judged"] and shown.exceeds(bounds[name]) and _steady(fitted, key):
                entry["failure"] = (f"{role} (incarnation {incarnation}): {name.replace('_per_hour', '')} grew "
                                    f"{shown.per_hour:.3g} {unit} [{shown.low:.3g}, {shown.high:.3g}] after warm-up, "
                                    f"over {shown.hours:.2f} h; bound {bounds[name]:g}")
            fits.append(entry)
    return fits


def _steady(fitted: Growth, key: str) -> bool:
    """Memory is judged by its slope; a count must also have grown by a whole item over the span fitted."""
    return key in PERCENT_OF_START or fitted.per_hour * fitted.hours >= 1.0


def _rounded(fit: Growth) -> dict[str, Any]:
    return {"per_hour": round(fit.per_hour, 4), "low": round(fit.low, 4), "high": round(fit.high, 4),
            "samples": fit.samples, "hours": round(fit.hours, 4), "start": round(fit.start, 3)}


def night_figures(cycles: list[dict[str, Any]], samples: list[dict[str, Any]], fits: list[dict[str, Any]],
                  plan: SoakPlan) -> dict[tuple[str, str], float | None]:
    """What the history keeps of tonight: per run/arm the median of each figure over its conclusive runs and
    the share of runs as expected; per process role its median memory after warm-up and its worst growths."""
    figures: dict[tuple[str, str], float | None] = {}
    for arm, runs in _by_arm(cycles).items():
        conclusive = [c for c in runs if not c["inconclusive"]]
        for name in RUN_FIGURES:
            values = [v for c in conclusive if (v := c["figures"].get(name)) is not None]
            if values:
                figures[(arm, name)] = float(statistics.median(values))
        figures[(arm, "runs_as_expected")] = sum(c["ok"] for c in runs) / len(runs)
    for fit in fits:
        key = (f"resource/{fit['role']}", fit["resource"])
        figures[key] = max(figures.get(key) or fit["per_hour"], fit["per_hour"])
    memory: dict[str, list[float]] = {}
    for sample in samples:
        for role, row in sample["processes"].items():
            if row is not None and sample["t_s"] - row["started_at_s"] >= plan.warmup_s:
                memory.setdefault(role, []).append(row["rss_mb"])
    for role, values in memory.items():
        figures[(f"resource/{role}", "rss_mb")] = float(statistics.median(values))
    return figures


def _by_arm(cycles: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for cycle in cycles:
        grouped.setdefault(soak_run_label(cycle), []).append(cycle)
    return grouped


def _arm_counts(cycles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"arm": arm, "runs": len(runs), "as_expected": sum(c["ok"] and not c["inconclusive"] for c in runs),
             "inconclusive": sum(c["inconclusive"] for c in runs), "failed": sum(not c["ok"] for c in runs),
             "verdicts": dict(Counter(c["verdict"] for c in runs)), "expected": runs[0]["expected"]}
            for arm, runs in _by_arm(cycles).items()]


def _trend(earlier: Sequence[Night], tonight: Night) -> list[dict[str, Any]]:
    keys = sorted(set(tonight.figures) | {k for night in earlier for k in night.figures})
    return [{"arm": arm, "figure": figure,
             "nights": [{"night": n.night, "value": n.figures.get((arm, figure))} for n in [*earlier, tonight]]}
            for arm, figure in keys]


def markdown(soak: Mapping[str, Any]) -> str:
    state = "interrupted" if soak["interrupted"] else ("passed" if soak["exit_code"] == EXIT_OK else "FAILED")
    lines = [f"### Soak `{soak['plan']}` against {soak['gateway']}: {state}", "",
             f"{soak['duration_s'] / 60:.1f} minutes, {len({c['cycle'] for c in soak['cycles']})} cycles, "
             f"started {soak['started_at']}.", "",
             "| run | runs | as expected | inconclusive | failed | verdicts |", "|---|---|---|---|---|---|"]
    for arm in soak["arms"]:
        verdicts = ", ".join(f"{v} {n}" for v, n in sorted(arm["verdicts"].items()))
        lines.append(f"| {arm['arm']} (expect {arm['expected']}) | {arm['runs']} | {arm['as_expected']} | "
                     f"{arm['inconclusive']} | {arm['failed']} | {verdicts} |")
    lines += ["", "| process | growth after warm-up | 95% interval | bound | samples |", "|---|---|---|---|---|"]
    for fit in soak["resources"]:
        mark = " **over**" if fit.get("failure") else ("" if fit["judged"] else
                                                       f" ({fit.get('not_judged') or 'too short to judge'})")
        lines.append(f"| {fit['role']} #{fit['incarnation']} {fit['resource']} | {fit['per_hour']:.3g} {fit['unit']}"
                     f"{mark} | [{fit['low']:.3g}, {fit['high']:.3g}] | {fit['bound']:g} | {fit['samples']} |")
    compared = soak.get("history")
    if compared:
        lines += ["", f"Against the previous {len(compared['nights_before'])} nights (median; tonight last):", "",
                  "| run or process | figure | earlier nights | tonight |", "|---|---|---|---|"]
        for row in compared["trend"]:
            values = [n["value"] for n in row["nights"]]
            before = [v for v in values[:-1] if v is not None]
            median = f"{statistics.median(before):.4g}" if before else "-"
            tonight = "-" if values[-1] is None else f"{values[-1]:.4g}"
            lines.append(f"| {row['arm']} | {row['figure']} | {median} | {tonight} |")
    for line in soak["failures"] + soak["regressions"]:
        lines.append(f"- {line}")
    return "\n".join(lines)


def _junit(path: Path, soak: Mapping[str, Any]) -> None:
    """JUnit XML through ElementTree: a test case per run, per resource fit and per regression check."""
    suite = ElementTree.Element("testsuite", name=f"soak {soak['plan']} ({soak['gateway']})")
    cases = 0
    failed = 0
    for cycle in soak["cycles"]:
        case = ElementTree.SubElement(suite, "testcase", classname=f"soak.{soak_run_name(cycle)}",
                                      name=f"cycle {cycle['cycle']} {cycle['arm']}")
        cases += 1
        if cycle["inconclusive"]:
            ElementTree.SubElement(case, "skipped", message=f"inconclusive: {cycle['inconclusive_reason']}")
        elif not cycle["ok"]:
            failed += 1
            ElementTree.SubElement(case, "failure", message=f"verdict {cycle['verdict']}, expected {cycle['expected']}")
    for fit in soak["resources"]:
        case = ElementTree.SubElement(suite, "testcase", classname=f"soak.resources.{fit['role']}",
                                      name=f"{fit['resource']} (incarnation {fit['incarnation']})")
        cases += 1
        if fit.get("failure"):
            failed += 1
            ElementTree.SubElement(case, "failure", message=fit["failure"])
        elif not fit["judged"]:
            ElementTree.SubElement(case, "skipped", message=fit.get("not_judged") or "too short to judge")
    if soak.get("history") is not None:
        case = ElementTree.SubElement(suite, "testcase", classname="soak.history", name="no regression")
        cases += 1
        if soak["regressions"]:
            failed += 1
            ElementTree.SubElement(case, "failure", message="; ".join(soak["regressions"]))
    suite.set("tests", str(cases))
    suite.set("failures", str(failed))
    ElementTree.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
