"""Retry schedules as pure objects: told what happened, they answer how long to wait.

Three schedules meet in the storm (reference §7, §8, §9.2):
- the gateway client's own reconnect: 1 s doubling to 30 s, no jitter, reset on hello, a server
  `retryAfterMs` acting as a floor;
- the native-approvals bootstrap as shipped: a fixed 1000 ms after every failed start
  (APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS, src/infra/approval-handler-bootstrap.ts);
- the bootstrap backoff of PR #68283 (never merged): 1 s doubling to 60 s, 300 s on PAIRING_REQUIRED,
  reset on success.

Two more bootstrap retries are fix families to compare (../shared/reference/fix-families.md):
- `backoff-jitter`: PR #68283's bound with full jitter, U(0, min(60 s, 1 s * 2^(n-1))) (AWS, "Exponential
  Backoff and Jitter": the least work of the schedules it compares);
- `breaker`: the fixed 1 s, but after F consecutive failed starts the account pauses for a cooldown before it
  tries again (openclaw#70641's circuit-breaker suggestion); success closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS, src/infra/approval-handler-bootstrap.ts (every build checked).
APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS = 1000
# packages/gateway-client/src/reconnect-policy.ts (9.6); scheduleReconnect() in src/gateway/client.ts (4.29).
CLIENT_RECONNECT_INITIAL_MS = 1000
CLIENT_RECONNECT_MAX_MS = 30_000
# PR #68283.
BOOTSTRAP_BACKOFF_INITIAL_MS = 1000
BOOTSTRAP_BACKOFF_MAX_MS = 60_000
BOOTSTRAP_PAIRING_RETRY_MS = 300_000
RETRY_KINDS = ("shipped", "backoff", "backoff-jitter", "breaker")
DEFAULT_BREAKER_FAILURES = 3
DEFAULT_BREAKER_COOLDOWN_MS = 30_000


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = DEFAULT_BREAKER_FAILURES  # consecutive failed starts that open the breaker
    cooldown_ms: int = DEFAULT_BREAKER_COOLDOWN_MS  # how long it stays open


@dataclass
class DoublingBackoff:
    """min(initial * 2^(n-1), maximum) for the n-th consecutive failure; `reset()` on success."""

    initial_ms: int
    maximum_ms: int
    failures: int = 0

    def next_delay_ms(self, floor_ms: int = 0) -> int:
        self.failures += 1
        delay: int = min(self.initial_ms << (self.failures - 1), self.maximum_ms)
        return max(delay, floor_ms)

    def reset(self) -> None:
        self.failures = 0


def client_reconnect_backoff() -> DoublingBackoff:
    return DoublingBackoff(CLIENT_RECONNECT_INITIAL_MS, CLIENT_RECONNECT_MAX_MS)


class BootstrapRetry:
    """When the bootstrap layer retries a failed handler start: `shipped` (fixed), `backoff` (PR #68283),
    `backoff-jitter` (its bound, fully jittered by `random`) or `breaker` (fixed, with a cooldown)."""

    def __init__(self, kind: str, *, random: Callable[[], float] | None = None,
                 breaker: BreakerSettings = BreakerSettings()) -> None:
        if kind not in RETRY_KINDS:
            raise ValueError(f"bootstrap retry kind must be one of {', '.join(RETRY_KINDS)}, got {kind!r}")
        if kind == "backoff-jitter" and random is None:
            raise ValueError("backoff-jitter needs a random source")
        self.kind = kind
        self._random = random
        self._breaker = breaker
        self._backoff = DoublingBackoff(BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS)

    def after_failure_ms(self, *, pairing_required: bool = False) -> float:
        if self.kind == "shipped":
            return APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS
        if self.kind == "breaker":
            self._backoff.failures += 1
            if self._backoff.failures >= self._breaker.failures:
                self._backoff.failures = 0  # half-open after the cooldown: one more try, then count again
                return self._breaker.cooldown_ms
            return APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS
        if pairing_required:
            self._backoff.failures += 1
            return BOOTSTRAP_PAIRING_RETRY_MS
        bound = self._backoff.next_delay_ms()
        if self.kind == "backoff-jitter":
            assert self._random is not None
            return self._random() * bound
        return bound

    def reset(self) -> None:
        """On a successful start, a context change, or cleanup."""
        self._backoff.reset()
