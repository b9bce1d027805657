"""The arms a run can compare: what OpenClaw shipped, and the fixes.

Start-policy arms (openclaw#70641) change how the accounts start; approval arms (openclaw#69478) change
how a run that fails over asks for approval again. An arm is data; the code that acts on it lives in
the bootstrap, the agents and the stub. `start_policy` builds an arm's start gate and retry: the one place
live runs and the simulator get them from.
"""

from __future__ import annotations

import random as random_module
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.policy.backoff import BootstrapRetry, BreakerSettings
from harness.policy.coordinator import CoordinatorSettings, StartCoordinator
from harness.policy.start_gates import AdaptiveStarts, GateSettings, StaggeredStarts


@dataclass(frozen=True)
class Arm:
    name: str
    start_gate: str  # "none", "coordinator" (PR #70649), "stagger" or "adaptive" (harness.policy.start_gates)
    bootstrap_retry: str  # "shipped" (fixed 1000 ms), "backoff" (PR #68283), "backoff-jitter" or "breaker"
    description: str
    # How a failed-over run asks for approval again: "none" (a fresh id per attempt, as shipped),
    # "stable-id", "cancel-on-failover", or "gateway-dedup" (the stub coalesces; stub targets only).
    approval_fix: str = "none"
    inprocess_only: bool = False  # a switch of the real gateway's own config: only for in-process accounts

    @property
    def coordinated(self) -> bool:
        """Starts go through the PR #70649 start coordinator (its J, K and H apply)."""
        return self.start_gate == "coordinator"


@dataclass(frozen=True)
class FixSettings:
    """Every start fix's parameters: the coordinator's (J, K, H) and the other families' (a profile's `fixes:`)."""

    coordinator: CoordinatorSettings = field(default_factory=CoordinatorSettings)
    gates: GateSettings = field(default_factory=GateSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)


def start_gate(arm: Arm, fixes: FixSettings, seed: int | None) -> StartCoordinator | None:
    """The process-wide start gate of `arm`, or None when its accounts start at once."""
    if arm.start_gate == "coordinator":
        return StartCoordinator(fixes.coordinator, random_module.Random(seed).random)
    if arm.start_gate == "stagger":
        return StaggeredStarts(fixes.gates.stagger_ms)
    if arm.start_gate == "adaptive":
        return AdaptiveStarts(fixes.gates.adaptive_max_concurrent_starts, fixes.coordinator.start_slot_max_hold_ms)
    return None


def bootstrap_retry(arm: Arm, fixes: FixSettings, seed: int | None, account: str) -> BootstrapRetry:
    """One account's retry schedule under `arm` (a jittered one draws from its own seeded stream)."""
    draws: Callable[[], float] | None = None
    if arm.bootstrap_retry == "backoff-jitter":
        draws = random_module.Random(None if seed is None else f"{seed}:{account}").random
    return BootstrapRetry(arm.bootstrap_retry, random=draws, breaker=fixes.breaker)


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("shipped", "none", "shipped", "all accounts start at once; fixed 1 s bootstrap retry (OpenClaw 2026.4.x)"),
    Arm("coordinator", "coordinator", "shipped", "PR #70649: first-start jitter + FIFO cap on concurrent starts"),
    Arm("backoff", "none", "backoff", "PR #68283: bootstrap retry 1 s doubling to 60 s"),
    Arm("coordinator+backoff", "coordinator", "backoff", "both fixes"),
    Arm("stagger", "stagger", "shipped", "PR #44427 (Discord connectStagger): the i-th account starts i x S ms late"),
    Arm("backoff-jitter", "none", "backoff-jitter", "PR #68283's bound with full jitter: U(0, min(60 s, 1 s x 2^n))"),
    Arm("adaptive", "adaptive", "shipped", "AIMD cap on concurrent starts: +1 per success, halved per failure"),
    Arm("breaker", "none", "breaker", "after F failed starts in a row an account pauses for a cooldown "
        "(openclaw#70641)"),
    Arm("approvals-off", "none", "shipped", "the report's workaround: execApprovals.enabled false, no native-approvals "
        "handler starts (in-process targets only)", inprocess_only=True),
    Arm("none", "none", "shipped", "a failed-over run asks again under a fresh approval id (as shipped)"),
    Arm("stable-id", "none", "shipped", "the retry reuses the intent's approval id (deterministic from run and "
        "command)", approval_fix="stable-id"),
    Arm("cancel-on-failover", "none", "shipped", "the failing attempt's pending approval is withdrawn before the "
        "replacement asks", approval_fix="cancel-on-failover"),
    Arm("gateway-dedup", "none", "shipped", "the gateway coalesces requests for the same (agent, session, run or "
        "command) into the pending one (stub only)", approval_fix="gateway-dedup"),
)}


# The arms the harness's own fake accounts can run (Locust's command line and web UI): all but the in-process ones.
CLIENT_ARMS: tuple[str, ...] = tuple(sorted(name for name, arm in ARMS.items() if not arm.inprocess_only))
