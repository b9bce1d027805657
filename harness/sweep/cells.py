"""The cells of a sweep and one simulated run of one cell: a derived profile in, a row of figures out."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway_stub.cost import CostSpec, Distribution
from harness.policy.arms import ARMS
from harness.policy.coordinator import CoordinatorSettings
from harness.profile import Profile
from harness.sim import simulated_summary
from harness.summary import metric_value
from harness.sweep.spec import UNLIMITED, SweepSpec
from harness.target import SimTarget, StubTarget

UNLIMITED_STARTS = sys.maxsize  # K = unlimited: the coordinator never makes a start wait
COST_FIELDS = ("upgrade_cost", "connect_cost_before_timer", "connect_cost_after_timer", "colocated_challenge_cost",
               "colocated_hello_cost", "health_refresh_cost")
CELL_COLUMNS = ("cell", "accounts", "host_speed", "arm", "start_jitter_ms", "max_concurrent_starts",
                "start_slot_max_hold_ms")
FIGURE_COLUMNS = (
    "verdict", "observed_verdict", "storm_entries", "storm_entries_by_kind.handshake_timeout",
    "storm_entries_by_kind.preauth_rejected", "storm_entries_by_kind.connect_error", "storm_entries_after_startup",
    "final_window_storm_entries", "recovered_at_s", "connected_accounts_at_end", "time_to_all_connected_s",
    "handshake_attempts_total", "handshake_ms.p50", "handshake_ms.p99", "handshake_ms.max", "health_rpc_ms.p50",
    "health_rpc_ms.p99", "event_loop_lag_ms.p99", "event_loop_lag_ms.max", "coordinator_statistics.forced_releases",
    "coordinator_statistics.max_wait_ms",
)
COLUMNS = (*CELL_COLUMNS, "seed", *FIGURE_COLUMNS)


@dataclass(frozen=True)
class Cell:
    index: int
    accounts: int
    host_speed: float
    arm: str
    start_jitter_ms: int | None  # None: the arm has no coordinator
    max_concurrent_starts: int | None  # None: unlimited, or no coordinator
    start_slot_max_hold_ms: int | None

    @property
    def coordinated(self) -> bool:
        return ARMS[self.arm].coordinated

    def key(self) -> tuple[Any, ...]:
        return (self.accounts, self.host_speed, self.arm, self.start_jitter_ms, self.max_concurrent_starts,
                self.start_slot_max_hold_ms)

    def columns(self) -> dict[str, Any]:
        cap: Any = self.max_concurrent_starts
        if self.coordinated and cap is None:
            cap = UNLIMITED
        return {"cell": self.index, "accounts": self.accounts, "host_speed": self.host_speed, "arm": self.arm,
                "start_jitter_ms": self.start_jitter_ms, "max_concurrent_starts": cap,
                "start_slot_max_hold_ms": self.start_slot_max_hold_ms}


def cells(spec: SweepSpec) -> Iterator[Cell]:
    """Every cell in a fixed order; the coordinator's settings vary only for arms behind it."""
    index = 0
    for accounts in spec.accounts:
        for speed in spec.host_speeds:
            for arm in spec.arms:
                if not ARMS[arm].coordinated:
                    yield Cell(index, accounts, speed, arm, None, None, None)
                    index += 1
                    continue
                for jitter in spec.start_jitter_ms:
                    for cap in spec.max_concurrent_starts:
                        for hold in spec.start_slot_max_hold_ms:
                            yield Cell(index, accounts, speed, arm, jitter, cap, hold)
                            index += 1


def cell_profile(spec: SweepSpec, cell: Cell, seed: int) -> Profile:
    base = spec.base
    stub = base.target.stub if isinstance(base.target, SimTarget) else base.target
    assert isinstance(stub, StubTarget)
    costs = {name: slower(getattr(stub.config, name), 1.0 / cell.host_speed) for name in COST_FIELDS}
    config = dataclasses.replace(stub.config, **costs)
    coordinator = base.coordinator
    if cell.coordinated:
        assert cell.start_jitter_ms is not None and cell.start_slot_max_hold_ms is not None
        coordinator = CoordinatorSettings(cell.start_jitter_ms, cell.max_concurrent_starts or UNLIMITED_STARTS,
                                          cell.start_slot_max_hold_ms)
    duration_s = spec.duration_s
    startup_s = min(base.startup_window_s, duration_s / 2)
    final_s = min(base.final_window_s, duration_s / 2)
    return dataclasses.replace(
        base, name=spec.name, target=SimTarget(dataclasses.replace(stub, config=config)),
        account_count=cell.accounts, channels=(base.channels[0],) * cell.accounts, arms=(cell.arm,),
        coordinator=coordinator, seed=seed, duration_s=duration_s, startup_window_s=startup_s,
        final_window_s=final_s, thresholds={},
    )


def slower(cost: CostSpec, factor: float) -> CostSpec:
    """`cost` on a host `factor` times slower: every amount times `factor` (a lognormal's median; its spread stays)."""
    if cost.is_zero or factor == 1:
        return cost
    d = cost.distribution
    second = d.second if d.kind == "lognormal" else d.second * factor
    return dataclasses.replace(cost, distribution=Distribution(d.kind, d.first * factor, second))


def run_cell(spec: SweepSpec, cell: Cell, seed: int) -> dict[str, Any]:
    """One simulated run of one cell: its row of sweep.csv."""
    summary, _ = simulated_summary(cell_profile(spec, cell, seed), cell.arm)
    row = {**cell.columns(), "seed": seed}
    for column in FIGURE_COLUMNS:
        row[column] = metric_value(summary, column)
    return row


def cell_profile_data(spec: SweepSpec, cell: Cell, seed: int, kind: str = "stub") -> dict[str, Any]:
    """The cell as a profile file would say it (the base's YAML with the cell's values): what `--verify` runs
    on the stub over real sockets, and what `cell_profile` builds directly for the simulator."""
    import yaml

    assert spec.base.path is not None
    data = yaml.safe_load(spec.base.path.read_text(encoding="utf-8"))
    profile = cell_profile(spec, cell, seed)
    target = data.setdefault("target", {})
    target["kind"] = kind
    assert isinstance(profile.target, SimTarget)
    for name in COST_FIELDS:
        target[name] = getattr(profile.target.stub.config, name).describe()
    data.update(name=spec.name, arms=[cell.arm], seed=seed, duration_s=profile.duration_s,
                windows={"startup_s": profile.startup_window_s, "final_s": profile.final_window_s},
                accounts={"count": cell.accounts, "channels": {profile.channels[0]: cell.accounts}})
    data.pop("assert", None)
    if cell.coordinated:
        data["coordinator"] = {"start_jitter_ms": profile.coordinator.start_jitter_ms,
                               "max_concurrent_starts": min(profile.coordinator.max_concurrent_starts, cell.accounts),
                               "start_slot_max_hold_ms": profile.coordinator.start_slot_max_hold_ms}
    return data
