"""A deterministic virtual-time driver for account bootstraps and their coordinator.

It carries out the commands of `AccountBootstrap` with a priority queue instead of sleeps: a handler
start takes whatever the `outcome` function says (a duration and success or failure), timers fire at
their times, slots handed to waiters are routed to their accounts, and hold timeouts are enforced.
Used by the unit tests (milliseconds of real time for minutes of virtual time), and the seed of a
future simulator.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.policy.bootstrap import (
    AccountBootstrap,
    Command,
    NotifyGranted,
    SetTimer,
    StartHandler,
    StopHandler,
)
from harness.policy.coordinator import StartCoordinator

# (account, handler id, attempt, now) -> (ms until the start ends, succeeded)
StartOutcome = Callable[[str, int, int, float], tuple[float, bool]]


@dataclass
class Trace:
    """What happened, in order: (time ms, account, what, detail)."""

    entries: list[tuple[float, str, str, Any]] = field(default_factory=list)

    def of(self, what: str, account: str | None = None) -> list[tuple[float, str, str, Any]]:
        return [e for e in self.entries if e[2] == what and (account is None or e[1] == account)]


class VirtualDriver:
    def __init__(self, outcome: StartOutcome, coordinator: StartCoordinator | None = None) -> None:
        self.outcome = outcome
        self.coordinator = coordinator
        self.now_ms = 0.0
        self.accounts: dict[str, AccountBootstrap] = {}
        self.trace = Trace()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._live_handlers: set[tuple[str, int]] = set()
        self._hold_wake_ms: float | None = None

    def add(self, bootstrap: AccountBootstrap) -> None:
        self.accounts[bootstrap.account] = bootstrap

    def at(self, time_ms: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (time_ms, next(self._order), action))

    def register(self, account: str, time_ms: float = 0.0) -> None:
        self.at(time_ms, lambda: self._apply(account, self.accounts[account].register(self.now_ms)))

    def unregister(self, account: str, time_ms: float) -> None:
        self.at(time_ms, lambda: self._apply(account, self.accounts[account].unregister(self.now_ms)))

    def run(self, until_ms: float) -> Trace:
        while self._queue and self._queue[0][0] <= until_ms:
            time_ms, _, action = heapq.heappop(self._queue)
            self.now_ms = time_ms
            action()
            self._enforce_holds()
        self.now_ms = until_ms
        return self.trace

    def _apply(self, account: str, commands: list[Command]) -> None:
        bootstrap = self.accounts[account]
        for command in commands:
            if isinstance(command, StartHandler):
                self._start(account, bootstrap, command)
            elif isinstance(command, StopHandler):
                self._live_handlers.discard((account, command.handler_id))
                self.trace.entries.append((self.now_ms, account, "stop", command.handler_id))
            elif isinstance(command, SetTimer):
                self.at(command.at_ms, self._timer(bootstrap, command.token))
            elif isinstance(command, NotifyGranted):
                for waiter in command.waiters:
                    owner = self.accounts[waiter.account]
                    self._apply(owner.account, owner.slot_granted(self.now_ms, waiter))

    def _timer(self, bootstrap: AccountBootstrap, token: int) -> Callable[[], None]:
        return lambda: self._apply(bootstrap.account, bootstrap.timer_fired(self.now_ms, token))

    def _start(self, account: str, bootstrap: AccountBootstrap, command: StartHandler) -> None:
        handler = (account, command.handler_id)
        self._live_handlers.add(handler)
        self.trace.entries.append((self.now_ms, account, "start", command.attempt))
        duration_ms, succeeded = self.outcome(account, command.handler_id, command.attempt, self.now_ms)

        def finish() -> None:
            if handler not in self._live_handlers:
                return  # stopped meanwhile: its result reaches nobody
            self.trace.entries.append((self.now_ms, account, "hello" if succeeded else "failed", command.attempt))
            if succeeded:
                self._apply(account, bootstrap.start_succeeded(self.now_ms, command.handler_id))
            else:
                self._live_handlers.discard(handler)
                self._apply(account, bootstrap.start_failed(self.now_ms, command.handler_id))

        self.at(self.now_ms + duration_ms, finish)

    def _enforce_holds(self) -> None:
        if self.coordinator is None:
            return
        deadline = self.coordinator.next_hold_deadline_ms()
        if deadline is None:
            return
        if deadline <= self.now_ms:
            for waiter in self.coordinator.expire_holds(self.now_ms):
                owner = self.accounts[waiter.account]
                self._apply(owner.account, owner.slot_granted(self.now_ms, waiter))
        elif self._hold_wake_ms != deadline:
            self._hold_wake_ms = deadline
            self.at(deadline, lambda: None)  # wake up then; the check runs after every step
