"""The operator: answers each prompt after a delay, or never (away), through a new short-lived socket.

A click opens a new client (display name `Telegram approval (<senderId>)`, reference §8.4), sends
`exec.approval.resolve {id, decision}` and closes. A prompt already finalized (resolved or expired)
when the operator gets to it is not clicked: it is gone from the chat.
"""

from __future__ import annotations

import gevent
from websockets.exceptions import ConnectionClosed

from harness.agents.chat import ApprovalChat
from harness.agents.settings import OperatorSettings
from harness.client.connect_shape import ClientShape
from harness.client.session import HandshakeFailed, RequestTimedOut, call, short_session
from harness.clock import ScaledClock
from harness.events import ApprovalLedger, Click

OPERATOR_SENDER_ID = "operator-1"


class Operator:
    def __init__(self, settings: OperatorSettings, url: str, token: str, shape: ClientShape, clock: ScaledClock,
                 ledger: ApprovalLedger, handshake_timeout_ms: float) -> None:
        self.settings = settings
        self._url, self._token, self._shape = url, token, shape
        self._clock = clock
        self._ledger = ledger
        self._handshake_timeout_ms = handshake_timeout_ms
        self._chats: dict[str, ApprovalChat] = {}
        self._greenlets: list[gevent.Greenlet] = []

    def watch(self, chat: ApprovalChat) -> None:
        self._chats[chat.name] = chat

    def on_prompt(self, chat: str, approval_id: str) -> None:
        if self.settings.answer_after_ms is None:
            return
        delay_s = self._clock.real_s(self.settings.answer_after_ms)
        self._greenlets.append(gevent.spawn_later(delay_s, self._click, chat, approval_id))

    def stop(self) -> None:
        gevent.killall(self._greenlets, block=False)

    def _click(self, chat: str, approval_id: str) -> None:
        if not self._chats[chat].is_live(approval_id):
            return
        params = self._shape.approver_params(f"Telegram approval ({OPERATOR_SENDER_ID})", self._token)
        clicked_ms = self._clock.now_ms()
        click = {"id": approval_id, "decision": self.settings.decision}
        try:
            with short_session(self._url, params, self._clock, handshake_timeout_ms=self._handshake_timeout_ms,
                               device=self._shape.device) as ws:
                reply = call(ws, "exec.approval.resolve", click, self._clock)
        except (HandshakeFailed, RequestTimedOut, ConnectionClosed) as exc:
            self._ledger.clicks.append(Click(approval_id, self.settings.decision, clicked_ms, False,
                                             str(exc) or type(exc).__name__))
            return
        error = (reply.get("error") or {}).get("message", "")
        self._ledger.clicks.append(Click(approval_id, self.settings.decision, clicked_ms, bool(reply.get("ok")), error))
