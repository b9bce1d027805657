"""The clients, modelled: the native-approvals handler client and the harness's health probe.

`SimHandlerClient` follows `harness.accounts.handler_client.HandlerClient` over `harness.client.session`:
an upgrade that must finish within the socket's own handshake timeout, the challenge within 15 s, the
connect's answer within 30 s; a 503 is `preauth_rejected`, a close 1000 with no reason before hello is
`handshake_timeout`. Its first attempt is its handler's start; after a failed start it stops unless
`keep_reconnecting_after_failed_start`; otherwise it reconnects on its own backoff (1 s doubling to 30 s,
reset on hello), the same `DoublingBackoff` the live client uses. The tick watchdog is not modelled (the
gateway's loop is never blocked for the 60 s it would take).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.events import AccountLedger, Attempt, Disconnect, HealthSample, Outcome
from harness.policy.backoff import client_reconnect_backoff
from harness.sim.bootstrap_driver import StartReport
from harness.sim.conn import Conn
from harness.sim.gateway import SimGateway
from harness.sim.loop import Simulation
from openclaw_wire.constants import CONNECT_CHALLENGE_TIMEOUT_MS, DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS

UPGRADING, AWAITING_CHALLENGE, AWAITING_HELLO, CONNECTED, DONE = range(5)


@dataclass(frozen=True)
class ClientModel:
    handshake_timeout_ms: float  # the socket's own upgrade timeout, as `ws` handshakeTimeout
    keep_reconnecting_after_failed_start: bool = False


class SimHandlerClient:
    def __init__(self, sim: Simulation, gateway: SimGateway, model: ClientModel, account: str, handler_id: int,
                 ledger: AccountLedger, report: StartReport) -> None:
        self._sim = sim
        self._gateway = gateway
        self._model = model
        self.account = account
        self.handler_id = handler_id
        self._ledger = ledger
        self._report: StartReport | None = report  # until the first attempt ends
        self._backoff = client_reconnect_backoff()
        self._conn: Conn | None = None
        self._state = DONE
        self._started_ms = 0.0
        self._stopped = False

    def start(self) -> None:
        self._attempt()

    def stop(self) -> None:
        """client.stop(): close the socket and end the reconnect loop."""
        self._stopped = True
        if self._conn is not None and not self._conn.client_gone:
            self._gateway.client_closed(self._conn)
        self._state = DONE

    # -- one attempt ------------------------------------------------------------------------------

    def _attempt(self) -> None:
        if self._stopped:
            return
        self._started_ms = self._sim.now_ms
        self._state = UPGRADING
        conn = self._conn = self._gateway.connect(self)
        self._deadline(conn, UPGRADING, self._model.handshake_timeout_ms, Outcome.NETWORK_ERROR, "TimeoutError")

    def _deadline(self, conn: Conn, state: int, after_ms: float, outcome: Outcome, detail: str,
                  close_code: int | None = None) -> None:
        def due() -> None:
            if self._conn is conn and self._state == state:
                self._fail(outcome, close_code, detail)

        self._sim.after(after_ms, due)

    def _current(self, conn: Conn, state: int) -> bool:
        return self._conn is conn and self._state == state and not self._stopped

    # -- what the gateway says --------------------------------------------------------------------

    def upgraded(self, conn: Conn) -> None:
        if not self._current(conn, UPGRADING):
            return
        self._state = AWAITING_CHALLENGE
        self._deadline(conn, AWAITING_CHALLENGE, CONNECT_CHALLENGE_TIMEOUT_MS, Outcome.CHALLENGE_TIMEOUT,
                       "connect challenge timeout", 1008)

    def refused(self, conn: Conn, status: int | None) -> None:
        """An HTTP status instead of the upgrade (503: the pre-auth budget), or None: the connection refused."""
        if self._current(conn, UPGRADING):
            conn.client_gone = True  # nothing was opened
            if status is None:
                self._end(Outcome.NETWORK_ERROR, None, "ConnectionRefusedError")
            else:
                self._end(Outcome.PREAUTH_REJECTED if status == 503 else Outcome.NETWORK_ERROR, None, f"HTTP {status}")

    def challenged(self, conn: Conn) -> None:
        if not self._current(conn, AWAITING_CHALLENGE):
            return
        self._state = AWAITING_HELLO
        self._gateway.send_connect(conn)
        self._deadline(conn, AWAITING_HELLO, DEFAULT_GATEWAY_REQUEST_TIMEOUT_MS, Outcome.REQUEST_TIMEOUT,
                       "gateway request timeout for connect")

    def hello(self, conn: Conn) -> None:
        if not self._current(conn, AWAITING_HELLO):
            return
        self._state = CONNECTED
        self._backoff.reset()
        self._end(Outcome.HELLO, None, "")

    def closed_by_gateway(self, conn: Conn, code: int, reason: str) -> None:
        if self._conn is not conn or self._stopped or self._state == DONE:
            return
        self._gateway.client_closed(conn)  # the close is answered
        if self._state == UPGRADING:  # cut before the upgrade's answer: the socket never opened
            self._end(Outcome.NETWORK_ERROR, None, "ConnectionResetError")
            return
        if self._state == CONNECTED:
            self._state = DONE
            self._ledger.record_disconnect(Disconnect(self.account, self.handler_id, self._sim.now_ms, code, reason))
            self._reconnect_later()
            return
        outcome = Outcome.HANDSHAKE_TIMEOUT if code == 1000 and not reason else Outcome.CLOSED
        self._end(outcome, code, reason)

    # -- endings ----------------------------------------------------------------------------------

    def _fail(self, outcome: Outcome, close_code: int | None, detail: str) -> None:
        if self._conn is not None and not self._conn.client_gone:
            self._gateway.client_closed(self._conn)
        self._end(outcome, close_code, detail)

    def _end(self, outcome: Outcome, close_code: int | None, detail: str) -> None:
        attempt = Attempt(self.account, self.handler_id, self._started_ms, self._sim.now_ms, outcome, close_code,
                          detail)
        self._ledger.record_attempt(attempt)
        hello = outcome is Outcome.HELLO
        if not hello:
            self._state = DONE
        report, self._report = self._report, None
        if report is not None:
            report(hello)
            if not hello and not self._model.keep_reconnecting_after_failed_start:
                self._stopped = True
                return
        if not hello:
            self._reconnect_later()

    def _reconnect_later(self) -> None:
        if not self._stopped:
            self._sim.after(self._backoff.next_delay_ms(), self._attempt)


class SimHandlers:
    """The handlers of every account, started and stopped as their bootstraps say."""

    def __init__(self, sim: Simulation, gateway: SimGateway, model: ClientModel, ledger: AccountLedger) -> None:
        self._sim = sim
        self._gateway = gateway
        self._model = model
        self._ledger = ledger
        self._clients: dict[tuple[str, int], SimHandlerClient] = {}

    def start(self, account: str, handler_id: int, attempt: int, report: StartReport) -> None:
        client = SimHandlerClient(self._sim, self._gateway, self._model, account, handler_id, self._ledger, report)
        self._clients[(account, handler_id)] = client
        client.start()

    def stop(self, account: str, handler_id: int) -> None:
        client = self._clients.pop((account, handler_id), None)
        if client is not None:
            client.stop()


class SimHealthProbe:
    """The harness's health probe: connected before the accounts start, a `health` call every interval."""

    def __init__(self, sim: Simulation, gateway: SimGateway, interval_ms: float, until_ms: float,
                 loop_delay_interval_ms: float) -> None:
        self._sim = sim
        self._gateway = gateway
        self._interval_ms = interval_ms
        self._until_ms = until_ms
        self._loop_delay_interval_ms = loop_delay_interval_ms
        self.samples: list[HealthSample] = []

    def start(self) -> None:
        self._call()

    def _call(self) -> None:
        sent_ms = self._sim.now_ms
        self._gateway.request(self._answered(sent_ms))

    def _answered(self, sent_ms: float) -> Callable[[], None]:
        def answered() -> None:
            self.samples.append(HealthSample(sent_ms, self._sim.now_ms - sent_ms,
                                             self._gateway.recent_lag_max_ms(self._loop_delay_interval_ms)))
            if self._sim.now_ms + self._interval_ms < self._until_ms:
                self._sim.after(self._interval_ms, self._call)

        return answered
