"""Locust entry point: each Locust User is one fake native-approvals account.

`harness run` drives this file as a library (headless, with a `RunContext` it builds from a profile).
It also works on its own for the web UI:

    locust -f harness/locustfile.py --gateway-url ws://127.0.0.1:18789/ --gateway-token TOKEN \\
        --arm shipped --users 11 --spawn-rate 11

Every handshake attempt is a Locust request `WS connect` (response time in scenario milliseconds),
failed with the cause's name (`handshake_timeout`, `preauth_rejected`, `network_error`, …), so
Locust's own stats, CSV and charts show the storm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event
from locust import User, constant, events, task
from locust.env import Environment

from harness.accounts.account import CoordinatorRuntime, FakeAccount
from harness.accounts.handler_client import ClientSettings
from harness.agents.chat import ApprovalChat
from harness.agents.operator import Operator
from harness.client.connect_shape import ClientShape
from harness.clock import ScaledClock
from harness.events import AccountLedger, ApprovalLedger, Attempt, Outcome
from harness.policy.arms import ARMS, Arm, FixSettings, bootstrap_retry, start_gate
from harness.policy.bootstrap import AccountBootstrap
from harness.policy.coordinator import CoordinatorSettings
from harness.target import require_loopback_url
from openclaw_wire.constants import APRIL_HANDSHAKE_TIMEOUT_MS
from openclaw_wire.device_auth import DeviceIdentity

REQUEST_TYPE = "WS"
REQUEST_NAME = "connect"


class ConnectFailure(Exception):
    """A failed `WS connect` as Locust's stats show it; its text is the cause, so Locust groups failures by cause."""


@dataclass
class RunContext:
    url: str
    token: str
    arm: Arm
    channels: list[str]  # one per account, in spawn order
    clock: ScaledClock
    fixes: FixSettings = field(default_factory=FixSettings)
    shape: ClientShape = ClientShape()
    handshake_timeout_ms: int = APRIL_HANDSHAKE_TIMEOUT_MS
    keep_reconnecting_after_failed_start: bool = False
    seed: int | None = None
    ledger: AccountLedger = field(default_factory=AccountLedger)
    accounts: list[FakeAccount] = field(default_factory=list)
    all_arrived: Event = field(default_factory=Event)
    runtime: CoordinatorRuntime | None = None
    # The duplicate-prompt scenario: every account's handler posts prompts to its chat; the operator watches.
    approvals: ApprovalLedger | None = None
    operator: Operator | None = None

    def __post_init__(self) -> None:
        require_loopback_url(self.url)
        gate = start_gate(self.arm, self.fixes, self.seed)
        if gate is not None:
            self.runtime = CoordinatorRuntime(gate, self.clock)

    @property
    def account_names(self) -> list[str]:
        return [f"{channel}-{index + 1}" for index, channel in enumerate(self.channels)]

    def new_account(self, report: Any) -> FakeAccount:
        index = len(self.accounts)
        channel = self.channels[index % len(self.channels)]
        name = f"{channel}-{index + 1}"
        settings = ClientSettings(url=self.url, token=self.token, channel=channel, account=name,
                                  shape=self.shape, handshake_timeout_ms=self.handshake_timeout_ms,
                                  keep_reconnecting_after_failed_start=self.keep_reconnecting_after_failed_start)
        bootstrap = AccountBootstrap(name, bootstrap_retry(self.arm, self.fixes, self.seed, name),
                                     self.runtime.coordinator if self.runtime else None)
        on_frame = None
        if self.approvals is not None:
            chat = ApprovalChat(name, self.approvals, self.clock, self.operator.on_prompt if self.operator else None)
            if self.operator is not None:
                self.operator.watch(chat)
            on_frame = chat.on_frame
        account = FakeAccount(name, bootstrap, settings, self.clock, self.ledger, self.runtime, report, on_frame)
        self.accounts.append(account)
        if len(self.accounts) >= len(self.channels):
            self.all_arrived.set()
        return account

    def reregister_all(self) -> None:
        """What a gateway process restart does to its channel accounts: a new bootstrap generation each."""
        for account in self.accounts:
            account.post(("register",))

    def close(self) -> None:
        for account in self.accounts:
            account.stop()
        if self.runtime is not None:
            self.runtime.close()


def context_of(environment: Environment) -> RunContext:
    context: RunContext | None = getattr(environment, "harness_context", None)
    if context is None:
        raise RuntimeError("no harness run context: start through `harness run` or pass --gateway-url")
    return context


class NativeApprovalsAccount(User):
    """One channel account's native-approvals handler. Its work runs in its own greenlets."""

    wait_time = constant(1)

    def on_start(self) -> None:
        context = context_of(self.environment)
        self.account = context.new_account(self._report)
        # All accounts start on the same tick, as OpenClaw's channel accounts did (openclaw#70641).
        context.all_arrived.wait()
        self.account.start()

    @task
    def stay_connected(self) -> None:
        gevent.sleep(1)

    def on_stop(self) -> None:
        self.account.stop()

    def _report(self, attempt: Attempt) -> None:
        failed = None if attempt.outcome is Outcome.HELLO else ConnectFailure(attempt.outcome.value)
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=REQUEST_NAME, response_time=attempt.latency_ms, response_length=0,
            exception=failed, context={"account": attempt.account, "handler": attempt.handler_id},
        )


def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("gateway storm harness")
    group.add_argument("--gateway-url", default="", help="loopback ws:// URL of the gateway")
    group.add_argument("--gateway-token", default="", help="the gateway's shared token")
    group.add_argument("--arm", default="shipped", choices=sorted(ARMS), help="start policy")
    group.add_argument("--channel", default="matrix", choices=["matrix", "telegram"], help="channel of every account")
    group.add_argument("--gateway-protocol", type=int, default=3, help="3 (April) or 4 (current)")
    group.add_argument("--device-signed", action="store_true",
                       help="sign every connect with one Ed25519 device key (as one OpenClaw process does)")


def _standalone_context(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if getattr(environment, "harness_context", None) is not None or options is None or not options.gateway_url:
        return
    count = int(getattr(options, "num_users", 1) or 1)
    environment.harness_context = RunContext(  # type: ignore[attr-defined]
        url=options.gateway_url, token=options.gateway_token, arm=ARMS[options.arm],
        channels=[options.channel] * count, clock=ScaledClock(1.0),
        fixes=FixSettings(coordinator=CoordinatorSettings.from_env(os.environ)),
        shape=ClientShape(options.gateway_protocol, DeviceIdentity.generate() if options.device_signed else None),
    )


events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_standalone_context)  # type: ignore[no-untyped-call]
