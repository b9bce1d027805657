"""What the fake accounts saw: every handshake attempt and every later disconnect, in profile time.

An attempt ends in `hello` or in one failure cause. Causes map onto the storm's three kinds:
`handshake_timeout` (closed 1000 with no reason before hello: the gateway's handshake timer),
`preauth_rejected` (HTTP 503 at upgrade: the per-IP pre-auth budget), and `connect_error` (anything
else before hello: refused, reset, challenge or request timeout, an error response, another close).
"""

from __future__ import annotations

import csv
import enum
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class Outcome(enum.Enum):
    HELLO = "hello"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    PREAUTH_REJECTED = "preauth_rejected"
    CHALLENGE_TIMEOUT = "challenge_timeout"
    REQUEST_TIMEOUT = "request_timeout"
    REJECTED = "rejected"  # an error res to connect
    CLOSED = "closed"  # another close before hello
    NETWORK_ERROR = "network_error"  # refused, reset, unreachable


STORM_KIND = {
    Outcome.HANDSHAKE_TIMEOUT: "handshake_timeout",
    Outcome.PREAUTH_REJECTED: "preauth_rejected",
    Outcome.CHALLENGE_TIMEOUT: "connect_error",
    Outcome.REQUEST_TIMEOUT: "connect_error",
    Outcome.REJECTED: "connect_error",
    Outcome.CLOSED: "connect_error",
    Outcome.NETWORK_ERROR: "connect_error",
}
STORM_KINDS = ("handshake_timeout", "preauth_rejected", "connect_error")


@dataclass(frozen=True)
class Attempt:
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
    def storm_kind(self) -> str | None:
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
class Ledger:
    """Shared by every account of a run; appends only, so greenlets can share it without locks."""

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

    def write_accounts_csv(self, path: Path, accounts: list[str]) -> None:
        """One row per account: attempts, successes, failures by cause, close codes, first connect, reconnects."""
        causes = [o.value for o in Outcome if o is not Outcome.HELLO]
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["account", "attempts", "successes", *(f"failed_{c}" for c in causes),
                             "close_codes", "first_connect_ms", "reconnects", "connected_at_end"])
            for account in accounts:
                mine = [a for a in self.attempts if a.account == account]
                by_outcome = Counter(a.outcome for a in mine)
                codes = Counter(a.close_code for a in mine if a.close_code is not None)
                codes.update(d.close_code for d in self.disconnects if d.account == account and d.close_code)
                hellos = [a.ended_ms for a in mine if a.outcome is Outcome.HELLO]
                writer.writerow([
                    account, len(mine), by_outcome[Outcome.HELLO],
                    *(by_outcome[Outcome(c)] for c in causes),
                    " ".join(f"{code}x{n}" for code, n in sorted(codes.items())),
                    round(min(hellos), 1) if hellos else "",
                    max(0, len(mine) - 1),
                    account in self.connected,
                ])
