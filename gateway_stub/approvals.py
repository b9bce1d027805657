"""Exec approvals with no I/O: the broker that keeps the records, who may see them, and their wire shapes.

The broker is told the time on every call (epoch milliseconds, the clock of `createdAtMs`/`expiresAtMs`) and
never reads a clock, sleeps or sends: the server's approval service (approval_service.py) owns the timers,
the waiters and the sockets. Facts and exact strings come from ../shared/reference/openclaw-gateway.md,
sections 6, 10 and 11 (`src/gateway/exec-approval-manager.ts`, `server-methods/approval-shared.ts`,
`server-methods/approval-record-lookup.ts`, `server-methods/exec-approval.ts`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway_stub.protocol import SCOPE_ADMIN, SCOPE_APPROVALS, GatewayError
from openclaw_wire.constants import MSG_APPROVAL_ALREADY_PENDING

# src/gateway/exec-approval-manager.ts: resolved and expired records stay readable this long.
RESOLVED_ENTRY_GRACE_MS = 15_000
# The stub's own bound on pending records (the real gateway has none in memory; 9.6 persists to SQLite).
DEFAULT_MAX_PENDING_APPROVALS = 10_000
# Per-record bookkeeping on top of the serialized request, for the memory estimate in /stats.
RECORD_OVERHEAD_BYTES = 512

DECISIONS = ("allow-once", "allow-always", "deny")
RESERVED_PLUGIN_APPROVAL_ID_PREFIX = "plugin:"

MSG_ALREADY_PENDING = MSG_APPROVAL_ALREADY_PENDING
MSG_COMMAND_REQUIRED = "command is required"
MSG_INVALID_DECISION = "invalid decision"
MSG_ALREADY_RESOLVED = "approval already resolved"
MSG_UNKNOWN_OR_EXPIRED = "unknown or expired approval id"
MSG_EXPIRED_OR_NOT_FOUND = "approval expired or not found"
MSG_AMBIGUOUS_PREFIX = "ambiguous approval id prefix; use the full id"
MSG_ID_REQUIRED = "id is required"
APPROVAL_NOT_FOUND_DETAILS = {
    "reason": "APPROVAL_NOT_FOUND",
    "remediation": "Re-request the action; pending approvals are cleared after expiry or restart.",
}

# canDeliverApprovals (src/gateway/server-request-context.ts), exec kind.
CONTROL_UI_CLIENT_ID = "openclaw-control-ui"
EXEC_APPROVAL_APP_CLIENT_IDS = frozenset({"openclaw-macos", "openclaw-ios", "openclaw-android"})
CAP_APPROVALS = "approvals"
CAP_EXEC_APPROVALS = "exec-approvals"

Status = Literal["pending", "resolved", "expired"]
IntentKey = tuple[str, str, str]


class ApprovalError(Exception):
    """A request the approval surface refuses; `error` is the res error as sent."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def invalid(message: str, details: Mapping[str, Any] | None = None) -> ApprovalError:
    return ApprovalError(GatewayError("INVALID_REQUEST", message, details))


def unknown_or_expired() -> ApprovalError:
    return invalid(MSG_UNKNOWN_OR_EXPIRED, APPROVAL_NOT_FOUND_DETAILS)


@dataclass(frozen=True)
class Caller:
    """The connection a method call came from, as the approval rules see it."""

    conn_id: str
    client_id: str
    display_name: str | None
    device_id: str | None
    scopes: tuple[str, ...]
    caps: tuple[str, ...]

    @property
    def resolver_name(self) -> str:
        """`resolvedBy`: the display name, or the client id when there is none."""
        return self.display_name or self.client_id


@dataclass
class ApprovalRecord:
    id: str
    request: dict[str, Any]
    created_at_ms: int
    expires_at_ms: int
    # Visibility reads these two. The real gateway also binds `requestedByClientId`, which no rule the
    # stub imitates reads, so it is not kept.
    requested_by_conn_id: str | None
    requested_by_device_id: str | None
    reviewer_device_ids: tuple[str, ...] = ()
    intent: IntentKey | None = None
    size_bytes: int = 0
    status: Status = "pending"
    decision: str | None = None
    resolved_by: str | None = None
    terminal_reason: str | None = None
    drop_at_ms: float | None = None

    def entry(self) -> dict[str, Any]:
        """The list entry and the `requested` payload core: {id, request, createdAtMs, expiresAtMs}."""
        return {"id": self.id, "request": self.request, "createdAtMs": self.created_at_ms,
                "expiresAtMs": self.expires_at_ms}

    def decision_payload(self) -> dict[str, Any]:
        """The final res of exec.approval.request and waitDecision's: {id, decision, createdAtMs, expiresAtMs}."""
        return {"id": self.id, "decision": self.decision, "createdAtMs": self.created_at_ms,
                "expiresAtMs": self.expires_at_ms}


def intent_key(request: Mapping[str, Any]) -> IntentKey:
    """What the stub-only `intent` dedupe compares: (agentId, sessionKey, runId if given else command)."""
    run_id = request.get("runId")
    what = f"run:{run_id}" if run_id else f"command:{request.get('command') or ''}"
    return (str(request.get("agentId") or ""), str(request.get("sessionKey") or ""), what)


class ApprovalBroker:
    """Pending, resolved and expired exec-approval records; every method is told the time (epoch ms).

    `scaled_ms` maps a profile duration to the real milliseconds the stub waits (the server passes
    `StubConfig.scaled_s`, so the stub's time scale applies). The wire keeps real epoch milliseconds:
    `expiresAtMs = createdAtMs + timeoutMs * time_scale`, and a record is dropped its scaled grace after
    it was settled.
    """

    def __init__(self, *, scaled_ms: Callable[[float], float] | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING_APPROVALS, grace_ms: float = RESOLVED_ENTRY_GRACE_MS) -> None:
        self._scaled_ms: Callable[[float], float] = scaled_ms or (lambda ms: ms)
        self.max_pending = max_pending
        self.grace_ms = grace_ms
        self._records: dict[str, ApprovalRecord] = {}
        self._pending: dict[str, ApprovalRecord] = {}
        self._by_intent: dict[IntentKey, str] = {}
        self._pending_bytes = 0

    # -- reading --------------------------------------------------------------------------------

    def get(self, approval_id: str) -> ApprovalRecord | None:
        """Exactly this id, in any state, while it is still kept."""
        return self._records.get(approval_id)

    def pending(self) -> list[ApprovalRecord]:
        return list(self._pending.values())

    def pending_for_intent(self, key: IntentKey) -> ApprovalRecord | None:
        approval_id = self._by_intent.get(key)
        return self._pending.get(approval_id) if approval_id is not None else None

    def lookup(self, id_or_prefix: str, status: Status | tuple[Status, ...],
               visible: Callable[[ApprovalRecord], bool] | None = None) -> ApprovalRecord | None:
        """The record in `status` (or any of several) with this exact id, else the only one whose id starts with it.

        Raises the ambiguous-prefix error when several match; None when none does.
        """
        statuses = (status,) if isinstance(status, str) else status

        def fits(record: ApprovalRecord) -> bool:
            return record.status in statuses and (visible is None or visible(record))

        exact = self._records.get(id_or_prefix)
        if exact is not None and fits(exact):
            return exact
        pool: Iterable[ApprovalRecord] = self._pending.values() if statuses == ("pending",) else self._records.values()
        matches = [r for r in pool if r.id.startswith(id_or_prefix) and fits(r)]
        if len(matches) > 1:
            raise invalid(MSG_AMBIGUOUS_PREFIX)
        return matches[0] if matches else None

    def stats(self) -> dict[str, int]:
        return {"pending": len(self._pending), "pending_bytes_estimate": self._pending_bytes}

    # -- changing -------------------------------------------------------------------------------

    def create(self, *, request: dict[str, Any], timeout_ms: int, now_ms: int, approval_id: str,
               requester: Caller | None, reviewer_device_ids: tuple[str, ...] = (),
               intent: IntentKey | None = None) -> ApprovalRecord:
        """Register a pending record bound to its requester; refuse a kept id or a full broker."""
        if approval_id in self._records:
            raise invalid(MSG_ALREADY_PENDING)
        if len(self._pending) >= self.max_pending:
            message = (f"too many pending exec approvals ({self.max_pending}); "
                       "resolve some or wait for them to expire")
            raise ApprovalError(GatewayError("UNAVAILABLE", message, retryable=True))
        record = ApprovalRecord(
            id=approval_id,
            request=request,
            created_at_ms=now_ms,
            expires_at_ms=now_ms + round(self._scaled_ms(timeout_ms)),
            requested_by_conn_id=requester.conn_id if requester else None,
            requested_by_device_id=requester.device_id if requester else None,
            reviewer_device_ids=reviewer_device_ids,
            intent=intent,
            size_bytes=RECORD_OVERHEAD_BYTES + len(approval_id) + len(json.dumps(request, separators=(",", ":"))),
        )
        self._records[approval_id] = record
        self._pending[approval_id] = record
        self._pending_bytes += record.size_bytes
        if intent is not None:
            self._by_intent.setdefault(intent, approval_id)
        return record

    def resolve(self, record: ApprovalRecord, decision: str, resolved_by: str | None, now_ms: float) -> None:
        self._settle(record, "resolved", decision, now_ms, "user")
        record.resolved_by = resolved_by

    def expire(self, approval_id: str, now_ms: float, reason: str = "expired") -> ApprovalRecord | None:
        """Expire a pending record now (decision null); None when it is not pending."""
        record = self._pending.get(approval_id)
        if record is None:
            return None
        self._settle(record, "expired", None, now_ms, reason)
        return record

    def advance(self, now_ms: float) -> tuple[list[ApprovalRecord], list[str]]:
        """Expire every pending record due by `now_ms` and drop settled ones past their grace.

        Returns (records that expired now, ids no longer kept).
        """
        expired = [r for r in self._pending.values() if r.expires_at_ms <= now_ms]
        for record in expired:
            self._settle(record, "expired", None, record.expires_at_ms, "expired")
        stale = [r.id for r in self._records.values() if r.drop_at_ms is not None and r.drop_at_ms <= now_ms]
        for approval_id in stale:
            del self._records[approval_id]
        return expired, stale

    def _settle(self, record: ApprovalRecord, status: Status, decision: str | None, now_ms: float,
                reason: str) -> None:
        if record.status != "pending":
            raise invalid(MSG_UNKNOWN_OR_EXPIRED, APPROVAL_NOT_FOUND_DETAILS)
        record.status, record.decision, record.terminal_reason = status, decision, reason
        record.drop_at_ms = now_ms + self._scaled_ms(self.grace_ms)
        del self._pending[record.id]
        self._pending_bytes -= record.size_bytes
        if record.intent is not None and self._by_intent.get(record.intent) == record.id:
            del self._by_intent[record.intent]


# ---------------------------------------------------------------------------------------------
# Who receives and sees approvals (reference §10.4, 9.6 rules)


def has_approvals_scope(caller: Caller) -> bool:
    return SCOPE_APPROVALS in caller.scopes or SCOPE_ADMIN in caller.scopes


def can_deliver(caller: Caller) -> bool:
    """canDeliverApprovals for exec; `internal.approvalRuntime` cannot come over a socket and is left out."""
    return has_approvals_scope(caller) and (
        caller.client_id == CONTROL_UI_CLIENT_ID
        or CAP_APPROVALS in caller.caps
        or caller.client_id in EXEC_APPROVAL_APP_CLIENT_IDS
        or CAP_EXEC_APPROVALS in caller.caps
    )


def is_visible(record: ApprovalRecord, caller: Caller) -> bool:
    """isApprovalRecordVisibleToClient, without the in-process approval runtime."""
    if SCOPE_ADMIN in caller.scopes:
        return True
    if SCOPE_APPROVALS in caller.scopes and caller.device_id and caller.device_id in record.reviewer_device_ids:
        return True
    if record.requested_by_device_id:
        return record.requested_by_device_id == caller.device_id
    return record.requested_by_conn_id == caller.conn_id


# ---------------------------------------------------------------------------------------------
# Wire shapes


def _text_or_null(value: Any) -> str | None:
    text = value.strip() if isinstance(value, str) else ""
    return text or None


def command_text(params: Mapping[str, Any]) -> str:
    """What the approval shows: `command`, else the plan's command text, else the argv joined."""
    plan = params.get("systemRunPlan")
    for candidate in (params.get("command"), plan.get("commandText") if isinstance(plan, dict) else None):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    argv = params.get("commandArgv")
    return " ".join(argv) if isinstance(argv, list) else ""


def allowed_decisions(ask: Any, unavailable: Iterable[str]) -> list[str]:
    """allow-always is left out when the request makes it unavailable or asks every time (`ask:"always"`)."""
    excluded = set(unavailable)
    if ask == "always":
        excluded.add("allow-always")
    return [d for d in DECISIONS if d not in excluded]


_SEGMENT_SPLIT = re.compile(r"&&|\|\||[;|\n]")


def command_analysis(command: str) -> dict[str, Any]:
    """9.6's `commandAnalysis` summary, approximated: top-level segments and `$(…)`/backtick substitutions."""
    segments = [s for s in _SEGMENT_SPLIT.split(command) if s.strip()]
    nested = command.count("$(") + command.count("`") // 2
    return {"commandCount": max(1, len(segments)), "nestedCommandCount": nested, "riskKinds": [], "warningLines": []}


def build_request(params: Mapping[str, Any], *, extended: bool) -> dict[str, Any]:
    """The `request` object of the records and events: the 9.6 shape (reference §10.3), or 4.29's without
    `scope`, `commandAnalysis`, `sessionId`, `runId`, `toolCallId` and the cron fields."""
    text = command_text(params)
    host = _text_or_null(params.get("host"))
    unavailable = list(dict.fromkeys(params.get("unavailableDecisions") or ()))
    request: dict[str, Any] = {"command": text}
    if isinstance(params.get("commandArgv"), list) and host != "node":
        request["commandArgv"] = list(params["commandArgv"])
    # The stub computes no system-run binding (node-host execution is out of its scope).
    request["systemRunBinding"] = None
    request["systemRunPlan"] = params.get("systemRunPlan")
    request["cwd"] = params.get("cwd")
    request["nodeId"] = _text_or_null(params.get("nodeId")) if host == "node" else None
    request["host"] = host
    request["security"] = params.get("security")
    request["ask"] = params.get("ask")
    request["warningText"] = _text_or_null(params.get("warningText"))
    if extended:
        request["scope"] = params.get("scope")
        request["commandAnalysis"] = command_analysis(text)
    if unavailable:
        request["unavailableDecisions"] = unavailable
    request["allowedDecisions"] = allowed_decisions(params.get("ask"), unavailable)
    request["agentId"] = params.get("agentId")
    request["resolvedPath"] = params.get("resolvedPath")
    request["sessionKey"] = params.get("sessionKey")
    if extended:
        for name in ("sessionId", "runId", "toolCallId"):
            request[name] = _text_or_null(params.get(name))
    for name in ("turnSourceChannel", "turnSourceTo", "turnSourceAccountId"):
        request[name] = _text_or_null(params.get(name))
    request["turnSourceThreadId"] = params.get("turnSourceThreadId")
    if extended:
        request["cronExecutionSource"] = None
        request["cronOperationBinding"] = None
    return request


def requested_payload(record: ApprovalRecord, *, extended: bool) -> dict[str, Any]:
    """The `exec.approval.requested` payload; 9.6 leads with `approvalKind:"exec"`."""
    return {"approvalKind": "exec", **record.entry()} if extended else record.entry()


def resolved_payload(record: ApprovalRecord, ts_ms: int) -> dict[str, Any]:
    return {"id": record.id, "decision": record.decision, "resolvedBy": record.resolved_by, "ts": ts_ms,
            "request": record.request}


def get_payload(record: ApprovalRecord) -> dict[str, Any]:
    """exec.approval.get: {id, commandText, commandPreview, allowedDecisions, host, nodeId, agentId, expiresAtMs}."""
    request = record.request
    return {
        "id": record.id,
        "commandText": request.get("command", ""),
        # 9.6 fills a preview only for argv-built commands (resolveExecApprovalCommandDisplay); the stub has none.
        "commandPreview": request.get("commandPreview"),
        "allowedDecisions": request.get("allowedDecisions", list(DECISIONS)),
        "host": request.get("host"),
        "nodeId": request.get("nodeId"),
        "agentId": request.get("agentId"),
        "expiresAtMs": record.expires_at_ms,
    }
