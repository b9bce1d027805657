"""The harness as a library: run or compare a profile from Python, with typed results and typed errors.

    from harness import api

    result = api.run("profiles/matrix-11-accounts.yaml", arm="coordinator", accounts=11)
    assert result.verdict == "converged", result.explain()

`profile` is a path, a YAML string or a dict; `accounts`, `coordinator`, `cost` (the connect's cost before the
handshake timer), `thresholds` (the `assert:` section) and `overrides` (any part of the profile, merged in)
change it without editing a file. The profile is validated here, in the caller's process, before anything
starts (a problem raises `BadInput` with one line per problem).

A live run (Locust and gevent, which patch sockets and threads for the whole process) runs in a child
process, `python -m harness.cli`, so the caller's process is never monkey-patched and its asyncio keeps
working; that costs the child's start-up (benchmarks/api_overhead.py). A simulated run (`target="sim"`)
needs no gevent and runs in the caller's process. Errors are typed, never `SystemExit`: `BadInput` (exit
2), `BackendError` (the target or environment failed, exit 3), `Interrupted` (Ctrl-C or SIGTERM; the child
stops everything it started first).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.errors import (
    EXIT_BAD_INPUT,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    BackendError,
    BadInput,
    HarnessError,
)
from harness.summary import Distribution, Summary, ThresholdResult, Witness, read_summary

if TYPE_CHECKING:
    from harness.profile import Profile

__all__ = ["BackendError", "BadInput", "CompareResult", "HarnessError", "Interrupted", "RunResult", "compare",
           "profile_data", "run"]

ProfileSource = str | os.PathLike[str] | Mapping[str, Any]
TargetSource = str | Mapping[str, Any] | None  # "sim", or a whole `target:` section
WITNESSES_SHOWN = 5
CHILD_STOP_GRACE_S = 30.0


class Interrupted(HarnessError):
    """The run was stopped by Ctrl-C or SIGTERM; everything it started has been stopped."""

    exit_code = EXIT_INTERRUPTED


@dataclass(frozen=True)
class RunResult:
    """One arm of a profile, run once or `repeat` times."""

    arm: str
    verdict: str  # as in summary.json; over repeats the most common one
    passed: bool  # every threshold met (over repeats: in every conclusive run and over the distribution)
    summary: Summary  # the (first) run's
    out_dir: Path  # the arm's results folder
    summaries: tuple[Summary, ...] = ()
    distribution: Distribution | None = None

    @property
    def thresholds(self) -> list[ThresholdResult]:
        """The profile's thresholds with their values: over the distribution when repeated."""
        if self.distribution is not None:
            return list(self.distribution.thresholds)
        return list(self.summary.thresholds)

    @property
    def witnesses(self) -> list[Witness]:
        return list(self.summary.witnesses)

    @property
    def report(self) -> Path:
        """report.html of the run this arm belongs to: its verdict, timeline and swimlane (harness.report)."""
        return self.out_dir.parent / "report.html"

    def explain(self) -> str:
        """What a developer needs when an assertion on this result fails: no dict dump."""
        s = self.summary
        verdicts = ""
        if self.distribution is not None:
            counts = ", ".join(f"{v} {n}" for v, n in sorted(self.distribution.verdicts.items()))
            verdicts = f" ({counts} over {self.distribution.repeats} runs)"
        lines = [f"arm {self.arm}: verdict {self.verdict}{verdicts}"
                 + (f" ({s.inconclusive_reason})" if s.inconclusive_reason else ""),
                 f"  storm entries {s.storm_entries} ({s.storm_entries_after_startup} after startup, "
                 f"{s.final_window_storm_entries} in the final window); connected at the end "
                 f"{s.connected_accounts_at_end}/{s.accounts}; time to all connected "
                 f"{'-' if s.time_to_all_connected_s is None else f'{s.time_to_all_connected_s:g} s'}"]
        failed = [t for t in self.thresholds if not t.passed]
        for threshold in failed:
            lines.append(f"  threshold failed: {threshold.metric} {threshold.threshold} (was {threshold.value})")
        for witness in self.witnesses[:WITNESSES_SHOWN]:
            lines.append(f"  witness: {witness.account} at {witness.at_s:g} s, {witness.kind}"
                         + (f", close code {witness.close_code}" if witness.close_code is not None else ""))
        if s.duplicates is not None and s.duplicates.max_prompts_per_intent > 1:
            lines.append(f"  duplicates: up to {s.duplicates.max_prompts_per_intent} prompts per intent, "
                         f"{s.duplicates.decisions_lost} decisions lost (intents.csv lists each intent's approval ids)")
        lines.append(f"  results: {self.out_dir}")
        if self.report.is_file():
            lines.append(f"  report: {self.report}")
        return "\n".join(lines)


@dataclass(frozen=True)
class CompareResult:
    """Every arm of a profile, side by side."""

    arms: Mapping[str, RunResult]
    out_dir: Path
    table: str = field(repr=False)  # the table `harness compare` prints

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.arms.values())

    def __getitem__(self, arm: str) -> RunResult:
        return self.arms[arm]

    @property
    def report(self) -> Path:
        """report.html: every arm side by side on shared axes, and the figures table (also compare.md, .txt)."""
        return self.out_dir / "report.html"

    def explain(self) -> str:
        return "\n".join(result.explain() for result in self.arms.values())


def profile_data(profile: ProfileSource, *, accounts: int | None = None, coordinator: Mapping[str, Any] | None = None,
                 cost: str | None = None, thresholds: Mapping[str, Any] | None = None, target: TargetSource = None,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The profile as data, with the changes applied (not yet validated)."""
    data = _load(profile)
    if overrides:
        data = _merged(data, overrides)
    if accounts is not None:
        data["accounts"] = {**(data.get("accounts") or {}), "count": accounts}
        channels = data["accounts"].get("channels")
        if isinstance(channels, Mapping) and len(channels) == 1:
            data["accounts"]["channels"] = {next(iter(channels)): accounts}
    if coordinator is not None:
        data["coordinator"] = {**(data.get("coordinator") or {}), **coordinator}
    if cost is not None:
        data["target"] = {**(data.get("target") or {}), "connect_cost_before_timer": cost}
    if thresholds is not None:
        data["assert"] = dict(thresholds)
    if target == "sim":
        section = {k: v for k, v in (data.get("target") or {}).items() if k != "backend"}
        kind = section.get("kind", "stub")
        if kind not in ("stub", "sim"):
            raise BadInput(f"target: only a stub profile can run in the simulator (target='sim'); this profile's "
                           f"target is {kind}")
        data["target"] = {**section, "kind": "sim"}
    elif isinstance(target, Mapping):
        data["target"] = dict(target)
    elif target is not None:
        raise BadInput(f"target: expected 'sim' or a target section (a mapping), got {target!r}"[:200])
    return data


def run(profile: ProfileSource, *, arm: str | None = None, seed: int | None = None, time_scale: float | None = None,
        target: TargetSource = None, out: str | os.PathLike[str] | None = None, repeat: int = 1,
        accounts: int | None = None, coordinator: Mapping[str, Any] | None = None, cost: str | None = None,
        thresholds: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
        report: bool = True) -> RunResult:
    """One arm (default: the profile's first) of `profile`, `repeat` times; see the module's docstring.
    `report=False` leaves out report.html (about a second of matplotlib per run)."""
    data, parsed, folder = _prepared(profile, out, target, accounts, coordinator, cost, thresholds, overrides)
    chosen = arm or parsed.arms[0]
    if chosen not in parsed.arms:
        raise BadInput(f"arm: expected one of this profile's arms ({', '.join(parsed.arms)}), got {chosen!r}")
    _execute("run", data, folder, ["--arm", chosen], seed, time_scale, repeat, report)
    return _result(folder, chosen, repeat)


def compare(profile: ProfileSource, *, seed: int | None = None, time_scale: float | None = None,
            target: TargetSource = None, out: str | os.PathLike[str] | None = None, repeat: int = 1,
            accounts: int | None = None, coordinator: Mapping[str, Any] | None = None, cost: str | None = None,
            thresholds: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
            report: bool = True) -> CompareResult:
    """Every arm of `profile`, `repeat` times each, interleaved; see the module's docstring.
    `report=False` leaves out report.html (about a second of matplotlib per compare)."""
    from harness.report.table import render, render_distributions

    data, parsed, folder = _prepared(profile, out, target, accounts, coordinator, cost, thresholds, overrides)
    _execute("compare", data, folder, [], seed, time_scale, repeat, report)
    arms = {arm: _result(folder, arm, repeat) for arm in parsed.arms}
    if repeat == 1:
        table = render([r.summary for r in arms.values()], parsed.name)
    else:
        table = render_distributions([r.distribution for r in arms.values() if r.distribution], parsed.name)
    return CompareResult(arms, folder, table)


# -- the steps --------------------------------------------------------------------------------------


def _prepared(profile: ProfileSource, out: str | os.PathLike[str] | None, target: TargetSource,
              accounts: int | None, coordinator: Mapping[str, Any] | None, cost: str | None,
              thresholds: Mapping[str, Any] | None,
              overrides: Mapping[str, Any] | None) -> tuple[dict[str, Any], Profile, Path]:
    from harness.profile import parse_profile

    data = profile_data(profile, accounts=accounts, coordinator=coordinator, cost=cost, thresholds=thresholds,
                        target=target, overrides=overrides)
    parsed = parse_profile(data, environ=os.environ)  # every problem, one line each, before anything starts
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"harness-{parsed.name}-"))
    folder.mkdir(parents=True, exist_ok=True)
    return data, parsed, folder


def _execute(command: str, data: dict[str, Any], folder: Path, extra: list[str], seed: int | None,
             time_scale: float | None, repeat: int, report: bool) -> None:
    profile_path = folder / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    args = [command, str(profile_path), "--out", str(folder), *extra]
    if seed is not None:
        args += ["--seed", str(seed)]
    if time_scale is not None:
        args += ["--time-scale", repr(float(time_scale))]
    if repeat != 1:
        args += ["--repeat", str(repeat)]
    if not report:
        args.append("--no-report")
    if (data.get("target") or {}).get("kind") == "sim":
        _simulated(command, profile_path, folder, extra, seed, time_scale, repeat, report)
    else:
        _in_child(args, folder / "harness.log")


def _simulated(command: str, profile_path: Path, folder: Path, extra: list[str], seed: int | None,
               time_scale: float | None, repeat: int, report: bool) -> None:
    """A simulated run: no gevent, nothing to isolate; in this process."""
    from harness.profile import load_profile
    from harness.run import record_results, run_profile

    profile = load_profile(profile_path).with_overrides(seed=seed, time_scale=time_scale)
    arms = [extra[1]] if command == "run" else list(profile.arms)
    with (folder / "harness.log").open("w", encoding="utf-8") as log:
        results = run_profile(profile, arms, folder, repeat=repeat, progress_stream=log)
    record_results(profile, results, folder, repeat=repeat, comparison=command == "compare", report=report)


def _in_child(args: list[str], log_path: Path) -> None:
    """A live run in `python -m harness.cli`: Ctrl-C or SIGTERM here reaches it, and it stops what it started."""
    with log_path.open("w", encoding="utf-8") as log:
        child = subprocess.Popen([sys.executable, "-m", "harness.cli", *args], stdout=log, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        try:
            _, stderr = child.communicate()
        except BaseException:
            child.send_signal(signal.SIGINT)
            try:
                child.communicate(timeout=CHILD_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise Interrupted("interrupted; everything the run started has been stopped") from None
        log.write(stderr)
    _check_code(child.returncode, stderr)


def _check_code(code: int, stderr: str) -> None:
    """0, 1 (a threshold failed) and 4 (inconclusive) are results; the others are errors."""
    if code in (0, 1, 4):
        return
    errors = [line.removeprefix("harness: error: ") for line in stderr.splitlines() if line.startswith("harness: ")]
    message = "\n".join(errors) or f"the harness ended with exit code {code}"
    if code == EXIT_BAD_INPUT:
        raise BadInput(message)
    if code == EXIT_ENVIRONMENT:
        raise BackendError(message)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        raise Interrupted(message)
    raise HarnessError(message)


def _result(folder: Path, arm: str, repeat: int) -> RunResult:
    arm_dir = folder / arm.replace("+", "_")
    if repeat == 1:
        summary = read_summary(arm_dir / "summary.json")
        return RunResult(arm, summary.verdict, summary.passed, summary, arm_dir, (summary,))
    summaries = tuple(read_summary(arm_dir / f"run-{i + 1:02d}" / "summary.json") for i in range(repeat))
    spread = Distribution.model_validate_json((arm_dir / "distribution.json").read_bytes())
    verdict = Counter(s.verdict for s in summaries).most_common(1)[0][0]
    return RunResult(arm, verdict, spread.passed, summaries[0], arm_dir, summaries, spread)


def _load(profile: ProfileSource) -> dict[str, Any]:
    from harness.yaml_input import read_yaml

    if isinstance(profile, Mapping):
        return _merged({}, profile)
    text = os.fspath(profile)
    if isinstance(profile, os.PathLike) or ("\n" not in text and Path(text).suffix in (".yaml", ".yml")):
        data, _ = read_yaml(Path(text), "profile")
    else:
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise BadInput(f"profile: expected a mapping (a profile), got {type(data).__name__}")
    return data


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in, mapping by mapping (a copy: neither is changed)."""
    out: dict[str, Any] = {k: _merged({}, v) if isinstance(v, Mapping) else v for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = _merged({}, value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            out[key] = list(value)
        else:
            out[key] = value
    return out
