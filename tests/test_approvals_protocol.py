"""The exec-approval surface over real sockets: methods, events and visibility, frame by frame.

Expected values come from ../shared/reference/openclaw-gateway.md, sections 6, 10 and 11. Expiry tests
run the stub with a small time scale; every wait is on a frame or a condition, never a fixed sleep. A test
that something did NOT arrive makes a round trip on that socket after the point where the frame would
have been written, and looks at what came before its answer.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Frame, FrameClient, StubFactory, connect_params, handshake, wait_until

from gateway_stub import GatewayStub
from gateway_stub.approvals import ApprovalBroker, ApprovalError

PROFILES = [pytest.param("april-2026", id="april"), pytest.param("current", id="current")]
PROTOCOL = {"april-2026": 3, "current": 4}
# A small time scale for expiry and grace; everything else the stub times is pushed out of the way.
SCALED = dict(time_scale=0.005, handshake_timeout_ms=2_000_000, tick_interval_ms=1e9, ping_interval_ms=1e9,
              ping_timeout_ms=1e9)
TIMEOUT_MS = 20_000  # 100 ms at SCALED
REMEDIATION = "Re-request the action; pending approvals are cleared after expiry or restart."
NOT_FOUND = {"code": "INVALID_REQUEST", "message": "unknown or expired approval id",
             "details": {"reason": "APPROVAL_NOT_FOUND", "remediation": REMEDIATION}}


class Client(FrameClient):
    """A FrameClient that also waits for events by name."""

    async def event(self, name: str, timeout: float = 5.0) -> Frame:
        return await self.wait_for(lambda f: f["type"] == "event" and f["event"] == name, timeout)

    async def sync(self) -> list[Frame]:
        """A round trip; returns the frames that arrived before its answer (each socket is ordered)."""
        request_id = await self.send("health", {})
        await self.res(request_id)
        index = next(i for i, f in enumerate(self.seen) if f.get("id") == request_id)
        return self.seen[:index]

    def approval_events(self, name: str) -> list[Frame]:
        return [f for f in self.seen if f["type"] == "event" and f["event"] == name]

    def assert_seq_contiguous(self) -> None:
        """`seq` is per connection: 1, 2, 3… over every event this socket received (reference §6)."""
        seqs = [f["seq"] for f in self.seen if f["type"] == "event"]
        assert seqs == list(range(1, len(seqs) + 1)), seqs


async def client(stub: GatewayStub, name: str, *, scopes: tuple[str, ...] = ("operator.approvals",),
                 caps: tuple[str, ...] = ()) -> Client:
    """A gateway-client/backend connection on loopback (keeps its scopes without a device, reference §3.4)."""
    protocol = stub.generation.protocol
    params = connect_params(protocol, scopes=list(scopes), caps=list(caps))
    params["client"] = {**params["client"], "displayName": name, "version": stub.server_version}
    ws, hello = await handshake(stub.url, params)
    assert hello["ok"] is True, hello
    return Client(ws, name)


async def approver(stub: GatewayStub, name: str = "approver") -> Client:
    """A connection that receives approvals in both profiles: admin + cap `approvals` (observed on 9.6)."""
    if stub.generation.name == "current":
        return await client(stub, name, scopes=("operator.admin",), caps=("approvals",))
    return await client(stub, name)


def request_params(approval_id: str, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"id": approval_id, "command": "ls -la", "cwd": "/tmp", "host": "gateway",
                              "agentId": "main", "sessionKey": "agent:main:main"}
    params.update(extra)
    return params


def ok(request_id: str, payload: Any) -> Frame:
    return {"type": "res", "id": request_id, "ok": True, "payload": payload}


def err(request_id: str, error: Frame) -> Frame:
    return {"type": "res", "id": request_id, "ok": False, "error": error}


def invalid(message: str, **details: Any) -> Frame:
    error: Frame = {"code": "INVALID_REQUEST", "message": message}
    if details:
        error["details"] = details
    return error


def expected_request(profile: str, **overrides: Any) -> Frame:
    """The `request` of request_params(): the 9.6 shape (observed, §10.3), or 4.29's without the 9.6 fields."""
    if profile == "current":
        request: Frame = {
            "command": "ls -la", "systemRunBinding": None, "systemRunPlan": None, "cwd": "/tmp", "nodeId": None,
            "host": "gateway", "security": None, "ask": None, "warningText": None, "scope": None,
            "commandAnalysis": {"commandCount": 1, "nestedCommandCount": 0, "riskKinds": [], "warningLines": []},
            "allowedDecisions": ["allow-once", "allow-always", "deny"], "agentId": "main", "resolvedPath": None,
            "sessionKey": "agent:main:main", "sessionId": None, "runId": None, "toolCallId": None,
            "turnSourceChannel": None, "turnSourceTo": None, "turnSourceAccountId": None,
            "turnSourceThreadId": None, "cronExecutionSource": None, "cronOperationBinding": None,
        }
    else:
        request = {
            "command": "ls -la", "systemRunBinding": None, "systemRunPlan": None, "cwd": "/tmp", "nodeId": None,
            "host": "gateway", "security": None, "ask": None, "warningText": None,
            "allowedDecisions": ["allow-once", "allow-always", "deny"], "agentId": "main", "resolvedPath": None,
            "sessionKey": "agent:main:main", "turnSourceChannel": None, "turnSourceTo": None,
            "turnSourceAccountId": None, "turnSourceThreadId": None,
        }
    request.update(overrides)
    return request


async def http_stats(stub: GatewayStub) -> Frame:
    def fetch() -> Frame:
        with urllib.request.urlopen(stub.http_url + "stats", timeout=5) as response:
            loaded: Frame = json.loads(response.read())
            return loaded

    return await asyncio.to_thread(fetch)


# ---------------------------------------------------------------------------------------------
# exec.approval.request


@pytest.mark.parametrize("profile", PROFILES)
async def test_two_phase_request_gets_accepted_then_the_final_res_with_the_same_id(
    make_stub: StubFactory, profile: str
) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub, "Telegram approval (42)")
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("appr-1", twoPhase=True))
    accepted = await agent.res(rid)
    created = accepted["payload"]["createdAtMs"]
    expected_accepted: Frame = {"status": "accepted", "id": "appr-1"}
    if profile == "current":
        expected_accepted["deliveryRoute"] = "approval-client"
    expected_accepted.update(createdAtMs=created, expiresAtMs=created + 1_800_000)  # DEFAULT_EXEC_APPROVAL_TIMEOUT_MS
    assert accepted == ok(rid, expected_accepted)
    assert list(accepted["payload"]) == list(expected_accepted)

    requested = await watcher.event("exec.approval.requested")
    resolve_id = await watcher.send("exec.approval.resolve", {"id": "appr-1", "decision": "allow-once"})
    assert await watcher.res(resolve_id) == ok(resolve_id, {"ok": True})
    resolved = await watcher.event("exec.approval.resolved")
    # The broadcast comes before the resolver's own res (observed on 4.24, 4.29 and 9.6; docs/recorded/approvals.md).
    assert watcher.seen.index(resolved) < next(i for i, f in enumerate(watcher.seen) if f.get("id") == resolve_id)
    assert resolved["payload"]["resolvedBy"] == "Telegram approval (42)"
    assert resolved["payload"]["request"] == requested["payload"]["request"]

    final = await agent.res(rid)
    assert final == ok(rid, {"id": "appr-1", "decision": "allow-once", "createdAtMs": created,
                             "expiresAtMs": created + 1_800_000})
    if profile == "april-2026":
        # The requester receives both events too, the resolved one before its final res.
        events = [f["event"] for f in agent.seen if f["type"] == "event" and f["event"] != "health"]
        assert events == ["exec.approval.requested", "exec.approval.resolved"]
        assert agent.seen.index(agent.approval_events("exec.approval.resolved")[0]) < agent.seen.index(final)
    for socket in (watcher, agent):
        socket.assert_seq_contiguous()


@pytest.mark.parametrize("profile", PROFILES)
async def test_request_without_two_phase_gets_only_the_final_res(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("single"))
    await watcher.event("exec.approval.requested")
    await watcher.call("exec.approval.resolve", {"id": "single", "decision": "deny"})
    final = await agent.res(rid)
    assert final["payload"]["decision"] == "deny"
    await agent.sync()
    assert [f for f in agent.seen if f.get("id") == rid] == [final]


@pytest.mark.parametrize("profile", PROFILES)
async def test_requested_and_resolved_event_frames(make_stub: StubFactory, profile: str) -> None:
    # Every event on a socket takes its next seq: ticks are pushed out of the test's way, and the `health` event the
    # gateway sends each client after hello (4 ms later on April, 378 ms on current) is waited for, so that only the
    # approval events can take the watcher's next numbers. Not waiting for it made this test flaky under load: a
    # stalled process let that timer fire between `requested` and `resolved`, and the seq was one off.
    stub = await make_stub(profile=profile, tick_interval_ms=1e9)
    watcher = await approver(stub, "Control")
    health = await watcher.event("health")
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("appr-ev", twoPhase=True, timeoutMs=60_000))
    accepted = (await agent.res(rid))["payload"]
    created, expires = accepted["createdAtMs"], accepted["expiresAtMs"]
    assert expires == created + 60_000

    requested = await watcher.event("exec.approval.requested")
    assert requested["seq"] == health["seq"] + 1
    payload: Frame = {"id": "appr-ev", "request": expected_request(profile), "createdAtMs": created,
                      "expiresAtMs": expires}
    if profile == "current":
        payload = {"approvalKind": "exec", **payload}
    assert requested == {"type": "event", "event": "exec.approval.requested", "seq": requested["seq"],
                         "payload": payload}
    assert list(requested["payload"]["request"]) == list(payload["request"])  # the recorded key order

    await watcher.call("exec.approval.resolve", {"id": "appr-ev", "decision": "deny"})
    resolved = await watcher.event("exec.approval.resolved")
    ts = resolved["payload"]["ts"]
    assert isinstance(ts, int) and ts >= created
    assert resolved == {"type": "event", "event": "exec.approval.resolved", "seq": requested["seq"] + 1,
                        "payload": {"id": "appr-ev", "decision": "deny", "resolvedBy": "Control", "ts": ts,
                                    "request": payload["request"]}}
    watcher.assert_seq_contiguous()
    assert (await agent.res(rid))["payload"]["decision"] == "deny"


async def test_resolved_by_falls_back_to_the_client_id(make_stub: StubFactory) -> None:
    stub = await make_stub()
    agent = await client(stub, "agent")
    params = connect_params(3)
    del params["client"]["displayName"]
    ws, hello = await handshake(stub.url, params)
    anonymous = Client(ws, "anonymous")
    rid = await agent.send("exec.approval.request", request_params("appr-anon", twoPhase=True))
    await agent.res(rid)
    await anonymous.call("exec.approval.resolve", {"id": "appr-anon", "decision": "deny"})
    resolved = await anonymous.event("exec.approval.resolved")
    assert resolved["payload"]["resolvedBy"] == "gateway-client"


@pytest.mark.parametrize("profile", PROFILES)
async def test_request_validation_errors(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("dup", twoPhase=True))
    await agent.res(rid)  # accepted: "dup" is pending
    again = await agent.send("exec.approval.request", request_params("dup", twoPhase=True))
    assert await agent.res(again) == err(again, invalid("approval id already pending"))

    no_command = await agent.send("exec.approval.request",
                                  {k: v for k, v in request_params("no-cmd").items() if k != "command"})
    assert await agent.res(no_command) == err(no_command, invalid("command is required"))
    blank = await agent.send("exec.approval.request", request_params("blank", command="   "))
    assert await agent.res(blank) == err(blank, invalid("command is required"))

    # The closed schema: 4.29 does not know the 9.6-only runId and toolCallId (§10.2).
    with_run = await agent.send("exec.approval.request", request_params("run-1", runId="run-abc", twoPhase=True))
    answer = await agent.res(with_run)
    if profile == "april-2026":
        assert answer == err(with_run, invalid(
            "invalid exec.approval.request params: at root: unexpected property 'runId'"))
    else:
        assert answer["ok"] is True and answer["payload"]["status"] == "accepted"
    unknown = await agent.send("exec.approval.request", request_params("x-1", contextKey="exec:1"))
    assert await agent.res(unknown) == err(unknown, invalid(
        "invalid exec.approval.request params: at root: unexpected property 'contextKey'"))
    bad_timeout = await agent.send("exec.approval.request", request_params("x-2", timeoutMs=0))
    assert await agent.res(bad_timeout) == err(bad_timeout, invalid(
        "invalid exec.approval.request params: at /timeoutMs: must be >= 1"))


async def test_request_without_an_approval_route_gets_one_res_with_decision_null(make_stub: StubFactory) -> None:
    # 9.6 (observed): no deliverable and visible client besides the requester; the record expires at once.
    stub = await make_stub(profile="current")
    agent = await client(stub, "agent")
    # operator.approvals + cap approvals is deliverable but cannot see this record: not a route (§10.4).
    blind = await client(stub, "blind", caps=("approvals",))
    rid = await agent.send("exec.approval.request", request_params("lonely", twoPhase=True, timeoutMs=60_000))
    only = await agent.res(rid)
    created = only["payload"]["createdAtMs"]
    assert only == ok(rid, {"id": "lonely", "decision": None, "createdAtMs": created, "expiresAtMs": created + 60_000})
    before = await agent.sync()
    assert [f for f in before if f.get("id") == rid] == [only]  # a single res, no "accepted"
    assert (await agent.call("exec.approval.list", {}))["payload"] == []
    # Kept readable for the grace: waitDecision answers null at once.
    wait = await agent.call("exec.approval.waitDecision", {"id": "lonely"})
    assert wait["payload"] == {"id": "lonely", "decision": None, "createdAtMs": created,
                               "expiresAtMs": created + 60_000, "terminalReason": "no-route"}
    assert stub.approvals.stats()["expired_total"] == 1
    assert blind.approval_events("exec.approval.requested") == []


async def test_require_delivery_route_false_keeps_the_record_pending_on_current(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request",
                           request_params("keep", twoPhase=True, requireDeliveryRoute=False))
    accepted = await agent.res(rid)
    assert accepted["payload"]["status"] == "accepted" and accepted["payload"]["deliveryRoute"] == "none"
    assert [e["id"] for e in (await agent.call("exec.approval.list", {}))["payload"]] == ["keep"]


async def test_april_does_not_count_the_requesting_connection_as_a_route(make_stub: StubFactory) -> None:
    # 4.29 (observed; hasExecApprovalClients(excludeConnId)): the requester receives its own `requested` but is no
    # route, so alone it gets one res with decision null.
    stub = await make_stub()
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("self-route", twoPhase=True))
    assert (await agent.res(rid))["payload"]["decision"] is None
    assert (await agent.event("exec.approval.requested"))["payload"]["id"] == "self-route"


# ---------------------------------------------------------------------------------------------
# list / get / waitDecision / resolve


@pytest.mark.parametrize("profile", PROFILES)
async def test_list_and_get_by_id_or_unique_prefix(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    created: dict[str, int] = {}
    for approval_id, command in (("abc-111", "ls -la"), ("abc-222", "rm -rf /tmp/x")):
        rid = await agent.send("exec.approval.request",
                               request_params(approval_id, command=command, twoPhase=True, timeoutMs=90_000))
        created[approval_id] = (await agent.res(rid))["payload"]["createdAtMs"]

    listed = await watcher.call("exec.approval.list", {})
    kind = {"approvalKind": "exec"} if profile == "current" else {}  # 9.6 lists it last (observed)
    assert listed["payload"] == [
        {"id": "abc-111", "request": expected_request(profile), "createdAtMs": created["abc-111"],
         "expiresAtMs": created["abc-111"] + 90_000, **kind},
        {"id": "abc-222",
         "request": expected_request(profile, command="rm -rf /tmp/x",
                                     **({"commandAnalysis": {"commandCount": 1, "nestedCommandCount": 0,
                                                             "riskKinds": [], "warningLines": []}}
                                        if profile == "current" else {})),
         "createdAtMs": created["abc-222"], "expiresAtMs": created["abc-222"] + 90_000, **kind},
    ]
    by_prefix = await watcher.call("exec.approval.get", {"id": "abc-2"})
    assert by_prefix == ok(by_prefix["id"], {
        "id": "abc-222", "commandText": "rm -rf /tmp/x", "commandPreview": None,
        "allowedDecisions": ["allow-once", "allow-always", "deny"], "host": "gateway", "nodeId": None,
        "agentId": "main", "expiresAtMs": created["abc-222"] + 90_000})
    exact = await watcher.call("exec.approval.get", {"id": "abc-111"})
    assert exact["payload"]["id"] == "abc-111" and exact["payload"]["commandText"] == "ls -la"
    ambiguous = await watcher.call("exec.approval.get", {"id": "abc"})
    assert ambiguous == err(ambiguous["id"], invalid("ambiguous approval id prefix; use the full id"))
    missing = await watcher.call("exec.approval.get", {"id": "zzz"})
    assert missing == err(missing["id"], NOT_FOUND)
    no_id = await watcher.call("exec.approval.get", {})
    assert no_id == err(no_id["id"], invalid(
        "invalid exec.approval.get params: at root: must have required property 'id'"))

    # Resolved records leave the list and get (pending only) at once.
    await watcher.call("exec.approval.resolve", {"id": "abc-1", "decision": "deny"})  # prefix ids are accepted
    assert [e["id"] for e in (await watcher.call("exec.approval.list", {}))["payload"]] == ["abc-222"]
    gone = await watcher.call("exec.approval.get", {"id": "abc-111"})
    assert gone == err(gone["id"], NOT_FOUND)


@pytest.mark.parametrize("profile", PROFILES)
async def test_wait_decision_blocks_only_its_own_request(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    waiter = await approver(stub, "waiter")
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("wait-1", twoPhase=True))
    created = (await agent.res(rid))["payload"]["createdAtMs"]

    wait_id = await waiter.send("exec.approval.waitDecision", {"id": "wait-1"})
    # The same socket is still served while its waitDecision is pending.
    assert (await waiter.call("health", {}))["ok"] is True
    assert not any(f.get("id") == wait_id for f in waiter.seen)
    await watcher.call("exec.approval.resolve", {"id": "wait-1", "decision": "allow-always"})
    expected: Frame = {"id": "wait-1", "decision": "allow-always", "createdAtMs": created,
                       "expiresAtMs": created + 1_800_000}
    if profile == "current":
        expected["terminalReason"] = "user"
    assert await waiter.res(wait_id) == ok(wait_id, expected)
    # A later waitDecision inside the grace answers at once.
    assert (await waiter.call("exec.approval.waitDecision", {"id": "wait-1"}))["payload"]["decision"] == "allow-always"
    unknown = await waiter.call("exec.approval.waitDecision", {"id": "nope"})
    assert unknown == err(unknown["id"], invalid("approval expired or not found"))
    no_id = await waiter.call("exec.approval.waitDecision", {})
    assert no_id == err(no_id["id"], invalid("id is required"))


@pytest.mark.parametrize("profile", PROFILES)
async def test_resolve_answers(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("res-1", twoPhase=True))
    await agent.res(rid)

    bad = await watcher.call("exec.approval.resolve", {"id": "res-1", "decision": "maybe"})
    assert bad == err(bad["id"], invalid("invalid decision"))
    first = await watcher.call("exec.approval.resolve", {"id": "res-1", "decision": "deny"})
    assert first == ok(first["id"], {"ok": True})
    same = await watcher.call("exec.approval.resolve", {"id": "res-1", "decision": "deny"})
    assert same == ok(same["id"], {"ok": True})  # idempotent
    other = await watcher.call("exec.approval.resolve", {"id": "res-1", "decision": "allow-once"})
    assert other == err(other["id"], invalid("approval already resolved", reason="APPROVAL_ALREADY_RESOLVED"))
    unknown = await watcher.call("exec.approval.resolve", {"id": "no-such-id", "decision": "deny"})
    assert unknown == err(unknown["id"], NOT_FOUND)  # the exact frame of §10.5
    await watcher.sync()
    assert len(watcher.approval_events("exec.approval.resolved")) == 1  # repeats broadcast nothing
    assert (await agent.res(rid))["payload"]["decision"] == "deny"

    grant = await watcher.call("exec.approval.resolve", {"id": "res-1", "decision": "deny", "grantExpiresInDays": 7})
    if profile == "april-2026":
        assert grant == err(grant["id"], invalid(
            "invalid exec.approval.resolve params: at root: unexpected property 'grantExpiresInDays'"))
    else:
        assert grant["ok"] is True


@pytest.mark.parametrize("profile", PROFILES)
async def test_allow_always_unavailable_when_the_request_asks_always(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("ask-1", ask="always", twoPhase=True))
    await agent.res(rid)
    requested = await watcher.event("exec.approval.requested")
    assert requested["payload"]["request"]["allowedDecisions"] == ["allow-once", "deny"]
    refused = await watcher.call("exec.approval.resolve", {"id": "ask-1", "decision": "allow-always"})
    message = stub.generation.allow_always_unavailable_message  # worded differently by 4.29 and 9.6 (observed)
    assert refused == err(refused["id"], invalid(message, reason="APPROVAL_ALLOW_ALWAYS_UNAVAILABLE"))
    assert [e["id"] for e in (await watcher.call("exec.approval.list", {}))["payload"]] == ["ask-1"]  # still pending


@pytest.mark.parametrize("profile", PROFILES)
async def test_approval_methods_need_the_approvals_scope(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    reader = await client(stub, "reader", scopes=("operator.read",))
    answer = await reader.call("exec.approval.request", request_params("r-1"))
    if profile == "april-2026":
        assert answer["error"] == {"code": "INVALID_REQUEST", "message": "missing scope: operator.approvals"}
    else:
        assert answer["error"]["code"] == "FORBIDDEN"
        assert answer["error"]["details"]["missingScope"] == "operator.approvals"


# ---------------------------------------------------------------------------------------------
# Who receives approvals (§10.4)


async def test_april_pushes_to_every_approvals_connection_requester_included(make_stub: StubFactory) -> None:
    stub = await make_stub()
    handler = await client(stub, "handler")
    admin = await client(stub, "admin", scopes=("operator.admin",))
    reader = await client(stub, "reader", scopes=("operator.read",))
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("vis-a", twoPhase=True))
    await agent.res(rid)
    for socket in (handler, admin, agent):
        assert (await socket.event("exec.approval.requested"))["payload"]["id"] == "vis-a"
    assert [f for f in await reader.sync() if f["type"] == "event" and f["event"].startswith("exec.")] == []
    # Any approvals client can list and resolve any approval.
    assert [e["id"] for e in (await handler.call("exec.approval.list", {}))["payload"]] == ["vis-a"]
    assert (await handler.call("exec.approval.resolve", {"id": "vis-a", "decision": "deny"}))["ok"] is True
    for socket in (handler, admin, agent):
        assert (await socket.event("exec.approval.resolved"))["payload"]["resolvedBy"] == "handler"


async def test_current_targets_deliverable_and_visible_connections_only(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current")
    admin_with_cap = await client(stub, "admin+cap", scopes=("operator.admin",), caps=("approvals",))
    approvals_with_cap = await client(stub, "approvals+cap", caps=("approvals",))
    admin_without_cap = await client(stub, "admin", scopes=("operator.admin",))
    agent = await client(stub, "agent", caps=("approvals",))  # deliverable itself, yet excluded as requester
    rid = await agent.send("exec.approval.request", request_params("vis-c", twoPhase=True))
    assert (await agent.res(rid))["payload"]["deliveryRoute"] == "approval-client"
    assert (await admin_with_cap.event("exec.approval.requested"))["payload"]["id"] == "vis-c"
    for socket in (approvals_with_cap, admin_without_cap, agent):
        assert [f for f in await socket.sync() if f["type"] == "event" and f["event"].startswith("exec.")] == []

    # Not visible: an empty list and APPROVAL_NOT_FOUND (observed on 9.6); admin sees everything.
    assert (await approvals_with_cap.call("exec.approval.list", {}))["payload"] == []
    hidden = await approvals_with_cap.call("exec.approval.resolve", {"id": "vis-c", "decision": "deny"})
    assert hidden == err(hidden["id"], NOT_FOUND)
    assert [e["id"] for e in (await admin_without_cap.call("exec.approval.list", {}))["payload"]] == ["vis-c"]
    assert [e["id"] for e in (await agent.call("exec.approval.list", {}))["payload"]] == ["vis-c"]  # its own

    assert (await admin_with_cap.call("exec.approval.resolve", {"id": "vis-c", "decision": "allow-once"}))["ok"]
    assert (await admin_with_cap.event("exec.approval.resolved"))["payload"]["decision"] == "allow-once"
    # The resolved event goes to deliverable and visible connections, the requester included when it is one.
    assert (await agent.event("exec.approval.resolved"))["payload"]["id"] == "vis-c"
    assert (await agent.res(rid))["payload"]["decision"] == "allow-once"
    for socket in (approvals_with_cap, admin_without_cap):
        assert [f for f in await socket.sync() if f["type"] == "event" and f["event"].startswith("exec.")] == []


# ---------------------------------------------------------------------------------------------
# Expiry and grace (§10.6)


@pytest.mark.parametrize("profile", PROFILES)
async def test_expired_approval_answers_null_and_a_late_resolve_is_unknown(
    make_stub: StubFactory, profile: str
) -> None:
    stub = await make_stub(profile=profile, **SCALED)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("exp-1", twoPhase=True, timeoutMs=TIMEOUT_MS))
    accepted = await agent.res(rid)
    created = accepted["payload"]["createdAtMs"]
    # The wire keeps real epoch ms: expiresAtMs = createdAtMs + timeoutMs * time_scale.
    assert accepted["payload"]["expiresAtMs"] == created + 100
    wait_id = await watcher.send("exec.approval.waitDecision", {"id": "exp-1"})
    final = await agent.res(rid)
    assert final == ok(rid, {"id": "exp-1", "decision": None, "createdAtMs": created, "expiresAtMs": created + 100})
    assert (await watcher.res(wait_id))["payload"]["decision"] is None

    late = await watcher.call("exec.approval.resolve", {"id": "exp-1", "decision": "allow-once"})
    # Within the grace (75 ms here) an expired record is "already resolved" (observed on 4.29 and 9.6);
    # after it, unknown.
    assert late in (err(late["id"], NOT_FOUND),
                    err(late["id"], invalid("approval already resolved", reason="APPROVAL_ALREADY_RESOLVED")))
    # April broadcasts nothing on expiry; 9.6 publishes it as a denial by nobody (both observed).
    await watcher.sync()
    resolved = watcher.approval_events("exec.approval.resolved")
    if profile == "current":
        assert [(e["payload"]["decision"], e["payload"]["resolvedBy"]) for e in resolved] == [("deny", None)]
    else:
        assert resolved == []
    assert agent.approval_events("exec.approval.resolved") == []
    # After the grace the record is gone.
    await wait_until(lambda: stub.approvals.broker.get("exp-1") is None, timeout=2)
    gone = await watcher.call("exec.approval.waitDecision", {"id": "exp-1"})
    assert gone == err(gone["id"], invalid("approval expired or not found"))
    assert stub.approvals.stats()["expired_total"] == 1


async def test_a_resolved_record_is_dropped_after_the_grace(make_stub: StubFactory) -> None:
    stub = await make_stub(**SCALED)
    await approver(stub)  # a route besides the requester
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("gr-1", twoPhase=True, timeoutMs=10_000_000))
    await agent.res(rid)
    assert (await agent.call("exec.approval.resolve", {"id": "gr-1", "decision": "deny"}))["ok"] is True
    await wait_until(lambda: stub.approvals.broker.get("gr-1") is None, timeout=2)  # 15 s scaled: 75 ms
    again = await agent.call("exec.approval.resolve", {"id": "gr-1", "decision": "deny"})
    assert again == err(again["id"], NOT_FOUND)


# ---------------------------------------------------------------------------------------------
# exec.approvals.set (openclaw#69482)


@pytest.mark.parametrize("profile", PROFILES)
async def test_exec_approvals_set_accepts_allow_always_source(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    admin = await approver(stub)
    file = {"version": 1, "agents": {"main": {"security": "allowlist", "allowlist": [
        {"id": "e1", "pattern": "/usr/bin/ls", "source": "allow-always", "lastUsedAt": 1795262541240}]}}}
    answer = await admin.call("exec.approvals.set", {"file": file})
    assert answer["ok"] is True, answer
    snapshot = answer["payload"]
    assert (snapshot["exists"], snapshot["file"], snapshot["path"]) == (True, file, "~/.openclaw/exec-approvals.json")
    assert len(snapshot["hash"]) == 64
    assert (await admin.call("exec.approvals.get", {}))["payload"] == snapshot
    wrong = {"version": 1, "agents": {"main": {"allowlist": [{"pattern": "ls", "source": "manual"}]}}}
    refused = await admin.call("exec.approvals.set", {"file": wrong})
    assert refused == err(refused["id"], invalid(
        "invalid exec.approvals.set params: at /file/agents/main/allowlist/0/source: "
        "must be equal to one of the allowed values"))


@pytest.mark.parametrize("profile", PROFILES)
async def test_allow_always_grant_is_persisted(make_stub: StubFactory, profile: str) -> None:
    stub = await make_stub(profile=profile)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    rid = await agent.send("exec.approval.request", request_params("aa-1", twoPhase=True))
    await agent.res(rid)
    await watcher.call("exec.approval.resolve", {"id": "aa-1", "decision": "allow-always"})
    allowlist = (await watcher.call("exec.approvals.get", {}))["payload"]["file"]["agents"]["main"]["allowlist"]
    assert [(e["pattern"], e.get("source")) for e in allowlist] == [
        ("ls -la", "allow-always" if profile == "current" else None)]


# ---------------------------------------------------------------------------------------------
# The stub-only `intent` dedupe (fix arm, §11)


@pytest.mark.parametrize("profile", PROFILES)
async def test_intent_dedup_coalesces_a_retry_under_a_new_id(
    make_stub: StubFactory, profile: str, tmp_path: Path
) -> None:
    log_path = tmp_path / "stub.jsonl"
    stub = await make_stub(profile=profile, approval_dedup="intent", log_file=log_path)
    watcher = await approver(stub)
    first, retry = await client(stub, "agent-1"), await client(stub, "agent-2")
    rid1 = await first.send("exec.approval.request", request_params("try-1", twoPhase=True))
    accepted1 = (await first.res(rid1))["payload"]
    rid2 = await retry.send("exec.approval.request", request_params("try-2", twoPhase=True))
    accepted2 = (await retry.res(rid2))["payload"]
    assert accepted2 == accepted1  # the pending record's id and times
    await watcher.event("exec.approval.requested")
    assert len([f for f in await watcher.sync() if f.get("event") == "exec.approval.requested"]) == 1
    assert [e["id"] for e in (await watcher.call("exec.approval.list", {}))["payload"]] == ["try-1"]

    await watcher.call("exec.approval.resolve", {"id": "try-1", "decision": "allow-once"})
    for socket, rid in ((first, rid1), (retry, rid2)):
        assert (await socket.res(rid))["payload"] == {"id": "try-1", "decision": "allow-once",
                                                      "createdAtMs": accepted1["createdAtMs"],
                                                      "expiresAtMs": accepted1["expiresAtMs"]}
    stats = stub.approvals.stats()
    assert (stats["requested_total"], stats["coalesced_total"], stats["resolved_total"]) == (1, 1, 1)

    stub.log.close()  # flush
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    requested = [r["1"] for r in records if r["event"] == "approval.requested"]
    assert requested == [
        {"id": "try-1", "command": "ls -la", "sessionKey": "agent:main:main", "agentId": "main", "coalesced": False},
        {"id": "try-1", "command": "ls -la", "sessionKey": "agent:main:main", "agentId": "main", "coalesced": True,
         "requestedId": "try-2"},
    ]
    assert [r["1"] for r in records if r["event"] == "approval.resolved"] == [{"id": "try-1", "decision": "allow-once"}]


async def test_without_dedup_a_retry_is_a_new_prompt(make_stub: StubFactory) -> None:
    stub = await make_stub()
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    for approval_id in ("try-1", "try-2"):
        rid = await agent.send("exec.approval.request", request_params(approval_id, twoPhase=True))
        assert (await agent.res(rid))["payload"]["id"] == approval_id
    await watcher.event("exec.approval.requested")
    await watcher.event("exec.approval.requested")
    assert stub.approvals.stats()["pending"] == 2


async def test_intent_dedup_keys_on_run_id_when_given(make_stub: StubFactory) -> None:
    stub = await make_stub(profile="current", approval_dedup="intent")
    await approver(stub)
    agent = await client(stub, "agent")
    ids = []
    for approval_id, run_id, command in (("a", "run-1", "ls"), ("b", "run-1", "ls -l"), ("c", "run-2", "ls")):
        rid = await agent.send("exec.approval.request",
                               request_params(approval_id, runId=run_id, command=command, twoPhase=True))
        ids.append((await agent.res(rid))["payload"]["id"])
    assert ids == ["a", "a", "c"]


# ---------------------------------------------------------------------------------------------
# Observability and the pending bound


async def test_stats_count_approvals(make_stub: StubFactory, tmp_path: Path) -> None:
    log_path = tmp_path / "stub.jsonl"
    stub = await make_stub(log_file=log_path, **SCALED)
    watcher = await approver(stub)
    agent = await client(stub, "agent")
    for approval_id, timeout_ms in (("s-1", 10_000_000), ("s-2", 10_000_000), ("s-3", TIMEOUT_MS)):
        rid = await agent.send("exec.approval.request",
                               request_params(approval_id, command=f"echo {approval_id}", twoPhase=True,
                                              timeoutMs=timeout_ms))
        await agent.res(rid)
    pending = (await http_stats(stub))["approvals"]
    assert pending["pending"] in (2, 3) and pending["requested_total"] == 3
    await watcher.call("exec.approval.resolve", {"id": "s-1", "decision": "deny"})
    await wait_until(lambda: stub.approvals.stats()["expired_total"] == 1, timeout=2)
    approvals = (await http_stats(stub))["approvals"]
    assert set(approvals) == {"pending", "pending_bytes_estimate", "requested_total", "resolved_total",
                              "expired_total", "coalesced_total"}
    assert {k: v for k, v in approvals.items() if k != "pending_bytes_estimate"} == {
        "pending": 1, "requested_total": 3, "resolved_total": 1, "expired_total": 1, "coalesced_total": 0}
    assert 500 < approvals["pending_bytes_estimate"] < 5000  # one small record

    stub.log.close()
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["1"] for r in records if r["event"] == "approval.expired"] == [{"id": "s-3", "reason": "expired"}]
    assert all(r["0"] == '{"subsystem":"gateway/approvals"}' for r in records if r["event"].startswith("approval."))


async def test_pending_records_are_bounded(make_stub: StubFactory) -> None:
    stub = await make_stub(max_pending_approvals=2)
    await approver(stub)  # a route besides the requester
    agent = await client(stub, "agent")
    for approval_id in ("b-1", "b-2"):
        rid = await agent.send("exec.approval.request", request_params(approval_id, twoPhase=True))
        assert (await agent.res(rid))["payload"]["status"] == "accepted"
    over = await agent.call("exec.approval.request", request_params("b-3", twoPhase=True))
    assert over == err(over["id"], {"code": "UNAVAILABLE", "retryable": True,
                                    "message": "too many pending exec approvals (2); "
                                               "resolve some or wait for them to expire"})
    await agent.call("exec.approval.resolve", {"id": "b-1", "decision": "deny"})
    rid = await agent.send("exec.approval.request", request_params("b-3", twoPhase=True))
    assert (await agent.res(rid))["payload"]["status"] == "accepted"  # room again


# ---------------------------------------------------------------------------------------------
# The broker alone: told the time, no I/O


def test_broker_expires_at_expires_at_ms_and_drops_after_the_scaled_grace() -> None:
    broker = ApprovalBroker(scaled_ms=lambda ms: ms * 0.5, max_pending=2)
    record = broker.create(request={"command": "ls"}, timeout_ms=1000, now_ms=10_000, approval_id="a",
                           requester=None)
    assert (record.created_at_ms, record.expires_at_ms) == (10_000, 10_500)
    assert broker.advance(10_499) == ([], [])
    assert broker.advance(10_500) == ([record], [])
    assert (record.status, record.decision, record.drop_at_ms) == ("expired", None, 10_500 + 7_500)
    assert broker.stats() == {"pending": 0, "pending_bytes_estimate": 0}
    assert broker.advance(17_999) == ([], []) and broker.get("a") is record
    assert broker.advance(18_000) == ([], ["a"]) and broker.get("a") is None


def test_broker_refuses_a_kept_id_and_a_full_table() -> None:
    broker = ApprovalBroker(max_pending=1)
    broker.create(request={"command": "ls"}, timeout_ms=1000, now_ms=0, approval_id="a", requester=None)
    with pytest.raises(ApprovalError) as kept:
        broker.create(request={"command": "ls"}, timeout_ms=1000, now_ms=0, approval_id="a", requester=None)
    assert kept.value.error.message == "approval id already pending"
    with pytest.raises(ApprovalError) as full:
        broker.create(request={"command": "ls"}, timeout_ms=1000, now_ms=0, approval_id="b", requester=None)
    assert full.value.error.code == "UNAVAILABLE"
