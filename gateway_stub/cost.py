"""The handshake cost model: CPU burned on the server's single event loop.

This is the knob that makes storms happen. A cost is a distribution of milliseconds and a chunking:
burned in one blocking run (nothing else on the loop moves, timers fire late, as Node's do), or in
slices that yield to the loop between them. Costs are given in unscaled milliseconds; the server
applies its time scale when it burns them.

Text form, used on the command line and in profiles: ``DIST[@SLICE_MS]`` where DIST is one of
``fixed:MS``, ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA``, and ``@SLICE_MS`` burns in slices of
that many milliseconds (omitted or ``@0``: one blocking run). ``0`` and ``none`` mean no cost. A cost
is at most `MAX_COST_MS` and a lognormal sigma at most `MAX_LOGNORMAL_SIGMA`, and a sample never exceeds
`MAX_COST_MS` either, so no spec can block the loop for good.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway_stub.numbers import NotFinite, parse_decimal, shown

DistributionKind = Literal["fixed", "uniform", "lognormal"]
CostClock = Literal["wall", "cpu"]
# One hour of CPU for one event, unscaled: far past any storm, short of a loop blocked for good.
MAX_COST_MS = 3_600_000.0
# exp(gauss(0, 10)) already spans e^-40..e^40 within four sigmas; beyond that, math.exp overflows.
MAX_LOGNORMAL_SIGMA = 10.0
# The shortest slice worth yielding for, in real (scaled) ms: each yield costs the loop a few µs itself.
MIN_REAL_SLICE_MS = 0.1


@dataclass(frozen=True)
class Distribution:
    kind: DistributionKind
    first: float
    second: float = 0.0

    def sample_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return min(self.first, MAX_COST_MS)
        if self.kind == "uniform":
            return min(rng.uniform(self.first, self.second), MAX_COST_MS)
        # A lognormal tail can be any size: a sample is capped rather than allowed to block the loop for days.
        exponent = min(rng.gauss(0.0, self.second), math.log(MAX_COST_MS + 1.0))
        return min(self.first * math.exp(exponent), MAX_COST_MS)

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.first:g}"
        return f"{self.kind}:{self.first:g},{self.second:g}"


@dataclass(frozen=True)
class CostSpec:
    distribution: Distribution
    slice_ms: float = 0.0  # 0: one blocking run

    @property
    def is_zero(self) -> bool:
        return self.distribution.kind == "fixed" and self.distribution.first == 0

    def describe(self) -> str:
        text = self.distribution.describe()
        return f"{text}@{self.slice_ms:g}" if self.slice_ms else text


NO_COST = CostSpec(Distribution("fixed", 0.0))


def parse_cost(text: str) -> CostSpec:
    """Parse ``DIST[@SLICE_MS]``; raise ValueError with a message saying what was expected."""
    raw = text.strip()
    if raw in ("", "0", "none"):
        return NO_COST
    dist_text, _, slice_text = raw.partition("@")
    slice_ms = _non_negative(slice_text, "slice") if slice_text else 0.0
    kind, _, args_text = dist_text.partition(":")
    args = [a for a in args_text.split(",")] if args_text else []
    if kind == "fixed" and len(args) == 1:
        return CostSpec(Distribution("fixed", _non_negative(args[0], "fixed ms")), slice_ms)
    if kind == "uniform" and len(args) == 2:
        low, high = _non_negative(args[0], "uniform low"), _non_negative(args[1], "uniform high")
        if high < low:
            raise ValueError(f"uniform needs LO <= HI, got {low:g} > {high:g}")
        return CostSpec(Distribution("uniform", low, high), slice_ms)
    if kind == "lognormal" and len(args) == 2:
        median, sigma = _non_negative(args[0], "lognormal median"), _non_negative(args[1], "lognormal sigma")
        if sigma > MAX_LOGNORMAL_SIGMA:
            raise ValueError(f"lognormal sigma must be at most {MAX_LOGNORMAL_SIGMA:g}, got {sigma:g}")
        return CostSpec(Distribution("lognormal", median, sigma), slice_ms)
    raise ValueError(
        f"expected fixed:MS, uniform:LO,HI or lognormal:MEDIAN,SIGMA with optional @SLICE_MS, got {shown(text)}"
    )


def _non_negative(text: str, what: str) -> float:
    try:
        value = parse_decimal(text)
    except NotFinite:
        raise ValueError(f"{what} must be a finite number >= 0, got {shown(text)}") from None
    except ValueError:
        raise ValueError(f"{what} must be a number, got {shown(text)}") from None
    if value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {shown(text)}")
    if value > MAX_COST_MS:
        raise ValueError(f"{what} must be at most {MAX_COST_MS:.0f} (one hour), got {shown(text)}")
    return value


def _clock(kind: CostClock) -> Callable[[], float]:
    # "wall" blocks the loop for exactly the asked time whatever else runs on the host; "cpu" burns
    # that much CPU time, so a throttled or contended host stretches it, as a slow host would.
    return time.perf_counter if kind == "wall" else time.thread_time


def spin(ms: float, clock: CostClock = "wall") -> None:
    """Busy-burn ``ms`` milliseconds on the calling thread without yielding."""
    if ms <= 0:
        return
    now = _clock(clock)
    deadline = now() + ms / 1000.0
    while now() < deadline:
        pass


class CostBurner:
    """Samples and burns costs for one server: one seeded RNG, one clock, one time scale."""

    def __init__(self, *, time_scale: float, seed: int | None, clock: CostClock = "wall") -> None:
        self._time_scale = time_scale
        self._rng = random.Random(seed)
        self._clock: CostClock = clock

    def sample_scaled_ms(self, spec: CostSpec) -> float:
        if spec.is_zero:
            return 0.0
        return spec.distribution.sample_ms(self._rng) * self._time_scale

    def burn_blocking(self, spec: CostSpec) -> float:
        """Burn in one run, ignoring the slice: for places that cannot yield (HTTP upgrade hook)."""
        ms = self.sample_scaled_ms(spec)
        spin(ms, self._clock)
        return ms

    async def burn(self, spec: CostSpec) -> float:
        """Burn a sampled cost on the running loop, in slices when the spec asks for them."""
        ms = self.sample_scaled_ms(spec)
        if ms <= 0:
            return 0.0
        if spec.slice_ms <= 0:
            spin(ms, self._clock)
            return ms
        slice_ms = max(spec.slice_ms * self._time_scale, MIN_REAL_SLICE_MS)  # config.py refuses less
        # Counted, not subtracted until nothing is left: a slice below the float spacing of `ms` would
        # never bring the remainder down.
        slices = math.ceil(ms / slice_ms)
        for _ in range(slices):
            spin(ms / slices, self._clock)
            await asyncio.sleep(0)
        return ms
