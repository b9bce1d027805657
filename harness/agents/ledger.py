"""What the duplicate-prompt scenario recorded: intents, approval requests, prompts, decisions.

An intent is one run's exec call that needs approval: (agent, run). Each provider attempt of that run
asks for approval under some id (a fresh one per attempt as shipped). A prompt is what a chat shows the
operator for one approval id. A decision is the operator's click; it is lost when no attempt of the run
is waiting on that id any more when it lands (the run failed over, or ended, without it).
All times are profile milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    agent: str
    run_id: str
    attempt: int
    approval_id: str
    requested_ms: float
    outcome: str = "pending"  # accepted | already-pending | no-route | error
    waited_on: str | None = None  # the id the attempt waited on: its own, or the one the gateway coalesced it into
    waited_until_ms: float | None = None  # when this attempt stopped waiting for a decision
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

    requests: list[RequestRecord] = field(default_factory=list)
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
