"""The start policies a run can compare ("arms"): what OpenClaw shipped, and the unmerged fixes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str
    coordinated: bool  # starts go through the PR #70649 start coordinator
    bootstrap_retry: str  # "shipped" (fixed 1000 ms) or "backoff" (PR #68283)
    description: str


ARMS: dict[str, Arm] = {arm.name: arm for arm in (
    Arm("shipped", False, "shipped", "all accounts start at once; fixed 1 s bootstrap retry (OpenClaw 2026.4.x)"),
    Arm("coordinator", True, "shipped", "PR #70649: first-start jitter + FIFO cap on concurrent starts"),
    Arm("backoff", False, "backoff", "PR #68283: bootstrap retry 1 s doubling to 60 s"),
    Arm("coordinator+backoff", True, "backoff", "both fixes"),
)}
