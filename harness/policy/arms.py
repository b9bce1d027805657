"""The arms a run can compare: what OpenClaw shipped, and the fixes.

Start-policy arms (openclaw#70641) change how the accounts start; approval arms (openclaw#69478) change
how a run that fails over asks for approval again. An arm is data; the code that acts on it lives in
the bootstrap, the agents and the stub.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    coordinated: bool  # starts go through the PR #70649 start coordinator
    bootstrap_retry: str  # "shipped" (fixed 1000 ms) or "backoff" (PR #68283)
    description: str
    # How a failed-over run asks for approval again: "none" (a fresh id per attempt, as shipped),
    # "stable-id", "cancel-on-failover", or "gateway-dedup" (the stub coalesces; stub targets only).
    approval_fix: str = "none"


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("shipped", False, "shipped", "all accounts start at once; fixed 1 s bootstrap retry (OpenClaw 2026.4.x)"),
    Arm("coordinator", True, "shipped", "PR #70649: first-start jitter + FIFO cap on concurrent starts"),
    Arm("backoff", False, "backoff", "PR #68283: bootstrap retry 1 s doubling to 60 s"),
    Arm("coordinator+backoff", True, "backoff", "both fixes"),
    Arm("none", False, "shipped", "a failed-over run asks again under a fresh approval id (as shipped)"),
    Arm("stable-id", False, "shipped", "the retry reuses the intent's approval id (deterministic from run and "
        "command)", approval_fix="stable-id"),
    Arm("cancel-on-failover", False, "shipped", "the failing attempt's pending approval is withdrawn before the "
        "replacement asks", approval_fix="cancel-on-failover"),
    Arm("gateway-dedup", False, "shipped", "the gateway coalesces requests for the same (agent, session, run or "
        "command) into the pending one (stub only)", approval_fix="gateway-dedup"),
)}
