"""The compare table: arms as columns, figures as rows, plain text that survives a CI log (and the same rows as
Markdown, for pasting into an issue)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from harness.summary import Distribution, Summary, metric_value

ROWS: tuple[tuple[str, str], ...] = (
    ("verdict", "verdict"),
    ("  as observed", "observed_verdict"),
    ("  recovered at (s)", "recovered_at_s"),
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
    ("host: harness waited for CPU", "host.harness.waited_fraction"),
    ("host: gateway waited for CPU", "host.gateway.waited_fraction"),
    ("host: harness loop lag ms p99", "host.harness_loop_lag_ms.p99"),
    ("wall clock (s)", "wall_clock_s"),
)


def _cell(summary: Summary, key: str) -> str:
    if key == "_thresholds":
        if summary.verdict == "inconclusive":
            return "not judged"
        checks = summary.thresholds
        failed = [c.metric for c in checks if not c.passed]
        return "none" if not checks else ("pass" if not failed else "FAIL: " + ", ".join(failed))
    if key == "observed_verdict" and summary.verdict != "inconclusive":
        return "-"
    value = summary.observed_verdict if key == "observed_verdict" else metric_value(summary, key)
    if key.endswith("_fraction") and isinstance(value, float):
        return f"{value:.0%}"
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def render(summaries: Sequence[Summary], title: str) -> str:
    return _table(title, *_rows(summaries))


def render_markdown(summaries: Sequence[Summary], title: str) -> str:
    return _markdown(title, *_rows(summaries))


def write_compare_tables(root: Path, summaries: Sequence[Summary], distributions: Sequence[Distribution],
                         title: str) -> None:
    """The compare table as the CLI prints it (compare.txt) and as Markdown for an issue (compare.md): the
    distribution over the runs when repeated, else each arm's run."""
    header, rows = _distribution_rows(distributions) if distributions else _rows(summaries)
    (root / "compare.txt").write_text(_table(title, header, rows) + "\n", encoding="utf-8")
    (root / "compare.md").write_text(_markdown(title, header, rows) + "\n", encoding="utf-8")


def _markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    def escaped(text: str) -> str:
        return html.escape(text, quote=False).replace("|", "\\|")

    lines = [f"**{escaped(title)}**", "", "| " + " | ".join(escaped(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escaped(cell.strip()) if i else escaped(cell).replace("  ", "&nbsp;&nbsp;", 1)
                                for i, cell in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def _rows(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    header = ["", *(s.arm for s in summaries)]
    with_duplicates = any(s.duplicates is not None for s in summaries)
    rows = [[label, *(_cell(s, key) for s in summaries)] for label, key in ROWS
            if with_duplicates or not key.startswith("duplicates.")]
    return header, rows


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


# The rows a repeat's table shows: the verdicts, then each figure as "median [min-max]".
DISTRIBUTION_ROWS: tuple[tuple[str, str], ...] = tuple(
    (label, key) for label, key in ROWS
    if key not in ("verdict", "observed_verdict", "_thresholds", "sources_agree", "wall_clock_s"))


def render_distributions(distributions: Sequence[Distribution], title: str) -> str:
    return _table(title, *_distribution_rows(distributions))


def _distribution_rows(distributions: Sequence[Distribution]) -> tuple[list[str], list[list[str]]]:
    header = ["", *(d.arm for d in distributions)]
    with_duplicates = any(d.figures["duplicates.intents"].median is not None for d in distributions)
    rows = [["verdicts", *(_verdicts(d) for d in distributions)],
            ["thresholds", *(_distribution_thresholds(d) for d in distributions)]]
    rows += [[label, *(_spread(d, key) for d in distributions)] for label, key in DISTRIBUTION_ROWS
             if key in distributions[0].figures and (with_duplicates or not key.startswith("duplicates."))]
    return header, rows


def _verdicts(d: Distribution) -> str:
    return ", ".join(f"{verdict} {count}/{d.repeats}" for verdict, count in
                     sorted(d.verdicts.items(), key=lambda item: -item[1]))


def _distribution_thresholds(d: Distribution) -> str:
    if not d.conclusive:
        return "not judged"
    failed = [t.threshold if t.metric == "verdict" else t.metric for t in d.thresholds if not t.passed]
    if d.runs_passed < d.conclusive:
        failed.insert(0, f"{d.conclusive - d.runs_passed} run(s)")
    return "pass" if not failed else "FAIL: " + ", ".join(failed)


def _spread(d: Distribution, key: str) -> str:
    spread = d.figures[key]
    if spread.median is None or spread.min is None or spread.max is None:
        return "-"
    if key.endswith("_fraction"):
        return f"{spread.median:.0%} [{spread.min:.0%}-{spread.max:.0%}]"
    if spread.min == spread.max:
        return _number(spread.median)
    return f"{_number(spread.median)} [{_number(spread.min)}-{_number(spread.max)}]"


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
