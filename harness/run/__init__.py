"""One arm of a profile, end to end, in three steps: compose, drive, judge (a sim target: simulate, judge).

  compose  profile + arm -> the parts of the run (`harness.run.compose`), before anything starts;
  drive    start the target's backend, run the accounts (and agents) against it over real sockets for the
           profile's duration, stop everything (`harness.run.drive`, the only step that imports gevent, with
           `harness.run.workers` when the accounts run in several processes);
  judge    what was recorded -> the typed summary and its verdict (`harness.verdict.judge`, pure).

The results go to the arm's folder:
  summary.json        the figures and the verdict (`harness.summary.Summary`; schema in docs/summary.schema.json)
  accounts.csv        one row per account: attempts, successes, failures by cause, close codes, …
  attempts.csv        every handshake attempt (account, start, end, outcome); disconnects.csv, every close after hello
  intents.csv         with the approval scenario: one row per intent; prompts.csv, every prompt shown
  stub.log, stub.jsonl the stub's console and JSON log (stub target, embedded or in a container)
  openclaw.log, gateway.jsonl  the real gateway's console and its records from the shared JSON log (openclaw)
  locust_stats.csv, locust_failures.csv, …  Locust's own CSV stats; locust.html, Locust's own HTML report
and beside the arms' folders: report.html (harness.report), with charts/ and, for a compare, compare.json,
compare.md and compare.txt.
Everything started here is stopped here, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from harness.backends import Backend, open_backend
from harness.events import RunRecord
from harness.host import ensure_open_files
from harness.profile import Profile
from harness.report.html import write_report
from harness.report.progress import Progress
from harness.report.table import write_compare_tables
from harness.run.compose import MasterSettings, Parts, compose
from harness.sim import simulated_summary
from harness.summary import Comparison, Distribution, InProcessFigures, LostWorkerRecord, Summary
from harness.target import OpenClawTarget, SimTarget, Target
from harness.verdict.distribution import distribution
from harness.verdict.figures import gateway_storm_counts, handler_errors_correlate, handshake_distribution
from harness.verdict.host import host_figures
from harness.verdict.judge import RunMeta, judge
from harness.verdict.tables import (
    ACCOUNT_COLUMNS,
    ATTEMPT_COLUMNS,
    DISCONNECT_COLUMNS,
    INTENT_COLUMNS,
    PROMPT_COLUMNS,
    Row,
    account_rows,
    attempt_rows,
    disconnect_rows,
    intent_rows,
    prompt_rows,
)

OnProgress = Callable[[float, int, int], None]  # (scenario ms, accounts connected, storm entries so far)

__all__ = ["ArmResult", "arm_dir", "compare_title", "distributions", "record_results", "run_arm", "run_profile"]


@dataclass
class ArmResult:
    arm: str
    summary: Summary
    out_dir: Path

    @property
    def passed(self) -> bool:
        return self.summary.passed


def run_arm(profile: Profile, arm_name: str, out_dir: Path, *, progress_stream: IO[str] = sys.stderr,
            backend: Backend | None = None, on_progress: OnProgress | None = None,
            master: MasterSettings | None = None, start_barrier: Path | None = None) -> ArmResult:
    """One run of one arm. `backend`: a gateway already running (a soak's), used instead of starting one;
    `on_progress`: told every second how the run stands; `master`: the workers are started elsewhere;
    `start_barrier`: a fleet member's (harness.run.fleet)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(progress_stream)
    if profile.fleet_gateways > 1:
        from harness.run.fleet import run_fleet_arm

        worst = run_fleet_arm(profile, arm_name, out_dir, progress_stream)
        progress.done(f"[{arm_name}] fleet of {profile.fleet_gateways}: worst {worst.verdict} "
                      f"({worst.storm_entries} storm entries); see {out_dir / 'fleet.json'}")
        return ArmResult(arm_name, worst, out_dir)
    if isinstance(profile.target, SimTarget):
        summary, record = simulated_summary(profile, arm_name)
    else:
        summary, record = _run_live(profile, arm_name, out_dir, progress, backend, on_progress, master,
                                    start_barrier)
    _write_csv(out_dir / "accounts.csv", ACCOUNT_COLUMNS, account_rows(record))
    _write_csv(out_dir / "attempts.csv", ATTEMPT_COLUMNS, attempt_rows(record))
    _write_csv(out_dir / "disconnects.csv", DISCONNECT_COLUMNS, disconnect_rows(record))
    if record.approvals is not None:
        _write_csv(out_dir / "intents.csv", INTENT_COLUMNS, intent_rows(record.approvals))
        _write_csv(out_dir / "prompts.csv", PROMPT_COLUMNS, prompt_rows(record.approvals))
    summary.write(out_dir / "summary.json")
    progress.done(f"[{arm_name}] {summary.verdict}: {summary.storm_entries} storm entries, "
                  f"{summary.connected_accounts_at_end}/{profile.account_count} connected at the end "
                  f"({summary.wall_clock_s:.1f} s)")
    return ArmResult(arm_name, summary, out_dir)


def _run_live(profile: Profile, arm_name: str, out_dir: Path, progress: Progress, running: Backend | None,
              on_progress: OnProgress | None, master: MasterSettings | None,
              start_barrier: Path | None) -> tuple[Summary, RunRecord]:
    from harness.backends.openclaw import OpenClawBackend
    from harness.run.drive import drive  # Locust patches sockets and threads as it loads: only for a live run

    wall_started = time.monotonic()
    parts = compose(profile, arm_name, out_dir, master, start_barrier)
    if isinstance(parts.target, OpenClawTarget) and parts.target.inprocess:
        return _run_inprocess(parts, progress, on_progress, wall_started)
    ensure_open_files(-(-profile.account_count // profile.processes))  # per process, before any gateway starts
    opened = contextlib.nullcontext(running) if running else open_backend(parts.target, out_dir, parts.stub_args)
    with opened as backend:
        driven = drive(parts, backend, progress, on_progress)
        target = backend.describe()
        stall_ms = backend.longest_loop_stall_ms() if isinstance(backend, OpenClawBackend) else None
        approval_fix_applies = parts.arm.approval_fix != "gateway-dedup" or backend.coalesces_approvals
    arm = parts.arm
    meta = RunMeta(
        profile=profile.name, arm=arm_name, seed=profile.seed, time_scale=profile.time_scale, target=target,
        wall_clock_s=time.monotonic() - wall_started,
        coordinator=profile.coordinator if arm.coordinated else None,
        coordinator_statistics=driven.coordinator_statistics, faults=driven.faults,
        fault_backend=driven.fault_backend,
        approval_fix=arm.approval_fix if driven.record.approvals is not None else None,
        approval_fix_applies=approval_fix_applies if driven.record.approvals is not None else None,
        host=host_figures(driven.host, driven.harness_loop_lag_ms, gateway_cpu_quota(profile.target)),
        host_ticks=driven.host.ticks if driven.host else (),
        handshake_timeout_ms=parts.handshake_timeout_ms, gateway_loop_stall_ms=stall_ms,
        processes=driven.processes, fleet_member=parts.start_barrier is not None,
        lost_workers=[LostWorkerRecord(worker=lost.worker, accounts=list(lost.accounts),
                                       at_s=round(lost.at_ms / 1000, 1), how=lost.how)
                      for lost in driven.lost_workers],
    )
    return judge(meta, driven.record, profile.thresholds_for(arm_name)), driven.record


def _run_inprocess(parts: Parts, progress: Progress, on_progress: OnProgress | None,
                   wall_started: float) -> tuple[Summary, RunRecord]:
    """The real gateway's own Matrix accounts (`target.inprocess`): no fake accounts, read from its console."""
    from harness.backends.openclaw_matrix import InProcessBackend
    from harness.run.inprocess import drive_inprocess, homeserver_link

    target = parts.target
    assert isinstance(target, OpenClawTarget)
    link = homeserver_link(target.homeserver_latency_ms, parts.out_dir)
    with open_backend(target, parts.out_dir, homeserver_link=link) as backend:
        assert isinstance(backend, InProcessBackend)
        driven = drive_inprocess(parts, backend, progress, on_progress)
        described = backend.describe()
        homeserver = f"synapse {backend.homeserver.version} (loopback, SQLite)"
        if target.homeserver_latency_ms:
            homeserver += f", answers {target.homeserver_latency_ms} ms late (Toxiproxy latency toxic)"
    record = driven.record
    gateway = gateway_storm_counts(record.gateway_records) if record.gateway_records is not None else None
    inprocess = InProcessFigures(
        matrix_accounts=target.matrix_accounts, exec_approvals=target.exec_approvals, homeserver=homeserver,
        handler_connect_errors=driven.ledger.handler_connect_errors,
        handler_failed_starts=driven.ledger.handler_failed_starts, channel_exits=driven.ledger.channel_exits,
        gateway_handshake_timeouts=None if gateway is None else gateway.handshake_timeout,
        correlated=handler_errors_correlate(driven.ledger.handler_connect_errors, gateway, len(record.accounts)),
        handshake_ms=handshake_distribution(record.attempts, parts.handshake_timeout_ms))
    meta = RunMeta(
        profile=parts.profile.name, arm=parts.arm.name, seed=parts.profile.seed, time_scale=1.0, target=described,
        wall_clock_s=time.monotonic() - wall_started,
        host=host_figures(driven.host, [], target.cpu_quota), host_ticks=driven.host.ticks if driven.host else (),
        handshake_timeout_ms=parts.handshake_timeout_ms, inprocess=inprocess,
    )
    return judge(meta, record, parts.profile.thresholds_for(parts.arm.name)), record


def gateway_cpu_quota(target: Target) -> float | None:
    return target.cpu_quota if isinstance(target, OpenClawTarget) else None


def run_profile(profile: Profile, arms: Sequence[str], out_root: Path, *, repeat: int = 1,
                on_result: Callable[[ArmResult], None] | None = None,
                progress_stream: IO[str] = sys.stderr, master: MasterSettings | None = None,
                start_barrier: Path | None = None) -> list[ArmResult]:
    """Every arm, `repeat` times, interleaved (arm by arm within each round, so host noise falls on all arms
    alike), with seeds derived from the profile's (base, base + 1, …). One run of an arm writes to
    `out_root/<arm>/`; a repeat to `out_root/<arm>/run-NN/` and `out_root/<arm>/distribution.json`."""
    results = []
    for round_index in range(repeat):
        seeded = profile if repeat == 1 else profile.with_overrides(seed=(profile.seed or 0) + round_index)
        for arm in arms:
            out_dir = arm_dir(out_root, arm)
            if repeat > 1:
                out_dir = out_dir / f"run-{round_index + 1:02d}"
            result = run_arm(seeded, arm, out_dir, progress_stream=progress_stream, master=master,
                             start_barrier=start_barrier)
            results.append(result)
            if on_result:
                on_result(result)
    return results


def arm_dir(out_root: Path, arm: str) -> Path:
    return out_root / arm.replace("+", "_")


def distributions(profile: Profile, results: Sequence[ArmResult]) -> list[Distribution]:
    """One distribution per arm, in the profile's arm order."""
    arms = [arm for arm in profile.arms if any(r.arm == arm for r in results)]
    return [distribution([r.summary for r in results if r.arm == arm], profile.thresholds_for(arm))
            for arm in arms]


def record_results(profile: Profile, results: Sequence[ArmResult], out_root: Path, *, repeat: int,
                   comparison: bool, report: bool = True) -> list[Distribution]:
    """What a run or compare leaves beside the arms' folders: each arm's distribution.json (repeated),
    compare.json, compare.md and compare.txt (compare), and report.html with its charts; the distributions, in
    the profile's arm order."""
    spreads = distributions(profile, results)
    if repeat > 1:
        for spread in spreads:
            spread.write(arm_dir(out_root, spread.arm) / "distribution.json")
    if comparison:
        Comparison(profile=profile.name, repeats=repeat, arms=[r.summary for r in results],
                   distributions=spreads).write(out_root / "compare.json")
        first_runs = [r.summary for r in results if r.summary.seed == results[0].summary.seed]
        write_compare_tables(out_root, first_runs, spreads if repeat > 1 else [],
                             compare_title(profile, repeat, spreads))
    if report:
        write_report(out_root)
    return spreads


def compare_title(profile: Profile, repeat: int, spreads: Sequence[Distribution]) -> str:
    """The compare table's title: the profile, its accounts, and the seed (or the runs and their seeds)."""
    accounts = "1 account" if profile.account_count == 1 else f"{profile.account_count} accounts"
    if repeat == 1 or not spreads:
        return f"{profile.name} ({accounts}, seed {profile.seed})"
    seeds = spreads[0].seeds
    return f"{profile.name} ({accounts}, {repeat} runs each, seeds {seeds[0]}-{seeds[-1]})"


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
