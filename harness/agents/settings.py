"""What a profile says about the duplicate-prompt scenario's agents and operator (plain data, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

from openclaw_wire.constants import DEFAULT_EXEC_APPROVAL_TIMEOUT_MS


@dataclass(frozen=True)
class AgentSettings:
    count: int
    heartbeat_ms: float
    provider_timeouts_ms: tuple[float, ...]
    command: str
    approval_timeout_ms: int = DEFAULT_EXEC_APPROVAL_TIMEOUT_MS


@dataclass(frozen=True)
class OperatorSettings:
    answer_after_ms: float | None  # None: away, never answers
    decision: str = "allow-once"
