"""Duplicate-prompt figures (openclaw#69478), pure: from the approval ledger to summary numbers.

An intent is one run's exec call: (agent, run). Prompts are counted per chat, because a prompt posted
once in each of two chats is not a duplicate; duplicates are the prompts beyond one per intent and
chat. A decision is lost when the operator's accepted click lands on an approval id that no attempt
of its run received a decision for (the run failed over, or ended, without it).
"""

from __future__ import annotations

from collections import Counter

from harness.events import ApprovalLedger
from harness.summary import DuplicateFigures

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


def summarize_duplicates(ledger: ApprovalLedger) -> DuplicateFigures:
    intent_of = intent_of_ids(ledger)
    asked = {intent_of[r.approval_id] for r in ledger.requests}
    prompts = [p for p in ledger.prompts if p.approval_id in intent_of]
    per_intent_chat = Counter((intent_of[p.approval_id], p.chat) for p in prompts)
    decided = decided_ids(ledger)
    accepted_clicks = [c for c in ledger.clicks if c.accepted]
    # A click on a prompt of no intent of this run (another run's, still pending on a gateway that stayed up)
    # is not this run's decision lost: it is counted with the unknown prompts.
    lost = [c for c in accepted_clicks if c.approval_id in intent_of and c.approval_id not in decided]
    pending = [n for _, n in ledger.pending_samples]
    return DuplicateFigures(
        intents=len(asked),
        intents_decided=len({intent_of[i] for i in decided}),
        approval_requests_total=len(ledger.requests),
        prompts_total=len(prompts),
        max_prompts_per_intent=max(per_intent_chat.values(), default=0),
        duplicate_prompts=sum(n - 1 for n in per_intent_chat.values()),
        peak_prompt_rate_per_s=peak_rate_per_s([p.posted_ms for p in prompts]),
        pending_approvals_max=max(pending) if pending else None,
        clicks_total=len(ledger.clicks),
        clicks_refused=sum(1 for c in ledger.clicks if not c.accepted),
        decisions_lost=len(lost),
        unknown_prompts=sum(1 for p in ledger.prompts if p.approval_id not in intent_of),
    )
