"""The account bootstrap with and without the start coordinator, in virtual time (PR #70649's scenarios)."""

from __future__ import annotations

from harness.policy.backoff import BootstrapRetry
from harness.policy.bootstrap import AccountBootstrap, Phase, SetTimer, StartHandler, StopHandler
from harness.policy.coordinator import CoordinatorSettings, StartCoordinator
from harness.sim.bootstrap_driver import StartOutcome, VirtualDriver


def always(duration_ms: float, succeeded: bool) -> StartOutcome:
    return lambda account, handler_id, attempt, now: (duration_ms, succeeded)


def driver(outcome: StartOutcome, accounts: list[str], *, k: int = 3, jitter_ms: int = 2000, hold_ms: int = 30_000,
           rng: float = 0.5, retry: str = "shipped", coordinated: bool = True) -> VirtualDriver:
    settings = CoordinatorSettings(jitter_ms, k, hold_ms)
    coordinator = StartCoordinator(settings, random=lambda: rng) if coordinated else None
    d = VirtualDriver(outcome, coordinator)
    for name in accounts:
        d.add(AccountBootstrap(name, BootstrapRetry(retry), coordinator))
    return d


def test_shipped_starts_every_account_on_the_same_tick() -> None:
    d = driver(always(50, True), [f"a{i}" for i in range(11)], coordinated=False)
    for name in d.accounts:
        d.register(name)
    trace = d.run(10_000)
    assert {t for t, *_ in trace.of("start")} == {0.0}
    assert len(trace.of("hello")) == 11


def test_shipped_retries_a_failed_start_every_second_with_a_new_handler() -> None:
    d = driver(always(100, False), ["a"], coordinated=False)
    d.register("a")
    trace = d.run(5_500)
    starts = [t for t, *_ in trace.of("start")]
    assert starts == [0, 1100, 2200, 3300, 4400, 5500]  # 100 ms to fail + the fixed 1000 ms
    assert d.accounts["a"].handlers_built == 6


def test_jitter_delays_the_first_start() -> None:
    d = driver(always(50, True), ["a"], jitter_ms=2000, rng=0.25)
    d.register("a")
    trace = d.run(10_000)
    assert [t for t, *_ in trace.of("start")] == [500.0]


def test_unregister_during_jitter_cancels_with_no_handler_built() -> None:
    d = driver(always(50, True), ["a"], jitter_ms=2000, rng=0.9)
    d.register("a")
    d.unregister("a", 100)
    trace = d.run(10_000)
    assert trace.of("start") == []
    assert d.accounts["a"].handlers_built == 0
    assert d.accounts["a"].phase is Phase.IDLE


def test_k1_drains_three_bootstraps_fifo_with_one_in_flight() -> None:
    d = driver(always(100, True), ["a", "b", "c"], k=1, jitter_ms=0)
    for offset, name in enumerate(["a", "b", "c"]):
        d.register(name, time_ms=offset)
    trace = d.run(10_000)
    assert [(t, who) for t, who, *_ in trace.of("start")] == [(0, "a"), (100, "b"), (200, "c")]
    assert d.coordinator is not None and d.coordinator.statistics().borrowed == 0


def test_slot_is_released_after_a_failed_start() -> None:
    outcome: StartOutcome = lambda account, handler_id, attempt, now: (100, account != "bad")  # noqa: E731
    d = driver(outcome, ["bad", "good"], k=1, jitter_ms=0)
    d.register("bad")
    d.register("good", time_ms=1)
    trace = d.run(150)
    assert [(t, who) for t, who, *_ in trace.of("start")] == [(0, "bad"), (100, "good")]


def test_retries_are_not_re_jittered() -> None:
    d = driver(always(100, False), ["a"], jitter_ms=2000, rng=0.5)
    d.register("a")
    trace = d.run(3_500)
    # First start after 1000 ms of jitter; each retry 100 ms (failure) + 1000 ms later, with no jitter.
    assert [t for t, *_ in trace.of("start")] == [1000, 2100, 3200]


def test_hold_timeout_releases_a_stuck_slot() -> None:
    # "stuck" never finishes its start; K=1 would block "next" forever without the hold timeout.
    outcome: StartOutcome = lambda account, handler_id, attempt, now: (10**9 if account == "stuck" else 50, True)  # noqa: E731
    d = driver(outcome, ["stuck", "next"], k=1, jitter_ms=0, hold_ms=30_000)
    d.register("stuck")
    d.register("next", time_ms=1)
    trace = d.run(40_000)
    assert [(t, who) for t, who, *_ in trace.of("start")] == [(0, "stuck"), (30_000, "next")]
    assert d.coordinator is not None and d.coordinator.statistics().forced_releases == 1


def test_cancelled_waiter_is_skipped_and_never_starts() -> None:
    d = driver(always(100, True), ["a", "b", "c"], k=1, jitter_ms=0)
    d.register("a")
    d.register("b", time_ms=1)
    d.register("c", time_ms=2)
    d.unregister("b", time_ms=50)  # b's generation moves on while it waits
    trace = d.run(1_000)
    assert [who for _, who, *_ in trace.of("start")] == ["a", "c"]
    assert d.coordinator is not None and d.coordinator.statistics().cancelled_waiters == 1


def test_re_registration_stops_the_previous_handler_before_waiting() -> None:
    bootstrap = AccountBootstrap("a", BootstrapRetry("shipped"),
                                 StartCoordinator(CoordinatorSettings(2000, 3, 30_000), random=lambda: 0.5))
    [jitter] = bootstrap.register(0)
    assert isinstance(jitter, SetTimer) and jitter.at_ms == 1000
    [start] = bootstrap.timer_fired(1000, token=jitter.token)
    assert isinstance(start, StartHandler)
    commands = bootstrap.register(1500)
    # The old handler is stopped first; then the new generation waits for its jitter.
    assert isinstance(commands[0], StopHandler) and commands[0].handler_id == start.handler_id
    assert bootstrap.phase is Phase.JITTER


def test_backoff_arm_spaces_retries_out() -> None:
    d = driver(always(0, False), ["a"], coordinated=False, retry="backoff")
    d.register("a")
    trace = d.run(40_000)
    assert [t for t, *_ in trace.of("start")] == [0, 1000, 3000, 7000, 15000, 31000]


def test_coordinator_caps_concurrent_starts_of_eleven_accounts() -> None:
    d = driver(always(400, True), [f"a{i}" for i in range(11)], k=3, jitter_ms=0)
    for name in d.accounts:
        d.register(name)
    trace = d.run(10_000)
    starts = sorted(t for t, *_ in trace.of("start"))
    in_flight = max(sum(1 for s in starts if s <= t < s + 400) for t in starts)
    assert in_flight == 3
    assert len(trace.of("hello")) == 11
