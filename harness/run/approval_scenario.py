"""The duplicate-prompt scenario of a live run (openclaw#69478): its agents, the operator, what they record."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import gevent

from harness.agents.agent import FakeAgent
from harness.agents.operator import Operator
from harness.backends import Backend
from harness.client.connect_shape import ClientShape
from harness.clock import ScaledClock
from harness.events import AccountLedger, ApprovalLedger
from harness.policy.arms import Arm
from harness.profile import Profile

AGENTS_WAIT_POLL_MS = 100


@dataclass
class ApprovalScenario:
    ledger: ApprovalLedger
    operator: Operator
    agents: list[FakeAgent]
    clock: ScaledClock

    @classmethod
    def build(cls, profile: Profile, arm: Arm, url: str, token: str, clock: ScaledClock, shape: ClientShape,
              handshake_timeout_ms: int) -> ApprovalScenario | None:
        if profile.agents is None or profile.operator is None:
            return None
        ledger = ApprovalLedger()
        operator = Operator(profile.operator, url, token, shape, clock, ledger, handshake_timeout_ms)
        seed = profile.seed or 0
        agents = [FakeAgent(f"agent-{i + 1}", profile.agents, arm.approval_fix, url=url, token=token, shape=shape,
                            clock=clock, ledger=ledger, rng=random.Random(seed * 1000 + i),
                            handshake_timeout_ms=handshake_timeout_ms)
                  for i in range(profile.agents.count)]
        return cls(ledger, operator, agents, clock)

    def start_when_connected(self, accounts: AccountLedger, profile: Profile) -> None:
        """Agents start once every approval chat's handler holds its connection (or the startup window ends)."""
        while (len(accounts.connected) < profile.account_count
               and self.clock.now_ms() < profile.startup_window_s * 1000.0):
            gevent.sleep(self.clock.real_s(AGENTS_WAIT_POLL_MS))
        for agent in self.agents:
            agent.start()

    def sample_pending(self, backend: Backend, now_ms: float) -> None:
        """The gateway's pending approvals now, where the gateway says (the stub's /stats)."""
        stats = backend.stats()
        if stats is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.ledger.pending_samples.append((now_ms, int(stats["approvals"]["pending"])))

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.operator.stop()
