"""The simulator on hand-made cases, its policies against the virtual-time driver, and `--target sim`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import BadInput
from harness.events import Outcome
from harness.policy.backoff import BootstrapRetry
from harness.policy.bootstrap import AccountBootstrap
from harness.policy.coordinator import CoordinatorSettings, StartCoordinator
from harness.profile import Profile, load_profile, parse_profile
from harness.sim import simulate, simulated_summary
from harness.sim.bootstrap_driver import BootstrapDriver, StartOutcome, VirtualDriver
from harness.sim.clients import ClientModel, SimHandlers
from harness.sim.gateway import SimGateway
from harness.sim.loop import Simulation
from harness.sim.network import Tuning
from harness.target import SimTarget
from tests.schema_check import validated

ROOT = Path(__file__).resolve().parent.parent
MATRIX_11 = ROOT / "profiles" / "matrix-11-accounts.yaml"


def profile(accounts: int = 1, cost: str = "0", arm: str = "shipped", duration_s: float = 60,
            **target: Any) -> Profile:
    return parse_profile({
        "name": "sim-case", "target": {"kind": "sim", "profile": "april-2026", "connect_cost_before_timer": cost,
                                       **target},
        "accounts": {"count": accounts}, "arms": [arm], "duration_s": duration_s,
        "windows": {"startup_s": duration_s / 3, "final_s": duration_s / 3}, "seed": 1, "time_scale": 0.1,
    })


# -- the loop ------------------------------------------------------------------------------------


def test_a_busy_loop_makes_a_timer_fire_late_by_the_busy_time() -> None:
    sim = Simulation()
    fired: list[float] = []
    sim.submit(lambda: None, cost_ms=500)  # the loop is busy from 0 to 500
    sim.at(100, lambda: sim.submit(lambda: fired.append(sim.now_ms)))  # a timer due at 100
    sim.at(700, lambda: sim.submit(lambda: fired.append(sim.now_ms)))  # due while idle: on time
    sim.run(1000)
    assert fired == [500, 700]


def test_slices_interleave_with_other_work_and_a_blocking_run_does_not() -> None:
    def finish_times(slice_ms: float) -> list[tuple[str, float]]:
        sim = Simulation()
        done: list[tuple[str, float]] = []
        sim.burn(100, slice_ms, lambda: done.append(("long", sim.now_ms)))
        sim.at(1, lambda: sim.burn(10, 0, lambda: done.append(("short", sim.now_ms))))
        sim.run(1000)
        return done

    assert finish_times(0) == [("long", 100), ("short", 110)]
    assert finish_times(10) == [("short", 30), ("long", 110)]


def test_a_cancelled_sliced_cost_stops_at_the_next_slice() -> None:
    sim = Simulation()
    alive = [True]
    done: list[float] = []
    sim.burn(1000, 10, lambda: done.append(sim.now_ms), lambda: alive[0])
    sim.at(55, lambda: alive.__setitem__(0, False))
    sim.run(2000)
    assert done == [] and sim.loop_busy_ms == 60


# -- the gateway and its clients -------------------------------------------------------------------


# The hand-made cases run the model without what real sockets add (Tuning()), so their timings are exact.
EXACT = Tuning()


def test_one_account_at_zero_cost_connects_after_the_latencies() -> None:
    record = simulate(profile(), "shipped", EXACT).record
    (attempt,) = record.attempts
    assert attempt.outcome is Outcome.HELLO
    assert attempt.latency_ms == pytest.approx(3 + 2)  # challenge latency + hello latency, as recorded on 2026.4.24
    assert record.connected_at_end == {"matrix-1"}
    # The calibrated model adds what real sockets cost at time scale 0.1: about 10 ms real, 100 ms of scenario.
    (calibrated,) = simulate(profile(), "shipped").record.attempts
    assert 5 + 40 < calibrated.latency_ms < 5 + 160


def test_n_times_the_cost_well_over_the_timeout_makes_every_shipped_attempt_time_out() -> None:
    record = simulate(profile(accounts=11, cost="fixed:5000@10"), "shipped", EXACT).record
    assert len(record.attempts) > 11 * 3
    assert {a.outcome for a in record.attempts} == {Outcome.HANDSHAKE_TIMEOUT}
    assert all(a.close_code == 1000 for a in record.attempts)
    assert not record.connected_at_end


def test_the_33rd_concurrent_preauth_socket_gets_a_503() -> None:
    record = simulate(profile(accounts=33, hello_latency_ms=5000, duration_s=3), "shipped", EXACT).record
    first_round = [a for a in record.attempts if a.started_ms == 0]
    assert [a.outcome for a in first_round].count(Outcome.PREAUTH_REJECTED) == 1
    assert [a.detail for a in first_round if a.outcome is Outcome.PREAUTH_REJECTED] == ["HTTP 503"]


def test_the_budget_slot_comes_back_on_hello() -> None:
    # 40 accounts, 32 slots, idle handshakes of 60 ms: the 8 refused get in 1 s later.
    record = simulate(profile(accounts=40, duration_s=10), "shipped", EXACT).record
    assert len(record.connected_at_end) == 40
    assert sum(a.outcome is Outcome.PREAUTH_REJECTED for a in record.attempts) == 8


def test_the_same_seed_gives_the_same_run() -> None:
    first = simulate(profile(accounts=11, cost="uniform:500,3000@10", arm="coordinator"), "coordinator").record
    again = simulate(profile(accounts=11, cost="uniform:500,3000@10", arm="coordinator"), "coordinator").record
    assert first.attempts == again.attempts


def test_matrix_11_storms_as_shipped_and_converges_behind_the_coordinator() -> None:
    loaded = load_profile(MATRIX_11).with_overrides(target="sim")
    shipped, _ = simulated_summary(loaded, "shipped")
    coordinator, _ = simulated_summary(loaded, "coordinator")
    assert (shipped.verdict, coordinator.verdict) == ("storm", "converged")
    assert shipped.passed and coordinator.passed
    assert coordinator.time_to_all_connected_s is not None and 15 < coordinator.time_to_all_connected_s < 30


# -- the same policies as the virtual-time tests ----------------------------------------------------


def bootstrap_trace(driver: BootstrapDriver) -> list[tuple[float, str, str]]:
    return [(round(t, 6), who, what) for t, who, what, _ in driver.trace.entries
            if what in ("start", "hello", "failed")]


SCENARIOS = {
    # name: (accounts, coordinator settings or None, hello latency ms, virtual-time outcome)
    "shipped: all at once, all connect": (11, None, 40, (60, True)),
    "coordinator K=1 drains FIFO": (3, CoordinatorSettings(0, 1, 30_000), 40, (60, True)),
    "coordinator J=2000 K=3 over 11": (11, CoordinatorSettings(2000, 3, 30_000), 40, (60, True)),
    "shipped: every start times out and is retried 1 s later": (2, None, 15_000, (10_000, False)),
    "coordinator: timed-out starts hold and release their slots": (4, CoordinatorSettings(500, 2, 30_000), 15_000,
                                                                   (10_000, False)),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_policies_trace_the_same_under_the_simulator_as_in_virtual_time(name: str) -> None:
    accounts, settings, hello_latency_ms, (duration_ms, succeeded) = SCENARIOS[name]
    names = [f"a{i}" for i in range(accounts)]

    def coordinator() -> StartCoordinator | None:
        return None if settings is None else StartCoordinator(settings, random=iter([0.1 * i for i in range(1, 99)])
                                                              .__next__)

    outcome: StartOutcome = lambda account, handler_id, attempt, now: (duration_ms, succeeded)  # noqa: E731
    scripted = VirtualDriver(outcome, coordinator())
    config = profile(hello_latency_ms=hello_latency_ms)
    assert isinstance(config.target, SimTarget)
    sim = Simulation()
    gateway = SimGateway(sim, dataclasses.replace(config.target.stub.config, challenge_latency_ms=20), Tuning(), 1)
    from harness.events import AccountLedger

    modelled = BootstrapDriver(sim, SimHandlers(sim, gateway, ClientModel(10_000), AccountLedger()), coordinator())
    for driver in (scripted, modelled):
        for account in names:
            driver.add(AccountBootstrap(account, BootstrapRetry("shipped"), driver.coordinator))
            driver.register(account)
        driver.run(40_000)
    assert bootstrap_trace(modelled) == bootstrap_trace(scripted)
    assert len(bootstrap_trace(scripted)) >= 2 * accounts


# -- targets and the command line ------------------------------------------------------------------


def test_a_sim_target_refuses_the_stubs_backend_and_what_it_cannot_model(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"target.backend: not an option of kind: sim"):
        parse_profile({"name": "x", "target": {"kind": "sim", "backend": "docker"}, "accounts": {"count": 1}})
    faulty = parse_profile({"name": "x", "target": {"kind": "sim"}, "accounts": {"count": 1}, "duration_s": 60,
                            "faults": [{"at_s": 10, "until_s": 20, "toxic": {"type": "bandwidth",
                                                                           "attributes": {"rate": 1}}}]})
    with pytest.raises(BadInput, match=r"faults\[0\].toxic.type: the simulator models latency and timeout toxics, "
                                       r"gateway_down and gateway_restart, not bandwidth"):
        simulate(faulty, "shipped")
    agents = load_profile(ROOT / "profiles" / "heartbeat-failover-telegram.yaml").with_overrides(target="sim")
    with pytest.raises(BadInput, match=r"agents: the simulator models the reconnect storm only"):
        simulate(agents, "none")


@pytest.mark.parametrize("name", ["latency-spike", "handshake-stall"])
def test_the_fault_profiles_give_their_documented_verdicts_in_the_simulator(name: str) -> None:
    loaded = load_profile(ROOT / "profiles" / f"{name}.yaml").with_overrides(target="sim")
    for arm in loaded.arms:
        summary, _ = simulated_summary(loaded, arm)
        assert summary.passed, (arm, [t for t in summary.thresholds if not t.passed])
        assert [(f.applied_at_s, f.removed_at_s) for f in summary.faults] == [
            (w.start_s, w.end_s) for w in loaded.faults]


def test_a_downed_proxy_cuts_connected_accounts_and_refuses_new_ones() -> None:
    loaded = parse_profile({
        "name": "down", "target": {"kind": "sim"}, "accounts": {"count": 3}, "duration_s": 60, "seed": 1,
        "windows": {"startup_s": 10, "final_s": 20}, "faults": [{"at_s": 10, "until_s": 20, "gateway_down": True}]})
    record = simulate(loaded, "shipped", EXACT).record
    assert len(record.disconnects) == 3 and all(10_000 <= d.at_ms < 10_100 for d in record.disconnects)
    assert {d.close_code for d in record.disconnects} == {1006}
    during = [a for a in record.attempts if 10_000 < a.started_ms < 20_000]
    assert during and {a.detail for a in during} == {"ConnectionRefusedError"}
    assert record.connected_at_end == {"matrix-1", "matrix-2", "matrix-3"}


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_harness_compare_target_sim_writes_the_same_summary_schema(tmp_path: Path) -> None:
    result = harness("compare", str(MATRIX_11), "--target", "sim", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for arm, verdict in (("shipped", "storm"), ("coordinator", "converged")):
        summary = validated(yaml.safe_load((tmp_path / arm / "summary.json").read_text()))
        assert summary["target"]["kind"] == "sim" and summary["verdict"] == verdict
        assert summary["host"] is None and summary["wall_clock_s"] < 5
    assert (tmp_path / "compare.json").exists()


def test_target_sim_on_a_profile_that_is_not_the_stubs_is_one_line_exit_2(tmp_path: Path) -> None:
    url_profile = tmp_path / "url.yaml"
    url_profile.write_text(yaml.safe_dump({"name": "u", "target": {"kind": "url", "url": "ws://127.0.0.1:1/",
                                                                   "token": "t"}, "accounts": {"count": 1}}))
    result = harness("run", str(url_profile), "--target", "sim", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "harness: error: --target: only a stub profile can run in the simulator (--target sim); this profile's "
        "target is url"]
