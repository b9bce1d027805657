"""The sweep's recommendation as a plain-text table (the same figures as recommendation.json)."""

from __future__ import annotations

from typing import Any


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def accounts_text(count: int) -> str:
    """`1 account`, `11 accounts`; for 0 the words for a setting that covers none of the counts swept."""
    return "no account count swept" if count == 0 else "1 account" if count == 1 else f"{count} accounts"


def render_recommendation(recommendation: dict[str, Any]) -> str:
    arm = recommendation.get("arm")
    if arm is None:
        return "no arm behind the start coordinator was swept: nothing to recommend for J and K"
    speeds = ", ".join(f"{s:g}" for s in recommendation["safe_host_speeds"])
    lines = [f"recommended start settings ({arm}; safe in every one of {recommendation['seeds']} seeds at host speeds "
             f"{speeds})",
             f"{'accounts':>8}  {'J ms':>6}  {'K':>9}  {'hold ms':>7}  {'p95 s to all':>12}  {'margin':>7}  "
             f"{'safe settings':>13}"]
    for entry in recommendation["per_accounts"]:
        margin = entry["margin"]
        margin_text = "-" if margin is None else f"{'>=' if entry['margin_is_lower_bound'] else ''}{margin:g}x"
        lines.append(f"{entry['accounts']:>8}  {_shown(entry['start_jitter_ms']):>6}  "
                     f"{_shown(entry['max_concurrent_starts']):>9}  {_shown(entry['start_slot_max_hold_ms']):>7}  "
                     f"{_shown(entry['p95_time_to_all_connected_s']):>12}  {margin_text:>7}  "
                     f"{entry['safe_settings']:>13}")
    default = recommendation.get("default")
    if default is None:
        lines.append("default: no setting is safe even for the smallest account count swept")
    else:
        lines.append(f"default: J {default['start_jitter_ms']} ms, K {default['max_concurrent_starts']}, hold "
                     f"{default['start_slot_max_hold_ms']} ms: safe up to "
                     f"{accounts_text(default['covers_accounts_up_to'])}, "
                     f"p95 {_shown(default['p95_time_to_all_connected_s'])} s at that size")
    pr = recommendation.get("pr_70649")
    if pr is not None and pr.get("in_grid"):
        reach = ", ".join(f"{n} at speed {s}" for s, n in pr["safe_up_to_accounts_by_host_speed"].items())
        lines.append(f"PR #70649 (J 2000, K 3, hold 30000): safe up to {accounts_text(pr['safe_up_to_accounts'])} at "
                     f"every safe host speed ({reach})")
    elif pr is not None:
        lines.append("PR #70649 (J 2000, K 3, hold 30000): not in this grid")
    return "\n".join(lines)
