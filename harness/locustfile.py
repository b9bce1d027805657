"""Locust entry point: each Locust User is one fake native-approvals account.

`harness run` drives this file as a library (headless, with a `RunContext` it builds from a profile).
It also works on its own for the web UI:

    locust -f harness/locustfile.py --gateway-url ws://127.0.0.1:18789/ --gateway-token TOKEN \\
        --arm shipped --users 11 --spawn-rate 11

Every handshake attempt is a Locust request `WS connect` (response time in scenario milliseconds),
failed with the cause's name (`handshake_timeout`, `preauth_rejected`, `network_error`, …), so
Locust's own stats, CSV and charts show the storm. On its own, each start (the command line's, or the
web UI's Start button) builds a fresh `RunContext` from the options as they are then, sized to the user
count of that start; the web UI also gets the Storm tab and custom parameters of `harness.locust_ui`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

import gevent
from gevent.event import Event
from locust import User, constant, events, task
from locust.env import Environment

from harness import locust_ui
from harness.accounts.account import CoordinatorRuntime, FakeAccount
from harness.accounts.handler_client import ClientSettings
from harness.agents.chat import ApprovalChat
from harness.agents.operator import Operator
from harness.client.connect_shape import ClientShape
from harness.clock import ScaledClock
from harness.errors import BadInput
from harness.events import AccountLedger, ApprovalLedger, Attempt, Outcome
from harness.policy.arms import ARMS, CLIENT_ARMS, Arm, FixSettings, bootstrap_retry, start_gate
from harness.policy.bootstrap import AccountBootstrap
from harness.target import require_loopback_url
from openclaw_wire.constants import APRIL_HANDSHAKE_TIMEOUT_MS
from openclaw_wire.device_auth import DeviceIdentity

REQUEST_TYPE = "WS"
REQUEST_NAME = "connect"

logger = logging.getLogger(__name__)


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
    # A Locust worker's share of a distributed run (harness.run.workers): its accounts' first index in the run;
    # the master's release, and the time.time() at which every worker's accounts start together.
    first_index: int = 0
    released: Event | None = None
    release_at_wall: float = 0.0

    def __post_init__(self) -> None:
        require_loopback_url(self.url)
        gate = start_gate(self.arm, self.fixes, self.seed)
        if gate is not None:
            self.runtime = CoordinatorRuntime(gate, self.clock)

    @property
    def account_names(self) -> list[str]:
        return [f"{channel}-{self.first_index + index + 1}" for index, channel in enumerate(self.channels)]

    def new_account(self, report: Any) -> FakeAccount:
        index = len(self.accounts)
        channel = self.channels[index % len(self.channels)]
        name = f"{channel}-{self.first_index + index + 1}"
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
        plan_received: Event | None = getattr(self.environment, "harness_context_ready", None)
        if plan_received is not None:  # a worker: its accounts come with the master's plan
            plan_received.wait()
        context = context_of(self.environment)
        self.account = context.new_account(self._report)
        # All accounts start on the same tick, as OpenClaw's channel accounts did (openclaw#70641); a worker's
        # wait for the one release time of every worker's accounts.
        context.all_arrived.wait()
        if context.released is not None:
            context.released.wait()
            gevent.sleep(max(0.0, context.release_at_wall - time.time()))
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
    # parser.add_argument, not an argument group's: Locust lists only the parser's own arguments as the web UI's
    # custom parameters (LocustArgumentParser.add_argument marks them), and a group's would be left out.
    locust_ui.bind_loopback_by_default(parser)
    parser.add_argument("--gateway-url", default="", type=locust_ui.loopback_url_option,
                        help="loopback ws:// URL of the gateway")
    parser.add_argument("--gateway-token", default="", is_secret=True, help="the gateway's shared token")
    parser.add_argument("--arm", default="shipped", choices=CLIENT_ARMS, help="start policy")
    parser.add_argument("--channel", default="matrix", choices=locust_ui.CHANNELS, help="channel of every account")
    parser.add_argument("--gateway-protocol", type=int, default=3, choices=locust_ui.GATEWAY_PROTOCOLS,
                        help="3 (April) or 4 (current)")
    parser.add_argument("--device-signed", action="store_true",
                        help="sign every connect with one Ed25519 device key (as one OpenClaw process does)")
    locust_ui.add_coordinator_options(parser, os.environ)


@dataclass
class Standalone:
    """Locust itself runs this file (its command line or web UI), rather than `harness run` with its own context."""

    configured_users: int | None  # --users as given at launch; the web UI overwrites parsed_options.num_users
    started_users: int = 0
    note: str = ""
    final: locust_ui.LiveFigures | None = None  # taken as a run stops, before its accounts disconnect


def _standalone(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if getattr(environment, "harness_context", None) is not None or options is None:
        return
    standalone = Standalone(configured_users=getattr(options, "num_users", None))
    environment.harness_standalone = standalone  # type: ignore[attr-defined]
    if environment.web_ui is not None:
        locust_ui.install(environment, lambda: _figures(environment, standalone))


def _build_context(environment: Environment, **_: Any) -> None:
    """At every start, a fresh context from the options as they are now (the web UI changes them per start) whose
    start barrier waits for this start's user count, not the count configured at launch."""
    standalone: Standalone | None = getattr(environment, "harness_standalone", None)
    options = environment.parsed_options
    if standalone is None or options is None or environment.runner is None:
        return
    previous: RunContext | None = getattr(environment, "harness_context", None)
    if previous is not None:
        previous.close()
    environment.harness_context = None  # type: ignore[attr-defined]
    standalone.final = None
    if not options.gateway_url:
        standalone.note = "no gateway: pass --gateway-url (or fill it in under Custom parameters)"
        logger.error("harness: %s", standalone.note)
        return
    # Set by the runner just before it fires test_start: the users this start spawns.
    count = max(0, int(environment.runner.target_user_count or 0))
    arm = ARMS[options.arm]
    try:
        context = RunContext(
            url=options.gateway_url, token=options.gateway_token, arm=arm,
            # At least one channel, so users added later by editing a running test still get one.
            channels=[options.channel] * max(count, 1), clock=ScaledClock(1.0),
            fixes=FixSettings(coordinator=locust_ui.coordinator_settings(options)),
            shape=ClientShape(options.gateway_protocol, DeviceIdentity.generate() if options.device_signed else None),
        )
    except BadInput as exc:
        standalone.note = f"not started: {exc}"
        logger.error("harness: %s", standalone.note)
        return
    environment.harness_context = context  # type: ignore[attr-defined]
    standalone.started_users = count
    standalone.note = locust_ui.start_note(count, standalone.configured_users, arm)
    configured = standalone.configured_users
    log = logger.warning if configured is not None and configured != count else logger.info
    log("harness: %s", standalone.note)


def _keep_final_figures(environment: Environment, **_: Any) -> None:
    # The tab keeps showing how the run stood when it was stopped, not the accounts disconnecting afterwards.
    standalone: Standalone | None = getattr(environment, "harness_standalone", None)
    if standalone is not None and getattr(environment, "harness_context", None) is not None:
        standalone.final = replace(_figures(environment, standalone), note=f"stopped; {standalone.note}")


def _figures(environment: Environment, standalone: Standalone) -> locust_ui.LiveFigures:
    if standalone.final is not None:
        return standalone.final
    context: RunContext | None = getattr(environment, "harness_context", None)
    if context is None:
        return locust_ui.no_run_yet(standalone.configured_users, standalone.note)
    return locust_ui.live_figures(
        context.ledger, now_ms=context.clock.now_ms(), started=standalone.started_users,
        running=environment.runner.user_count if environment.runner else 0, configured=standalone.configured_users,
        arm=context.arm, gate=context.runtime.coordinator if context.runtime else None, note=standalone.note,
    )


events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_standalone)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_build_context)  # type: ignore[no-untyped-call]
events.test_stopping.add_listener(_keep_final_figures)  # type: ignore[no-untyped-call]
