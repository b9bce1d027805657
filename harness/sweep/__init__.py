"""`harness sweep SPEC`: a grid of simulated runs across every core, resumable, and what it recommends.

Each cell of the spec's grid (accounts x host speed x arm x the coordinator's J, K and H) runs once per seed
in the simulator (`harness.sim`), in worker processes (`multiprocessing`, one per core). Every finished run is
appended to `cells.jsonl` in the results folder at once, so Ctrl-C (or a kill) keeps what is done and the
same command resumes without redoing it. At the end it writes:

  sweep.csv            one row per cell and seed: the cell's settings and every summary figure
  sweep.json           the spec, and per cell: safe or not, storm probability, p95 time to all connected
  recommendation.json  the recommended J and K per account count, one default, and PR #70649's reach
  report.html          the recommendation and, per account count, J x K maps of storm probability and p95 time
                       (harness.report), also as charts/accounts-N.png and .svg
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import BadInput
from harness.report.progress import Progress
from harness.sweep.cells import COLUMNS, Cell, cells, run_cell
from harness.sweep.recommend import aggregate, recommend
from harness.sweep.spec import SweepSpec, spec_runs

__all__ = ["SweepResult", "run_sweep", "write_outputs"]

JOURNAL = "cells.jsonl"
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class SweepResult:
    out: Path
    runs: int
    recommendation: dict[str, Any]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep: the finished runs are kept in the journal."""


_SPEC: SweepSpec | None = None


def _use_spec(spec: SweepSpec) -> None:
    global _SPEC
    _SPEC = spec


def _worker_start(spec: SweepSpec) -> None:
    _use_spec(spec)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool; a worker never sees Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _work(task: tuple[Cell, int]) -> dict[str, Any]:
    assert _SPEC is not None
    cell, seed = task
    return run_cell(_SPEC, cell, seed)


def run_sweep(spec: SweepSpec, out: Path, *, workers: int | None = None,
              progress_stream: IO[str] = sys.stderr) -> SweepResult:
    out.mkdir(parents=True, exist_ok=True)
    rows = _journal_rows(out / JOURNAL, spec)
    done = {(row["cell"], row["seed"]) for row in rows}
    grid = list(cells(spec))
    tasks = [(cell, seed) for cell in grid for seed in spec.seeds if (cell.index, seed) not in done]
    total = spec_runs(spec)
    progress = Progress(progress_stream, every_s=10.0)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    started = time.monotonic()
    if done:
        progress.done(f"sweep {spec.name}: {len(done)} of {total} runs already in {out / JOURNAL}, resuming")
    with (out / JOURNAL).open("a", encoding="utf-8") as journal:
        if not rows:
            journal.write(json.dumps({"fingerprint": spec.fingerprint()}) + "\n")
        try:
            for finished, row in enumerate(_results(spec, tasks, workers), start=1):
                journal.write(json.dumps(row) + "\n")
                journal.flush()
                rows.append(row)
                _show(progress, spec, len(rows), total, finished, len(tasks), time.monotonic() - started)
        except KeyboardInterrupt:
            progress.done(f"sweep {spec.name}: interrupted after {len(rows)} of {total} runs; they are kept in "
                          f"{out / JOURNAL}, and the same command resumes")
            raise
    progress.done(f"sweep {spec.name}: {total} runs in {time.monotonic() - started:.1f} s on {workers} "
                  f"worker{'s' if workers > 1 else ''}")
    recommendation = write_outputs(spec, out, rows)
    return SweepResult(out, total, recommendation)


def _results(spec: SweepSpec, tasks: list[tuple[Cell, int]], workers: int) -> Iterable[dict[str, Any]]:
    if workers == 1:
        _use_spec(spec)
        for task in tasks:
            yield _work(task)
        return
    context = multiprocessing.get_context("fork")  # the parent holds no threads, sockets or gevent here
    pool = context.Pool(workers, initializer=_worker_start, initargs=(spec,))
    try:
        chunk = max(1, min(8, len(tasks) // (workers * 64)))  # small: a 64-account storm cell takes seconds
        yield from pool.imap_unordered(_work, tasks, chunksize=chunk)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _show(progress: Progress, spec: SweepSpec, have: int, total: int, finished: int, todo: int,
          elapsed_s: float) -> None:
    left_s = elapsed_s / finished * (todo - finished)
    progress.update(f"sweep {spec.name}: {have}/{total} runs ({100 * have / total:.0f}%), {elapsed_s:.0f} s elapsed, "
                    f"about {left_s:.0f} s left")


def _journal_rows(path: Path, spec: SweepSpec) -> list[dict[str, Any]]:
    """The runs a previous sweep of the same spec finished; `BadInput` when the folder holds another spec's."""
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as journal:
        lines = journal.read().splitlines()
    if not lines:
        return []
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = {}
    if header.get("fingerprint") != spec.fingerprint():
        raise BadInput(f"--out: {path} holds the runs of another sweep (its spec or base profile differ); "
                       "choose another folder")
    for line in lines[1:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the last line of a killed sweep may be cut short: it is run again
    return rows


def write_outputs(spec: SweepSpec, out: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """sweep.csv, sweep.json, recommendation.json and the report with its heatmaps, from the runs (in any order)."""
    from harness.report.html import write_report  # matplotlib and Jinja2: only once the runs are done

    rows = sorted(rows, key=lambda r: (r["cell"], r["seed"]))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in COLUMNS})
    (out / "sweep.csv").write_text(text.getvalue(), encoding="utf-8")
    cell_figures = aggregate(spec, rows)
    recommendation = recommend(spec, cell_figures)
    sweep = {"name": spec.name, "description": spec.description, "spec": str(spec.path),
             "base": str(spec.base.path), "duration_s": spec.duration_s, "seeds": list(spec.seeds),
             "axes": {"accounts": list(spec.accounts), "host_speed": list(spec.host_speeds), "arm": list(spec.arms),
                      **{name: ["unlimited" if value is None else value for value in values]
                         for name, values in spec.params.items()}},
             "safe_host_speeds": list(spec.safe_host_speeds), "runs": len(rows), "cells": cell_figures}
    (out / "sweep.json").write_text(json.dumps(sweep, indent=2) + "\n", encoding="utf-8")
    (out / "recommendation.json").write_text(json.dumps(recommendation, indent=2) + "\n", encoding="utf-8")
    write_report(out)
    return recommendation
