"""The other start fixes as policies, in virtual time: stagger, the adaptive (AIMD) cap, and their arms."""

from __future__ import annotations

from harness.policy.arms import ARMS, FixSettings, bootstrap_retry, start_gate
from harness.policy.backoff import BootstrapRetry
from harness.policy.bootstrap import AccountBootstrap
from harness.policy.start_gates import AdaptiveStarts, GateSettings, StaggeredStarts
from harness.sim.bootstrap_driver import StartOutcome, VirtualDriver


def run(gate: StaggeredStarts | AdaptiveStarts, outcome: StartOutcome, accounts: int,
        until_ms: float = 10_000) -> VirtualDriver:
    driver = VirtualDriver(outcome, gate)
    for index in range(accounts):
        driver.add(AccountBootstrap(f"a{index}", BootstrapRetry("shipped"), gate))
        driver.register(f"a{index}")
    driver.run(until_ms)
    return driver


def starts(driver: VirtualDriver) -> list[tuple[float, str]]:
    return [(t, who) for t, who, *_ in driver.trace.of("start")]


def test_stagger_starts_the_ith_account_i_times_s_late_and_does_not_stagger_retries() -> None:
    failing_once: StartOutcome = lambda account, handler, attempt, now: (100, attempt > 1)  # noqa: E731
    driver = run(StaggeredStarts(500), failing_once, 4)
    by_account = {who: [t for t, w in starts(driver) if w == who] for who in ("a0", "a1", "a2", "a3")}
    # first starts 500 ms apart; each retry 100 ms + 1 s after its failure, not staggered again
    assert by_account == {"a0": [0, 1100], "a1": [500, 1600], "a2": [1000, 2100], "a3": [1500, 2600]}
    assert len(driver.trace.of("hello")) == 4


def test_the_adaptive_cap_grows_by_one_per_success() -> None:
    succeeding: StartOutcome = lambda account, handler, attempt, now: (100, True)  # noqa: E731
    gate = AdaptiveStarts(maximum=4)
    driver = run(gate, succeeding, 6)
    assert starts(driver) == [(0, "a0"), (100, "a1"), (100, "a2"), (200, "a3"), (200, "a4"), (200, "a5")]
    assert gate.limit == 4  # 6 successes, held at the maximum


def test_the_adaptive_cap_halves_on_failure_and_stays_at_one_when_every_start_fails() -> None:
    failing: StartOutcome = lambda account, handler, attempt, now: (100, False)  # noqa: E731
    gate = AdaptiveStarts(maximum=8)
    gate.limit = 4
    driver = run(gate, failing, 3, until_ms=5000)
    assert gate.limit == 1
    times = [t for t, _ in starts(driver)]
    assert times[:3] == [0, 0, 0]  # a limit of 4 lets all three in; three failures halve it to 1
    assert len(set(times[3:])) == len(times[3:]) > 3  # from then on, one start at a time


def test_every_start_arm_builds_its_gate_and_retry_from_one_place() -> None:
    fixes = FixSettings(gates=GateSettings(stagger_ms=250, adaptive_max_concurrent_starts=5))
    kinds = {name: (type(start_gate(arm, fixes, 1)).__name__, bootstrap_retry(arm, fixes, 1, "a").kind)
             for name, arm in ARMS.items() if arm.approval_fix == "none" and name != "none" and not arm.inprocess_only}
    assert kinds == {
        "shipped": ("NoneType", "shipped"), "coordinator": ("StartCoordinator", "shipped"),
        "backoff": ("NoneType", "backoff"), "coordinator+backoff": ("StartCoordinator", "backoff"),
        "stagger": ("StaggeredStarts", "shipped"), "backoff-jitter": ("NoneType", "backoff-jitter"),
        "adaptive": ("AdaptiveStarts", "shipped"), "breaker": ("NoneType", "breaker"),
    }
    retry_a = bootstrap_retry(ARMS["backoff-jitter"], fixes, 7, "a")
    retry_b = bootstrap_retry(ARMS["backoff-jitter"], fixes, 7, "a")
    assert [retry_a.after_failure_ms() for _ in range(5)] == [retry_b.after_failure_ms() for _ in range(5)]
