"""Applies a fault timeline to one proxy at its profile times, and records what happened when.

Runs as a greenlet in the harness. Each window is applied at `at_s` and removed at `until_s` (or at the
end of the run); a failed operation is recorded with the server's message and the run goes on, so a
summary always says which faults really happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent

from harness.clock import ScaledClock
from harness.faults.client import BoundProxy, FaultError
from harness.faults.timeline import FaultWindow


@dataclass
class FaultScheduler:
    proxy: BoundProxy
    windows: tuple[FaultWindow, ...]
    clock: ScaledClock
    on_restart: Callable[[], None] | None = None  # the accounts re-register when a restarted gateway is back
    log: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> None:
        steps = sorted([(w.start_s, 0, w) for w in self.windows]
                       + [(w.end_s, 1, w) for w in self.windows if w.end_s is not None],
                       key=lambda step: (step[0], step[1]))
        for at_s, removing, window in steps:
            gevent.sleep(self.clock.real_s(at_s * 1000.0 - self.clock.now_ms()))
            self._step(window, apply=not removing)

    def _step(self, window: FaultWindow, *, apply: bool) -> None:
        entry: dict[str, Any] = {"index": window.index, "action": "apply" if apply else "remove",
                                 "at_s": round(self.clock.now_ms() / 1000.0, 3), "ok": True}
        try:
            if window.toxic is None:
                if apply:
                    self.proxy.disable()
                else:
                    self.proxy.enable()
                    if window.restart and self.on_restart is not None:
                        self.on_restart()
            elif apply:
                toxic = window.toxic
                self.proxy.add_toxic(name=window.toxic_name, type=toxic.type, stream=toxic.stream,
                                     toxicity=toxic.toxicity,
                                     attributes=toxic.scaled_attributes(self.clock.time_scale))
            else:
                self.proxy.destroy_toxic(window.toxic_name)
        except FaultError as exc:
            entry.update(ok=False, error=str(exc))
        self.log.append(entry)

    def describe(self) -> list[dict[str, Any]]:
        """Each window with when it was really applied and removed (profile seconds) and any error."""
        out = []
        for window in self.windows:
            described = window.describe()
            steps = [e for e in self.log if e["index"] == window.index]
            described["applied_at_s"] = next((e["at_s"] for e in steps if e["action"] == "apply" and e["ok"]), None)
            described["removed_at_s"] = next((e["at_s"] for e in steps if e["action"] == "remove" and e["ok"]), None)
            errors = [e["error"] for e in steps if not e["ok"]]
            if errors:
                described["errors"] = errors
            out.append(described)
        return out
