"""Duplicate-prompt figures from hand-written approval ledgers (openclaw#69478), and the scenario end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from schema_check import load_comparison

from harness.events import ApprovalLedger, ApprovalRequest, Click
from harness.verdict.duplicates import peak_rate_per_s, summarize_duplicates

ROOT = Path(__file__).resolve().parent.parent


def shipped_cascade() -> ApprovalLedger:
    """One run, three providers, a fresh id each; the operator answers the first prompt too late."""
    ledger = ApprovalLedger()
    ledger.start_run("agent-1", "run-1", "df -h")
    for attempt, approval_id in enumerate(["id-1", "id-2", "id-3"], start=1):
        ledger.requests.append(ApprovalRequest("agent-1", "run-1", attempt, approval_id, attempt * 10_000.0,
                                             "accepted", waited_on=approval_id))
        ledger.post_prompt("telegram-1", approval_id, "df -h", attempt * 10_000.0 + 5)
    ledger.clicks.append(Click("id-1", "allow-once", 35_000, accepted=True))
    return ledger


def test_every_failover_is_a_new_prompt_and_the_late_answer_is_lost() -> None:
    figures = summarize_duplicates(shipped_cascade())
    assert figures.intents == 1
    assert (figures.prompts_total, figures.max_prompts_per_intent, figures.duplicate_prompts) == (3, 3, 2)
    assert figures.decisions_lost == 1
    assert figures.intents_decided == 0


def test_a_chat_shows_an_id_once_and_two_chats_are_not_duplicates() -> None:
    ledger = ApprovalLedger()
    ledger.requests.append(ApprovalRequest("a", "r", 1, "id-1", 0, "accepted", waited_on="id-1"))
    assert ledger.post_prompt("telegram-1", "id-1", "ls", 1) is True
    assert ledger.post_prompt("telegram-1", "id-1", "ls", 2) is False  # a replay of the same id
    assert ledger.post_prompt("matrix-1", "id-1", "ls", 3) is True
    figures = summarize_duplicates(ledger)
    assert (figures.prompts_total, figures.duplicate_prompts, figures.max_prompts_per_intent) == (2, 0, 1)


def test_a_decision_on_the_id_the_gateway_coalesced_into_is_not_lost() -> None:
    ledger = ApprovalLedger()
    ledger.requests.append(ApprovalRequest("a", "r", 1, "id-1", 0, "accepted", waited_on="id-1"))
    # The retry minted id-2, but the gateway coalesced it into id-1, which it then waited on and got.
    ledger.requests.append(ApprovalRequest("a", "r", 2, "id-2", 10_000, "accepted", waited_on="id-1",
                                         decision="allow-once"))
    ledger.post_prompt("telegram-1", "id-1", "ls", 1)
    ledger.clicks.append(Click("id-1", "allow-once", 15_000, accepted=True))
    figures = summarize_duplicates(ledger)
    assert (figures.decisions_lost, figures.intents_decided, figures.max_prompts_per_intent) == (0, 1, 1)


def test_an_answer_to_another_runs_prompt_is_unknown_not_lost() -> None:
    # On a gateway that stayed up (a soak), the chat still shows the previous run's pending approvals; the
    # operator answers one. No intent of this run asked under that id: not this run's lost decision.
    ledger = shipped_cascade()
    ledger.post_prompt("telegram-1", "id-from-before", "df -h", 1_000)
    ledger.clicks.append(Click("id-from-before", "allow-once", 26_000, accepted=True))
    figures = summarize_duplicates(ledger)
    assert (figures.decisions_lost, figures.unknown_prompts, figures.prompts_total) == (1, 1, 3)


def test_peak_prompt_rate_counts_the_busiest_second() -> None:
    assert peak_rate_per_s([0, 100, 900, 1000, 1500, 5000]) == 3  # 0-999 ms, or 900-1899 ms
    assert peak_rate_per_s([]) == 0


@pytest.mark.slow
def test_the_cascade_and_its_fixes_end_to_end(tmp_path: Path) -> None:
    text = (ROOT / "profiles" / "heartbeat-failover-telegram.yaml").read_text(encoding="utf-8")
    short = text.replace("duration_s: 300", "duration_s: 110").replace("heartbeat_ms: 120000", "heartbeat_ms: 60000")
    short = short.replace("decisions_lost: \">= 11\"", "decisions_lost: \">= 3\"")
    profile = tmp_path / "failover.yaml"
    profile.write_text(short, encoding="utf-8")
    command = [sys.executable, "-m", "harness.cli", "compare", str(profile), "--out", str(tmp_path / "o")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    arms = {arm: s["duplicates"] for arm, s in load_comparison(tmp_path / "o" / "compare.json").items()}
    assert arms["none"]["max_prompts_per_intent"] == 3 and arms["none"]["duplicate_prompts"] >= 6
    assert arms["none"]["intents_decided"] == 0
    for fixed in ("stable-id", "gateway-dedup"):
        assert arms[fixed]["max_prompts_per_intent"] == 1, fixed
        assert arms[fixed]["decisions_lost"] == 0, fixed
        # Every answer the operator gave reached the run that needed it (runs begun late are cut by the end).
        assert arms[fixed]["intents_decided"] == arms[fixed]["clicks_total"] > 0, fixed
    assert arms["cancel-on-failover"]["decisions_lost"] < arms["none"]["decisions_lost"]
    rows = (tmp_path / "o" / "none" / "intents.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("agent,run,command,attempts,approval_ids,prompts") and len(rows) > 1
