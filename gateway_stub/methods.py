"""Requests after hello: the method table.

A method is its required scopes (any one of them suffices; `operator.admin` covers all) and an async
handler `(gateway, params, call)` that returns the response payload or raises `MethodError`. `call` says
who called and can answer early: `await call.respond(payload)` sends an ok `res` with the request's id
at once. A two-phase method (exec.approval.request with `twoPhase`) sends "accepted" that way and
returns its final payload later; a handler that has sent its only answer itself returns `RESPONDED`.
The exec-approval logic lives in approval_service.py; this table stays the one place methods are registered.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway_stub.approval_service import ApprovalService
from gateway_stub.approvals import ApprovalError, Caller
from gateway_stub.protocol import SCOPE_APPROVALS, SCOPE_READ, GatewayError


class MethodError(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class GatewayView(Protocol):
    """What a method may read of the running gateway."""

    def recent_loop_lag(self) -> dict[str, Any]: ...
    def health_template(self) -> dict[str, Any]: ...
    def status_template(self) -> dict[str, Any]: ...
    @property
    def server_version(self) -> str: ...
    @property
    def approvals(self) -> ApprovalService: ...


@dataclass(frozen=True)
class MethodCall:
    """One request being handled: who sent it, and how to answer it before the handler returns."""

    caller: Caller
    respond: Callable[[Any], Awaitable[None]]


class Responded(enum.Enum):
    """Returned by a handler whose only answer went out through `call.respond`."""

    RESPONDED = "responded"


RESPONDED = Responded.RESPONDED
# The stub's own threshold for calling its loop degraded in `health` (the real gateway's is not recorded).
EVENT_LOOP_DEGRADED_P99_MS = 100.0

Handler = Callable[[GatewayView, Any, MethodCall], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    required_scopes: tuple[str, ...]
    handler: Handler


def unknown_method(name: str) -> GatewayError:
    return GatewayError("INVALID_REQUEST", f"unknown method: {name}")


async def _health(gateway: GatewayView, params: Any, call: MethodCall) -> dict[str, Any]:
    """The generation's recorded health payload, with this stub's time, connections and event-loop delay."""
    started = time.perf_counter()
    payload = gateway.health_template()
    payload.update(ok=True, ts=int(time.time() * 1000))
    payload.setdefault("channels", {})
    payload["eventLoop"] = _event_loop(payload.get("eventLoop", {}), gateway.recent_loop_lag())
    payload["durationMs"] = round((time.perf_counter() - started) * 1000.0)
    return payload


def _event_loop(recorded: dict[str, Any], lag: dict[str, Any]) -> dict[str, Any]:
    """The recorded `eventLoop` object with this stub's delay over the last second (as 9.6's `intervalMs` says)."""
    degraded = (lag["p99"] or 0) > EVENT_LOOP_DEGRADED_P99_MS
    return {**recorded, "degraded": degraded, "reasons": ["cpu"] if degraded else [],
            "intervalMs": lag["interval_ms"], "delayP99Ms": lag["p99"], "delayMaxMs": lag["max"]}


async def _status(gateway: GatewayView, params: Any, call: MethodCall) -> dict[str, Any]:
    """The generation's recorded `status` (its keys, in their order), with this stub's version, event-loop
    delay, process id and resident memory where the generation reports them. Figures the stub has no source
    for (tasks, sessions, a V8 heap) stay as recorded from an idle gateway."""
    payload = gateway.status_template()
    payload["runtimeVersion"] = gateway.server_version
    if "eventLoop" in payload:
        payload["eventLoop"] = _event_loop(payload["eventLoop"], gateway.recent_loop_lag())
    if "pid" in payload:
        payload["pid"] = os.getpid()
    if "processMemory" in payload:
        payload["processMemory"]["rssBytes"] = _resident_bytes()
    return payload


def _resident_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# -- exec approvals (reference §10; the logic is in approval_service.py) ---------------------------


def _approvals(run: Callable[[ApprovalService, Any, MethodCall], Awaitable[Any]]) -> Handler:
    async def handler(gateway: GatewayView, params: Any, call: MethodCall) -> Any:
        try:
            return await run(gateway.approvals, params, call)
        except ApprovalError as exc:
            raise MethodError(exc.error) from None

    return handler


async def _approval_request(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return await approvals.request(call.caller, params, call.respond)


async def _approval_list(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return approvals.list_pending(call.caller)


async def _approval_get(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return approvals.get(call.caller, params)


async def _approval_wait_decision(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return await approvals.wait_decision(call.caller, params)


async def _approval_resolve(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    await approvals.resolve(call.caller, params, call.respond)  # {"ok":true} first, then the broadcast
    return RESPONDED


async def _approvals_get(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return approvals.snapshot()


async def _approvals_set(approvals: ApprovalService, params: Any, call: MethodCall) -> Any:
    return approvals.set_file(params)


APPROVAL_SCOPES = (SCOPE_APPROVALS,)  # operator.admin covers it, as it covers every scope

METHODS: dict[str, Method] = {
    # Any authenticated client may call health: the approvals-only handler could on 4.24, 4.29 and 9.6.
    "health": Method((), _health),
    "status": Method((SCOPE_READ,), _status),
    "exec.approval.request": Method(APPROVAL_SCOPES, _approvals(_approval_request)),
    # What the April native-approvals handler calls after every hello (reference §8.4).
    "exec.approval.list": Method(APPROVAL_SCOPES, _approvals(_approval_list)),
    "exec.approval.get": Method(APPROVAL_SCOPES, _approvals(_approval_get)),
    "exec.approval.waitDecision": Method(APPROVAL_SCOPES, _approvals(_approval_wait_decision)),
    "exec.approval.resolve": Method(APPROVAL_SCOPES, _approvals(_approval_resolve)),
    "exec.approvals.get": Method(APPROVAL_SCOPES, _approvals(_approvals_get)),
    "exec.approvals.set": Method(APPROVAL_SCOPES, _approvals(_approvals_set)),
}
