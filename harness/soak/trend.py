"""`harness history FILE`: the trend of a soak history's figures, printed, and drawn with `--out DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK, BadInput
from harness.report.html import write_report
from harness.soak.history import Night, nights, opened

SHOWN_NIGHTS = 14


def print_trend(path: Path, *, plan: str | None = None, figure: str | None = None, out: Path | None = None) -> int:
    if not path.is_file():
        raise BadInput(f"{path}: no such history (`harness soak --history FILE` writes one)")
    with opened(path) as connection:
        found = nights(connection, plan)
    if not found:
        raise BadInput(f"{path}: no nights recorded" + (f" for plan {plan!r}" if plan else ""))
    series = trend_rows(found, figure)
    if not series:
        raise BadInput(f"--figure: no figure {figure!r} in {path}")
    shown = found[-SHOWN_NIGHTS:]
    header = ["plan", "gateway", "run or process", "figure", *(n.night[5:] for n in shown)]
    rows = [[s["plan"], s["gateway"], s["arm"], s["figure"],
             *(_cell(v) for v in [_value(s, n) for n in shown])] for s in series]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if out is not None:
        (out / "history.json").write_text(json.dumps({"file": str(path), "series": series}, indent=2) + "\n",
                                          encoding="utf-8")
        print(f"report: {write_report(out)}")
    return EXIT_OK


def trend_rows(found: list[Night], figure: str | None = None) -> list[dict[str, Any]]:
    """One series per plan, gateway, run (or process) and figure: its value each night, oldest first."""
    series: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for night in found:
        for (arm, name), value in night.figures.items():
            if figure is None or name == figure:
                series.setdefault((night.plan, night.gateway, arm, name), []).append(
                    {"night": night.night, "soak_id": night.soak_id, "value": value})
    return [{"plan": p, "gateway": g, "arm": a, "figure": f, "nights": points}
            for (p, g, a, f), points in sorted(series.items())]


def _value(series: dict[str, Any], night: Night) -> float | None | str:
    for point in series["nights"]:
        if point["soak_id"] == night.soak_id:
            return point["value"]  # type: ignore[no-any-return]
    return ""


def _cell(value: float | None | str) -> str:
    if value == "" or value is None:
        return "-" if value is None else ""
    return f"{value:.4g}"
