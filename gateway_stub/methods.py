"""Requests after hello: the method table.

A method is its required scopes (any one of them suffices; `operator.admin` covers all) and an async
handler that returns the response payload or raises `MethodError`. The exec-approval methods join
this table in their own module; nothing else has to change to add one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway_stub.protocol import SCOPE_APPROVALS, SCOPE_READ, GatewayError


class MethodError(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class GatewayView(Protocol):
    """What a method may read of the running gateway."""

    def uptime_ms(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...
    def health_template(self) -> dict[str, Any]: ...
    @property
    def server_version(self) -> str: ...


# The stub's own threshold for calling its loop degraded in `health` (the real gateway's is not recorded).
EVENT_LOOP_DEGRADED_P99_MS = 100.0

Handler = Callable[[GatewayView, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    required_scopes: tuple[str, ...]
    handler: Handler


def unknown_method(name: str) -> GatewayError:
    return GatewayError("INVALID_REQUEST", f"unknown method: {name}")


async def _health(gateway: GatewayView, params: Any) -> dict[str, Any]:
    """The profile's recorded health payload, with this stub's time, connections and event-loop delay."""
    started = time.perf_counter()
    stats = gateway.stats()
    payload = gateway.health_template()
    payload.update(ok=True, ts=int(time.time() * 1000))
    payload.setdefault("channels", {})
    lag = stats["event_loop_lag_ms"]
    degraded = (lag["p99"] or 0) > EVENT_LOOP_DEGRADED_P99_MS
    payload["eventLoop"] = {**payload.get("eventLoop", {}), "degraded": degraded,
                            "reasons": ["cpu"] if degraded else [],
                            "delayP99Ms": lag["p99"], "delayMaxMs": lag["max"]}
    payload["durationMs"] = round((time.perf_counter() - started) * 1000.0)
    return payload


async def _status(gateway: GatewayView, params: Any) -> dict[str, Any]:
    stats = gateway.stats()
    return {
        "version": gateway.server_version,
        "uptimeMs": gateway.uptime_ms(),
        "connections": {
            "authenticated": stats["gauges"]["authenticated_sockets"],
            "preauth": stats["gauges"]["preauth_sockets"],
        },
        "sessions": {"count": 0},
    }


async def _exec_approval_list(gateway: GatewayView, params: Any) -> list[dict[str, Any]]:
    # Pending records only; none exist until the approval broker serves exec.approval.request.
    return []


APPROVAL_SCOPES = (SCOPE_APPROVALS,)  # operator.admin covers it, as it covers every scope

METHODS: dict[str, Method] = {
    # Any authenticated client may call health: the approvals-only handler could on 4.24, 4.29 and 9.6.
    "health": Method((), _health),
    "status": Method((SCOPE_READ,), _status),
    # What the April native-approvals handler calls after every hello (reference §8.4).
    "exec.approval.list": Method(APPROVAL_SCOPES, _exec_approval_list),
}
