"""An approval chat: what one handler account shows its operator.

Like the April handler (reference §8.4), it posts a prompt for each `exec.approval.requested` event and
for each pending record the `exec.approval.list` replay returns, deduplicated by approval id only, and
finalizes a prompt on `exec.approval.resolved` or at its `expiresAtMs`. Anything content-based would be
a fix arm, not what ships.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.clock import ScaledClock
from harness.events import ApprovalLedger


class ApprovalChat:
    def __init__(self, name: str, ledger: ApprovalLedger, clock: ScaledClock,
                 on_prompt: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self._ledger = ledger
        self._clock = clock
        self._on_prompt = on_prompt  # (chat, approval id), for the operator
        self._finalized: set[str] = set()
        self._expires_at_epoch_ms: dict[str, int] = {}

    def on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "event" and frame.get("event") == "exec.approval.requested":
            self._post(frame.get("payload") or {})
        elif frame.get("type") == "event" and frame.get("event") == "exec.approval.resolved":
            self._finalized.add(str((frame.get("payload") or {}).get("id")))
        elif frame.get("type") == "res" and frame.get("ok") and isinstance(frame.get("payload"), list):
            for record in frame["payload"]:  # the exec.approval.list replay after hello
                if isinstance(record, dict):
                    self._post(record)

    def is_live(self, approval_id: str) -> bool:
        """Still clickable: not resolved, not past its expiry."""
        expires = self._expires_at_epoch_ms.get(approval_id)
        expired = expires is not None and time.time() * 1000 >= expires
        return approval_id not in self._finalized and not expired

    def _post(self, record: dict[str, Any]) -> None:
        approval_id = str(record.get("id"))
        command = str((record.get("request") or {}).get("command", ""))
        if isinstance(record.get("expiresAtMs"), int):
            self._expires_at_epoch_ms[approval_id] = record["expiresAtMs"]
        if self._ledger.post_prompt(self.name, approval_id, command, self._clock.now_ms()) and self._on_prompt:
            self._on_prompt(self.name, approval_id)
