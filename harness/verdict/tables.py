"""The tables of a run, as rows: pure, from events. Per account and per intent (accounts.csv, intents.csv), and
the events themselves (attempts.csv, disconnects.csv, prompts.csv), which the report draws from a results
folder alone."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from harness.events import ApprovalLedger, Outcome, RunRecord
from harness.verdict.duplicates import decided_ids, intent_of_ids

Row = list[str | int | float | bool]
FAILURE_CAUSES = [o.value for o in Outcome if o is not Outcome.HELLO]
ACCOUNT_COLUMNS = ["account", "attempts", "successes", *(f"failed_{c}" for c in FAILURE_CAUSES), "close_codes",
                   "first_connect_ms", "reconnects", "connected_at_end"]
ATTEMPT_COLUMNS = ["account", "handler", "started_s", "ended_s", "outcome", "storm_kind", "close_code", "detail"]
DISCONNECT_COLUMNS = ["account", "handler", "at_s", "close_code", "reason"]
PROMPT_COLUMNS = ["posted_s", "chat", "approval_id", "agent", "run", "command"]
INTENT_COLUMNS = ["agent", "run", "command", "attempts", "approval_ids", "prompts", "decision", "decisions_lost",
                  "first_requested_s"]


def account_rows(record: RunRecord) -> list[Row]:
    """One row per account: attempts, successes, failures by cause, close codes, first connect, reconnects."""
    rows: list[Row] = []
    # Attempts no account can be named for (in-process: a connection closed before its connect frame was read).
    unnamed = dict.fromkeys(a.account for a in record.attempts if a.account not in record.accounts)
    for account in [*record.accounts, *unnamed]:
        mine = [a for a in record.attempts if a.account == account]
        by_outcome = Counter(a.outcome for a in mine)
        codes = Counter(a.close_code for a in mine if a.close_code is not None)
        codes.update(d.close_code for d in record.disconnects if d.account == account and d.close_code)
        hellos = [a.ended_ms for a in mine if a.outcome is Outcome.HELLO]
        rows.append([
            account, len(mine), by_outcome[Outcome.HELLO],
            *(by_outcome[Outcome(c)] for c in FAILURE_CAUSES),
            " ".join(f"{code}x{n}" for code, n in sorted(codes.items())),
            round(min(hellos), 1) if hellos else "",
            max(0, len(mine) - 1),
            account in record.connected_at_end,
        ])
    return rows


def attempt_rows(record: RunRecord) -> list[Row]:
    """Every handshake attempt in the order it ended: who, when (scenario s), and how it ended."""
    return [[a.account, a.handler_id, _s(a.started_ms), _s(a.ended_ms), a.outcome.value, a.storm_kind or "",
             "" if a.close_code is None else a.close_code, a.detail]
            for a in sorted(record.attempts, key=lambda a: a.ended_ms)]


def disconnect_rows(record: RunRecord) -> list[Row]:
    """Every authenticated connection that closed: who, when, the close code and reason."""
    return [[d.account, d.handler_id, _s(d.at_ms), "" if d.close_code is None else d.close_code, d.reason]
            for d in sorted(record.disconnects, key=lambda d: d.at_ms)]


def prompt_rows(ledger: ApprovalLedger) -> list[Row]:
    """Every prompt a chat showed, with the intent (agent, run) its approval id belongs to."""
    intent_of = intent_of_ids(ledger)
    rows: list[Row] = []
    for p in sorted(ledger.prompts, key=lambda p: p.posted_ms):
        agent, run_id = intent_of.get(p.approval_id, ("", ""))
        rows.append([_s(p.posted_ms), p.chat, p.approval_id, agent, run_id, p.command])
    return rows


def _s(ms: float) -> float:
    return round(ms / 1000.0, 3)


@dataclass
class _Intent:
    first_requested_ms: float
    attempts: int = 0
    ids: list[str] = field(default_factory=list)
    prompts: int = 0
    decision: str = ""
    lost: int = 0


def intent_rows(ledger: ApprovalLedger) -> list[Row]:
    """One row per intent: agent, run, command, attempts, approval ids, prompts, decision, lost decisions, and
    when it was first asked."""
    intent_of = intent_of_ids(ledger)
    intents: dict[tuple[str, str], _Intent] = {}
    for r in ledger.requests:
        intent = intents.setdefault((r.agent, r.run_id), _Intent(r.requested_ms))
        intent.attempts += 1
        if r.approval_id not in intent.ids:
            intent.ids.append(r.approval_id)
        if r.decision is not None:
            intent.decision = r.decision
    prompts: defaultdict[tuple[str, str], int] = defaultdict(int)
    for p in ledger.prompts:
        if p.approval_id in intent_of:
            prompts[intent_of[p.approval_id]] += 1
    decided = decided_ids(ledger)
    for c in ledger.clicks:
        if c.accepted and c.approval_id not in decided and c.approval_id in intent_of:
            intents[intent_of[c.approval_id]].lost += 1
    return [[agent, run_id, ledger.runs.get((agent, run_id), ""), i.attempts, " ".join(i.ids), prompts[(agent, run_id)],
             i.decision, i.lost, round(i.first_requested_ms / 1000.0, 3)]
            for (agent, run_id), i in intents.items()]
