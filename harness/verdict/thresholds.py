"""Thresholds as data, k6-style: `metric: "OP NUMBER"` (or a verdict name), checked against a summary.

A metric is a figure of `harness.summary.Summary` by dotted path (`handshake_ms.p99`); a threshold naming a
figure that does not exist, or one that is not a number, is refused when the profile is read, not when the
run ends.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.summary import VERDICTS, MetricValue, Summary, ThresholdResult, metric_field, metric_value, metrics

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt,
}
_EXPRESSION = re.compile(r"\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*")


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str  # an operator for numbers; "in" for verdicts
    value: float | tuple[str, ...]

    def describe(self) -> str:
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


def check_thresholds(summary: Summary, thresholds: Sequence[Threshold]) -> list[ThresholdResult]:
    results = []
    for threshold in thresholds:
        actual, passed = threshold.check(summary)
        results.append(ThresholdResult(metric=threshold.metric, threshold=threshold.describe(), value=actual,
                                       passed=passed))
    return results


def parse_threshold(metric: str, spec: Any) -> Threshold:
    kind = metric_field(metric)
    if kind is None:
        raise ValueError(f"unknown metric (expected one of {', '.join(metrics())})")
    if kind == "verdict":
        names = tuple(spec) if isinstance(spec, list) else (spec,)
        for name in names:
            if name not in VERDICTS:
                raise ValueError(f"expected a verdict ({', '.join(VERDICTS)}) or a list of them, got {name!r}")
        return Threshold(metric, "in", names)
    if isinstance(spec, bool) or not isinstance(spec, (int, float, str)):
        raise ValueError(f"expected a threshold like \"<= 0\" or a number, got {spec!r}")
    if isinstance(spec, (int, float)):
        return Threshold(metric, "==", float(spec))
    match = _EXPRESSION.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected a threshold like \"<= 0\" (operators < <= == != >= >), got {spec!r}")
    return Threshold(metric, match.group(1), float(match.group(2)))
