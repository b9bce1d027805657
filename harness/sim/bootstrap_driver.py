"""The account bootstraps and their coordinator, driven in virtual time: the same policy objects as live.

`BootstrapDriver` carries out the commands of each `AccountBootstrap` (start or stop a handler, set a
timer, route a granted slot to its account, enforce the coordinator's hold timeouts) on a `Simulation`
instead of with sleeps and greenlets. What a handler start does is the `Handlers`' business: the
simulator's gateway model (`harness.sim.run`), or a script of outcomes (`VirtualDriver`, used by the
policy tests: milliseconds of real time for minutes of virtual time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.policy.bootstrap import (
    AccountBootstrap,
    Command,
    NotifyGranted,
    SetTimer,
    StartHandler,
    StopHandler,
)
from harness.policy.coordinator import StartCoordinator
from harness.sim.loop import Simulation

# (succeeded) -> None: how a handler reports the end of its start (its first attempt).
StartReport = Callable[[bool], None]
# (account, handler id, attempt, now) -> (ms until the start ends, succeeded)
StartOutcome = Callable[[str, int, int, float], tuple[float, bool]]


class Handlers(Protocol):
    def start(self, account: str, handler_id: int, attempt: int, report: StartReport) -> None: ...

    def stop(self, account: str, handler_id: int) -> None: ...


@dataclass
class Trace:
    """What happened, in order: (time ms, account, what, detail)."""

    entries: list[tuple[float, str, str, Any]] = field(default_factory=list)

    def of(self, what: str, account: str | None = None) -> list[tuple[float, str, str, Any]]:
        return [e for e in self.entries if e[2] == what and (account is None or e[1] == account)]


class BootstrapDriver:
    def __init__(self, sim: Simulation, handlers: Handlers, coordinator: StartCoordinator | None = None) -> None:
        self.sim = sim
        self.handlers = handlers
        self.coordinator = coordinator
        self.accounts: dict[str, AccountBootstrap] = {}
        self.trace = Trace()
        self._hold_wake_ms: float | None = None

    @property
    def now_ms(self) -> float:
        return self.sim.now_ms

    def add(self, bootstrap: AccountBootstrap) -> None:
        self.accounts[bootstrap.account] = bootstrap

    def register(self, account: str, time_ms: float = 0.0) -> None:
        self.sim.at(time_ms, lambda: self._apply(account, self.accounts[account].register(self.sim.now_ms)))

    def unregister(self, account: str, time_ms: float) -> None:
        self.sim.at(time_ms, lambda: self._apply(account, self.accounts[account].unregister(self.sim.now_ms)))

    def run(self, until_ms: float) -> Trace:
        self.sim.run(until_ms)
        return self.trace

    def _apply(self, account: str, commands: list[Command]) -> None:
        bootstrap = self.accounts[account]
        for command in commands:
            if isinstance(command, StartHandler):
                self.trace.entries.append((self.sim.now_ms, account, "start", command.attempt))
                self.handlers.start(account, command.handler_id, command.attempt,
                                    self._report(bootstrap, command))
            elif isinstance(command, StopHandler):
                self.trace.entries.append((self.sim.now_ms, account, "stop", command.handler_id))
                self.handlers.stop(account, command.handler_id)
            elif isinstance(command, SetTimer):
                self.sim.at(command.at_ms, self._timer(bootstrap, command.token))
            elif isinstance(command, NotifyGranted):
                for waiter in command.waiters:
                    owner = self.accounts[waiter.account]
                    self._apply(owner.account, owner.slot_granted(self.sim.now_ms, waiter))
        self._watch_holds()

    def _timer(self, bootstrap: AccountBootstrap, token: int) -> Callable[[], None]:
        return lambda: self._apply(bootstrap.account, bootstrap.timer_fired(self.sim.now_ms, token))

    def _report(self, bootstrap: AccountBootstrap, command: StartHandler) -> StartReport:
        def report(succeeded: bool) -> None:
            now = self.sim.now_ms
            self.trace.entries.append((now, bootstrap.account, "hello" if succeeded else "failed", command.attempt))
            if succeeded:
                self._apply(bootstrap.account, bootstrap.start_succeeded(now, command.handler_id))
            else:
                self._apply(bootstrap.account, bootstrap.start_failed(now, command.handler_id))

        return report

    def _watch_holds(self) -> None:
        """Wake at the earliest hold deadline, force-release what is overdue, and route the slots it frees."""
        if self.coordinator is None:
            return
        deadline = self.coordinator.next_hold_deadline_ms()
        if deadline is None or deadline == self._hold_wake_ms:
            return
        self._hold_wake_ms = deadline
        self.sim.at(deadline, self._expire_holds)

    def _expire_holds(self) -> None:
        assert self.coordinator is not None
        self._hold_wake_ms = None
        for waiter in self.coordinator.expire_holds(self.sim.now_ms):
            owner = self.accounts[waiter.account]
            self._apply(owner.account, owner.slot_granted(self.sim.now_ms, waiter))
        self._watch_holds()


class ScriptedHandlers:
    """Handler starts that take and end as a script says: the policy tests' gateway."""

    def __init__(self, sim: Simulation, outcome: StartOutcome) -> None:
        self._sim = sim
        self._outcome = outcome
        self._live: set[tuple[str, int]] = set()

    def start(self, account: str, handler_id: int, attempt: int, report: StartReport) -> None:
        handler = (account, handler_id)
        self._live.add(handler)
        duration_ms, succeeded = self._outcome(account, handler_id, attempt, self._sim.now_ms)

        def finish() -> None:
            if handler not in self._live:
                return  # stopped meanwhile: its result reaches nobody
            if not succeeded:
                self._live.discard(handler)
            report(succeeded)

        self._sim.after(duration_ms, finish)

    def stop(self, account: str, handler_id: int) -> None:
        self._live.discard((account, handler_id))


class VirtualDriver(BootstrapDriver):
    """A `BootstrapDriver` whose handler starts follow `outcome`."""

    def __init__(self, outcome: StartOutcome, coordinator: StartCoordinator | None = None) -> None:
        sim = Simulation()
        super().__init__(sim, ScriptedHandlers(sim, outcome), coordinator)
