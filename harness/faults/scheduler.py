"""A fault timeline applied to one proxy, step by step, and a record of what really happened when.

Pure of time: `steps()` says what to do at which scenario second, in order; the driver sleeps until each
and calls `carry_out(step, now_s)`. Each window is applied at `at_s` and removed at `until_s` (or at the end
of the run); a failed operation is recorded with the server's message and the run goes on, so a summary
always says which faults really happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from harness.faults.client import BoundProxy, FaultError
from harness.faults.timeline import FaultWindow
from harness.summary import FaultWindowRecord


@dataclass(frozen=True)
class FaultStep:
    at_s: float
    window: FaultWindow
    apply: bool  # False: remove


@dataclass(frozen=True)
class _Done:
    index: int
    apply: bool
    at_s: float
    error: str | None


@dataclass
class FaultScheduler:
    proxy: BoundProxy
    windows: tuple[FaultWindow, ...]
    time_scale: float
    on_restart: Callable[[], None] | None = None  # the accounts re-register when a restarted gateway is back
    _done: list[_Done] = field(default_factory=list)

    def steps(self) -> list[FaultStep]:
        """Every apply and remove, in time order (an apply before a remove at the same second)."""
        steps = [FaultStep(w.start_s, w, True) for w in self.windows]
        steps += [FaultStep(w.end_s, w, False) for w in self.windows if w.end_s is not None]
        return sorted(steps, key=lambda step: (step.at_s, not step.apply))

    def carry_out(self, step: FaultStep, now_s: float) -> None:
        window, error = step.window, None
        try:
            if window.toxic is None:
                self._outage(window, step.apply)
            elif step.apply:
                toxic = window.toxic
                self.proxy.add_toxic(name=window.toxic_name, type=toxic.type, stream=toxic.stream,
                                     toxicity=toxic.toxicity, attributes=toxic.scaled_attributes(self.time_scale))
            else:
                self.proxy.destroy_toxic(window.toxic_name)
        except FaultError as exc:
            error = str(exc)
        self._done.append(_Done(window.index, step.apply, round(now_s, 3), error))

    def _outage(self, window: FaultWindow, apply: bool) -> None:
        if apply:
            self.proxy.disable()
            return
        self.proxy.enable()
        if window.restart and self.on_restart is not None:
            self.on_restart()

    def describe(self) -> list[FaultWindowRecord]:
        """Each window with when it was really applied and removed (scenario seconds) and any error."""
        out = []
        for window in self.windows:
            done = [d for d in self._done if d.index == window.index]
            toxic = window.toxic
            out.append(FaultWindowRecord(
                index=window.index, kind=window.kind, from_s=window.start_s, to_s=window.end_s,
                type=toxic.type if toxic else None, stream=toxic.stream if toxic else None,
                toxicity=toxic.toxicity if toxic else None, attributes=dict(toxic.attributes) if toxic else None,
                applied_at_s=next((d.at_s for d in done if d.apply and d.error is None), None),
                removed_at_s=next((d.at_s for d in done if not d.apply and d.error is None), None),
                errors=[d.error for d in done if d.error is not None]))
        return out
