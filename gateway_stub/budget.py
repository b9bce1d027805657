"""The per-IP pre-auth connection budget (src/gateway/server/preauth-connection-budget.ts).

A slot is taken at HTTP upgrade and given back exactly once: on hello, on close, or when the upgrade
fails after the check. All local test clients share the key ``127.0.0.1``.
"""

from __future__ import annotations

from collections import Counter

UNKNOWN_CLIENT_IP = "__openclaw_unknown_client_ip__"
BUDGET_EXCEEDED_BODY = "Too many unauthenticated sockets"


class PreauthSlot:
    def __init__(self, budget: PreauthBudget, ip: str) -> None:
        self._budget = budget
        self.ip = ip
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._budget._give_back(self.ip)


class PreauthBudget:
    def __init__(self, max_per_ip: int) -> None:
        if max_per_ip < 1:
            raise ValueError("max_per_ip must be >= 1")
        self.max_per_ip = max_per_ip
        self._held: Counter[str] = Counter()

    def try_acquire(self, ip: str | None) -> PreauthSlot | None:
        key = ip or UNKNOWN_CLIENT_IP
        if self._held[key] >= self.max_per_ip:
            return None
        self._held[key] += 1
        return PreauthSlot(self, key)

    def held(self, ip: str | None = None) -> int:
        if ip is None:
            return sum(self._held.values())
        return self._held[ip or UNKNOWN_CLIENT_IP]

    def _give_back(self, key: str) -> None:
        self._held[key] -= 1
        if self._held[key] <= 0:
            del self._held[key]
