"""`harness soak PLAN`: hours of cycles against gateways that stay up, their resources watched as they go.

The soak starts one gateway per distinct target of its runs (runs whose profiles give the same target and stub
options share one) and keeps it running; each cycle runs every run's arms against it through `harness.run`,
exactly as `harness run` would, and the gateways are restarted between runs when the plan says so. Meanwhile a
sampler reads, every `sample_interval_s`, each gateway's and the harness's resident memory, descriptors and TCP
sockets by state (and the kinds of its descriptors), its live heap (the real gateway's V8 heap after its latest
full collection; the stub's and the harness's CPython allocated blocks), the gateway's pending approvals and
event-loop lag, and the current run's accounts connected and storm entries. What it writes, as it goes (a crash or
a kill keeps everything up to the last line):

  samples.jsonl          one line per sample
  cycles.jsonl           one line per finished run: cycle, run, profile, arm, verdict, expected, figures, folder
  cycle-NNN/<run>/<arm>/   each run's own results (summary.json, CSVs, …)
  gateway-N/             each gateway's log

and at the end soak.json (the cycles, each resource's growth after warm-up with its confidence interval, the
failures, and with --history the trend and the regressions), soak.md (the same for a CI job summary),
junit.xml (one test case per run, per resource bound and per history check) and report.html.

Exit codes: 0 every run gave its expected verdict and nothing grew beyond its bound; 1 a run did not (or
could not run: its gateway would not serve it, kept as the run's row with the reason; a gateway that died is
started again for the next run), or something grew; 2 bad input; 3 a gateway could not be started; 5 a figure
regressed against the previous nights (when nothing else failed); 130 interrupted (what was sampled is kept,
soak.json says `interrupted`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.backends import Backend, open_backend
from harness.backends.openclaw import OpenClawBackend
from harness.errors import EXIT_REGRESSION, BackendError
from harness.profile import Profile
from harness.report.folder import read_jsonl
from harness.report.progress import Progress
from harness.run import arm_dir, run_arm
from harness.soak.outputs import ALLOCATED_BLOCKS, HEAP_AFTER_GC, SoakResult, write_outputs
from harness.soak.plan import RUN_FIGURES, SoakPlan, SoakRun
from harness.soak.resources import ProcessSample, sample_processes, with_children
from harness.summary import Summary, metric_value
from harness.target import StubTarget

__all__ = ["EXIT_REGRESSION", "SoakResult", "run_soak"]

SAMPLES, CYCLES = "samples.jsonl", "cycles.jsonl"
HARNESS_ROLE = "harness"


@dataclass
class Gateway:
    """One long-lived gateway of the soak and the runs it serves."""

    key: str
    name: str  # gateway-N: its folder, and its role in the samples
    target: Any
    stub_args: tuple[str, ...]
    folder: Path
    backend: Backend | None = None
    incarnation: int = 0
    started_at_s: float = 0.0
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self, now_s: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.backend = self._stack.enter_context(open_backend(self.target, self.folder, self.stub_args))
        self.incarnation += 1
        self.started_at_s = now_s

    def stop(self) -> None:
        self.backend = None
        self._stack.close()

    def restarted(self, now_s: float) -> None:
        """Its backend started a new process in place (a SIGTERM mid-run): a new incarnation, warming up again."""
        self.incarnation += 1
        self.started_at_s = now_s


@dataclass
class Live:
    """How the run in progress stands, as its progress callback last said."""

    run: str = ""
    connected: int | None = None
    storm_entries: int | None = None

    def observe(self, _now_ms: float, connected: int, storm_entries: int) -> None:
        self.connected, self.storm_entries = connected, storm_entries


class Sampler:
    """Samples every process role and gateway figure on a timer, appending each sample to samples.jsonl; and once
    more after each run, marked `at_rest` (no run in flight: a process's live heap is comparable from one such
    sample to the next, where during runs it follows the load)."""

    def __init__(self, plan: SoakPlan, gateways: list[Gateway], path: Path, started: float, live: Live) -> None:
        self._plan, self._gateways, self._path, self._started, self._live = plan, gateways, path, started, live
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._writing = threading.Lock()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._plan.sample_interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._write(self.take())
            self._stop.wait(self._plan.sample_interval_s)

    def at_rest(self) -> None:
        """A sample with no run in flight, each process's cyclic garbage freed first: its live heap is then what
        it keeps, comparable from one run's end to the next."""
        gc.collect()
        self._write({**self.take(collect=True), "at_rest": True})

    def _write(self, sample: dict[str, Any]) -> None:
        with self._writing, self._path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(sample) + "\n")  # kept on disk only: a soak's memory must not grow

    def take(self, *, collect: bool = False) -> dict[str, Any]:
        now_s = time.monotonic() - self._started
        roles: dict[str, Any] = {HARNESS_ROLE: _process_row(sample_processes([os.getpid()]), 1, 0.0,
                                                            {ALLOCATED_BLOCKS: sys.getallocatedblocks()})}
        gateways: dict[str, Any] = {}
        for gateway in self._gateways:
            backend = gateway.backend
            if backend is None:
                continue
            pids = with_children(backend.pids())
            stats = _quietly(functools.partial(backend.stats, collect=collect))
            live_heap = {HEAP_AFTER_GC: backend.heap_after_gc_mb(),
                         ALLOCATED_BLOCKS: (stats or {}).get("python_allocated_blocks")}  # the stub's /stats
            roles[gateway.name] = _process_row(sample_processes(pids), gateway.incarnation, gateway.started_at_s,
                                               live_heap)
            gateways[gateway.name] = {
                "pending_approvals": ((stats or {}).get("approvals") or {}).get("pending"),
                "event_loop_lag_ms": ((stats or {}).get("event_loop_lag_last_interval_ms") or {}).get("max"),
            }
        return {"t_s": round(now_s, 3), "run": self._live.run, "connected": self._live.connected,
                "storm_entries": self._live.storm_entries, "processes": roles, "gateways": gateways}


def _process_row(sample: ProcessSample | None, incarnation: int, started_at_s: float,
                 live_heap: Mapping[str, float | None]) -> dict[str, Any] | None:
    """A process role's figures now, with its live heap where its runtime says (see harness.soak.outputs)."""
    if sample is None:
        return None
    row = {"pids": sample.pids, "incarnation": incarnation, "started_at_s": round(started_at_s, 3),
           "rss_mb": sample.rss_mb, "descriptors": sample.descriptors, "sockets": sample.sockets,
           "socket_total": sample.socket_total, "descriptor_kinds": sample.descriptor_kinds}
    row.update({key: value for key, value in live_heap.items() if value is not None})
    return row


def _quietly(read: Any) -> dict[str, Any] | None:
    try:
        value = read()
    except Exception:  # a gateway restarting or gone: that sample has no gateway figures
        return None
    return value if isinstance(value, dict) else None


def run_soak(plan: SoakPlan, out: Path, *, history: Path | None = None, gateway_name: str = "stub",
             progress_stream: IO[str] = sys.stderr) -> SoakResult:
    """Cycle after cycle until the plan's time or cycles are used up; see the module's docstring."""
    out.mkdir(parents=True, exist_ok=True)
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    gateways = _gateways(plan, out)
    live = Live()
    progress = Progress(progress_stream)
    interrupted = True  # until the cycles end by themselves
    sampler = Sampler(plan, list(gateways.values()), out / SAMPLES, started, live)
    try:
        with _running(gateways, started), sampler:
            _cycles(plan, out, gateways, started, live, sampler, progress, progress_stream)
        interrupted = False
    finally:
        # Also after Ctrl-C or a gateway's death: what was sampled and run is judged and kept.
        result = write_outputs(plan, out, cycles=read_jsonl(out / CYCLES), samples=read_jsonl(out / SAMPLES),
                               started_at=started_at, history=history, gateway_name=gateway_name,
                               interrupted=interrupted)
    return result


@contextlib.contextmanager
def _running(gateways: dict[str, Gateway], started: float) -> Iterator[None]:
    try:
        for gateway in gateways.values():
            gateway.start(time.monotonic() - started)
        yield
    finally:
        for gateway in gateways.values():
            gateway.stop()


def _cycles(plan: SoakPlan, out: Path, gateways: dict[str, Gateway], started: float, live: Live, sampler: Sampler,
            progress: Progress, progress_stream: IO[str]) -> None:
    """Runs the plan's runs in turn, appending each run's row to cycles.jsonl as it ends."""
    last_restart = time.monotonic()
    cycle = 0
    while _more(plan, cycle, started):
        cycle += 1
        for run in plan.runs:
            for arm in run.arms:
                if plan.duration_s is not None and time.monotonic() - started >= plan.duration_s:
                    return  # no run starts after the plan's time
                if plan.restart_every_s and time.monotonic() - last_restart >= plan.restart_every_s:
                    for gateway in gateways.values():
                        gateway.stop()
                        gateway.start(time.monotonic() - started)
                    last_restart = time.monotonic()
                gateway = gateways[_key(run, arm)]
                assert gateway.backend is not None
                gateway.backend.mark()  # the run judges only what the gateway logs from now on
                live.run = f"{run.name}/{arm}"
                folder = arm_dir(out / f"cycle-{cycle:03d}" / run.name, arm)
                progress.done(f"[soak {plan.name}] cycle {cycle}, {live.run} "
                              f"({(time.monotonic() - started) / 60:.1f} min in)")
                try:
                    with _sigterm_after(run.sigterm_after_s, gateway.backend,
                                        functools.partial(_restarted, gateway, started)) as sigterm:
                        result = run_arm(run.profile, arm, folder, progress_stream=progress_stream,
                                         backend=gateway.backend, on_progress=live.observe)
                except BackendError as exc:
                    # The gateway would not serve this run (no handshake within the probe's 30 s, or it died):
                    # a night's finding, kept as the run's row; a dead gateway is started again for the next.
                    outcome = _error_outcome(str(exc))
                    progress.done(f"[soak {plan.name}] {live.run}: {exc}")
                    if not _alive(gateway.backend):
                        gateway.stop()
                        gateway.start(time.monotonic() - started)
                else:
                    outcome = _verdict_outcome(run.expect.get(arm), result.summary)
                row = {"cycle": cycle, "run": run.name, "profile": run.profile.name, "arm": arm,
                       "gateway": gateway.name, "expected": run.expect.get(arm) or "thresholds pass", **outcome,
                       "ended_at_s": round(time.monotonic() - started, 3),
                       "folder": folder.relative_to(out).as_posix()}
                if run.sigterm_after_s is not None:
                    row["sigterm"] = sigterm
                with (out / CYCLES).open("a", encoding="utf-8") as journal:
                    journal.write(json.dumps(row) + "\n")
                live.run, live.connected, live.storm_entries = "", None, None
                sampler.at_rest()
        if plan.idle_s and _more(plan, cycle, started):
            time.sleep(plan.idle_s)


@contextlib.contextmanager
def _sigterm_after(after_s: float | None, backend: Backend,
                   on_restarted: Callable[[], None] = lambda: None) -> Iterator[dict[str, Any]]:
    """While the block runs: `after_s` seconds in, SIGTERM the real gateway with its run in flight and start it
    again on its port (then `on_restarted()`: a new process, whose resources are fitted on their own). Yields
    what happened, filled in when it has (`{}` when the run ended first)."""
    happened: dict[str, Any] = {}
    if after_s is None:
        yield happened
        return
    assert isinstance(backend, OpenClawBackend)  # the plan allows sigterm_after_s for a real gateway only

    def restart() -> None:
        happened["after_s"] = after_s
        try:
            happened.update(asdict(backend.restart()))
            on_restarted()
        except BackendError as exc:  # it did not come back: the run then fails as its gateway is gone
            happened["error"] = str(exc)

    timer = threading.Timer(after_s, restart)
    timer.start()
    try:
        yield happened
    finally:
        timer.cancel()
        timer.join()  # a restart under way ends before the next run or the gateway's stop


def _restarted(gateway: Gateway, started: float) -> None:
    gateway.restarted(time.monotonic() - started)


def _more(plan: SoakPlan, cycles_done: int, started: float) -> bool:
    if plan.cycles is not None and cycles_done >= plan.cycles:
        return False
    return plan.duration_s is None or time.monotonic() - started < plan.duration_s


def _gateways(plan: SoakPlan, out: Path) -> dict[str, Gateway]:
    gateways: dict[str, Gateway] = {}
    for run in plan.runs:
        for arm in run.arms:
            key = _key(run, arm)
            if key not in gateways:
                name = f"gateway-{len(gateways) + 1}"
                gateways[key] = Gateway(key, name, run.profile.target, _stub_args(run.profile, arm), out / name)
    return gateways


def _key(run: SoakRun, arm: str) -> str:
    """Which gateway serves the run's arm: one per target and stub options, or the run's own."""
    return json.dumps([repr(run.profile.target), _stub_args(run.profile, arm), run.name if run.own_gateway else None])


def _stub_args(profile: Profile, arm: str) -> tuple[str, ...]:
    """What a stub gateway is started with for this run: its time scale and the gateway-dedup switch (a stub's
    seed only varies its cost draws, so one gateway serves every seed)."""
    if not isinstance(profile.target, StubTarget):
        return ()
    dedup = ("--approval-dedup", "intent") if arm == "gateway-dedup" else ()
    return ("--time-scale", str(profile.time_scale), *dedup)


def _verdict_outcome(expected: str | None, summary: Summary) -> dict[str, Any]:
    """A finished run's verdict, whether it was the expected one (or its thresholds passed), and its figures."""
    inconclusive = summary.verdict == "inconclusive"
    ok = inconclusive or (summary.verdict == expected if expected else summary.passed)
    return {"verdict": summary.verdict, "passed": summary.passed, "ok": ok, "inconclusive": inconclusive,
            "inconclusive_reason": summary.inconclusive_reason,
            "figures": {name: _number(metric_value(summary, name)) for name in RUN_FIGURES}}


def _error_outcome(error: str) -> dict[str, Any]:
    """A run its gateway would not serve: failed, with the reason and no figures."""
    return {"verdict": "error", "passed": False, "ok": False, "inconclusive": False, "inconclusive_reason": None,
            "error": error, "figures": {name: None for name in RUN_FIGURES}}


def _alive(backend: Backend) -> bool:
    try:
        backend.check_alive()
    except BackendError:
        return False
    return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
