"""The typed summary: one writer, a published schema that matches it, and metrics that resolve against it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from schema_check import SCHEMA_PATH, validated

from harness.events import ApprovalLedger, ApprovalRequest, Attempt, HealthSample, Outcome, Prompt, RunRecord
from harness.profile import load_profile, parse_profile
from harness.summary import (
    FaultWindowRecord,
    StubTargetRecord,
    SummaryError,
    json_schema,
    metric_field,
    metrics,
    read_summary,
)
from harness.verdict.judge import RunMeta, judge
from harness.verdict.thresholds import parse_threshold

ROOT = Path(__file__).resolve().parent.parent
STUB = StubTargetRecord(
    kind="stub", backend="embedded", profile="april-2026", effective_handshake_timeout_ms=10_000,
    max_preauth_per_ip=32, connect_cost_before_timer="fixed:2000@10", connect_cost_after_timer="fixed:0",
    upgrade_cost="fixed:0", colocated_challenge_cost="fixed:0", colocated_hello_cost="fixed:0",
    health_refresh_cost="fixed:0", health_refresh_coalesce="join", cost_clock="wall", image=None, base_image=None,
    toxiproxy_image=None, toxiproxy_fallback=None)


def storm_with_approvals() -> tuple[RunMeta, RunRecord]:
    attempts = [Attempt("matrix-1", n, n * 1000.0, n * 1000.0 + 500, Outcome.HANDSHAKE_TIMEOUT, 1000)
                for n in range(1, 60)]
    approvals = ApprovalLedger()
    approvals.requests.append(ApprovalRequest("agent-1", "run-1", 1, "id-1", 5_000.0, "accepted", "id-1"))
    approvals.prompts.append(Prompt("matrix-1", "id-1", "ls", 5_100.0))
    record = RunRecord(accounts=["matrix-1"], attempts=attempts, disconnects=[], connected_at_end=frozenset(),
                       duration_ms=60_000, startup_window_ms=10_000, final_window_ms=20_000, approvals=approvals,
                       gateway_records=[], health=[HealthSample(0.0, 10.0), HealthSample(1000.0, 12.5, 3.0)])
    fault = FaultWindowRecord(index=0, kind="gateway_down", from_s=20.0, to_s=25.0, type=None, stream=None,
                              toxicity=None, attributes=None, applied_at_s=20.01, removed_at_s=25.0, errors=[])
    meta = RunMeta(profile="p", arm="stable-id", seed=7, time_scale=0.1, target=STUB, wall_clock_s=6.5,
                   faults=[fault], fault_backend="embedded 2.12.0 at http://127.0.0.1:1", approval_fix="stable-id",
                   approval_fix_applies=True)
    return meta, record


def test_the_published_schema_is_the_one_the_type_generates() -> None:
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == json_schema(), \
        "docs/summary.schema.json is out of date: run python -m harness.summary"


def test_a_judged_summary_validates_against_the_schema_and_reads_back(tmp_path: Path) -> None:
    meta, record = storm_with_approvals()
    summary = judge(meta, record, [parse_threshold("verdict", "storm")])
    assert summary.verdict == "storm" and summary.passed
    path = tmp_path / "summary.json"
    summary.write(path)
    written = validated(json.loads(path.read_text(encoding="utf-8")))
    assert written["schema_version"] == 2 and written["faults"][0]["kind"] == "gateway_down"
    assert written["duplicates"]["prompts_total"] == 1
    assert read_summary(path) == summary


def test_the_schema_refuses_what_the_type_refuses() -> None:
    meta, record = storm_with_approvals()
    written = json.loads(judge(meta, record).to_json())
    for broken in ({**written, "assertions": []}, {**written, "verdict": "stormy"},
                   {k: v for k, v in written.items() if k != "thresholds"}):
        with pytest.raises(AssertionError, match="does not match"):
            validated(broken)


def test_a_summary_of_another_version_is_refused_in_one_line(tmp_path: Path) -> None:
    meta, record = storm_with_approvals()
    old = json.loads(judge(meta, record).to_json())
    old["schema_version"] = 1
    old["assertions"] = old.pop("thresholds")
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(SummaryError, match=r"summary.json: schema_version: Input should be 2"):
        read_summary(path)


@pytest.mark.parametrize(("path", "kind"), [
    ("verdict", "verdict"), ("storm_entries", "number"), ("handshake_ms.p99", "number"),
    ("duplicates.decisions_lost", "number"), ("sources_agree", "number"),
    ("coordinator_statistics.max_wait_ms", "number"),
    ("handshake_ms.p95", None), ("duplicates", None), ("timeline", None), ("seed", None), ("windows.final_s", None),
    ("target.kind", None), ("witnesses.at_s", None),
])
def test_metrics_resolve_against_the_type(path: str, kind: str | None) -> None:
    assert metric_field(path) == kind


def test_every_metric_the_readme_documents_resolves_and_every_metric_is_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- metrics -->(.*?)<!-- /metrics -->", readme, re.S)
    assert block is not None, "README.md has no <!-- metrics --> block"
    documented = re.findall(r"`([a-z_.0-9]+)`", block.group(1))
    assert [m for m in documented if metric_field(m) is None] == []
    assert sorted(documented) == sorted(metrics())


def test_every_threshold_in_every_shipped_profile_names_a_metric() -> None:
    shipped = sorted((ROOT / "profiles").glob("*.yaml"))
    assert len(shipped) >= 8
    for path in shipped:
        profile = load_profile(path)
        for arm in profile.arms:
            for threshold in profile.thresholds_for(arm):
                assert metric_field(threshold.metric) is not None, (path.name, threshold.metric)


def test_a_threshold_on_a_figure_that_does_not_exist_is_refused_when_the_profile_loads() -> None:
    from harness.errors import BadInput

    data = {"name": "x", "accounts": {"count": 1}, "arms": ["shipped"], "assert": {"all": {"handshake_ms.p95": "< 1"}}}
    with pytest.raises(BadInput, match=r"assert.all.handshake_ms.p95: unknown metric \(did you mean handshake_ms.p99"):
        parse_profile(data)


def test_judging_needs_no_gevent_locust_or_websockets() -> None:
    # A fresh interpreter: judge hand-written events, then look at what got imported.
    program = (
        "import sys, json\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_summary import storm_with_approvals\n"
        "from harness.verdict.judge import judge\n"
        "summary = judge(*storm_with_approvals())\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'locust', 'websockets', 'greenlet'))\n"
        "print(json.dumps([summary.verdict, loaded]))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    verdict, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert verdict == "storm"
    assert loaded == []
