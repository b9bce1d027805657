"""Duplicate-prompt figures (openclaw#69478), pure: from the approval ledger to summary numbers.

An intent is one run's exec call: (agent, run). Prompts are counted per chat, because a prompt posted
once in each of two chats is not a duplicate; duplicates are the prompts beyond one per intent and
chat. A decision is lost when the operator's accepted click lands on an approval id that no attempt
of its run received a decision for (the run failed over, or ended, without it).
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from harness.agents.ledger import ApprovalLedger

RATE_WINDOW_MS = 1000.0


def intent_of_ids(ledger: ApprovalLedger) -> dict[str, tuple[str, str]]:
    """Every approval id an attempt asked under or waited on, mapped to its intent."""
    out = {r.approval_id: (r.agent, r.run_id) for r in ledger.requests}
    out.update({r.waited_on: (r.agent, r.run_id) for r in ledger.requests if r.waited_on})
    return out


def decided_ids(ledger: ApprovalLedger) -> set[str]:
    """The ids whose decision reached a waiting attempt."""
    return {r.waited_on or r.approval_id for r in ledger.requests if r.decision is not None}


def peak_rate_per_s(times_ms: list[float], window_ms: float = RATE_WINDOW_MS) -> int:
    """The most events in any window of `window_ms` (two pointers over sorted times)."""
    ordered = sorted(times_ms)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_ms:
            start += 1
        best = max(best, end - start + 1)
    return best


def summarize_duplicates(ledger: ApprovalLedger) -> dict[str, Any]:
    intent_of = intent_of_ids(ledger)
    asked = {intent_of[r.approval_id] for r in ledger.requests}
    prompts = [p for p in ledger.prompts if p.approval_id in intent_of]
    per_intent_chat = Counter((intent_of[p.approval_id], p.chat) for p in prompts)
    decided = decided_ids(ledger)
    accepted_clicks = [c for c in ledger.clicks if c.accepted]
    lost = [c for c in accepted_clicks if c.approval_id not in decided]
    pending = [n for _, n in ledger.pending_samples]
    return {
        "intents": len(asked),
        "intents_decided": len({intent_of[i] for i in decided}),
        "approval_requests_total": len(ledger.requests),
        "prompts_total": len(prompts),
        "max_prompts_per_intent": max(per_intent_chat.values(), default=0),
        "duplicate_prompts": sum(n - 1 for n in per_intent_chat.values()),
        "peak_prompt_rate_per_s": peak_rate_per_s([p.posted_ms for p in prompts]),
        "pending_approvals_max": max(pending) if pending else None,
        "clicks_total": len(ledger.clicks),
        "clicks_refused": sum(1 for c in ledger.clicks if not c.accepted),
        "decisions_lost": len(lost),
        "unknown_prompts": sum(1 for p in ledger.prompts if p.approval_id not in intent_of),
    }


def write_intents_csv(ledger: ApprovalLedger, path: Path) -> None:
    """One row per intent: agent, run, command, attempts, approval ids, prompts, decision, lost decisions."""
    intent_of = intent_of_ids(ledger)
    rows: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {"attempts": 0, "ids": [], "prompts": 0,
                                                                         "decision": "", "lost": 0})
    for r in ledger.requests:
        row = rows[(r.agent, r.run_id)]
        row["attempts"] += 1
        if r.approval_id not in row["ids"]:
            row["ids"].append(r.approval_id)
        if r.decision is not None:
            row["decision"] = r.decision
    for p in ledger.prompts:
        if p.approval_id in intent_of:
            rows[intent_of[p.approval_id]]["prompts"] += 1
    decided = decided_ids(ledger)
    for c in ledger.clicks:
        if c.accepted and c.approval_id not in decided and c.approval_id in intent_of:
            rows[intent_of[c.approval_id]]["lost"] += 1
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["agent", "run", "command", "attempts", "approval_ids", "prompts", "decision",
                         "decisions_lost"])
        for (agent, run_id), row in rows.items():
            writer.writerow([agent, run_id, ledger.runs.get((agent, run_id), ""), row["attempts"],
                             " ".join(row["ids"]), row["prompts"], row["decision"], row["lost"]])
