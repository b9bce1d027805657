"""The start coordinator of PR #70649 (never merged), as a pure object.

Picture a door with K keys on a hook and a queue in front of it. An account that wants to start its
native-approvals handler takes a key if one hangs there, or joins the back of the queue. When a start
ends (hello, failure, or the hold timeout), its key is handed straight to the first account still
waiting: nobody who arrives later can grab it first, and an account that left the queue (its bootstrap
generation moved on) is skipped and never gets one. Before queueing, the first start of a bootstrap
generation waits a random jitter in [0, J); retries do not.

The object never sleeps or reads a clock: callers tell it the time (`now_ms`) and act on what it
answers (a jitter to wait, a grant, or grants handed to waiters). That lets the same code run under
Locust today and in a simulator tomorrow. `statistics()` mirrors trio's CapacityLimiter.

Settings and their parsing follow the PR (src/infra/approval-handler-start-coordinator.ts on its branch):
an environment value counts only if the whole string matches ^\\d+$ and meets the minimum; anything else
(empty, "-1", "+5", "2.5", " 250 ", or 0 for K and H) silently becomes the default.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Defaults of PR #70649.
DEFAULT_START_JITTER_MS = 2000
DEFAULT_MAX_CONCURRENT_STARTS = 3
DEFAULT_START_SLOT_MAX_HOLD_MS = 30_000

ENV_START_JITTER_MS = "OPENCLAW_APPROVAL_HANDLER_START_JITTER_MS"
ENV_MAX_CONCURRENT_STARTS = "OPENCLAW_APPROVAL_HANDLER_MAX_CONCURRENT_STARTS"
ENV_START_SLOT_MAX_HOLD_MS = "OPENCLAW_APPROVAL_HANDLER_START_SLOT_MAX_HOLD_MS"

_DIGITS = re.compile(r"\d+")


def parse_setting(raw: str | None, *, default: int, minimum: int) -> int:
    """The PR's strict parsing: whole-string digits meeting the minimum, else the default."""
    if raw is None or not _DIGITS.fullmatch(raw):
        return default
    value = int(raw)
    return value if value >= minimum else default


@dataclass(frozen=True)
class CoordinatorSettings:
    start_jitter_ms: int = DEFAULT_START_JITTER_MS
    max_concurrent_starts: int = DEFAULT_MAX_CONCURRENT_STARTS
    start_slot_max_hold_ms: int = DEFAULT_START_SLOT_MAX_HOLD_MS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CoordinatorSettings:
        return cls(
            start_jitter_ms=parse_setting(environ.get(ENV_START_JITTER_MS), default=DEFAULT_START_JITTER_MS,
                                          minimum=0),
            max_concurrent_starts=parse_setting(environ.get(ENV_MAX_CONCURRENT_STARTS),
                                                default=DEFAULT_MAX_CONCURRENT_STARTS, minimum=1),
            start_slot_max_hold_ms=parse_setting(environ.get(ENV_START_SLOT_MAX_HOLD_MS),
                                                 default=DEFAULT_START_SLOT_MAX_HOLD_MS, minimum=1),
        )


@dataclass(eq=False)
class Grant:
    """One slot lent to one start. `released` turns true exactly once."""

    account: str
    generation: int
    hold_deadline_ms: float
    released: bool = False
    forced: bool = False  # released by the hold timeout rather than by the start ending


@dataclass(eq=False)
class Waiter:
    account: str
    generation: int
    queued_at_ms: float
    cancelled: bool = False
    grant: Grant | None = None


@dataclass(frozen=True)
class CoordinatorStatistics:
    borrowed: int
    total: int
    waiting: int
    granted_total: int
    forced_releases: int
    cancelled_waiters: int
    max_wait_ms: float


class StartCoordinator:
    """One per gateway process (here: one per Locust process)."""

    def __init__(self, settings: CoordinatorSettings, random: Callable[[], float]) -> None:
        self.settings = settings
        self._random = random
        self._held: list[Grant] = []
        self._queue: deque[Waiter] = deque()
        self._granted_total = 0
        self._forced = 0
        self._cancelled = 0
        self._max_wait_ms = 0.0

    def delay_ms(self, account: str, first_start_of_generation: bool) -> float:
        """How long `account` waits before asking for a slot: the coordinator's jitter (other gates differ)."""
        return self.jitter_ms(first_start_of_generation)

    def jitter_ms(self, first_start_of_generation: bool) -> float:
        """How long to wait before queueing: uniform [0, J) on a generation's first start, else 0."""
        span = self.settings.start_jitter_ms
        if not first_start_of_generation or span <= 0:
            return 0.0
        # A random() that returns 1.0 (some RNGs can) must still stay below J.
        return min(self._random() * span, span - 1e-6)

    def acquire(self, account: str, generation: int, now_ms: float) -> Waiter:
        """Ask for a slot. The returned waiter has `grant` set at once if a slot was free."""
        waiter = Waiter(account, generation, now_ms)
        self._queue.append(waiter)
        self._hand_out(now_ms)
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """The account's generation moved on: it leaves the queue and will never start."""
        if waiter.grant is None and not waiter.cancelled:
            waiter.cancelled = True
            self._cancelled += 1
            self._queue.remove(waiter)

    def release(self, grant: Grant, now_ms: float, succeeded: bool | None = None) -> list[Waiter]:
        """The start ended (resolved or rejected). Idempotent per grant. Returns the waiters just granted."""
        if grant.released:
            return []
        self.start_ended(succeeded)
        grant.released = True
        self._held.remove(grant)
        return self._hand_out(now_ms)

    def start_ended(self, succeeded: bool | None) -> None:
        """A hook for gates that learn from how starts end (the adaptive cap); the coordinator does not."""

    def capacity(self) -> int:
        """How many starts may run at once now."""
        return self.settings.max_concurrent_starts

    def expire_holds(self, now_ms: float) -> list[Waiter]:
        """Force-release every slot held past its hold deadline; `start()` itself keeps running."""
        granted: list[Waiter] = []
        for grant in [g for g in self._held if g.hold_deadline_ms <= now_ms]:
            grant.forced = True
            self._forced += 1
            granted += self.release(grant, now_ms, succeeded=False)
        return granted

    def next_hold_deadline_ms(self) -> float | None:
        return min((g.hold_deadline_ms for g in self._held), default=None)

    def statistics(self) -> CoordinatorStatistics:
        return CoordinatorStatistics(
            borrowed=len(self._held),
            total=self.capacity(),
            waiting=len(self._queue),
            granted_total=self._granted_total,
            forced_releases=self._forced,
            cancelled_waiters=self._cancelled,
            max_wait_ms=self._max_wait_ms,
        )

    def _hand_out(self, now_ms: float) -> list[Waiter]:
        granted: list[Waiter] = []
        while self._queue and len(self._held) < self.capacity():
            waiter = self._queue.popleft()
            grant = Grant(waiter.account, waiter.generation,
                          hold_deadline_ms=now_ms + self.settings.start_slot_max_hold_ms)
            self._held.append(grant)
            waiter.grant = grant
            self._granted_total += 1
            self._max_wait_ms = max(self._max_wait_ms, now_ms - waiter.queued_at_ms)
            granted.append(waiter)
        return granted
