"""Accounts over several harness processes, through Locust's distributed runners: one master, N workers.

Each worker stands for one OpenClaw process: it holds its share of the accounts and its own start coordinator
(the coordinator of PR #70649 is process-wide), so `accounts.processes` says how many gateway-side processes
share the gateway. The master runs everything else (the gateway, the probe, faults, the judge) and writes the
one summary.json. Locust's messages carry it all:

  worker -> master  `report_to_master` / `worker_report`: each stats report (every 3 s) carries the attempts
                    and disconnects recorded since the last one, in order (`journal`);
  master -> worker  `harness_plan`: once every worker has spawned its users, its accounts (names, channels)
                    and the run (gateway, arm, fixes); each answers `harness_arrived` once its accounts exist;
  master -> worker  `harness_release`: scenario time 0 (on the wall clock) and one start time for all: every
                    account of every worker starts on the same tick, as in the field;
  master -> worker  `harness_flush` at the end, answered by `harness_final`: the rest of the journal, the
                    coordinator's statistics and the worker's loop lag;
  master -> worker  `harness_reregister`: a gateway restart (a fault) re-registers every account.

A worker that dies or stops answering is reported with its accounts (`LostWorker`): its accounts are not
silently dropped, and the run is inconclusive. `--processes N` starts N local workers (child processes, ended
with the run); `--master` waits for workers started elsewhere with `harness run --worker --master-host H`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import locust.runners
from gevent.event import Event
from locust.env import Environment
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from harness.backends.embedded import ChildService
from harness.client.connect_shape import ClientShape
from harness.clock import ScaledClock
from harness.errors import BackendError
from harness.events import AccountLedger
from harness.policy.arms import ARMS, FixSettings
from harness.policy.coordinator import CoordinatorStatistics
from harness.report.progress import Progress
from harness.run.loop_lag import LoopLagWatch
from harness.run.worker_messages import JournaledLedger, LostWorker, RunPlan, merged_statistics, replay
from openclaw_wire.device_auth import DeviceIdentity

PLAN, ARRIVED, RELEASE = "harness_plan", "harness_arrived", "harness_release"
FLUSH, FINAL, REREGISTER = "harness_flush", "harness_final", "harness_reregister"
JOURNAL_KEY = "harness_journal"
JOURNAL_INTERVAL_S = 1.0  # a worker's stats reports (Locust's default is 3 s): the master's progress line is fresher
RELEASE_MARGIN_S = 0.05  # from the release going out to every account starting: the message's way to each worker
ARRIVAL_TIMEOUT_S = 120.0
LOCAL_WORKERS_TIMEOUT_S = 60.0
REMOTE_WORKERS_TIMEOUT_S = 600.0
SPAWN_TIMEOUT_S = 120.0
FINAL_TIMEOUT_S = 15.0
LOCAL_WORKER_EXIT_S = 10.0
WORKER_WAIT_FOR_PLAN_S = 900.0  # a worker nobody gives accounts to ends by itself
WORKER_LINGER_S = 120.0  # and one whose master vanished ends this long after the run's duration
DEFAULT_MASTER_PORT = 5557  # Locust's


# -- the master's side ---------------------------------------------------------------------------------------

@dataclass
class WorkerFinals:
    statistics: list[CoordinatorStatistics] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)  # real ms, as drive's own LoopLagWatch
    answered: set[str] = field(default_factory=set)


class LocalWorker(ChildService):
    name = "harness worker"
    favoured = False  # a worker is the harness's side, as the single process is: it competes like one


class Cluster:
    """The master's view of its workers: who holds which accounts, what they reported, who is gone."""

    def __init__(self, runner: MasterRunner, ledger: AccountLedger, clock: ScaledClock) -> None:
        self.runner = runner
        self._ledger = ledger
        self._clock = clock
        self.shares: dict[str, tuple[str, ...]] = {}  # worker id -> its accounts
        self.lost: dict[str, LostWorker] = {}
        self.finals = WorkerFinals()
        self._local: dict[str, LocalWorker] = {}
        self._arrived: set[str] = set()
        runner.environment.events.worker_report.add_listener(self._on_report)  # type: ignore[no-untyped-call]
        runner.register_message(FINAL, self._on_final)
        runner.register_message(ARRIVED, lambda environment, msg, **_: self._arrived.add(msg.node_id))

    def _on_report(self, client_id: str, data: dict[str, Any]) -> None:
        if client_id in self.shares and client_id not in self.lost:
            replay(self._ledger, data.get(JOURNAL_KEY) or [])

    def _on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        data, worker = msg.data, msg.node_id
        if worker not in self.shares or worker in self.finals.answered:
            return
        replay(self._ledger, data.get("journal") or [])
        if data.get("coordinator"):
            self.finals.statistics.append(CoordinatorStatistics(**data["coordinator"]))
        self.finals.loop_lag_ms += data.get("loop_lag_ms") or []
        self.finals.answered.add(worker)

    def start_local(self, count: int, master_port: int, out_dir: Path, stack: contextlib.ExitStack) -> None:
        for index in range(count):
            worker = LocalWorker("harness.cli", ["run", "--worker", "--master-host", "127.0.0.1", "--master-port",
                                                 str(master_port)], log_path=out_dir / f"worker-{index + 1}.log")
            stack.enter_context(worker)
            self._local[str(worker.ready["worker"])] = worker
        stack.callback(self._let_local_workers_exit)  # runs before they are stopped: the stack unwinds in reverse

    def _let_local_workers_exit(self) -> None:
        """The master's quit tells each worker to stop its accounts and exit; give them the time to, before the
        stack ends whatever is left."""
        deadline = time.monotonic() + LOCAL_WORKER_EXIT_S
        while time.monotonic() < deadline and any(worker.ended() is None for worker in self._local.values()):
            gevent.sleep(0.05)

    def wait_for_workers(self, expected: int, timeout_s: float, progress: Progress,
                         check_alive: Callable[[], None], gateway_url: str) -> None:
        def ready() -> int:
            return len(self.runner.clients.ready)

        def check() -> None:
            check_alive()
            self._check_local_started()
            progress.update(f"waiting for workers: {ready()}/{expected} connected (master port "
                            f"{self.runner.server.port}, gateway {gateway_url})")

        _wait_until(lambda: ready() >= expected, timeout_s, check,
                    lambda: f"only {ready()} of {expected} workers connected", poll_s=0.2,
                    hint=" (start them with `harness run --worker --master-host HOST`)")

    def _check_local_started(self) -> None:
        for worker_id, worker in self._local.items():
            if (ended := worker.ended()) is not None:
                raise BackendError(f"worker {worker_id} {ended} before the run started: {worker.log_text()[-300:]}")

    def send_plans(self, plan: RunPlan, channels: tuple[str, ...]) -> None:
        """Once every worker has spawned its users: each worker's accounts; back once all of them exist."""
        _wait_until(lambda: self.runner.spawning_completed, SPAWN_TIMEOUT_S, self._check_local_started,
                    "the workers did not spawn their users")
        first = 0
        for index, worker in enumerate(sorted(self.runner.clients.values(), key=lambda node: node.id)):
            count = sum(worker.user_classes_count.values())
            share = channels[first:first + count]
            self.shares[worker.id] = tuple(f"{channel}-{first + i + 1}" for i, channel in enumerate(share))
            message = dataclasses.replace(plan, worker_index=index, first_index=first, channels=share)
            self.runner.send_message(PLAN, message.to_message(), client_id=worker.id)
            first += count
        _wait_until(lambda: self._arrived >= set(self.shares), ARRIVAL_TIMEOUT_S, self._check_local_started,
                    "the workers did not create their accounts")

    def release(self, clock: ScaledClock) -> None:
        """Scenario time 0 is now: every worker's accounts start together, a moment from now."""
        clock_started_wall = time.time() - clock.now_ms() * clock.time_scale / 1000.0
        self.runner.send_message(RELEASE, {"clock_started_wall": clock_started_wall,
                                           "start_at_wall": time.time() + RELEASE_MARGIN_S})

    def check(self) -> None:
        """Note every worker that died (a local child that exited) or went missing (no heartbeat)."""
        for worker_id in self.shares:
            if worker_id in self.lost:
                continue
            local = self._local.get(worker_id)
            ended = local.ended() if local is not None else None
            node = self.runner.clients.get(worker_id)
            how = ended or ("stopped answering (no heartbeat)" if node is None or node.state == STATE_MISSING
                            else None)
            if how is not None:
                self.lost[worker_id] = LostWorker(worker_id, self.shares[worker_id], self._clock.now_ms(), how)

    def reregister_all(self) -> None:
        self.runner.send_message(REREGISTER, {})

    def collect_finals(self) -> WorkerFinals:
        """Ask every worker for the rest of its journal; one that does not answer in time is lost."""
        self.runner.send_message(FLUSH, {})
        deadline = time.monotonic() + FINAL_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check()
            waiting = set(self.shares) - self.finals.answered - set(self.lost)
            if not waiting:
                break
            gevent.sleep(0.05)
        for worker_id in set(self.shares) - self.finals.answered - set(self.lost):
            self.lost[worker_id] = LostWorker(worker_id, self.shares[worker_id], self._clock.now_ms(),
                                              f"did not report its last figures within {FINAL_TIMEOUT_S:g} s")
        return self.finals

    def coordinator_statistics(self) -> CoordinatorStatistics | None:
        return merged_statistics(self.finals.statistics)


def _wait_until(done: Callable[[], bool], timeout_s: float, check: Callable[[], None],
                what: str | Callable[[], str], *, poll_s: float = 0.02, hint: str = "") -> None:
    """Back once `done()`; `check()` between looks (it raises to stop early); BackendError "<what> within <timeout>"
    when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while not done():
        check()
        if time.monotonic() > deadline:
            raise BackendError(f"{what if isinstance(what, str) else what()} within {timeout_s:g} s{hint}")
        gevent.sleep(poll_s)


def plan_of(context: Any, duration_s: float, handshake_timeout_ms: int, shape: ClientShape) -> RunPlan:
    """The plan every worker shares, from the master's run context."""
    fixes: FixSettings = context.fixes
    return RunPlan(url=context.url, token=context.token, arm=context.arm.name, time_scale=context.clock.time_scale,
                   duration_s=duration_s,
                   fixes={"coordinator": dataclasses.asdict(fixes.coordinator),
                          "gates": dataclasses.asdict(fixes.gates), "breaker": dataclasses.asdict(fixes.breaker)},
                   protocol=shape.protocol, device_signed=shape.device is not None,
                   handshake_timeout_ms=handshake_timeout_ms,
                   keep_reconnecting_after_failed_start=context.keep_reconnecting_after_failed_start,
                   seed=context.seed)


# -- the worker's side ---------------------------------------------------------------------------------------

def run_worker(master_host: str, master_port: int, gateway_url: str | None = None,
               announce: Callable[[dict[str, Any]], None] | None = None) -> int:
    """One worker until the master quits it (or, bounded, the run's duration plus a margin); its exit code."""
    from harness.locustfile import NativeApprovalsAccount, RunContext

    locust.runners.WORKER_REPORT_INTERVAL = JOURNAL_INTERVAL_S
    environment = Environment(user_classes=[NativeApprovalsAccount])
    ready = Event()
    environment.harness_context_ready = ready  # type: ignore[attr-defined]
    runner: WorkerRunner = environment.create_worker_runner(master_host, master_port)
    loop_lag = LoopLagWatch()
    lag_watch = gevent.spawn(loop_lag.run)
    contexts: list[Any] = []

    def on_plan(environment: Environment, msg: Any, **_: Any) -> None:
        plan = RunPlan.from_message(msg.data)
        shape = ClientShape(plan.protocol, DeviceIdentity.generate() if plan.device_signed else None)
        context = RunContext(url=gateway_url or plan.url, token=plan.token, arm=ARMS[plan.arm],
                             channels=list(plan.channels), clock=ScaledClock(plan.time_scale),
                             fixes=plan.fix_settings(), shape=shape, handshake_timeout_ms=plan.handshake_timeout_ms,
                             keep_reconnecting_after_failed_start=plan.keep_reconnecting_after_failed_start,
                             seed=plan.worker_seed(), ledger=JournaledLedger(), first_index=plan.first_index,
                             released=Event())
        contexts.append(context)
        environment.harness_context = context  # type: ignore[attr-defined]
        ready.set()
        gevent.spawn(announce_arrival, context)
        gevent.spawn_later(context.clock.real_s(plan.duration_s * 1000.0) + WORKER_LINGER_S, runner.quit)

    def announce_arrival(context: Any) -> None:
        if context.channels:
            context.all_arrived.wait()
        runner.send_message(ARRIVED, {})

    def on_release(environment: Environment, msg: Any, **_: Any) -> None:
        """The master's scenario time 0, on this machine's monotonic clock (wall clocks agree across hosts)."""
        if not contexts:
            return
        context = contexts[-1]
        context.clock.started = time.monotonic() - (time.time() - msg.data["clock_started_wall"])
        context.release_at_wall = msg.data["start_at_wall"]
        loop_lag.restart()
        context.released.set()

    def journal() -> list[list[Any]]:
        ledger = contexts[-1].ledger if contexts else None
        return ledger.take() if isinstance(ledger, JournaledLedger) else []

    def on_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
        data[JOURNAL_KEY] = journal()

    def on_flush(environment: Environment, msg: Any, **_: Any) -> None:
        context = contexts[-1] if contexts else None
        statistics = context.runtime.coordinator.statistics() if context and context.runtime else None
        runner.send_message(FINAL, {
            "journal": journal(),
            "coordinator": dataclasses.asdict(statistics) if statistics else None,
            "loop_lag_ms": loop_lag.samples_ms(),
        })

    def on_reregister(environment: Environment, msg: Any, **_: Any) -> None:
        if contexts:
            contexts[-1].reregister_all()

    environment.events.report_to_master.add_listener(on_report)  # type: ignore[no-untyped-call]
    runner.register_message(PLAN, on_plan)
    runner.register_message(RELEASE, on_release)
    runner.register_message(FLUSH, on_flush)
    runner.register_message(REREGISTER, on_reregister)
    if announce is not None:
        announce({"worker": runner.client_id})
    gevent.spawn_later(WORKER_WAIT_FOR_PLAN_S, lambda: None if ready.is_set() else runner.quit())
    try:
        runner.greenlet.join()
    finally:
        lag_watch.kill(block=False)
        for context in contexts:
            context.close()
    return 0
