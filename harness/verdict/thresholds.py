"""Thresholds as data, k6-style: `metric: "OP NUMBER"` (or a verdict name), checked against summary figures.

A threshold naming an unknown metric is refused when the profile is read, not when the run ends.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

VERDICTS = ("storm", "converged", "degraded")
NUMERIC_METRICS = (
    "storm_entries", "final_window_storm_entries", "storm_entries_after_startup",
    "storm_entries_by_kind.handshake_timeout", "storm_entries_by_kind.preauth_rejected",
    "storm_entries_by_kind.connect_error", "time_to_all_connected_s", "connected_accounts_at_end",
    "handshake_attempts_total", "handshake_ms.p50", "handshake_ms.p99", "handshake_ms.max",
    "health_rpc_ms.p50", "health_rpc_ms.p99", "event_loop_lag_ms.p99", "event_loop_lag_ms.max",
    "duplicates.intents", "duplicates.intents_decided", "duplicates.prompts_total",
    "duplicates.max_prompts_per_intent", "duplicates.duplicate_prompts", "duplicates.peak_prompt_rate_per_s",
    "duplicates.pending_approvals_max", "duplicates.decisions_lost",
)
METRICS = ("verdict", *NUMERIC_METRICS)
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

    def check(self, summary: Mapping[str, Any]) -> tuple[Any, bool]:
        actual = metric_value(summary, self.metric)
        if isinstance(self.value, tuple):
            return actual, actual in self.value
        if actual is None or isinstance(actual, str):
            return actual, False
        return actual, _OPERATORS[self.op](float(actual), self.value)


def metric_value(summary: Mapping[str, Any], metric: str) -> Any:
    value: Any = summary
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def parse_threshold(metric: str, spec: Any) -> Threshold:
    if metric not in METRICS:
        raise ValueError(f"unknown metric (expected one of {', '.join(METRICS)})")
    if metric == "verdict":
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
