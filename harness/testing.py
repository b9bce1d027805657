"""Assertions on harness results for a gateway developer's tests, with failure messages to act on.

Each raises `AssertionError` whose message is `result.explain()`: the verdict, the failed thresholds with their
values, up to five witnesses (account, time, kind, close code) and the results folder. A result the host was too
busy to judge (`inconclusive`) is neither a pass nor a failure: under pytest the test is skipped with the reason.
"""

from __future__ import annotations

from harness.api import CompareResult, RunResult

__all__ = ["assert_no_storm", "assert_one_prompt_per_intent", "assert_passed", "assert_storm"]


def _skip_if_inconclusive(result: RunResult) -> None:
    if result.verdict == "inconclusive":
        import pytest

        pytest.skip(f"the host was too busy for a verdict: {result.summary.inconclusive_reason}")


def assert_no_storm(result: RunResult) -> None:
    """Every account connected and no storm entry after the startup window (verdict `converged`)."""
    _skip_if_inconclusive(result)
    if result.verdict != "converged" or result.summary.storm_entries_after_startup:
        raise AssertionError(f"expected no storm (verdict converged)\n{result.explain()}")


def assert_storm(result: RunResult) -> None:
    """Storm entries continued into the final window (verdict `storm`): the bug, reproduced."""
    _skip_if_inconclusive(result)
    if result.verdict != "storm":
        raise AssertionError(f"expected a storm\n{result.explain()}")


def assert_passed(result: RunResult | CompareResult) -> None:
    """Every threshold of the profile met."""
    runs = [result] if isinstance(result, RunResult) else list(result.arms.values())
    for run in runs:
        _skip_if_inconclusive(run)
    if not result.passed:
        raise AssertionError(f"a threshold failed\n{result.explain()}")


def assert_one_prompt_per_intent(result: RunResult) -> None:
    """openclaw#69478: each intent (one run's exec call) was prompted once, and no decision was lost."""
    _skip_if_inconclusive(result)
    duplicates = result.summary.duplicates
    if duplicates is None:
        raise AssertionError(f"the run had no approval scenario (agents)\n{result.explain()}")
    if duplicates.max_prompts_per_intent > 1 or duplicates.decisions_lost:
        raise AssertionError(f"expected one prompt per intent: up to {duplicates.max_prompts_per_intent} prompts per "
                             f"intent, {duplicates.decisions_lost} decisions lost\n{result.explain()}")
