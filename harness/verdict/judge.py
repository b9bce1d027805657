"""Judging: from what a run recorded (events) and what it was (its settings) to the typed summary.

Pure: no sockets, no clock, no gevent. A live run, a simulated run or a test hands it a `RunRecord` and a
`RunMeta`; what comes back is the `Summary` that summary.json holds, thresholds checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.events import RunRecord
from harness.host import HostTick
from harness.policy.coordinator import CoordinatorSettings, CoordinatorStatistics
from harness.summary import (
    SCHEMA_VERSION,
    FaultWindowRecord,
    HealthProbeFigures,
    HostFigures,
    InProcessFigures,
    LostWorkerRecord,
    Summary,
    TargetRecord,
    Windows,
)
from harness.verdict.duplicates import summarize_duplicates
from harness.verdict.figures import storm_attempts_after_startup, summarize, timeline
from harness.verdict.host import busy_while_storming, stalled_on_its_own, too_busy
from harness.verdict.thresholds import Threshold, check_thresholds
from openclaw_wire.constants import APRIL_HANDSHAKE_TIMEOUT_MS


@dataclass(frozen=True)
class RunMeta:
    """What the run was: its profile, arm and target, and what its drivers report about themselves."""

    profile: str
    arm: str
    seed: int | None
    time_scale: float
    target: TargetRecord
    wall_clock_s: float
    coordinator: CoordinatorSettings | None = None  # for an arm behind the coordinator
    coordinator_statistics: CoordinatorStatistics | None = None
    faults: Sequence[FaultWindowRecord] = ()
    fault_backend: str | None = None
    approval_fix: str | None = None  # for a run with the approval scenario
    approval_fix_applies: bool | None = None
    host: HostFigures | None = None  # what the host did while the accounts ran; None for a simulation
    host_ticks: Sequence[HostTick] = ()  # how the CPU waits grew, second by second (real time from the start)
    handshake_timeout_ms: float = APRIL_HANDSHAKE_TIMEOUT_MS  # the clients', for the host rule
    inprocess: InProcessFigures | None = None  # in-process accounts' own figures
    gateway_loop_stall_ms: float | None = None  # the longest stall the real gateway's own liveness warnings report
    processes: int = 1  # harness processes (Locust workers) the accounts ran in
    fleet_member: bool = False  # one gateway of a fleet on this host: its siblings' load is the scenario's
    lost_workers: Sequence[LostWorkerRecord] = ()  # workers that died or stopped answering


def workers_lost(lost: Sequence[LostWorkerRecord]) -> str | None:
    """A run that lost a worker lost its accounts' figures from then on: no verdict can be drawn from the rest."""
    if not lost:
        return None
    first = lost[0]
    more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
    return (f"harness worker {first.worker} {first.how} at {first.at_s:g} s with {len(first.accounts)} accounts "
            f"({', '.join(first.accounts[:3])}{' …' if len(first.accounts) > 3 else ''}){more}: their figures end "
            "there")


def judge(meta: RunMeta, record: RunRecord, thresholds: Sequence[Threshold] = ()) -> Summary:
    figures = summarize(record)
    throttled = bool(meta.host and meta.host.gateway_cpu_quota)
    reason = workers_lost(meta.lost_workers) or too_busy(
        meta.host, meta.handshake_timeout_ms, fleet_member=meta.fleet_member) or stalled_on_its_own(
        meta.gateway_loop_stall_ms, meta.handshake_timeout_ms, gateway_throttled=throttled) or busy_while_storming(
        meta.host_ticks, storm_attempts_after_startup(record), meta.time_scale,
        gateway_throttled=throttled or meta.fleet_member)
    summary = Summary(
        schema_version=SCHEMA_VERSION, profile=meta.profile, arm=meta.arm, seed=meta.seed,
        time_scale=meta.time_scale, target=meta.target, accounts=len(record.accounts),
        wall_clock_s=round(meta.wall_clock_s, 3), duration_s=record.duration_ms / 1000.0,
        windows=Windows(startup_s=record.startup_window_ms / 1000.0, final_s=record.final_window_ms / 1000.0),
        coordinator=meta.coordinator, coordinator_statistics=meta.coordinator_statistics,
        storm_entries=figures.storm_entries, storm_entries_by_kind=figures.storm_entries_by_kind,
        storm_entries_by_source=figures.storm_entries_by_source, sources_agree=figures.sources_agree,
        final_window_storm_entries=figures.final_window_storm_entries,
        storm_entries_after_startup=figures.storm_entries_after_startup,
        verdict="inconclusive" if reason else figures.verdict, observed_verdict=figures.verdict,
        inconclusive_reason=reason, recovered_at_s=figures.recovered_at_s, host=meta.host,
        time_to_all_connected_s=figures.time_to_all_connected_s,
        connected_accounts_at_end=figures.connected_accounts_at_end,
        handshake_attempts_total=figures.handshake_attempts_total, handshake_ms=figures.handshake_ms,
        health_rpc_ms=figures.health_rpc_ms, event_loop_lag_ms=figures.event_loop_lag_ms,
        witnesses=figures.witnesses,
        health_probe=HealthProbeFigures(handshake_timeouts=record.probe_handshake_timeouts,
                                        reconnects=record.probe_reconnects),
        faults=list(meta.faults), fault_backend=meta.fault_backend,
        timeline=timeline(record, [(w.index, w.from_s, w.to_s) for w in meta.faults]),
        approval_fix=meta.approval_fix, approval_fix_applies=meta.approval_fix_applies,
        duplicates=summarize_duplicates(record.approvals) if record.approvals is not None else None,
        thresholds=[], inprocess=meta.inprocess, processes=meta.processes, lost_workers=list(meta.lost_workers),
    )
    summary.thresholds = check_thresholds(summary, thresholds)
    return summary

