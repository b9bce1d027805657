"""The simulator: one gateway and its accounts in virtual time, deterministic for a seed.

`simulate(profile, arm)` runs a stub profile's accounts, under the arm's policies (the same
`AccountBootstrap`, `StartCoordinator` and retry schedules the live runs use, driven by
`harness.sim.bootstrap_driver`), against a model of the gateway stub (`harness.sim.gateway`) with the
profile's costs, latencies, timeout and pre-auth budget, for the profile's duration. What it records is the
`RunRecord` the verdict judges, so a simulated run gets the same summary.json as a live one
(`target.kind: sim`). It uses no sockets, threads or gevent; 180 s of a matrix-11 profile take milliseconds.

A fault timeline runs through a simulated Toxiproxy proxy (`harness.sim.network`: gateway down and
restart, latency and timeout toxics). What it cannot model is refused with one line (`BadInput`, exit 2):
the duplicate-prompt scenario (agents) and the other toxics.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from gateway_stub.metrics import LAG_PROBE_INTERVAL_S, LOOP_DELAY_INTERVAL_S
from harness.errors import BadInput
from harness.events import AccountLedger, RunRecord
from harness.policy.arms import ARMS, bootstrap_retry, start_gate
from harness.policy.bootstrap import AccountBootstrap
from harness.policy.coordinator import CoordinatorStatistics
from harness.profile import Profile
from harness.sim.bootstrap_driver import BootstrapDriver
from harness.sim.clients import ClientModel, SimHandlers, SimHealthProbe
from harness.sim.gateway import SimGateway
from harness.sim.loop import Simulation
from harness.sim.network import CALIBRATED, MODELLED_TOXICS, Network, Tuning
from harness.summary import FaultWindowRecord, SimTargetRecord, SimTuningRecord, Summary
from harness.target import SimTarget
from harness.verdict.figures import percentile
from harness.verdict.judge import RunMeta, judge

__all__ = ["Simulated", "Tuning", "check_simulable", "simulate", "simulated_summary"]



@dataclass(frozen=True)
class Simulated:
    record: RunRecord
    coordinator_statistics: CoordinatorStatistics | None
    loop_busy_ms: float  # loop time the gateway spent on callbacks
    faults: list[FaultWindowRecord]  # the fault windows, applied and removed on time (virtual time is exact)


def check_simulable(profile: Profile) -> None:
    """One line for what the simulator cannot model, before anything runs."""
    where = f"{profile.path}: " if profile.path else ""
    if not isinstance(profile.target, SimTarget):
        raise BadInput(f"{where}target.kind: the simulator runs a stub or sim target, got {profile.target.kind}")
    if profile.agents is not None:
        raise BadInput(f"{where}agents: the simulator models the reconnect storm only; run the duplicate-prompt "
                       "scenario on a live target")
    for window in profile.faults:
        if window.toxic is not None and window.toxic.type not in MODELLED_TOXICS:
            raise BadInput(f"{where}faults[{window.index}].toxic.type: the simulator models "
                           f"{' and '.join(MODELLED_TOXICS)} toxics, gateway_down and gateway_restart, not "
                           f"{window.toxic.type}; run it on a live target")


def simulate(profile: Profile, arm_name: str, tuning: Tuning | None = None) -> Simulated:
    check_simulable(profile)
    assert isinstance(profile.target, SimTarget)
    target = profile.target
    arm = ARMS[arm_name]
    duration_ms = profile.duration_s * 1000.0
    sim = Simulation()
    tuning = tuning or CALIBRATED
    network = Network(sim, tuning, profile.faults, profile.seed, time_scale=profile.time_scale)
    gateway = SimGateway(sim, target.stub.config, tuning, profile.seed, network)
    ledger = AccountLedger()
    coordinator = start_gate(arm, profile.fixes, profile.seed)
    model = ClientModel(float(target.effective_handshake_timeout_ms), profile.keep_reconnecting_after_failed_start)
    driver = BootstrapDriver(sim, SimHandlers(sim, gateway, model, ledger), coordinator)
    names = [f"{channel}-{index + 1}" for index, channel in enumerate(profile.channels)]
    for name in names:
        driver.add(AccountBootstrap(name, bootstrap_retry(arm, profile.fixes, profile.seed, name), coordinator))
        driver.register(name)

    def reregister_all() -> None:  # what a gateway restart does to its channel accounts: a new generation each
        for name in names:
            driver.register(name, sim.now_ms)

    network.on_restart = reregister_all
    network.schedule_faults()
    probe = SimHealthProbe(sim, gateway, profile.probe_interval_ms, duration_ms,
                           LOOP_DELAY_INTERVAL_S * 1000.0)
    if profile.probe_interval_ms > 0:
        probe.start()
    gateway.watch_lag(LAG_PROBE_INTERVAL_S * 1000.0 / profile.time_scale, duration_ms)
    sim.run(duration_ms)
    lags = gateway.lag_samples_ms
    record = RunRecord(
        accounts=names, attempts=list(ledger.attempts), disconnects=list(ledger.disconnects),
        connected_at_end=frozenset(ledger.connected), duration_ms=duration_ms,
        startup_window_ms=profile.startup_window_s * 1000.0, final_window_ms=profile.final_window_s * 1000.0,
        gateway_records=None, health=probe.samples,
        event_loop_lag_ms={"p99": percentile(lags, 0.99), "max": round(max(lags), 3) if lags else None},
    )
    faults = [FaultWindowRecord(
        index=w.index, kind=w.kind, from_s=w.start_s, to_s=w.end_s, type=w.toxic.type if w.toxic else None,
        stream=w.toxic.stream if w.toxic else None, toxicity=w.toxic.toxicity if w.toxic else None,
        attributes=dict(w.toxic.attributes) if w.toxic else None, applied_at_s=w.start_s,
        removed_at_s=w.end_s if w.end_s is not None and w.end_s < profile.duration_s else None, errors=[])
        for w in profile.faults]
    return Simulated(record, coordinator.statistics() if coordinator else None, sim.loop_busy_ms, faults)


def simulated_summary(profile: Profile, arm_name: str, tuning: Tuning | None = None) -> tuple[Summary, RunRecord]:
    """Simulate one arm and judge it as a live run is judged: the summary (thresholds checked) and the record."""
    started = time.perf_counter()
    tuning = tuning or CALIBRATED
    simulated = simulate(profile, arm_name, tuning)
    assert isinstance(profile.target, SimTarget)
    config = profile.target.stub.config
    target = SimTargetRecord(
        kind="sim", **SimTargetRecord.fields_from(config.describe()),
        challenge_latency_ms=config.effective_challenge_latency_ms, hello_latency_ms=config.effective_hello_latency_ms,
        tuning=SimTuningRecord(**dataclasses.asdict(tuning)),
        loop_busy_s=round(simulated.loop_busy_ms / 1000.0, 3),
    )
    arm = ARMS[arm_name]
    meta = RunMeta(
        profile=profile.name, arm=arm_name, seed=profile.seed, time_scale=profile.time_scale, target=target,
        wall_clock_s=time.perf_counter() - started, coordinator=profile.coordinator if arm.coordinated else None,
        coordinator_statistics=simulated.coordinator_statistics, faults=simulated.faults,
        fault_backend="simulated Toxiproxy proxy (harness.sim.network)" if simulated.faults else None,
        handshake_timeout_ms=profile.target.effective_handshake_timeout_ms,
    )
    return judge(meta, simulated.record, profile.thresholds_for(arm_name)), simulated.record
