"""The exec-approval surface of the running stub: the pure broker plus timers, waiters and event fan-out.

Handlers in methods.py call one coroutine here per method. Waiting (the final res of a two-phase request,
`exec.approval.waitDecision`) awaits a per-record future, so it holds only its own request task, never the
loop. Timers are plain `call_later` handles like every other stub timer: expiry at `expiresAtMs` and the
drop after the grace fire late when the loop is busy, as Node's do.

Events go out through `ApprovalClients` (the server), with each connection's own `seq` and
`dropIfSlow`. Who receives them follows the generation (reference §10.4). The stub-only `intent` dedupe
(`--approval-dedup intent`) is a labelled fix arm: the real gateway dedupes approvals by id only (§11).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal, Protocol

from gateway_stub.approvals import (
    DECISIONS,
    MSG_ALREADY_PENDING,
    MSG_ALREADY_RESOLVED,
    MSG_COMMAND_REQUIRED,
    MSG_EXPIRED_OR_NOT_FOUND,
    MSG_ID_REQUIRED,
    MSG_INVALID_DECISION,
    RESERVED_PLUGIN_APPROVAL_ID_PREFIX,
    ApprovalBroker,
    ApprovalRecord,
    Caller,
    build_request,
    can_deliver,
    command_text,
    get_payload,
    has_approvals_scope,
    intent_key,
    invalid,
    is_visible,
    requested_payload,
    resolved_payload,
    unknown_or_expired,
)
from gateway_stub.gateway_log import GatewayLog
from gateway_stub.generations import Generation
from gateway_stub.schema import (
    exec_approval_get_problem,
    exec_approval_request_problem,
    exec_approval_resolve_problem,
    exec_approvals_set_problem,
)
from openclaw_wire.constants import DEFAULT_EXEC_APPROVAL_TIMEOUT_MS
from openclaw_wire.log_records import StubEvent

APPROVALS_SUBSYSTEM = "gateway/approvals"
EVENT_REQUESTED = "exec.approval.requested"
EVENT_RESOLVED = "exec.approval.resolved"
# Where the real gateway keeps the file exec.approvals.get/set read and write (the stub keeps it in memory).
EXEC_APPROVALS_PATH = "~/.openclaw/exec-approvals.json"

# waitDecision's `terminalReason` on `current` for the stub's reasons (observed on 2026.9.6; `user` is the same).
WIRE_TERMINAL_REASONS = {"expired": "timeout", "no-approval-route": "no-route"}

ApprovalDedup = Literal["off", "intent"]
Respond = Callable[[Any], Awaitable[None]]


class ApprovalClients(Protocol):
    """What the service needs of the server: the connections past hello, and a way to push them an event."""

    def approval_callers(self) -> list[Caller]: ...
    async def send_approval_event(self, conn_id: str, event: str, payload: Any) -> None: ...


class ApprovalService:
    def __init__(self, generation: Generation, clients: ApprovalClients, log: GatewayLog, *,
                 scaled_s: Callable[[float], float], dedup: ApprovalDedup, max_pending: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.generation = generation
        # Expiry and grace follow the stub's time scale; the wire keeps real epoch ms (see ApprovalBroker).
        self.broker = ApprovalBroker(scaled_ms=lambda ms: scaled_s(ms) * 1000.0, max_pending=max_pending)
        self.dedup = dedup
        self._clients = clients
        self._log = log
        self._clock = clock
        self._targeted = generation.approval_visibility == "deliverable-and-visible"
        self._decided: dict[str, asyncio.Future[str | None]] = {}
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._file: dict[str, Any] = {"version": 1}
        self._file_exists = False
        self.requested_total = 0
        self.resolved_total = 0
        self.expired_total = 0
        self.coalesced_total = 0

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def close(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def stats(self) -> dict[str, int]:
        return {**self.broker.stats(), "requested_total": self.requested_total,
                "resolved_total": self.resolved_total, "expired_total": self.expired_total,
                "coalesced_total": self.coalesced_total}

    # -- methods --------------------------------------------------------------------------------

    async def request(self, caller: Caller, params: Any, respond: Respond) -> dict[str, Any]:
        """exec.approval.request: returns the final res payload; with `twoPhase`, `respond` sends "accepted" first."""
        problem = exec_approval_request_problem(params, self.generation)
        if problem is not None:
            raise invalid(problem)
        p: dict[str, Any] = params
        explicit_id = p["id"].strip() if isinstance(p.get("id"), str) and p["id"].strip() else None
        host = p["host"].strip() if isinstance(p.get("host"), str) else ""
        node_id = p["nodeId"].strip() if isinstance(p.get("nodeId"), str) else ""
        if host == "node" and not node_id:
            raise invalid("nodeId is required for host=node")
        if host == "node" and not isinstance(p.get("systemRunPlan"), dict):
            raise invalid("systemRunPlan is required for host=node")
        text = command_text(p)
        if not text.strip():
            raise invalid(MSG_COMMAND_REQUIRED)
        if explicit_id and explicit_id.startswith(RESERVED_PLUGIN_APPROVAL_ID_PREFIX):
            raise invalid(f"approval ids starting with {RESERVED_PLUGIN_APPROVAL_ID_PREFIX} are reserved")
        if host == "node" and not p.get("commandArgv"):
            raise invalid("commandArgv is required for host=node")
        if explicit_id and self.broker.get(explicit_id) is not None:
            raise invalid(MSG_ALREADY_PENDING)
        two_phase = p.get("twoPhase") is True
        intent = None
        if self.dedup == "intent":
            intent = intent_key({"agentId": p.get("agentId"), "sessionKey": p.get("sessionKey"),
                                 "runId": p.get("runId"), "command": text})
            existing = self.broker.pending_for_intent(intent)
            if existing is not None:
                return await self._coalesce(existing, caller, explicit_id, two_phase, respond)

        record = self.broker.create(
            request=build_request(p, extended=self.generation.approval_extended_payloads),
            timeout_ms=p.get("timeoutMs", DEFAULT_EXEC_APPROVAL_TIMEOUT_MS),
            now_ms=self.now_ms(),
            approval_id=explicit_id or str(uuid.uuid4()),
            requester=caller,
            reviewer_device_ids=tuple(p.get("approvalReviewerDeviceIds") or ()),
            intent=intent,
        )
        self._decided[record.id] = asyncio.get_running_loop().create_future()
        self._expiry_timers[record.id] = self._at(record.expires_at_ms)
        self.requested_total += 1
        self._log_requested(record, coalesced=False, requested_id=record.id, run_id=p.get("runId"))

        recipients = [] if p.get("suppressDelivery") is True else self._recipients(record, exclude=caller.conn_id)
        payload = requested_payload(record, extended=self.generation.approval_extended_payloads)
        await self._broadcast(recipients, EVENT_REQUESTED, payload)
        # A route is an approval client other than the requester (4.29 hasExecApprovalClients(excludeConnId), observed:
        # an April requester alone gets decision null although it receives its own `requested`).
        has_route = any(c.conn_id != caller.conn_id for c in recipients)
        keep_without_route = self.generation.honors_require_delivery_route and p.get("requireDeliveryRoute") is False
        if not has_route and not keep_without_route:
            # No route (§10.2 step 4): the record expires at once and the request gets one res, decision null.
            self._expire_now(record, "no-approval-route")
            return record.decision_payload()
        if two_phase:
            await respond(self._accepted(record, has_route))
        await self._decision_of(record)
        return record.decision_payload()

    async def _coalesce(self, existing: ApprovalRecord, caller: Caller, requested_id: str | None,
                        two_phase: bool, respond: Respond) -> dict[str, Any]:
        """The `intent` fix arm: no new record, no new event; wait on the pending one and answer with its id."""
        self.coalesced_total += 1
        self._log_requested(existing, coalesced=True, requested_id=requested_id,
                            run_id=existing.request.get("runId"))
        if two_phase:
            await respond(self._accepted(existing, bool(self._recipients(existing, exclude=caller.conn_id))))
        await self._decision_of(existing)
        return existing.decision_payload()

    def _accepted(self, record: ApprovalRecord, has_route: bool) -> dict[str, Any]:
        accepted: dict[str, Any] = {"status": "accepted", "id": record.id}
        if self.generation.approval_extended_payloads:
            accepted["deliveryRoute"] = "approval-client" if has_route else "none"
        accepted.update(createdAtMs=record.created_at_ms, expiresAtMs=record.expires_at_ms)
        return accepted

    def list_pending(self, caller: Caller) -> list[dict[str, Any]]:
        """exec.approval.list: pending records (`current`: only those visible to the caller)."""
        # 9.6 lists each entry with `approvalKind` last (observed).
        extra = {"approvalKind": "exec"} if self.generation.approval_extended_payloads else {}
        return [{**r.entry(), **extra} for r in self.broker.pending() if self._sees(caller, r)]

    def get(self, caller: Caller, params: Any) -> dict[str, Any]:
        problem = exec_approval_get_problem(params)
        if problem is not None:
            raise invalid(problem)
        record = self.broker.lookup(params["id"], "pending", self._visible_to(caller))
        if record is None:
            raise unknown_or_expired()
        return get_payload(record)

    async def wait_decision(self, caller: Caller, params: Any) -> dict[str, Any]:
        """exec.approval.waitDecision: blocks this request until the record is decided or expires."""
        raw = params.get("id") if isinstance(params, dict) else None
        approval_id = raw.strip() if isinstance(raw, str) else ""
        if not approval_id:
            raise invalid(MSG_ID_REQUIRED)
        record = self.broker.get(approval_id)
        if record is None or not self._sees(caller, record):
            raise invalid(MSG_EXPIRED_OR_NOT_FOUND)
        await self._decision_of(record)
        payload = record.decision_payload()
        if self.generation.approval_extended_payloads:
            reason = record.terminal_reason
            payload["terminalReason"] = WIRE_TERMINAL_REASONS.get(reason, reason) if reason else reason
        return payload

    async def resolve(self, caller: Caller, params: Any, respond: Respond) -> None:
        """exec.approval.resolve: answers through `respond`, then broadcasts `resolved`, then wakes the waiters."""
        problem = exec_approval_resolve_problem(params, self.generation)
        if problem is not None:
            raise invalid(problem)
        decision = params["decision"]
        if decision not in DECISIONS:
            raise invalid(MSG_INVALID_DECISION)
        visible = self._visible_to(caller)
        record = self.broker.lookup(params["id"], "pending", visible)
        if record is None:
            # Settled records stay for the grace; an expired one (decision null) answers "already resolved" (observed).
            done = self.broker.lookup(params["id"], ("resolved", "expired"), visible)
            if done is None:
                raise unknown_or_expired()
            if done.decision != decision:
                raise invalid(MSG_ALREADY_RESOLVED, {"reason": "APPROVAL_ALREADY_RESOLVED"})
            await respond({"ok": True})
            return
        if decision not in record.request.get("allowedDecisions", DECISIONS):
            raise invalid(self.generation.allow_always_unavailable_message,
                          {"reason": "APPROVAL_ALLOW_ALWAYS_UNAVAILABLE"})
        self.broker.resolve(record, decision, caller.resolver_name, self.now_ms())
        self._settled(record)
        self.resolved_total += 1
        self._log.record(StubEvent.APPROVAL_RESOLVED, "info", APPROVALS_SUBSYSTEM,
                         f"exec approval resolved id={record.id} decision={decision}",
                         {"id": record.id, "decision": decision})
        if decision == "allow-always":
            self._persist_grant(record)
        # The record is resolved whatever happens to the resolver's socket from here: finish in a task of our own.
        await asyncio.shield(self._spawn(self._answer_and_publish(record, respond)))

    async def _answer_and_publish(self, record: ApprovalRecord, respond: Respond) -> None:
        # The broadcast goes out before the resolver's own res (observed on 2026.4.24, 4.29 and 9.6).
        payload = resolved_payload(record, self.now_ms())
        await self._broadcast(self._recipients(record, exclude=None), EVENT_RESOLVED, payload)
        await respond({"ok": True})
        self._wake(record)

    def snapshot(self) -> dict[str, Any]:
        """exec.approvals.get: {path, exists, hash, file}."""
        text = json.dumps(self._file, separators=(",", ":"), sort_keys=True)
        return {"path": EXEC_APPROVALS_PATH, "exists": self._file_exists,
                "hash": hashlib.sha256(text.encode()).hexdigest(), "file": self._file}

    def set_file(self, params: Any) -> dict[str, Any]:
        """exec.approvals.set: store the file as given (allowlist entries may carry `source:"allow-always"`,
        openclaw#69482) and return the snapshot. `baseHash` is accepted and not compared."""
        problem = exec_approvals_set_problem(params)
        if problem is not None:
            raise invalid(problem)
        self._file = json.loads(json.dumps(params["file"]))
        self._file_exists = True
        return self.snapshot()

    def _persist_grant(self, record: ApprovalRecord) -> None:
        """An allow-always decision adds an allowlist entry for the agent (9.6 writes `source:"allow-always"`)."""
        request = record.request
        agent = str(request.get("agentId") or "main")
        agents = self._file.setdefault("agents", {})
        allowlist = agents.setdefault(agent, {}).setdefault("allowlist", [])
        entry: dict[str, Any] = {"id": str(uuid.uuid4()), "pattern": request.get("resolvedPath") or request["command"],
                                 "lastUsedAt": self.now_ms(), "lastUsedCommand": request["command"]}
        if self.generation.allow_always_grants_carry_source:
            entry["source"] = "allow-always"
        allowlist.append(entry)
        self._file_exists = True

    # -- who receives and sees ------------------------------------------------------------------

    def _recipients(self, record: ApprovalRecord, exclude: str | None) -> list[Caller]:
        """April: every approvals/admin connection, requester included. `current`: deliverable and visible
        connections, without `exclude` (the requester, for `requested`)."""
        callers = self._clients.approval_callers()
        if not self._targeted:
            return [c for c in callers if has_approvals_scope(c)]
        return [c for c in callers if c.conn_id != exclude and can_deliver(c) and is_visible(record, c)]

    def _sees(self, caller: Caller, record: ApprovalRecord) -> bool:
        return not self._targeted or is_visible(record, caller)

    def _visible_to(self, caller: Caller) -> Callable[[ApprovalRecord], bool] | None:
        return (lambda record: is_visible(record, caller)) if self._targeted else None

    async def _broadcast(self, recipients: list[Caller], event: str, payload: Any) -> None:
        for caller in recipients:
            await self._clients.send_approval_event(caller.conn_id, event, payload)

    # -- decisions, expiry and grace ------------------------------------------------------------

    async def _decision_of(self, record: ApprovalRecord) -> str | None:
        future = self._decided.get(record.id)
        if future is None:  # dropped after its grace: the record still holds the decision
            return record.decision
        # Shielded: a waiter whose socket closes must not cancel the decision for the other waiters.
        return await asyncio.shield(future)

    def _wake(self, record: ApprovalRecord) -> None:
        future = self._decided.get(record.id)
        if future is not None and not future.done():
            future.set_result(record.decision)

    def _expire_now(self, record: ApprovalRecord, reason: str) -> None:
        if self.broker.expire(record.id, self.now_ms(), reason) is not None:
            self._expired(record)

    def _expired(self, record: ApprovalRecord) -> None:
        self._settled(record)
        self.expired_total += 1
        self._log.record(StubEvent.APPROVAL_EXPIRED, "info", APPROVALS_SUBSYSTEM,
                         f"exec approval expired id={record.id}", {"id": record.id, "reason": record.terminal_reason})
        if self.generation.resolved_event_on_expiry and record.terminal_reason == "expired":
            # 9.6 publishes the expiry as a denial by nobody (observed); April sends nothing (§10.6, observed).
            payload = {**resolved_payload(record, self.now_ms()), "decision": "deny"}
            self._spawn(self._broadcast(self._recipients(record, exclude=None), EVENT_RESOLVED, payload))
        self._wake(record)

    def _settled(self, record: ApprovalRecord) -> None:
        timer = self._expiry_timers.pop(record.id, None)
        if timer is not None:
            timer.cancel()
            self._timers.discard(timer)
        assert record.drop_at_ms is not None
        self._at(record.drop_at_ms)

    def _at(self, at_ms: float) -> asyncio.TimerHandle:
        """A timer for epoch ms `at_ms` (already scaled: expiresAtMs and the grace carry the time scale)."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            assert handle is not None
            self._timers.discard(handle)
            self._on_due(at_ms)

        handle = loop.call_later(max(0.0, (at_ms - self.now_ms()) / 1000.0), fire)
        self._timers.add(handle)
        return handle

    def _on_due(self, at_ms: float) -> None:
        # The timer knows it is due at `at_ms`, whatever the wall clock says now.
        expired, dropped = self.broker.advance(max(float(self.now_ms()), at_ms))
        for record in expired:
            self._expiry_timers.pop(record.id, None)
            self._expired(record)
        for approval_id in dropped:
            self._decided.pop(approval_id, None)

    def _log_requested(self, record: ApprovalRecord, *, coalesced: bool, requested_id: str | None,
                       run_id: Any) -> None:
        fields: dict[str, Any] = {"id": record.id, "command": record.request.get("command"),
                                  "sessionKey": record.request.get("sessionKey"),
                                  "agentId": record.request.get("agentId")}
        if run_id:
            fields["runId"] = run_id
        fields["coalesced"] = coalesced
        if coalesced and requested_id and requested_id != record.id:
            fields["requestedId"] = requested_id
        message = f"exec approval requested id={record.id}" + (" (coalesced)" if coalesced else "")
        self._log.record(StubEvent.APPROVAL_REQUESTED, "info", APPROVALS_SUBSYSTEM, message, fields)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
