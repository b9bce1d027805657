"""The PR #70649 start coordinator, driven in virtual time (no sleeps)."""

from __future__ import annotations

import pytest

from harness.policy.coordinator import (
    DEFAULT_MAX_CONCURRENT_STARTS,
    DEFAULT_START_JITTER_MS,
    DEFAULT_START_SLOT_MAX_HOLD_MS,
    ENV_MAX_CONCURRENT_STARTS,
    ENV_START_JITTER_MS,
    ENV_START_SLOT_MAX_HOLD_MS,
    CoordinatorSettings,
    StartCoordinator,
    parse_setting,
)


def coordinator(k: int = 3, jitter_ms: int = 2000, hold_ms: int = 30_000, rng: float = 0.5) -> StartCoordinator:
    return StartCoordinator(CoordinatorSettings(jitter_ms, k, hold_ms), random=lambda: rng)


def test_defaults_are_the_prs() -> None:
    settings = CoordinatorSettings.from_env({})
    assert (settings.start_jitter_ms, settings.max_concurrent_starts, settings.start_slot_max_hold_ms) == (
        2000, 3, 30_000)


@pytest.mark.parametrize("raw", ["100ms", "3.5", " 250 ", "7x", "", "-1", "+5", "abc"])
def test_env_parsing_rejects_anything_but_whole_digits(raw: str) -> None:
    settings = CoordinatorSettings.from_env(
        {ENV_START_JITTER_MS: raw, ENV_MAX_CONCURRENT_STARTS: raw, ENV_START_SLOT_MAX_HOLD_MS: raw})
    assert settings == CoordinatorSettings(DEFAULT_START_JITTER_MS, DEFAULT_MAX_CONCURRENT_STARTS,
                                           DEFAULT_START_SLOT_MAX_HOLD_MS)


def test_env_parsing_accepts_digits_and_applies_minimums() -> None:
    settings = CoordinatorSettings.from_env(
        {ENV_START_JITTER_MS: "0", ENV_MAX_CONCURRENT_STARTS: "5", ENV_START_SLOT_MAX_HOLD_MS: "1500"})
    assert settings == CoordinatorSettings(0, 5, 1500)
    assert parse_setting("0", default=3, minimum=1) == 3  # 0 is invalid for K and H
    assert parse_setting("0", default=2000, minimum=0) == 0  # 0 disables jitter


def test_jitter_only_on_first_start_of_a_generation() -> None:
    c = coordinator(jitter_ms=2000, rng=0.25)
    assert c.jitter_ms(first_start_of_generation=True) == 500
    assert c.jitter_ms(first_start_of_generation=False) == 0


def test_jitter_clamps_below_j_when_rng_returns_one() -> None:
    c = coordinator(jitter_ms=2000, rng=1.0)
    delay = c.jitter_ms(first_start_of_generation=True)
    assert 0 <= delay < 2000


def test_zero_jitter_disables_it() -> None:
    assert coordinator(jitter_ms=0, rng=0.9).jitter_ms(first_start_of_generation=True) == 0


def test_k1_drains_three_bootstraps_fifo_with_one_in_flight() -> None:
    c = coordinator(k=1)
    waiters = [c.acquire(f"acct{i}", 1, now_ms=i) for i in range(3)]
    assert [w.grant is not None for w in waiters] == [True, False, False]
    order = [waiters[0].account]
    now = 10.0
    for expected_next in ("acct1", "acct2"):
        assert c.statistics().borrowed == 1
        holder = next(w for w in waiters if w.grant and not w.grant.released)
        handed = c.release(holder.grant, now_ms=now)  # type: ignore[arg-type]
        assert [w.account for w in handed] == [expected_next]
        order.append(handed[0].account)
        now += 10
    assert order == ["acct0", "acct1", "acct2"]
    assert c.statistics().waiting == 0


def test_release_after_a_failed_start_frees_the_slot_and_is_idempotent() -> None:
    c = coordinator(k=1)
    first, second = c.acquire("a", 1, 0), c.acquire("b", 1, 0)
    assert first.grant is not None and second.grant is None
    # The start threw: the caller releases in its finally block, possibly twice (reject + hold timer).
    handed = c.release(first.grant, 5)
    assert [w.account for w in handed] == ["b"]
    assert c.release(first.grant, 6) == []
    assert c.statistics().borrowed == 1


def test_cancelled_waiter_is_skipped_and_never_granted() -> None:
    c = coordinator(k=1)
    holder, doomed, _next_in_line = c.acquire("a", 1, 0), c.acquire("b", 1, 0), c.acquire("c", 1, 0)
    c.cancel(doomed)
    assert holder.grant is not None
    handed = c.release(holder.grant, 10)
    assert [w.account for w in handed] == ["c"]
    assert doomed.grant is None and doomed.cancelled
    assert c.statistics().cancelled_waiters == 1


def test_newcomer_cannot_overtake_a_waiter() -> None:
    c = coordinator(k=1)
    holder, waiting = c.acquire("a", 1, 0), c.acquire("b", 1, 0)
    assert holder.grant is not None
    c.release(holder.grant, 5)  # handed straight to b
    late = c.acquire("late", 1, 5)
    assert waiting.grant is not None and late.grant is None


def test_hold_timeout_force_releases_a_stuck_slot() -> None:
    c = coordinator(k=1, hold_ms=30_000)
    stuck, _waiting = c.acquire("stuck", 1, 0), c.acquire("next", 1, 0)
    assert c.next_hold_deadline_ms() == 30_000
    assert c.expire_holds(29_999) == []
    handed = c.expire_holds(30_000)
    assert [w.account for w in handed] == ["next"]
    assert stuck.grant is not None and stuck.grant.forced and stuck.grant.released
    # The stuck start finishing later must not free a second slot.
    assert c.release(stuck.grant, 31_000) == []
    assert c.statistics().borrowed == 1 and c.statistics().forced_releases == 1


def test_statistics_report_borrowed_total_waiting_and_max_wait() -> None:
    c = coordinator(k=2)
    waiters = [c.acquire(str(i), 1, 0) for i in range(4)]
    stats = c.statistics()
    assert (stats.borrowed, stats.total, stats.waiting) == (2, 2, 2)
    c.release(waiters[0].grant, 700)  # type: ignore[arg-type]
    assert c.statistics().max_wait_ms == 700
