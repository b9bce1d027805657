"""A repeat's distribution: one arm run several times, as verdict counts and the spread of every figure."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from harness.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_THRESHOLD_FAILED
from harness.summary import SCHEMA_VERSION, Distribution, FigureSpread, Summary, metric_value, metrics
from harness.verdict.thresholds import Threshold, check_distribution


def distribution(runs: Sequence[Summary], thresholds: Sequence[Threshold]) -> Distribution:
    """Over `runs` (one arm, any number of seeds): thresholds over the conclusive ones only."""
    first = runs[0]
    conclusive = [run for run in runs if run.verdict != "inconclusive"]
    return Distribution(
        schema_version=SCHEMA_VERSION, profile=first.profile, arm=first.arm, repeats=len(runs),
        seeds=[run.seed for run in runs], verdicts=dict(Counter(run.verdict for run in runs)),
        conclusive=len(conclusive), runs_passed=sum(1 for run in conclusive if run.passed),
        figures={metric: _spread(conclusive, metric) for metric in metrics() if metric != "verdict"},
        thresholds=check_distribution(conclusive, thresholds),
    )


def _spread(runs: Sequence[Summary], metric: str) -> FigureSpread:
    values = [float(v) for run in runs if isinstance(v := metric_value(run, metric), int | float)]
    if not values:
        return FigureSpread(median=None, min=None, max=None, nulls=len(runs))
    return FigureSpread(median=round(statistics.median(values), 3), min=round(min(values), 3),
                        max=round(max(values), 3), nulls=len(runs) - len(values))


def exit_code(distributions: Sequence[Distribution]) -> int:
    """The command's exit code: 1 when an arm failed a threshold (a per-run one in a conclusive run, or one over
    the distribution); else 4 when an arm had no conclusive run (the host, not the gateway, decided it); else 0."""
    judged = [d for d in distributions if d.conclusive]
    if not all(d.passed for d in judged):
        return EXIT_THRESHOLD_FAILED
    return EXIT_OK if len(judged) == len(distributions) else EXIT_INCONCLUSIVE
