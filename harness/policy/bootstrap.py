"""One account's native-approvals bootstrap (src/infra/approval-handler-bootstrap.ts), as a pure state machine.

The bootstrap is the outer retry layer of the storm: when a handler's start fails (its gateway client
closed or errored before hello), it builds a brand-new handler and client after a delay, so the
client's own reconnect backoff never grows. An arm chooses the delay (`shipped`: fixed 1000 ms;
`backoff`: PR #68283) and whether starts go through the PR #70649 start coordinator.

Inputs are method calls that say what happened at time `now_ms`; each returns the commands the driver
must carry out (stop or start a handler, set or cancel a timer, tell other accounts they were granted a
start slot). There is no sleeping and no socket here, so the same object runs under Locust over real
sockets and under a virtual clock in tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.policy.backoff import BootstrapRetry
from harness.policy.coordinator import Grant, StartCoordinator, Waiter


class Phase(enum.Enum):
    IDLE = "idle"  # not registered
    JITTER = "jitter"  # waiting out the first-start jitter
    QUEUED = "queued"  # waiting for a coordinator slot
    STARTING = "starting"  # a handler is starting (connect in flight)
    RUNNING = "running"  # the handler reached hello
    RETRY_WAIT = "retry_wait"  # a start failed; waiting to build a new handler


@dataclass(frozen=True)
class StopHandler:
    handler_id: int


@dataclass(frozen=True)
class StartHandler:
    handler_id: int
    attempt: int  # starts in this generation, 1 for the first


@dataclass(frozen=True)
class SetTimer:
    at_ms: float
    token: int


@dataclass(frozen=True)
class NotifyGranted:
    """Other accounts' waiters that the coordinator just handed a slot: route each to its account."""

    waiters: tuple[Waiter, ...]


Command = StopHandler | StartHandler | SetTimer | NotifyGranted


class AccountBootstrap:
    def __init__(self, account: str, retry: BootstrapRetry, coordinator: StartCoordinator | None = None) -> None:
        self.account = account
        self.retry = retry
        self.coordinator = coordinator
        self.phase = Phase.IDLE
        self.generation = 0
        self.handlers_built = 0
        self._handler_id: int | None = None
        self._attempt = 0
        self._timer_token = 0  # only the newest timer counts; older ones are stale when they fire
        self._waiter: Waiter | None = None
        self._grant: Grant | None = None

    # -- inputs -----------------------------------------------------------------------------------

    def register(self, now_ms: float) -> list[Command]:
        """A runtime context appeared (or re-registered): a new generation starts."""
        commands = self._leave_generation(now_ms)
        self.generation += 1
        self._attempt = 0
        self.retry.reset()
        return commands + self._begin_start(now_ms, first_of_generation=True)

    def unregister(self, now_ms: float) -> list[Command]:
        commands = self._leave_generation(now_ms)
        self.generation += 1
        self.phase = Phase.IDLE
        return commands

    def timer_fired(self, now_ms: float, token: int) -> list[Command]:
        if token != self._timer_token:
            return []
        if self.phase is Phase.JITTER:
            return self._queue_or_start(now_ms)
        if self.phase is Phase.RETRY_WAIT:
            return self._begin_start(now_ms, first_of_generation=False)
        return []

    def slot_granted(self, now_ms: float, waiter: Waiter) -> list[Command]:
        if waiter is not self._waiter or self.phase is not Phase.QUEUED:
            return []  # a stale waiter: the coordinator never grants cancelled ones, but be safe
        self._grant, self._waiter = waiter.grant, None
        return self._start_handler()

    def start_succeeded(self, now_ms: float, handler_id: int) -> list[Command]:
        if handler_id != self._handler_id or self.phase is not Phase.STARTING:
            return []
        self.phase = Phase.RUNNING
        self.retry.reset()
        return self._release_slot(now_ms, succeeded=True)

    def start_failed(self, now_ms: float, handler_id: int, *, pairing_required: bool = False) -> list[Command]:
        if handler_id != self._handler_id or self.phase is not Phase.STARTING:
            return []
        commands = self._release_slot(now_ms, succeeded=False)
        delay_ms = self.retry.after_failure_ms(pairing_required=pairing_required)
        self.phase = Phase.RETRY_WAIT
        return commands + [self._set_timer(now_ms + delay_ms)]

    # -- transitions ------------------------------------------------------------------------------

    def _begin_start(self, now_ms: float, *, first_of_generation: bool) -> list[Command]:
        if self.coordinator is None:
            return self._start_handler()
        jitter_ms = self.coordinator.delay_ms(self.account, first_of_generation)
        if jitter_ms > 0:
            self.phase = Phase.JITTER
            return [self._set_timer(now_ms + jitter_ms)]
        return self._queue_or_start(now_ms)

    def _queue_or_start(self, now_ms: float) -> list[Command]:
        assert self.coordinator is not None
        waiter = self.coordinator.acquire(self.account, self.generation, now_ms)
        if waiter.grant is not None:
            self._grant = waiter.grant
            return self._start_handler()
        self.phase, self._waiter = Phase.QUEUED, waiter
        return []

    def _start_handler(self) -> list[Command]:
        self.handlers_built += 1
        self._attempt += 1
        self._handler_id = self.handlers_built
        self.phase = Phase.STARTING
        return [StartHandler(self._handler_id, self._attempt)]

    def _leave_generation(self, now_ms: float) -> list[Command]:
        """Stop the previous handler first, before any jitter or slot wait (PR #70649, point 1)."""
        commands: list[Command] = []
        if self._handler_id is not None and self.phase in (Phase.STARTING, Phase.RUNNING, Phase.RETRY_WAIT):
            commands.append(StopHandler(self._handler_id))
        if self._waiter is not None and self.coordinator is not None:
            self.coordinator.cancel(self._waiter)
            self._waiter = None
        commands += self._release_slot(now_ms)
        self._timer_token += 1  # any pending jitter or retry timer is now stale
        self._handler_id = None
        return commands

    def _release_slot(self, now_ms: float, succeeded: bool | None = None) -> list[Command]:
        """Give the start slot back; `succeeded` says how the start ended (None: abandoned, neither)."""
        grant, self._grant = self._grant, None
        if grant is None or self.coordinator is None:
            return []
        granted = self.coordinator.release(grant, now_ms, succeeded)
        return [NotifyGranted(tuple(granted))] if granted else []

    def _set_timer(self, at_ms: float) -> SetTimer:
        self._timer_token += 1
        return SetTimer(at_ms, self._timer_token)
