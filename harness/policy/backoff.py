"""Retry schedules as pure objects: told what happened, they answer how long to wait.

Three schedules meet in the storm (reference §7, §8, §9.2):
- the gateway client's own reconnect: 1 s doubling to 30 s, no jitter, reset on hello, a server
  `retryAfterMs` acting as a floor;
- the native-approvals bootstrap as shipped: a fixed 1000 ms after every failed start
  (APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS, src/infra/approval-handler-bootstrap.ts);
- the bootstrap backoff of PR #68283 (never merged): 1 s doubling to 60 s, 300 s on PAIRING_REQUIRED,
  reset on success.
"""

from __future__ import annotations

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
    """When the bootstrap layer retries a failed handler start. `shipped` is fixed; `backoff` is PR #68283."""

    def __init__(self, kind: str) -> None:
        if kind not in ("shipped", "backoff"):
            raise ValueError(f"bootstrap retry kind must be shipped or backoff, got {kind!r}")
        self.kind = kind
        self._backoff = DoublingBackoff(BOOTSTRAP_BACKOFF_INITIAL_MS, BOOTSTRAP_BACKOFF_MAX_MS)

    def after_failure_ms(self, *, pairing_required: bool = False) -> int:
        if self.kind == "shipped":
            return APPROVAL_HANDLER_BOOTSTRAP_RETRY_MS
        if pairing_required:
            self._backoff.failures += 1
            return BOOTSTRAP_PAIRING_RETRY_MS
        return self._backoff.next_delay_ms()

    def reset(self) -> None:
        """On a successful start, a context change, or cleanup."""
        self._backoff.reset()
