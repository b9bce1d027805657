"""Start gates other than PR #70649's coordinator: the same door, other rules (fix families to compare).

`AccountBootstrap` asks its gate how long to wait before a start (`delay_ms`) and for a slot (`acquire`),
and gives the slot back saying how the start ended (`release`). `StartCoordinator` is the PR's gate; these
change one rule each:

- `StaggeredStarts`: the i-th account's first start waits i * S ms, and nothing caps concurrent starts
  (Discord's `connectStagger`, openclaw PR #44427; default 0 there, 2000 ms recommended for 5+ bots);
- `AdaptiveStarts`: an AIMD cap on concurrent starts: it starts at 1, grows by one after a successful start,
  halves after a failed one (or a slot held past its hold time), between 1 and a maximum (TCP congestion
  control, Netflix's concurrency-limits). It needs no knowledge of the host's speed, which a fixed K does.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.policy.coordinator import DEFAULT_START_SLOT_MAX_HOLD_MS, CoordinatorSettings, StartCoordinator

DEFAULT_STAGGER_MS = 2000
DEFAULT_ADAPTIVE_MAX_CONCURRENT_STARTS = 8
UNCAPPED = 2**31 - 1


@dataclass(frozen=True)
class GateSettings:
    """The families' own parameters (a profile's `fixes:` section)."""

    stagger_ms: int = DEFAULT_STAGGER_MS
    adaptive_max_concurrent_starts: int = DEFAULT_ADAPTIVE_MAX_CONCURRENT_STARTS


class StaggeredStarts(StartCoordinator):
    def __init__(self, stagger_ms: int) -> None:
        super().__init__(CoordinatorSettings(0, UNCAPPED, DEFAULT_START_SLOT_MAX_HOLD_MS), random=lambda: 0.0)
        self.stagger_ms = stagger_ms
        self._index: dict[str, int] = {}  # accounts in the order they first asked: the order they were started

    def delay_ms(self, account: str, first_start_of_generation: bool) -> float:
        index = self._index.setdefault(account, len(self._index))
        return float(index * self.stagger_ms) if first_start_of_generation else 0.0


class AdaptiveStarts(StartCoordinator):
    def __init__(self, maximum: int, hold_ms: int = DEFAULT_START_SLOT_MAX_HOLD_MS) -> None:
        super().__init__(CoordinatorSettings(0, maximum, hold_ms), random=lambda: 0.0)
        self.maximum = maximum
        self.limit = 1

    def delay_ms(self, account: str, first_start_of_generation: bool) -> float:
        return 0.0

    def capacity(self) -> int:
        return self.limit

    def start_ended(self, succeeded: bool | None) -> None:
        if succeeded is True:
            self.limit = min(self.maximum, self.limit + 1)
        elif succeeded is False:
            self.limit = max(1, self.limit // 2)
