"""A fake channel account: the pure bootstrap policy driven over real sockets under gevent.

Each account has one greenlet that takes what happened from its inbox (registered, a timer fired, a
slot was granted, a handler's start ended), asks its `AccountBootstrap` what to do, and does it: build
and start a `HandlerClient`, stop one, set a timer, or hand a slot to another account through the
process-wide `CoordinatorRuntime`. Nothing here decides policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent.queue import Queue

from harness.accounts.handler_client import ClientSettings, HandlerClient
from harness.clock import ScaledClock
from harness.events import AccountLedger, Attempt, Outcome
from harness.policy.bootstrap import AccountBootstrap, Command, NotifyGranted, SetTimer, StartHandler, StopHandler
from harness.policy.coordinator import StartCoordinator, Waiter

HOLD_CHECK_INTERVAL_MS = 50


class CoordinatorRuntime:
    """One per Locust process, as OpenClaw's coordinator is one per gateway process."""

    def __init__(self, coordinator: StartCoordinator, clock: ScaledClock) -> None:
        self.coordinator = coordinator
        self._clock = clock
        self._accounts: dict[str, FakeAccount] = {}
        self._watcher: gevent.Greenlet | None = None

    def add(self, account: FakeAccount) -> None:
        self._accounts[account.name] = account
        if self._watcher is None:
            self._watcher = gevent.spawn(self._enforce_holds)

    def route(self, waiters: tuple[Waiter, ...] | list[Waiter]) -> None:
        for waiter in waiters:
            self._accounts[waiter.account].post(("granted", waiter))

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
            self._watcher = None

    def _enforce_holds(self) -> None:
        while True:
            gevent.sleep(self._clock.real_s(HOLD_CHECK_INTERVAL_MS))
            self.route(self.coordinator.expire_holds(self._clock.now_ms()))


class FakeAccount:
    def __init__(self, name: str, bootstrap: AccountBootstrap, client_settings: ClientSettings, clock: ScaledClock,
                 ledger: AccountLedger, runtime: CoordinatorRuntime | None,
                 report_attempt: Callable[[Attempt], None] | None = None,
                 on_frame: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self._settings = client_settings
        self._clock = clock
        self._ledger = ledger
        self._runtime = runtime
        self._report_attempt = report_attempt
        self._on_frame = on_frame  # every frame a connected handler receives (approval events)
        self._clients: dict[int, HandlerClient] = {}
        self._inbox: Queue[tuple[Any, ...]] = Queue()
        self._loop: gevent.Greenlet | None = None
        if runtime is not None:
            runtime.add(self)

    def start(self) -> None:
        self._loop = gevent.spawn(self._run)
        self.post(("register",))

    def stop(self) -> None:
        """Unregister: stop every handler and leave any queue; the greenlet ends."""
        self._execute(self.bootstrap.unregister(self._clock.now_ms()))
        for client in list(self._clients.values()):
            client.stop()
        self._clients.clear()
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None

    def post(self, item: tuple[Any, ...]) -> None:
        self._inbox.put(item)

    def _run(self) -> None:
        for item in self._inbox:
            now = self._clock.now_ms()
            kind = item[0]
            if kind == "register":
                commands = self.bootstrap.register(now)
            elif kind == "timer":
                commands = self.bootstrap.timer_fired(now, item[1])
            elif kind == "granted":
                commands = self.bootstrap.slot_granted(now, item[1])
            elif kind == "started":
                handler_id, attempt = item[1], item[2]
                if attempt.outcome is Outcome.HELLO:
                    commands = self.bootstrap.start_succeeded(now, handler_id)
                else:
                    if not self._settings.keep_reconnecting_after_failed_start:
                        self._clients.pop(handler_id, None)
                    pairing = "PAIRING_REQUIRED" in attempt.detail
                    commands = self.bootstrap.start_failed(now, handler_id, pairing_required=pairing)
            else:
                continue
            self._execute(commands)

    def _execute(self, commands: list[Command]) -> None:
        for command in commands:
            if isinstance(command, StartHandler):
                client = HandlerClient(self._settings, command.handler_id, self._clock,
                                       on_start=self._on_start, on_attempt=self._on_attempt,
                                       on_disconnect=self._ledger.record_disconnect, on_event=self._on_frame)
                self._clients[command.handler_id] = client
                client.start()
            elif isinstance(command, StopHandler):
                stopped = self._clients.pop(command.handler_id, None)
                if stopped is not None:
                    stopped.stop()
            elif isinstance(command, SetTimer):
                delay_s = self._clock.real_s(command.at_ms - self._clock.now_ms())
                gevent.spawn_later(delay_s, self.post, ("timer", command.token))
            elif isinstance(command, NotifyGranted) and self._runtime is not None:
                self._runtime.route(command.waiters)

    def _on_start(self, handler_id: int, attempt: Attempt) -> None:
        self.post(("started", handler_id, attempt))

    def _on_attempt(self, attempt: Attempt) -> None:
        self._ledger.record_attempt(attempt)
        if self._report_attempt is not None:
            self._report_attempt(attempt)
