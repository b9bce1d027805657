"""A fleet: G stub gateways on one host, each with its own accounts, all started on one tick.

This is "restart every gateway on a host at once": each gateway is a whole `harness run` of the profile (its own
stub, accounts, probe and verdict; the fleet section taken out, the seed advanced by its place in the fleet), run
as a child process. The members wait at a start barrier (a folder: each writes `<pid>.ready` once its gateway is
up and its probe connected; the fleet writes `go`, a wall-clock start time, once all are ready), so every
gateway's accounts start together and the gateways compete for the host as they would.

The arm's folder gets each member's results under `gateway-NN/`, `fleet.json` (how many stormed, the verdicts,
the worst gateway and every member's figures) and, as its `summary.json`, the worst gateway's (one that failed
a threshold first, then by verdict and storm entries): the fleet is as good as its worst gateway, and the
compare table, the report and the exit code show that one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from harness.backends.embedded import end_processes
from harness.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_THRESHOLD_FAILED, BackendError
from harness.profile import Profile
from harness.report.progress import Progress
from harness.stop_signals import signals_held
from harness.summary import Summary, read_summary
from harness.yaml_input import read_yaml

BARRIER_READY_TIMEOUT_S = 180.0  # every member's gateway up and probe connected
BARRIER_POLL_S = 0.01
START_MARGIN_S = 0.1  # from `go` being written to the start: every member has seen it
MEMBER_OVERHEAD_S = 120.0  # a member's start-up and teardown, beyond the scenario's real duration
STOP_GRACE_S = 10.0
GO_FILE = "go"
SEVERITY = {"storm": 4, "degraded": 3, "recovered": 2, "inconclusive": 1, "converged": 0}


def member_dir(out_dir: Path, index: int) -> Path:
    return out_dir / f"gateway-{index:02d}"


def member_profile(profile: Profile, index: int) -> dict[str, Any]:
    """The profile as one member runs it: no fleet, its own seed, the command line's overrides applied."""
    if profile.path is None:
        raise BackendError("a fleet needs its profile's file (its members run it)")
    data, _ = read_yaml(profile.path, "profile")
    data = dict(data)
    data.pop("fleet", None)
    data["name"] = f"{profile.name}-gateway-{index:02d}"
    data["seed"] = (profile.seed or 0) + index - 1
    data["time_scale"] = profile.time_scale
    target = dict(data.get("target") or {})
    target["backend"] = getattr(profile.target, "backend", "embedded")
    data["target"] = target
    return data


def run_fleet_arm(profile: Profile, arm: str, out_dir: Path, progress_stream: IO[str]) -> Summary:
    """Every member of the fleet for one arm; fleet.json and the worst member's summary.json in `out_dir`."""
    progress = Progress(progress_stream)
    barrier = out_dir / "start-barrier"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    limit_s = profile.duration_s * profile.time_scale + MEMBER_OVERHEAD_S
    with _members(profile, arm, out_dir, barrier) as members:
        _open_barrier(barrier, members, progress)
        deadline = time.monotonic() + limit_s
        while any(process.poll() is None for process in members):
            if time.monotonic() > deadline:
                raise BackendError(f"the fleet's gateways were still running {limit_s:g} s after they started")
            done = sum(process.poll() is not None for process in members)
            progress.update(f"[{arm}] fleet of {len(members)}: {done} gateways done")
            time.sleep(0.2)
        for index, process in enumerate(members, start=1):
            if process.returncode not in (EXIT_OK, EXIT_THRESHOLD_FAILED, EXIT_INCONCLUSIVE):
                log = (member_dir(out_dir, index) / "harness.log").read_text(encoding="utf-8", errors="replace")
                raise BackendError(f"fleet gateway {index:02d} ended with exit code {process.returncode}: "
                                   f"{' | '.join(log.strip().splitlines()[-2:])}")
    shutil.rmtree(barrier, ignore_errors=True)
    summaries = [read_summary(member_dir(out_dir, index) / _arm_folder(arm) / "summary.json")
                 for index in range(1, len(members) + 1)]
    worst_index = max(range(len(summaries)), key=lambda i: (not summaries[i].passed,
                                                            SEVERITY.get(summaries[i].verdict, 0),
                                                            SEVERITY.get(summaries[i].observed_verdict, 0),
                                                            summaries[i].storm_entries))
    (out_dir / "fleet.json").write_text(json.dumps(fleet_figures(summaries, worst_index), indent=2) + "\n",
                                        encoding="utf-8")
    worst = summaries[worst_index]
    worst.write(out_dir / "summary.json")
    return worst


def fleet_figures(summaries: list[Summary], worst_index: int) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for summary in summaries:
        verdicts[summary.verdict] = verdicts.get(summary.verdict, 0) + 1
    return {
        "gateways": len(summaries),
        "accounts_per_gateway": summaries[0].accounts,
        "stormed": verdicts.get("storm", 0),
        "verdicts": verdicts,
        "worst": {"gateway": f"gateway-{worst_index + 1:02d}", "verdict": summaries[worst_index].verdict,
                  "storm_entries": summaries[worst_index].storm_entries},
        "members": [{"gateway": f"gateway-{i + 1:02d}", "seed": s.seed, "verdict": s.verdict,
                     "storm_entries": s.storm_entries, "connected_accounts_at_end": s.connected_accounts_at_end,
                     "time_to_all_connected_s": s.time_to_all_connected_s,
                     "inconclusive_reason": s.inconclusive_reason} for i, s in enumerate(summaries)],
    }


def _arm_folder(arm: str) -> str:
    return arm.replace("+", "_")


@contextlib.contextmanager
def _members(profile: Profile, arm: str, out_dir: Path, barrier: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """One `harness run` per gateway, each in its own session; all stopped on the way out, whatever happened."""
    from harness.backends.embedded import prepare_child

    members: list[subprocess.Popen[str]] = []
    try:
        for index in range(1, profile.fleet_gateways + 1):
            folder = member_dir(out_dir, index)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "profile.yaml"
            path.write_text(yaml.safe_dump(member_profile(profile, index), sort_keys=False), encoding="utf-8")
            command = [sys.executable, "-m", "harness.cli", "run", str(path), "--arm", arm, "--out", str(folder),
                       "--no-report", "--start-barrier", str(barrier)]
            with (folder / "harness.log").open("w", encoding="utf-8") as log, \
                    (folder / "table.txt").open("w", encoding="utf-8") as table, signals_held():
                members.append(subprocess.Popen(command, stdout=table, stderr=log, stdin=subprocess.DEVNULL,
                                                text=True, start_new_session=True, preexec_fn=prepare_child))
        yield members
    finally:
        end_processes(members, whole_group=False, grace_s=STOP_GRACE_S)


def _open_barrier(barrier: Path, members: list[subprocess.Popen[str]], progress: Progress) -> None:
    deadline = time.monotonic() + BARRIER_READY_TIMEOUT_S
    while (ready := len(list(barrier.glob("*.ready")))) < len(members):
        for index, process in enumerate(members, start=1):
            if process.poll() is not None:
                raise BackendError(f"fleet gateway {index:02d} ended (exit code {process.returncode}) before the "
                                   "start; see its harness.log")
        if time.monotonic() > deadline:
            raise BackendError(f"only {ready} of {len(members)} fleet gateways were ready within "
                               f"{BARRIER_READY_TIMEOUT_S:g} s")
        progress.update(f"fleet: {ready}/{len(members)} gateways ready")
        time.sleep(0.05)
    staged = barrier / f"{GO_FILE}.tmp"
    staged.write_text(repr(time.time() + START_MARGIN_S), encoding="ascii")
    staged.replace(barrier / GO_FILE)  # atomic: a member reads all of it or nothing


def wait_at_barrier(barrier: Path, check_alive: Callable[[], None]) -> None:
    """A member's side: say this gateway is ready, then wait for the fleet's start time and sleep until it."""
    (barrier / f"{os.getpid()}.ready").touch()
    deadline = time.monotonic() + BARRIER_READY_TIMEOUT_S
    go = barrier / GO_FILE
    while not go.exists():
        check_alive()
        if time.monotonic() > deadline:
            raise BackendError(f"the fleet never started (no {go} within {BARRIER_READY_TIMEOUT_S:g} s)")
        time.sleep(BARRIER_POLL_S)
    start_at = float(go.read_text(encoding="ascii"))
    time.sleep(max(0.0, start_at - time.time()))
