"""Drive: the live part of a run, over real sockets under gevent and Locust, against a running backend.

It connects the health probe, puts a Toxiproxy proxy in front of the gateway when the profile has faults,
spawns the accounts under Locust (one `User` each, all released on the same tick), starts the approval
scenario's agents once the accounts are connected, shows one progress line, and stops everything after the
profile's duration. What it hands back is what the run recorded, as plain data (`Driven`): the judge needs
nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
from locust.env import Environment
from locust.html import get_html_report
from locust.runners import LocalRunner, MasterRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter, stats_history

from harness.backends import Backend
from harness.client.connect_shape import ClientShape
from harness.clock import ScaledClock
from harness.errors import BackendError
from harness.events import RunRecord
from harness.faults.client import BoundProxy, FaultError, ToxiproxyClient
from harness.faults.scheduler import FaultScheduler
from harness.host import HostMeter, HostWindow
from harness.locustfile import NativeApprovalsAccount, RunContext
from harness.policy.coordinator import CoordinatorStatistics
from harness.report.progress import Progress
from harness.run.approval_scenario import ApprovalScenario
from harness.run.compose import Parts
from harness.run.fleet import wait_at_barrier
from harness.run.loop_lag import LoopLagWatch
from harness.run.probe import HealthProbe
from harness.run.worker_messages import LostWorker
from harness.run.workers import (
    LOCAL_WORKERS_TIMEOUT_S,
    REMOTE_WORKERS_TIMEOUT_S,
    Cluster,
    plan_of,
)
from harness.summary import FaultWindowRecord

PROGRESS_INTERVAL_S = 1.0  # real seconds between progress updates
HOST_TICK_S = 1.0  # real seconds between readings of the host's CPU waits
LOCUST_CSV_INTERVAL_S = 1.0
PROBE_READY_TIMEOUT_S = 30.0
ALIVE_CHECK_INTERVAL_S = 0.5
TEARDOWN_TIMEOUT_S = 5.0


class _AllAtOnceIsMeant(logging.Filter):
    """Locust warns at every start above 100 users a second; the harness spawns all its accounts at once on purpose
    (they wait at the start barrier), so the warning would only alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Your selected spawn rate is very high")


logging.getLogger("locust.runners").addFilter(_AllAtOnceIsMeant())


@dataclass(frozen=True)
class Driven:
    record: RunRecord
    coordinator_statistics: CoordinatorStatistics | None
    faults: list[FaultWindowRecord]
    fault_backend: str | None
    host: HostWindow | None  # what the host did while the accounts ran
    harness_loop_lag_ms: list[float]  # the accounts' processes' loop lag samples, in scenario ms
    processes: int = 1  # harness processes the accounts ran in (Locust workers when more than one)
    lost_workers: tuple[LostWorker, ...] = ()  # workers that died or stopped answering, with their accounts


@dataclass(frozen=True)
class FaultProxy:
    proxy: BoundProxy
    client_url: str  # where the accounts and agents connect: the proxy
    described: str  # summary.json's fault_backend


@contextlib.contextmanager
def fault_proxy(backend: Backend, parts: Parts) -> Iterator[FaultProxy | None]:
    """A Toxiproxy proxy in front of the gateway, where the backend places it; None without faults."""
    if not parts.profile.faults:
        yield None
        return
    with backend.toxiproxy(parts.out_dir) as placement:
        client = ToxiproxyClient(placement.api_url)
        proxy = client.create(upstream=placement.upstream, name=f"gateway-{uuid.uuid4().hex[:8]}",
                              listen=placement.listen)
        try:
            yield FaultProxy(proxy, placement.client_url or f"ws://{proxy.listen}/",
                             f"{placement.backend} {client.version()} at {placement.api_url}{placement.where}")
        finally:
            with contextlib.suppress(FaultError):
                proxy.destroy()


def drive(parts: Parts, backend: Backend, progress: Progress,
          on_progress: Callable[[float, int, int], None] | None = None) -> Driven:
    with fault_proxy(backend, parts) as faults_proxy:
        return _drive(parts, backend, faults_proxy, progress, on_progress)


def _drive(parts: Parts, backend: Backend, faults_proxy: FaultProxy | None, progress: Progress,
           on_progress: Callable[[float, int, int], None] | None) -> Driven:
    profile, arm = parts.profile, parts.arm
    backend.check_alive()  # nothing answering is one clear line, not a storm of connect errors
    clock = ScaledClock(profile.time_scale)
    client_url = faults_proxy.client_url if faults_proxy else backend.url
    scenario = ApprovalScenario.build(profile, arm, client_url, backend.token, clock, parts.shape,
                                      parts.handshake_timeout_ms)
    context = RunContext(
        url=client_url, token=backend.token, arm=arm, channels=list(profile.channels), clock=clock,
        fixes=profile.fixes, shape=parts.shape, handshake_timeout_ms=parts.handshake_timeout_ms,
        keep_reconnecting_after_failed_start=profile.keep_reconnecting_after_failed_start, seed=profile.seed,
        approvals=scenario.ledger if scenario else None, operator=scenario.operator if scenario else None,
    )
    environment = Environment(user_classes=[NativeApprovalsAccount])
    environment.harness_context = context  # type: ignore[attr-defined]
    csv_writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, str(parts.out_dir / "locust"), False)
    probe = HealthProbe(backend.url, backend.token, clock, profile.probe_interval_ms, ClientShape(parts.shape.protocol))
    loop_lag = LoopLagWatch()
    host = HostMeter(backend.pids)
    greenlets = [gevent.spawn(csv_writer), gevent.spawn(loop_lag.run)]
    scheduler = None
    with contextlib.ExitStack() as stack:
        runner, cluster = _runners(environment, context, parts, backend, progress, stack)
        greenlets.append(gevent.spawn(stats_history, runner))  # the charts of Locust's own HTML report
        try:
            if profile.probe_interval_ms > 0:
                greenlets.append(gevent.spawn(probe.run))
                _wait_for_probe(probe, backend)
            # Every account in one spawn round: they wait at the start barrier anyway (all start on one tick, as in
            # the field), and at Locust's usual 100 a second, 2000 accounts spent 20 s of the scenario being created.
            # Workers spawn theirs and create them before scenario time 0, then start on the master's release.
            if cluster is not None:
                runner.start(profile.account_count, spawn_rate=profile.account_count)
                cluster.send_plans(plan_of(context, profile.duration_s, parts.handshake_timeout_ms, parts.shape),
                                   profile.channels)
            if parts.start_barrier is not None:  # a fleet member: every gateway's accounts start together
                wait_at_barrier(parts.start_barrier, backend.check_alive)
            clock.restart()  # scenario time 0 is when the accounts start
            host.start()
            greenlets.append(gevent.spawn(_tick_host, host))
            loop_lag.restart()
            if faults_proxy is not None:
                scheduler = FaultScheduler(faults_proxy.proxy, profile.faults, profile.time_scale,
                                           on_restart=cluster.reregister_all if cluster else context.reregister_all)
                greenlets.append(gevent.spawn(_apply_faults, scheduler, clock))
            if cluster is None:
                runner.start(profile.account_count, spawn_rate=profile.account_count)
            else:
                cluster.release(clock)
            if scenario:
                greenlets.append(gevent.spawn(scenario.start_when_connected, context.ledger, profile))
            _watch(parts, clock, context, progress, backend, scenario, cluster, on_progress)
            # The run ends here for every source: what happens during teardown is not the run's.
            host_window = host.stop()
            lags_ms = loop_lag.samples_ms()
            if cluster is not None:
                lags_ms = cluster.collect_finals().loop_lag_ms  # the accounts' loops are the workers'
            if scenario:
                scenario.stop()
            gateway_records = backend.gateway_records(parts.out_dir)
            attempts, disconnects = list(context.ledger.attempts), list(context.ledger.disconnects)
            connected_at_end = frozenset(context.ledger.connected)
            health_samples, probe_timeouts = list(probe.samples), probe.handshake_timeouts
            if cluster is not None:
                statistics = cluster.coordinator_statistics()
            else:
                statistics = context.runtime.coordinator.statistics() if context.runtime else None
        finally:
            runner.quit()  # a master's quit ends its workers: they exit on their own, then the stack checks
            context.close()
            gevent.sleep(LOCUST_CSV_INTERVAL_S + 0.1)  # one more CSV pass with the final stats
            gevent.killall(greenlets, block=True, timeout=TEARDOWN_TIMEOUT_S)
            csv_writer.close_files()
    locust_report = get_html_report(environment, show_download_link=False)  # type: ignore[no-untyped-call]
    (parts.out_dir / "locust.html").write_text(locust_report, encoding="utf-8")
    record = RunRecord(
        accounts=context.account_names, attempts=attempts, disconnects=disconnects,
        connected_at_end=connected_at_end, duration_ms=profile.duration_s * 1000.0,
        startup_window_ms=profile.startup_window_s * 1000.0, final_window_ms=profile.final_window_s * 1000.0,
        gateway_records=gateway_records, health=health_samples,
        event_loop_lag_ms=_loop_lag(backend, profile.time_scale), probe_handshake_timeouts=probe_timeouts,
        probe_reconnects=probe.failures, approvals=scenario.ledger if scenario else None,
    )
    return Driven(
        record=record,
        coordinator_statistics=statistics,
        processes=profile.processes,
        lost_workers=tuple(cluster.lost.values()) if cluster else (),
        faults=scheduler.describe() if scheduler else [],
        fault_backend=faults_proxy.described if faults_proxy else None,
        host=host_window,
        harness_loop_lag_ms=[lag / profile.time_scale for lag in lags_ms],
    )


def _runners(environment: Environment, context: RunContext, parts: Parts, backend: Backend, progress: Progress,
             stack: contextlib.ExitStack) -> tuple[LocalRunner | MasterRunner, Cluster | None]:
    """Locust's local runner, or (several processes, or --master) a master runner and its workers, connected."""
    master = parts.master
    if parts.profile.processes == 1 and master is None:
        return environment.create_local_runner(), None
    bind_host, port = (master.bind_host, master.port) if master else ("127.0.0.1", 0)
    runner = environment.create_master_runner(master_bind_host=bind_host, master_bind_port=port)
    stack.callback(runner.server.close, linger=0)  # after the quit, and after the local workers exited
    cluster = Cluster(runner, context.ledger, context.clock)
    try:
        if master is None:
            cluster.start_local(parts.profile.processes, runner.server.port, parts.out_dir, stack)
        cluster.wait_for_workers(parts.profile.processes,
                                 REMOTE_WORKERS_TIMEOUT_S if master else LOCAL_WORKERS_TIMEOUT_S, progress,
                                 backend.check_alive, context.url)
    except BaseException:
        runner.quit()
        raise
    return runner, cluster


def _tick_host(host: HostMeter) -> None:
    """The host's waits, second by second: the verdict asks how busy it was while its storm entries happened."""
    while True:
        gevent.sleep(HOST_TICK_S)
        host.tick()


def _wait_for_probe(probe: HealthProbe, backend: Backend) -> None:
    deadline = time.monotonic() + PROBE_READY_TIMEOUT_S
    while not probe.connected.wait(timeout=ALIVE_CHECK_INTERVAL_S):
        backend.check_alive()
        if time.monotonic() > deadline:
            raise BackendError(f"the health probe could not connect to {backend.url} "
                               f"within {PROBE_READY_TIMEOUT_S:g} s")


def _apply_faults(scheduler: FaultScheduler, clock: ScaledClock) -> None:
    for step in scheduler.steps():
        gevent.sleep(clock.real_s(step.at_s * 1000.0 - clock.now_ms()))
        scheduler.carry_out(step, clock.now_ms() / 1000.0)


def _watch(parts: Parts, clock: ScaledClock, context: RunContext, progress: Progress, backend: Backend,
           scenario: ApprovalScenario | None, cluster: Cluster | None,
           on_progress: Callable[[float, int, int], None] | None) -> None:
    profile = parts.profile
    duration_ms = profile.duration_s * 1000.0
    while (now_ms := clock.now_ms()) < duration_ms:
        backend.check_alive()
        if cluster is not None:
            cluster.check()
        if scenario is not None:
            scenario.sample_pending(backend, now_ms)
        if on_progress is not None:
            on_progress(now_ms, len(context.ledger.connected), context.ledger.storm_entries())
        progress.update(f"[{parts.arm.name}] {now_ms / 1000:6.0f}/{profile.duration_s:g} s  connected "
                        f"{len(context.ledger.connected)}/{profile.account_count}  "
                        f"storm entries {context.ledger.storm_entries()}")
        gevent.sleep(min(PROGRESS_INTERVAL_S, clock.real_s(duration_ms - now_ms)))


def _loop_lag(backend: Backend, time_scale: float) -> dict[str, float | None] | None:
    """The gateway's event-loop lag (p99, max) in scenario ms, where it measures it (the stub)."""
    stats = backend.stats()
    if stats is None:
        return None
    lag = stats.get("event_loop_lag_ms") or {}
    return {k: None if lag.get(k) is None else round(lag[k] / time_scale, 3) for k in ("p99", "max")}
