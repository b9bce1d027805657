"""The cells of a sweep and one simulated run of one cell: a derived profile in, a row of figures out."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway_stub.cost import CostSpec, Distribution
from harness.policy.backoff import BreakerSettings
from harness.profile import MAX_ACCOUNTS, Profile
from harness.sim import simulated_summary
from harness.summary import metric_value
from harness.sweep.spec import PARAMS, UNLIMITED, SweepSpec, params_of
from harness.target import SimTarget, StubTarget

UNLIMITED_STARTS = sys.maxsize  # K = unlimited: the coordinator never makes a start wait
COST_FIELDS = ("upgrade_cost", "connect_cost_before_timer", "connect_cost_after_timer", "colocated_challenge_cost",
               "colocated_hello_cost", "health_refresh_cost")
CELL_COLUMNS = ("cell", "accounts", "host_speed", "arm", *PARAMS)
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
    params: tuple[tuple[str, Any], ...]  # its arm's fix parameters (`params_of`); K None: unlimited

    def param(self, name: str) -> Any:
        return dict(self.params).get(name)

    def columns(self) -> dict[str, Any]:
        """The cell's columns of sweep.csv: a parameter that does not apply to its arm is empty."""
        out: dict[str, Any] = {"cell": self.index, "accounts": self.accounts, "host_speed": self.host_speed,
                               "arm": self.arm, **{name: None for name in PARAMS}}
        for name, value in self.params:
            out[name] = UNLIMITED if name == "max_concurrent_starts" and value is None else value
        return out


def cells(spec: SweepSpec) -> Iterator[Cell]:
    """Every cell in a fixed order; a fix parameter varies only for the arms it applies to."""
    index = 0
    for accounts in spec.accounts:
        for speed in spec.host_speeds:
            for arm in spec.arms:
                names = params_of(arm)
                for values in itertools.product(*(spec.params[name] for name in names)):
                    yield Cell(index, accounts, speed, arm, tuple(zip(names, values, strict=True)))
                    index += 1


def cell_profile(spec: SweepSpec, cell: Cell, seed: int) -> Profile:
    base = spec.base
    stub = base.target.stub if isinstance(base.target, SimTarget) else base.target
    assert isinstance(stub, StubTarget)
    costs: dict[str, Any] = {name: slower(getattr(stub.config, name), 1.0 / cell.host_speed) for name in COST_FIELDS}
    config = dataclasses.replace(stub.config, **costs)
    given = dict(cell.params)
    coordinator = base.coordinator
    if "start_jitter_ms" in given:
        coordinator = dataclasses.replace(coordinator, start_jitter_ms=given["start_jitter_ms"],
                                          max_concurrent_starts=given["max_concurrent_starts"] or UNLIMITED_STARTS)
    if "start_slot_max_hold_ms" in given:
        coordinator = dataclasses.replace(coordinator, start_slot_max_hold_ms=given["start_slot_max_hold_ms"])
    gates = dataclasses.replace(base.gates, **{k: v for k, v in given.items()
                                               if k in ("stagger_ms", "adaptive_max_concurrent_starts")})
    breaker = base.breaker
    if "breaker_failures" in given:
        breaker = BreakerSettings(given["breaker_failures"], given["breaker_cooldown_ms"])
    duration_s = spec.duration_s
    return dataclasses.replace(
        base, name=spec.name, target=SimTarget(dataclasses.replace(stub, config=config)),
        account_count=cell.accounts, channels=(base.channels[0],) * cell.accounts, arms=(cell.arm,),
        coordinator=coordinator, gates=gates, breaker=breaker, seed=seed, duration_s=duration_s,
        startup_window_s=min(base.startup_window_s, duration_s / 2),
        final_window_s=min(base.final_window_s, duration_s / 2), thresholds={},
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
    data: dict[str, Any] = yaml.safe_load(spec.base.path.read_text(encoding="utf-8"))
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
    data["coordinator"] = {"start_jitter_ms": profile.coordinator.start_jitter_ms,
                           "max_concurrent_starts": min(profile.coordinator.max_concurrent_starts, MAX_ACCOUNTS),
                           "start_slot_max_hold_ms": profile.coordinator.start_slot_max_hold_ms}
    data["fixes"] = {"stagger_ms": profile.gates.stagger_ms,
                     "adaptive_max_concurrent_starts": profile.gates.adaptive_max_concurrent_starts,
                     "breaker_failures": profile.breaker.failures, "breaker_cooldown_ms": profile.breaker.cooldown_ms}
    return data
