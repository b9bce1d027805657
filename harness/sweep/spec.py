"""A sweep spec: a base profile and the axes to vary, validated in full before anything runs.

    name: pr-70649-defaults                 # required; names the results folder
    description: ""
    base: ../profiles/matrix-11-accounts.yaml   # required: a stub (or sim) profile, relative to this file
    duration_s: null                        # null: the base's
    seeds: 5                                # a count (the base's seed, +1, ...) or a list of seeds
    axes:                                   # every axis is a list; an absent one keeps the base's value
      accounts: [1, 4, 11]                  # 1..2000
      host_speed: [0.5, 1, 2]               # every cost of the base divided by it (2: a host twice as fast)
      arm: [coordinator]                    # start arms (harness.policy.arms); J, K and H apply behind the coordinator
      start_jitter_ms: [0, 2000]
      max_concurrent_starts: [1, 3, unlimited]
      start_slot_max_hold_ms: [30000]
      stagger_ms: [2000]                    # arm stagger: the i-th account starts i x S ms late
      adaptive_max_concurrent_starts: [8]   # arm adaptive: the AIMD cap's ceiling (its hold: start_slot_max_hold_ms)
      breaker_failures: [3]                 # arm breaker: failed starts in a row that open it
      breaker_cooldown_ms: [30000]          # arm breaker: how long it stays open
    safe_host_speeds: null                  # the speeds a safe setting must hold at (default: every host_speed)

Every problem is one line naming the field (`BadInput`, exit 2).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import BadInput
from harness.input_fields import Fields, Problems, cut
from harness.policy.arms import ARMS
from harness.profile import MAX_ACCOUNTS, Profile, load_profile
from harness.target import SimTarget, StubTarget
from harness.yaml_input import read_yaml

MAX_AXIS_VALUES = 100
MAX_RUNS = 1_000_000
MAX_SEEDS = 1000
MAX_INTERVAL_MS = 86_400_000
MIN_HOST_SPEED, MAX_HOST_SPEED = 0.01, 100.0
UNLIMITED = "unlimited"
START_ARMS = tuple(name for name, arm in ARMS.items()
                   if arm.approval_fix == "none" and name != "none" and not arm.inprocess_only)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    path: Path
    base: Profile
    duration_s: float
    seeds: tuple[int, ...]
    accounts: tuple[int, ...]
    host_speeds: tuple[float, ...]
    arms: tuple[str, ...]
    params: Mapping[str, tuple[Any, ...]]  # each fix parameter's values (max_concurrent_starts None: unlimited)
    safe_host_speeds: tuple[float, ...]

    @property
    def start_jitter_ms(self) -> tuple[int, ...]:
        return self.params["start_jitter_ms"]

    @property
    def max_concurrent_starts(self) -> tuple[int | None, ...]:
        return self.params["max_concurrent_starts"]

    @property
    def start_slot_max_hold_ms(self) -> tuple[int, ...]:
        return self.params["start_slot_max_hold_ms"]

    def fingerprint(self) -> str:
        """What the results depend on: a resumed sweep must have the same."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("path", "description", "base", "params")}
        fields["params"] = dict(self.params)
        fields["base"] = str(self.base.path)
        fields["base_text"] = self.base.path.read_text() if self.base.path else ""
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(path: Path) -> SweepSpec:
    data, lines = read_yaml(path, "sweep spec")
    problems = Problems(str(path), lines)
    root = Fields(data, "", problems)
    name, description = root.name_and_description()
    base_text = root.text("base", None, max_length=1000, required=True)
    duration_s = root.number("duration_s", None, minimum=0, exclusive_minimum=True, maximum=86_400)
    seeds_raw = root.get("seeds", (int, list), 1)
    axes = root.section("axes")
    accounts = _axis(axes, "accounts", lambda v: _integer(v, 1, MAX_ACCOUNTS))
    host_speeds = _axis(axes, "host_speed", lambda v: _real(v, MIN_HOST_SPEED, MAX_HOST_SPEED))
    arms = _axis(axes, "arm", _arm)
    parsed = {name: _axis(axes, name, parse) for name, parse in PARAM_PARSERS.items()}
    axes.done()
    safe_raw = root.get("safe_host_speeds", list, None)
    root.done()
    base = _load_base(path, base_text, root)
    seeds = _seeds(seeds_raw, base, root)
    host_speeds = host_speeds or (1.0,)
    safe = tuple(float(s) for s in safe_raw) if safe_raw is not None else host_speeds
    if safe_raw is not None and (not safe or any(s not in host_speeds for s in safe)):
        root.fail("safe_host_speeds", f"expected a non-empty list of values of axes.host_speed, got {cut(safe_raw)}")
    problems.check()
    assert name is not None and base is not None
    defaults = {"start_jitter_ms": base.coordinator.start_jitter_ms,
                "max_concurrent_starts": base.coordinator.max_concurrent_starts,
                "start_slot_max_hold_ms": base.coordinator.start_slot_max_hold_ms,
                "stagger_ms": base.gates.stagger_ms,
                "adaptive_max_concurrent_starts": base.gates.adaptive_max_concurrent_starts,
                "breaker_failures": base.breaker.failures, "breaker_cooldown_ms": base.breaker.cooldown_ms}
    spec = SweepSpec(
        name=name, description=description, path=path, base=base,
        duration_s=float(duration_s if duration_s is not None else base.duration_s), seeds=seeds,
        accounts=accounts or (base.account_count,), host_speeds=host_speeds, arms=arms or (base.arms[0],),
        params={name: values or (defaults[name],) for name, values in parsed.items()}, safe_host_speeds=safe,
    )
    runs = spec_runs(spec)
    if runs > MAX_RUNS:
        raise BadInput(f"{path}: axes: the grid has {runs} runs (cells x seeds), expected at most {MAX_RUNS}")
    return spec


def params_of(arm: str) -> tuple[str, ...]:
    """The fix parameters that mean something for `arm` (an axis varies only for the arms it applies to)."""
    spec = ARMS[arm]
    names: tuple[str, ...] = {
        "coordinator": ("start_jitter_ms", "max_concurrent_starts", "start_slot_max_hold_ms"),
        "stagger": ("stagger_ms",),
        "adaptive": ("adaptive_max_concurrent_starts", "start_slot_max_hold_ms"),
    }.get(spec.start_gate, ())
    if spec.bootstrap_retry == "breaker":
        names += ("breaker_failures", "breaker_cooldown_ms")
    return names


def spec_runs(spec: SweepSpec) -> int:
    per_speed = 0
    for arm in spec.arms:
        settings = 1
        for name in params_of(arm):
            settings *= len(spec.params[name])
        per_speed += settings
    return len(spec.accounts) * len(spec.host_speeds) * per_speed * len(spec.seeds)


class _Refused(ValueError):
    pass


def _axis(axes: Fields, key: str, parse: Any) -> tuple[Any, ...]:
    raw = axes.get(key, list, None)
    if raw is None:
        return ()
    if not raw or len(raw) > MAX_AXIS_VALUES:
        axes.fail(key, f"expected a list of 1 to {MAX_AXIS_VALUES} values, got {len(raw)}")
        return ()
    values = []
    for index, value in enumerate(raw):
        try:
            parsed = parse(value)
        except _Refused as exc:
            axes.problems.add(f"{axes.where(key)}[{index}]", f"{exc}, got {cut(value)}", axes.line(key))
            continue
        if parsed in values:
            axes.problems.add(f"{axes.where(key)}[{index}]", f"{cut(value)} is listed twice", axes.line(key))
        else:
            values.append(parsed)
    return tuple(values)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Refused(f"expected an integer from {low} to {high}")
    return value


def _real(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise _Refused(f"expected a number from {low:g} to {high:g}")
    return float(value)


def _arm(value: Any) -> str:
    if not isinstance(value, str) or value not in START_ARMS:
        raise _Refused(f"expected a start arm ({', '.join(START_ARMS)})")
    return value


def _cap(value: Any) -> int | None:
    if value == UNLIMITED:
        return None
    try:
        return _integer(value, 1, MAX_ACCOUNTS)
    except _Refused:
        raise _Refused(f"expected an integer from 1 to {MAX_ACCOUNTS} or {UNLIMITED}") from None


PARAM_PARSERS: dict[str, Any] = {
    "start_jitter_ms": lambda v: _integer(v, 0, MAX_INTERVAL_MS),
    "max_concurrent_starts": _cap,
    "start_slot_max_hold_ms": lambda v: _integer(v, 1, MAX_INTERVAL_MS),
    "stagger_ms": lambda v: _integer(v, 0, MAX_INTERVAL_MS),
    "adaptive_max_concurrent_starts": lambda v: _integer(v, 1, MAX_ACCOUNTS),
    "breaker_failures": lambda v: _integer(v, 1, 1000),
    "breaker_cooldown_ms": lambda v: _integer(v, 1, MAX_INTERVAL_MS),
}
PARAMS = tuple(PARAM_PARSERS)


def _load_base(spec_path: Path, base_text: str | None, root: Fields) -> Profile | None:
    if base_text is None:
        return None
    path = (spec_path.parent / base_text).resolve()
    try:
        base = load_profile(path)
    except BadInput as exc:
        first = str(exc).splitlines()[0]
        root.fail("base", f"the base profile is not valid: {first[:300]}")
        return None
    if not isinstance(base.target, StubTarget | SimTarget):
        root.fail("base", f"expected a stub or sim profile (the sweep runs in the simulator), got target kind "
                  f"{base.target.kind}")
        return None
    if base.agents is not None or base.faults:
        root.fail("base", "expected a profile without agents or faults (the simulator models the storm only)")
        return None
    return base


def _seeds(raw: Any, base: Profile | None, root: Fields) -> tuple[int, ...]:
    first = (base.seed if base is not None and base.seed is not None else 0)
    if isinstance(raw, int):
        if not 1 <= raw <= MAX_SEEDS:
            root.fail("seeds", f"expected a count from 1 to {MAX_SEEDS} or a list of seeds, got {cut(raw)}")
            return (first,)
        return tuple(first + i for i in range(raw))
    if not raw or len(raw) > MAX_SEEDS or any(isinstance(s, bool) or not isinstance(s, int) or not
                                              0 <= s < 2**32 for s in raw):
        root.fail("seeds", f"expected 1 to {MAX_SEEDS} seeds from 0 to {2**32 - 1}, got {cut(raw)}")
        return (first,)
    if len(set(raw)) != len(raw):
        root.fail("seeds", "a seed is listed twice")
    return tuple(raw)
