"""The events every part of a run speaks: handshake attempts and their outcomes, disconnects, and the
approval scenario's requests, prompts and clicks; and the two ledgers that collect them during a run.

The live clients (`harness.accounts`, `harness.agents`) append to the ledgers; the verdict
(`harness.verdict`) judges what they hold. Both import this module and nothing of each other, so a
judge can run on recorded events alone (no sockets, no gevent), and a simulator that produces the same
events is judged by the same code. All times are scenario milliseconds (see `harness.clock`).

An attempt ends in `hello` or in one failure cause. Causes map onto the storm's three kinds:
`handshake_timeout` (closed 1000 with no reason before hello: the gateway's handshake timer),
`preauth_rejected` (HTTP 503 at upgrade: the per-IP pre-auth budget), and `connect_error` (anything
else before hello: refused, reset, challenge or request timeout, an error response, another close).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class Outcome(enum.Enum):
    HELLO = "hello"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    PREAUTH_REJECTED = "preauth_rejected"
    CHALLENGE_TIMEOUT = "challenge_timeout"
    REQUEST_TIMEOUT = "request_timeout"
    REJECTED = "rejected"  # an error res to connect
    CLOSED = "closed"  # another close before hello
    NETWORK_ERROR = "network_error"  # refused, reset, unreachable


StormKind = Literal["handshake_timeout", "preauth_rejected", "connect_error"]
STORM_KINDS: tuple[StormKind, ...] = ("handshake_timeout", "preauth_rejected", "connect_error")
STORM_KIND: dict[Outcome, StormKind] = {
    Outcome.HANDSHAKE_TIMEOUT: "handshake_timeout",
    Outcome.PREAUTH_REJECTED: "preauth_rejected",
    Outcome.CHALLENGE_TIMEOUT: "connect_error",
    Outcome.REQUEST_TIMEOUT: "connect_error",
    Outcome.REJECTED: "connect_error",
    Outcome.CLOSED: "connect_error",
    Outcome.NETWORK_ERROR: "connect_error",
}


@dataclass(frozen=True)
class Attempt:
    """One handshake attempt of one handler client, from its connect to hello or failure."""

    account: str
    handler_id: int
    started_ms: float
    ended_ms: float
    outcome: Outcome
    close_code: int | None = None
    detail: str = ""

    @property
    def latency_ms(self) -> float:
        return self.ended_ms - self.started_ms

    @property
    def storm_kind(self) -> StormKind | None:
        return STORM_KIND.get(self.outcome)


@dataclass(frozen=True)
class Disconnect:
    """An authenticated connection that closed (the inner client then reconnects on its own)."""

    account: str
    handler_id: int
    at_ms: float
    close_code: int | None
    reason: str


@dataclass
class AccountLedger:
    """Every attempt and disconnect of a run's accounts. Shared by all of them; appends only, so greenlets
    can share it without locks."""

    attempts: list[Attempt] = field(default_factory=list)
    disconnects: list[Disconnect] = field(default_factory=list)
    connected: dict[str, int] = field(default_factory=dict)  # account -> handler id holding hello now

    def record_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if attempt.outcome is Outcome.HELLO:
            self.connected[attempt.account] = attempt.handler_id

    def record_disconnect(self, disconnect: Disconnect) -> None:
        self.disconnects.append(disconnect)
        if self.connected.get(disconnect.account) == disconnect.handler_id:
            del self.connected[disconnect.account]

    def storm_entries(self) -> int:
        return sum(1 for a in self.attempts if a.storm_kind is not None)


# -- the duplicate-prompt scenario (openclaw#69478) ------------------------------------------------
# An intent is one run's exec call that needs approval: (agent, run). Each provider attempt of that run
# asks for approval under some id (a fresh one per attempt as shipped). A prompt is what a chat shows the
# operator for one approval id. A decision is the operator's click; it is lost when no attempt of the run
# is waiting on that id any more when it lands (the run failed over, or ended, without it).


@dataclass
class ApprovalRequest:
    """One provider attempt asking for approval; filled in as the attempt goes on."""

    agent: str
    run_id: str
    attempt: int
    approval_id: str
    requested_ms: float
    outcome: str = "pending"  # accepted | already-pending | no-route | error: …
    waited_on: str | None = None  # the id the attempt waited on: its own, or the one the gateway coalesced it into
    decision: str | None = None  # what this attempt received, if anything


@dataclass(frozen=True)
class Prompt:
    chat: str  # the account that posted it
    approval_id: str
    command: str
    posted_ms: float


@dataclass(frozen=True)
class Click:
    approval_id: str
    decision: str
    clicked_ms: float
    accepted: bool  # the gateway answered ok
    error: str = ""


@dataclass
class ApprovalLedger:
    """Shared by the agents, the chats and the operator of one run (greenlets: append-only lists)."""

    requests: list[ApprovalRequest] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    runs: dict[tuple[str, str], str] = field(default_factory=dict)  # (agent, run) -> command
    pending_samples: list[tuple[float, int]] = field(default_factory=list)  # (t, gateway pending count)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def start_run(self, agent: str, run_id: str, command: str) -> None:
        self.runs[(agent, run_id)] = command

    def post_prompt(self, chat: str, approval_id: str, command: str, now_ms: float) -> bool:
        """A chat shows a prompt for an approval id once (handlers dedupe by id only)."""
        key = (chat, approval_id)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.prompts.append(Prompt(chat, approval_id, command, now_ms))
        return True


@dataclass(frozen=True)
class HealthSample:
    """One call of the harness's health probe: when it was sent, how long the answer took, and the event-loop
    delay the gateway reported in it (its worst over its last interval, where it reports one)."""

    at_ms: float
    rpc_ms: float
    event_loop_lag_ms: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """Everything one run of one arm recorded, as plain data: what the verdict judges.

    A live run fills it from its ledgers and the gateway's log; a simulated run from its own events.
    """

    accounts: Sequence[str]
    attempts: Sequence[Attempt]
    disconnects: Sequence[Disconnect]
    connected_at_end: frozenset[str]
    duration_ms: float
    startup_window_ms: float
    final_window_ms: float
    gateway_records: Sequence[Mapping[str, Any]] | None = None  # the gateway's JSON log, if readable
    health: Sequence[HealthSample] = ()
    event_loop_lag_ms: Mapping[str, float | None] | None = None  # p99, max, already in scenario ms
    probe_handshake_timeouts: int = 0  # the harness's own health probe, which the gateway also logs
    probe_reconnects: int = 0
    approvals: ApprovalLedger | None = None  # the duplicate-prompt scenario, when the run has one

    @property
    def health_rpc_ms(self) -> list[float]:
        return [sample.rpc_ms for sample in self.health]
