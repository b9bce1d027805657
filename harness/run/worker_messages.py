"""What a distributed run's master and workers tell each other (harness.run.workers), as plain data: no gevent.

The journal carries a worker's attempts and disconnects in the order it recorded them; the plan, what a worker
needs to run its share of the accounts; `LostWorker`, a worker gone with its accounts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from harness.events import AccountLedger, Attempt, Disconnect, Outcome
from harness.policy.arms import FixSettings
from harness.policy.backoff import BreakerSettings
from harness.policy.coordinator import CoordinatorSettings, CoordinatorStatistics
from harness.policy.start_gates import GateSettings

# -- the journal: a worker's attempts and disconnects, in the order it recorded them -----------------------

def _encode(entry: Attempt | Disconnect) -> list[Any]:
    if isinstance(entry, Attempt):
        return ["a", entry.account, entry.handler_id, entry.started_ms, entry.ended_ms, entry.outcome.value,
                entry.close_code, entry.detail]
    return ["d", entry.account, entry.handler_id, entry.at_ms, entry.close_code, entry.reason]


def replay(ledger: AccountLedger, journal: list[list[Any]]) -> None:
    """Record a worker's journal into the master's ledger, in the worker's order."""
    for entry in journal:
        if entry[0] == "a":
            account, handler, started, ended, outcome, code, detail = entry[1:]
            ledger.record_attempt(Attempt(account, handler, started, ended, Outcome(outcome), code, detail))
        else:
            account, handler, at_ms, code, reason = entry[1:]
            ledger.record_disconnect(Disconnect(account, handler, at_ms, code, reason))


@dataclass
class JournaledLedger(AccountLedger):
    """A worker's ledger, which also keeps what it recorded since the master last asked (`take`)."""

    journal: list[list[Any]] = field(default_factory=list)

    def record_attempt(self, attempt: Attempt) -> None:
        super().record_attempt(attempt)
        self.journal.append(_encode(attempt))

    def record_disconnect(self, disconnect: Disconnect) -> None:
        super().record_disconnect(disconnect)
        self.journal.append(_encode(disconnect))

    def take(self) -> list[list[Any]]:
        taken, self.journal = self.journal, []
        return taken


# -- the plan a worker gets ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunPlan:
    """What a worker needs to run its accounts: everything but the accounts is the same for every worker."""

    url: str
    token: str
    arm: str
    time_scale: float
    duration_s: float
    fixes: dict[str, dict[str, int]]
    protocol: int
    device_signed: bool
    handshake_timeout_ms: int
    keep_reconnecting_after_failed_start: bool
    seed: int | None
    worker_index: int = 0
    first_index: int = 0  # the worker's first account's index in the run (names are <channel>-<index + 1>)
    channels: tuple[str, ...] = ()

    def to_message(self) -> dict[str, Any]:
        plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))  # plain data, as msgpack carries
        return plain

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**{**data, "channels": tuple(data["channels"])})

    def fix_settings(self) -> FixSettings:
        return FixSettings(CoordinatorSettings(**self.fixes["coordinator"]), GateSettings(**self.fixes["gates"]),
                           BreakerSettings(**self.fixes["breaker"]))

    def worker_seed(self) -> int | None:
        """Each worker's own random stream, as each OpenClaw process has its own."""
        return None if self.seed is None else self.seed + 7919 * self.worker_index


@dataclass(frozen=True)
class LostWorker:
    worker: str
    accounts: tuple[str, ...]
    at_ms: float  # scenario time it was found gone
    how: str

    def describe(self) -> str:
        names = self.accounts
        shown = ", ".join(names[:3]) + (f" … {names[-1]}" if len(names) > 3 else "")
        return f"worker {self.worker} {self.how} at {self.at_ms / 1000:.0f} s with {len(names)} accounts ({shown})"


def merged_statistics(stats: list[CoordinatorStatistics]) -> CoordinatorStatistics | None:
    """The workers' coordinators as one: their slots and waits added, the longest wait."""
    if not stats:
        return None
    summed = {name: sum(getattr(s, name) for s in stats)
              for name in ("borrowed", "total", "waiting", "granted_total", "forced_releases", "cancelled_waiters")}
    return CoordinatorStatistics(**summed, max_wait_ms=max(s.max_wait_ms for s in stats))
