"""Virtual time and the gateway's one event loop, for the simulator.

Two kinds of work move a simulation on:
- events at a time (`at`, `after`): whatever happens off the gateway's loop, in zero time: a frame
  reaching a client, a client's timer, a client's decision, a gateway timer falling due;
- callbacks on the gateway's loop (`submit`): run one at a time, in the order they became ready, each
  taking `cost_ms` of loop time. While the loop is busy, events still happen at their own times, and
  what they hand the loop waits its turn, as on a real single-threaded server: a timer that falls due
  while the loop burns a cost runs late by what is left of it.

A callback's effects happen when its cost is paid (its action runs at the end). A cost burned in slices
(`burn`) is a chain of callbacks of one slice each, so other ready work interleaves with it, as the
stub's `await asyncio.sleep(0)` between slices lets it.

Everything is in scenario milliseconds; nothing here reads a clock or sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable

Action = Callable[[], None]


class Simulation:
    def __init__(self) -> None:
        self.now_ms = 0.0
        self.busy_until_ms = 0.0  # the loop is busy until then
        self.loop_busy_ms = 0.0  # loop time spent on callbacks, all told
        self._events: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._ready: deque[tuple[float, Action, Callable[[], bool] | None]] = deque()

    # -- off the loop -----------------------------------------------------------------------------

    def at(self, time_ms: float, action: Action) -> None:
        heapq.heappush(self._events, (time_ms, next(self._order), action))

    def after(self, delay_ms: float, action: Action) -> None:
        self.at(self.now_ms + max(0.0, delay_ms), action)

    # -- on the loop ------------------------------------------------------------------------------

    def submit(self, action: Action, cost_ms: float = 0.0, turns: int = 1,
               alive: Callable[[], bool] | None = None) -> None:
        """Queue `action` on the gateway's loop; it runs once the loop has paid `cost_ms` for it.

        `turns`: how many times the work goes to the back of the ready queue before it runs. On asyncio a
        frame read wakes the reading task in the next pass (2 turns), a task it creates runs in the pass after
        (3): behind every other ready callback each time, which is what a busy loop makes expensive. `alive` is
        asked when its turn comes: if it says no, the work is dropped unpaid (a task cancelled while it waited)."""
        if not self._ready and self.busy_until_ms < self.now_ms:
            self.busy_until_ms = self.now_ms  # the loop was idle: it starts now
        if turns > 1:
            self._ready.append((0.0, lambda: self.submit(action, cost_ms, turns - 1, alive), None))
        else:
            self._ready.append((cost_ms, action, alive))

    def burn(self, cost_ms: float, slice_ms: float, done: Action, alive: Callable[[], bool] | None = None) -> None:
        """Burn `cost_ms` on the loop, in one run (`slice_ms` 0) or in slices that let other work in between,
        then run `done`. `alive` is asked before each slice and at the end: when it says no, the rest is dropped (a task
        cancelled at its next await), and `done` never runs."""
        if slice_ms <= 0 or cost_ms <= slice_ms:
            self.submit(done if alive is None else (lambda: done() if alive() else None), cost_ms, alive=alive)
            return
        slices = math.ceil(cost_ms / slice_ms)
        each_ms = cost_ms / slices
        left = [slices]

        def step() -> None:
            left[0] -= 1
            if left[0]:
                self.submit(step, each_ms, alive=alive)
            elif alive is None or alive():
                done()

        self.submit(step, each_ms, alive=alive)

    # -- running ----------------------------------------------------------------------------------

    def run(self, until_ms: float) -> None:
        """Run every event and loop callback up to `until_ms` (a callback that starts before it may end after it)."""
        events, ready = self._events, self._ready
        while True:
            next_event_ms = events[0][0] if events else math.inf
            if ready and self.busy_until_ms < next_event_ms and self.busy_until_ms < until_ms:
                cost_ms, action, alive = ready.popleft()
                if alive is not None and not alive():
                    continue
                self.busy_until_ms += cost_ms
                self.loop_busy_ms += cost_ms
                self.now_ms = self.busy_until_ms
                action()
                continue
            if next_event_ms > until_ms:
                break
            self.now_ms, _, action = heapq.heappop(events)
            action()
        self.now_ms = until_ms
