"""Retry schedules: the client's reconnect, the shipped bootstrap retry, and PR #68283's backoff."""

from __future__ import annotations

import pytest

from harness.policy.backoff import BootstrapRetry, BreakerSettings, client_reconnect_backoff


def test_client_reconnect_doubles_to_30s_and_resets_on_hello() -> None:
    backoff = client_reconnect_backoff()
    assert [backoff.next_delay_ms() for _ in range(7)] == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    backoff.reset()
    assert backoff.next_delay_ms() == 1000


def test_server_retry_after_is_a_floor() -> None:
    backoff = client_reconnect_backoff()
    assert backoff.next_delay_ms(floor_ms=2500) == 2500
    assert backoff.next_delay_ms(floor_ms=500) == 2000


def test_shipped_bootstrap_retries_every_second_forever() -> None:
    retry = BootstrapRetry("shipped")
    assert {retry.after_failure_ms() for _ in range(20)} == {1000}


def test_pr_68283_backoff_doubles_to_60s_with_300s_on_pairing() -> None:
    retry = BootstrapRetry("backoff")
    assert [retry.after_failure_ms() for _ in range(8)] == [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]
    retry.reset()
    assert retry.after_failure_ms() == 1000
    assert retry.after_failure_ms(pairing_required=True) == 300_000


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="one of shipped, backoff, backoff-jitter, breaker"):
        BootstrapRetry("exponential")


def test_backoff_jitter_draws_within_the_doubling_bound() -> None:
    draws = iter([1.0, 0.5, 0.25, 0.0] + [0.999] * 10)
    retry = BootstrapRetry("backoff-jitter", random=draws.__next__)
    delays = [retry.after_failure_ms() for _ in range(10)]
    assert delays[:4] == [1000, 1000, 1000, 0]  # U(0, 1 s), U(0, 2 s), U(0, 4 s), U(0, 8 s)
    assert delays[-1] == pytest.approx(0.999 * 60_000)  # the bound stops at 60 s
    retry.reset()
    assert retry.after_failure_ms() == pytest.approx(999)


def test_breaker_pauses_after_f_failures_in_a_row_and_a_success_closes_it() -> None:
    retry = BootstrapRetry("breaker", breaker=BreakerSettings(failures=3, cooldown_ms=30_000))
    assert [retry.after_failure_ms() for _ in range(7)] == [1000, 1000, 30_000, 1000, 1000, 30_000, 1000]
    retry.reset()
    assert [retry.after_failure_ms() for _ in range(3)] == [1000, 1000, 30_000]


def test_jittered_backoff_needs_a_random_source() -> None:
    with pytest.raises(ValueError, match="needs a random source"):
        BootstrapRetry("backoff-jitter")
