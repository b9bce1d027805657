"""The compare table: arms as columns, figures as rows, plain text that survives a CI log."""

from __future__ import annotations

from collections.abc import Sequence

from harness.summary import Summary, metric_value

ROWS: tuple[tuple[str, str], ...] = (
    ("verdict", "verdict"),
    ("storm entries", "storm_entries"),
    ("  handshake timeouts", "storm_entries_by_kind.handshake_timeout"),
    ("  pre-auth 503s", "storm_entries_by_kind.preauth_rejected"),
    ("  connect errors", "storm_entries_by_kind.connect_error"),
    ("storm entries after startup", "storm_entries_after_startup"),
    ("storm entries, final window", "final_window_storm_entries"),
    ("connected at end", "connected_accounts_at_end"),
    ("time to all connected (s)", "time_to_all_connected_s"),
    ("handshake attempts", "handshake_attempts_total"),
    ("handshake ms p50", "handshake_ms.p50"),
    ("handshake ms p99", "handshake_ms.p99"),
    ("health RPC ms p50", "health_rpc_ms.p50"),
    ("health RPC ms p99", "health_rpc_ms.p99"),
    ("event-loop lag ms p99", "event_loop_lag_ms.p99"),
    ("event-loop lag ms max", "event_loop_lag_ms.max"),
    ("log and ledger agree", "sources_agree"),
    ("intents (runs needing approval)", "duplicates.intents"),
    ("  decided", "duplicates.intents_decided"),
    ("approval requests", "duplicates.approval_requests_total"),
    ("prompts", "duplicates.prompts_total"),
    ("max prompts per intent", "duplicates.max_prompts_per_intent"),
    ("duplicate prompts", "duplicates.duplicate_prompts"),
    ("peak prompts per second", "duplicates.peak_prompt_rate_per_s"),
    ("pending approvals max", "duplicates.pending_approvals_max"),
    ("decisions lost", "duplicates.decisions_lost"),
    ("thresholds", "_thresholds"),
    ("wall clock (s)", "wall_clock_s"),
)


def _cell(summary: Summary, key: str) -> str:
    if key == "_thresholds":
        checks = summary.thresholds
        failed = [c.metric for c in checks if not c.passed]
        return "none" if not checks else ("pass" if not failed else "FAIL: " + ", ".join(failed))
    value = metric_value(summary, key)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def render(summaries: Sequence[Summary], title: str) -> str:
    header = ["", *(s.arm for s in summaries)]
    with_duplicates = any(s.duplicates is not None for s in summaries)
    rows = [[label, *(_cell(s, key) for s in summaries)] for label, key in ROWS
            if with_duplicates or not key.startswith("duplicates.")]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
