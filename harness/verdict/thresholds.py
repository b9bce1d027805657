"""Thresholds as data, k6-style, checked against one run's summary or against a repeat's distribution.

Per run (checked in every run's summary):
    verdict: storm                      (or a list of verdicts)
    storm_entries_after_startup: "== 0" (operators < <= == != >= >; a bare number means ==)
Over the runs of a repeat (`--repeat N`; a single run is a repeat of one):
    verdict: "converged in >= 9/10"     the share of conclusive runs with that verdict (or "a or b in …")
    time_to_all_connected_s: "median < 30"   median, min or max over the conclusive runs' values
A metric is a figure of `harness.summary.Summary` by dotted path (`handshake_ms.p99`); a threshold naming a
figure that does not exist, or one that is not a number, is refused when the profile is read, not when the
run ends.
"""

from __future__ import annotations

import difflib
import operator
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.summary import VERDICTS, MetricValue, Summary, ThresholdResult, metric_field, metric_value, metrics

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_OP = r"(<=|>=|==|!=|<|>)"
_EXPRESSION = re.compile(rf"\s*{_OP}\s*{_NUMBER}\s*")
_STAT_EXPRESSION = re.compile(rf"\s*(median|min|max)\s*{_OP}\s*{_NUMBER}\s*")
_SHARE_EXPRESSION = re.compile(rf"\s*([a-z]+(?:\s+or\s+[a-z]+)*)\s+in\s+{_OP}\s*(\d+)\s*/\s*(\d+)\s*")
_STATS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median, "min": min, "max": max}


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # an operator for numbers; "in" for verdicts
    value: float | tuple[str, ...]  # the number, or the verdicts
    over: Literal["run", "distribution"] = "run"
    stat: str | None = None  # a distribution's median, min or max
    share: float | None = None  # a distribution's share of runs with one of `value`'s verdicts
    text: str = ""  # as the profile wrote it, for distribution thresholds

    def describe(self) -> str:
        if self.over == "distribution":
            return self.text
        if isinstance(self.value, tuple):
            return " or ".join(self.value)
        return f"{self.op} {self.value:g}"

    def check(self, summary: Summary) -> tuple[MetricValue, bool]:
        actual = metric_value(summary, self.metric)
        if isinstance(self.value, tuple):
            return actual, actual in self.value
        if actual is None or isinstance(actual, str):
            return actual, False
        return actual, _OPERATORS[self.op](float(actual), self.value)

    def check_distribution(self, runs: Sequence[Summary]) -> tuple[MetricValue, bool]:
        """Over conclusive runs; with none there is nothing to meet a threshold."""
        if not runs:
            return None, False
        if isinstance(self.value, tuple):
            assert self.share is not None
            share = sum(1 for run in runs if run.verdict in self.value) / len(runs)
            return round(share, 4), _OPERATORS[self.op](share, self.share)
        assert self.stat is not None
        values = [float(v) for run in runs if isinstance(v := metric_value(run, self.metric), int | float)]
        if len(values) < len(runs):
            return None, False  # a run without a value (e.g. never all connected) cannot meet it
        actual = _STATS[self.stat](values)
        return round(actual, 3), _OPERATORS[self.op](actual, self.value)


def check_thresholds(summary: Summary, thresholds: Sequence[Threshold]) -> list[ThresholdResult]:
    return [_result(t, *t.check(summary)) for t in thresholds if t.over == "run"]


def check_distribution(runs: Sequence[Summary], thresholds: Sequence[Threshold]) -> list[ThresholdResult]:
    return [_result(t, *t.check_distribution(runs)) for t in thresholds if t.over == "distribution"]


def _result(threshold: Threshold, actual: MetricValue, passed: bool) -> ThresholdResult:
    return ThresholdResult(metric=threshold.metric, threshold=threshold.describe(), value=actual, passed=passed)


def parse_threshold(metric: str, spec: Any) -> Threshold:
    kind = metric_field(metric)
    if kind is None:
        close = difflib.get_close_matches(metric, metrics(), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ValueError(f"unknown metric ({hint}the README's Thresholds section lists every metric)")
    if kind == "verdict":
        return _verdict_threshold(spec)
    if isinstance(spec, bool) or not isinstance(spec, int | float | str):
        raise ValueError(f"expected a threshold like \"<= 0\" or a number, got {_cut(spec)}")
    if isinstance(spec, int | float):
        return Threshold(metric, "==", float(spec))
    if match := _EXPRESSION.fullmatch(spec):
        return Threshold(metric, match.group(1), float(match.group(2)))
    if match := _STAT_EXPRESSION.fullmatch(spec):
        return Threshold(metric, match.group(2), float(match.group(3)), "distribution", stat=match.group(1),
                         text=spec.strip())
    raise ValueError(f"expected a threshold like \"<= 0\" or \"median < 30\" (operators < <= == != >= >), "
                     f"got {_cut(spec)}")


def _verdict_threshold(spec: Any) -> Threshold:
    if isinstance(spec, str) and (match := _SHARE_EXPRESSION.fullmatch(spec)):
        names = tuple(name.strip() for name in match.group(1).split(" or "))
        runs, out_of = int(match.group(3)), int(match.group(4))
        if not 0 <= runs <= out_of or out_of == 0:
            raise ValueError(f"expected a share like 9/10 (0 <= runs <= repeats, repeats > 0), got {_cut(spec)}")
        _check_verdicts(names)
        return Threshold("verdict", match.group(2), names, "distribution", share=runs / out_of, text=spec.strip())
    names = tuple(spec) if isinstance(spec, list) else (spec,)
    _check_verdicts(names)
    return Threshold("verdict", "in", tuple(str(name) for name in names))


def _check_verdicts(names: tuple[Any, ...]) -> None:
    for name in names:
        if name not in VERDICTS:
            raise ValueError(f"expected a verdict ({', '.join(VERDICTS)}) or a list of them, or a share like "
                             f"\"converged in >= 9/10\", got {_cut(name)}")


def _cut(value: Any, limit: int = 60) -> str:
    """A value as an error line may show it: its repr, cut to `limit` characters."""
    text = repr(value) if not isinstance(value, dict | list) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
