"""A fake agent whose heartbeat runs need exec approval, with a provider failover chain (openclaw#69478).

Every `heartbeat_ms` a run starts; its exec call needs approval. Each provider attempt asks for it the
April way (reference §10.1): one short-lived socket for `exec.approval.request` (`twoPhase`, taking the
"accepted" reply), another for `exec.approval.waitDecision`. When the provider's timeout passes first,
the run fails over to the next provider, which asks again. The arm decides under which id:
  none                a fresh UUID per attempt (what ships: every failover is a new prompt);
  stable-id           one id per intent, derived from run and command (the retry gets
                      `approval id already pending` and waits on the same record);
  cancel-on-failover  a fresh id, but the failing attempt's approval is withdrawn first (no cancel method
                      exists, so the agent resolves it `deny` as the requester);
  gateway-dedup       as shipped; the stub coalesces the retry into the pending record.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from typing import Any

import gevent
from websockets.exceptions import ConnectionClosed

from harness.agents.settings import AgentSettings
from harness.client.connect_shape import ClientShape, request_frame
from harness.client.plain_socket import PlainSocketConnection
from harness.client.session import HandshakeFailed, RequestTimedOut, call, next_response, short_session
from harness.clock import ScaledClock
from harness.events import ApprovalLedger, ApprovalRequest
from openclaw_wire.constants import MSG_APPROVAL_ALREADY_PENDING, PROTOCOL_CURRENT

STABLE_ID_NAMESPACE = uuid.UUID("6f1c6a52-5f25-4a4e-9a0e-69478c0ffee0")


class FakeAgent:
    def __init__(self, name: str, settings: AgentSettings, approval_fix: str, *, url: str, token: str,
                 shape: ClientShape, clock: ScaledClock, ledger: ApprovalLedger, rng: random.Random,
                 handshake_timeout_ms: float) -> None:
        self.name = name
        self.settings = settings
        self.approval_fix = approval_fix
        self._url, self._token, self._shape = url, token, shape
        self._clock = clock
        self._ledger = ledger
        self._first_heartbeat_ms = rng.uniform(0, settings.heartbeat_ms)
        self._handshake_timeout_ms = handshake_timeout_ms
        self._greenlet: gevent.Greenlet | None = None

    @property
    def session_key(self) -> str:
        return f"agent:{self.name}:main"

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._heartbeats)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _heartbeats(self) -> None:
        next_ms = self._first_heartbeat_ms
        while True:
            gevent.sleep(self._clock.real_s(next_ms - self._clock.now_ms()))
            self.run_once(str(uuid.uuid4()))
            next_ms = max(next_ms + self.settings.heartbeat_ms, self._clock.now_ms())

    def run_once(self, run_id: str) -> str | None:
        """One run: ask, fail over, ask again. Returns the decision the run received, if any."""
        command = self.settings.command
        self._ledger.start_run(self.name, run_id, command)
        stable_id = str(uuid.uuid5(STABLE_ID_NAMESPACE, f"{self.name}|{run_id}|{command}"))
        previous: str | None = None
        for attempt, timeout_ms in enumerate(self.settings.provider_timeouts_ms, start=1):
            if self.approval_fix == "cancel-on-failover" and previous is not None:
                self._withdraw(previous)
            approval_id = stable_id if self.approval_fix == "stable-id" else str(uuid.uuid4())
            record = ApprovalRequest(self.name, run_id, attempt, approval_id, self._clock.now_ms())
            self._ledger.requests.append(record)
            waiting_on = self._request(record, run_id)
            record.waited_on = waiting_on
            if waiting_on is None:
                return None  # no route, or refused: the exec is not approved and the run ends
            decision, decided = self._wait(waiting_on, timeout_ms)
            if decided:
                record.decision = decision
                return decision
            previous = waiting_on
        return None

    def _session(self) -> contextlib.AbstractContextManager[PlainSocketConnection]:
        params = self._shape.params("agent", ["operator.approvals"], self._token)
        return short_session(self._url, params, self._clock, handshake_timeout_ms=self._handshake_timeout_ms,
                             device=self._shape.device)

    def _request(self, record: ApprovalRequest, run_id: str) -> str | None:
        """exec.approval.request on its own socket; the id to wait on, or None when the run cannot wait."""
        params: dict[str, Any] = {"id": record.approval_id, "command": self.settings.command, "host": "gateway",
                                  "agentId": self.name, "sessionKey": self.session_key, "twoPhase": True,
                                  "timeoutMs": self.settings.approval_timeout_ms}
        if self._shape.protocol >= PROTOCOL_CURRENT:
            params["runId"] = run_id  # 2026.4.x rejects runId
        try:
            with self._session() as ws:
                reply = call(ws, "exec.approval.request", params, self._clock)
        except (HandshakeFailed, RequestTimedOut, ConnectionClosed) as exc:
            record.outcome = f"error: {exc or type(exc).__name__}"
            return None
        payload = reply.get("payload") or {}
        if reply.get("ok") and payload.get("status") == "accepted":
            record.outcome = "accepted"
            return str(payload.get("id") or record.approval_id)
        if reply.get("ok"):
            record.outcome = "no-route"  # a single res with decision null: nobody could be asked
            return None
        message = (reply.get("error") or {}).get("message", "")
        if message == MSG_APPROVAL_ALREADY_PENDING:
            record.outcome = "already-pending"
            return record.approval_id
        record.outcome = f"error: {message}"
        return None

    def _wait(self, approval_id: str, timeout_ms: float) -> tuple[str | None, bool]:
        """exec.approval.waitDecision on its own socket, for as long as the provider allows: (decision, decided)."""
        deadline_ms = self._clock.now_ms() + timeout_ms
        try:
            with self._session() as ws:
                request_id, frame = request_frame("exec.approval.waitDecision", {"id": approval_id})
                ws.send(frame)
                reply = next_response(ws, request_id, self._clock, deadline_ms - self._clock.now_ms())
        except (HandshakeFailed, RequestTimedOut, ConnectionClosed):
            return None, False  # the provider timed out first (or the socket failed): fail over
        if not reply.get("ok"):
            return None, False
        decision = (reply.get("payload") or {}).get("decision")
        return decision, decision is not None

    def _withdraw(self, approval_id: str) -> None:
        with contextlib.suppress(HandshakeFailed, RequestTimedOut, ConnectionClosed), self._session() as ws:
            call(ws, "exec.approval.resolve", {"id": approval_id, "decision": "deny"}, self._clock)
